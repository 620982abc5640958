"""The multi-resolution fit (``sample_first``): EM on the in-memory sample first, then full-data
EM to the same ``tol``, reaches plain batch EM's fixed point from the same start, in fewer
full-data passes.

Both fits run to ``tol=1e-13`` (the lower bound's change at rounding level): a lower-bound
change of 1e-10 still leaves EM's parameters about 1e-5 (relative) from the fixed point on
these data (EM converges linearly), for plain batch EM as much as for the multi-resolution
fit, so the fixed points are compared where both have reached them."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from gmm_stream import GaussianMixture

from gmm_testing import COVARIANCE_TYPES, add_missing, assert_allclose_scaled, kmeans_init, make_mixture

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

TIGHT = {"tol": 1e-13, "max_iter": 20_000}


def _pair(X, K, covariance_type, *, sample_weight=None, init_max_samples, **kw):
    """The same start fitted twice: plain batch EM, and the multi-resolution fit."""
    start = kmeans_init(np.asarray(X), K, covariance_type, seed=1)
    common = dict(n_components=K, covariance_type=covariance_type, init_max_samples=init_max_samples,
                  random_state=0, **start, **TIGHT, **kw)
    plain = GaussianMixture(sample_first=False, **common).fit(X, sample_weight=sample_weight)
    multi = GaussianMixture(sample_first=True, **common).fit(X, sample_weight=sample_weight)
    return plain, multi


def _same_fixed_point(plain, multi, rtol=1e-6):
    for name in ("weights_", "means_", "covariances_"):
        assert_allclose_scaled(getattr(multi, name), getattr(plain, name), rtol=rtol, err_msg=name)
    np.testing.assert_allclose(multi.lower_bound_, plain.lower_bound_, rtol=1e-9)
    assert multi.converged_ and plain.converged_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_synthetic_with_missing_values_and_weights_reaches_batch_em_fixed_point(covariance_type):
    X, *_ = make_mixture(12_000, 4, 3, seed=3, separation=5.0)
    X = add_missing(X, 0.05, seed=4)
    w = np.random.default_rng(5).uniform(0.5, 2.0, X.shape[0])
    plain, multi = _pair(X, 3, covariance_type, sample_weight=w, init_max_samples=1500)
    _same_fixed_point(plain, multi)
    assert multi.n_iter_sample_ > 0 and plain.n_iter_sample_ == 0
    assert multi.n_iter_ < plain.n_iter_  # the full-data passes it saved


def test_dask_and_xarray_input_take_the_same_path():
    X, *_ = make_mixture(9_000, 3, 3, seed=7, separation=3.0)
    X = add_missing(X, 0.05, seed=8)
    plain, multi = _pair(X, 3, "full", init_max_samples=1000)
    chunked = da.from_array(X, chunks=(2000, -1))
    _, multi_dask = _pair(chunked, 3, "full", init_max_samples=1000)
    _, multi_xr = _pair(xr.DataArray(chunked, dims=("sample", "feature")), 3, "full", init_max_samples=1000)
    _same_fixed_point(plain, multi_dask)
    _same_fixed_point(plain, multi_xr)
    assert multi_dask.n_iter_ == multi.n_iter_ and multi_dask.n_iter_sample_ == multi.n_iter_sample_


@pytest.mark.parametrize("loader, K, rtol", [
    (load_digits, 6, 1e-6),
    # two overlapping components: the likelihood is so flat along one direction that EM's
    # steps there fall below tol=1e-13 while the means still differ by 2.5e-6 (relative)
    (load_breast_cancer, 2, 1e-5),
])
def test_real_data_sets_reach_batch_em_fixed_point(loader, K, rtol):
    X = StandardScaler().fit_transform(loader().data)
    Z = PCA(5, random_state=0).fit_transform(X)
    plain, multi = _pair(Z, K, "full", init_max_samples=Z.shape[0] // 2)
    _same_fixed_point(plain, multi, rtol=rtol)


def test_no_sample_stage_when_the_data_fit_in_the_sample():
    X, *_ = make_mixture(2_000, 3, 2, seed=9)
    start = kmeans_init(X, 2, "full")
    on = GaussianMixture(2, sample_first=True, init_max_samples=5000, **start, **TIGHT).fit(X)
    off = GaussianMixture(2, sample_first=False, init_max_samples=5000, **start, **TIGHT).fit(X)
    assert on.n_iter_sample_ == 0 and on.n_iter_ == off.n_iter_
    np.testing.assert_array_equal(on.means_, off.means_)


def test_the_sample_stage_is_not_taken_on_warm_start_or_without_iterations():
    X, *_ = make_mixture(6_000, 3, 2, seed=10)
    gm = GaussianMixture(2, init_max_samples=1000, max_iter=0, random_state=0).fit(X)
    assert gm.n_iter_sample_ == 0 and gm.n_iter_ == 0
    warm = GaussianMixture(2, init_max_samples=1000, warm_start=True, random_state=0, tol=1e-6).fit(X)
    first = warm.n_iter_sample_
    warm.fit(X)
    assert first > 0 and warm.n_iter_sample_ == 0  # the second call continues the same full-data EM
