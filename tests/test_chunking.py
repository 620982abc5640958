"""The parallel result equals the serial one: chunk statistics merge by ``+``, and a Dask
fit (threads or a distributed cluster) equals the NumPy fit."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmm_stream import GaussianMixture, GaussianParams, chunk_statistics

from gmm_testing import COVARIANCE_TYPES, add_missing, assert_allclose_scaled, init_kwargs, make_mixture, random_params

D, K = 3, 2
PARAMS = {ct: GaussianParams.from_covariances(*random_params(D, K, ct, seed=40), ct) for ct in COVARIANCE_TYPES}
FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_", "lower_bounds_")


def _assert_stats_equal(a, b, rtol):
    assert_allclose_scaled(a.N, b.N, rtol=rtol, err_msg="N")
    assert_allclose_scaled(a.S1, b.S1, rtol=rtol, err_msg="S1")
    assert_allclose_scaled(a.S2, b.S2, rtol=rtol, err_msg="S2")
    np.testing.assert_array_equal(a.center, b.center)
    np.testing.assert_allclose(a.loglik, b.loglik, rtol=rtol)
    np.testing.assert_allclose(a.n_rows, b.n_rows, rtol=rtol)
    assert a.n_empty == b.n_empty
    np.testing.assert_array_equal(a.feature_counts, b.feature_counts)


@st.composite
def split_blocks(draw):
    n = draw(st.integers(1, 60))
    split = draw(st.integers(0, n))
    seed = draw(st.integers(0, 2**32 - 1))
    missing = draw(st.sampled_from([0.0, 0.3]))
    rng = np.random.default_rng(seed)
    X = 2.0 * rng.standard_normal((n, D))
    if missing:
        X = add_missing(X, missing, seed=seed, keep_one=False)  # some rows entirely NaN
    sw = rng.uniform(0.0, 3.0, n) if draw(st.booleans()) else None
    return X, split, sw


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@settings(max_examples=25, deadline=None)
@given(case=split_blocks())
def test_chunk_statistics_split_anywhere_merge_to_whole(covariance_type, case):
    X, split, sw = case
    params = PARAMS[covariance_type]
    whole = chunk_statistics(X, params, sample_weight=sw)
    head = chunk_statistics(X[:split], params, sample_weight=None if sw is None else sw[:split])
    tail = chunk_statistics(X[split:], params, sample_weight=None if sw is None else sw[split:])
    _assert_stats_equal(head + tail, whole, rtol=1e-10)
    assert whole.n_empty == int(np.isnan(X).all(axis=1).sum())


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@settings(max_examples=25, deadline=None)
@given(case=split_blocks(), shift=st.lists(st.floats(-10.0, 10.0), min_size=D, max_size=D))
def test_shift_changes_rounding_only(covariance_type, case, shift):
    X, _, sw = case
    params = PARAMS[covariance_type]
    _assert_stats_equal(
        chunk_statistics(X, params, sample_weight=sw, shift=np.asarray(shift)),
        chunk_statistics(X, params, sample_weight=sw),
        rtol=1e-9,
    )


# ------------------------------------------------------------------------ Dask vs NumPy


N = 240
CHUNKINGS = [(N,), (64,), (37,), ((100, 1, 60, 79),)]


@pytest.fixture(scope="module")
def data():
    X, *_ = make_mixture(N, D, 3, seed=41, separation=3.0)
    missing = add_missing(X, 0.15, seed=42)
    empty_chunk = missing.copy()
    empty_chunk[37:74] = np.nan  # a whole chunk of the (37,) chunking, and parts of others
    return {"complete": X, "missing": missing, "empty_chunk": empty_chunk}


def _fit(X, covariance_type, sample_weight=None, max_iter=15):
    init = init_kwargs(*random_params(D, 3, covariance_type, seed=43), covariance_type)
    gm = GaussianMixture(3, covariance_type=covariance_type, max_iter=max_iter, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        return gm.fit(X, sample_weight=sample_weight)


def _assert_fits_equal(a, b, rtol):
    for name in FITTED:
        assert_allclose_scaled(getattr(a, name), getattr(b, name), rtol=rtol, err_msg=name)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=rtol)
    assert a.n_empty_rows_ == b.n_empty_rows_


@pytest.mark.parametrize("kind", ["complete", "missing", "empty_chunk"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_dask_fit_equals_numpy_fit(data, kind, covariance_type):
    X = data[kind]
    ref = _fit(X, covariance_type)
    for chunks in CHUNKINGS:
        Xd = da.from_array(X, chunks=(chunks[0], D))
        got = _fit(Xd, covariance_type)
        _assert_fits_equal(got, ref, rtol=1e-9)
        proba = got.predict_proba(Xd)
        assert isinstance(proba, da.Array)
        assert proba.chunks[0] == Xd.chunks[0]
        np.testing.assert_allclose(proba.compute(), ref.predict_proba(X), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got.score_samples(Xd).compute(), ref.score_samples(X), rtol=1e-9)
        np.testing.assert_array_equal(got.predict(Xd).compute(), ref.predict(X))


# ------------------------------------------------------------------------ sample weights


@pytest.mark.parametrize("kind", ["complete", "missing"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_sample_weight_equals_repeated_rows(data, kind, covariance_type):
    X = data[kind]
    sw = np.random.default_rng(44).integers(0, 4, size=N)
    weighted = _fit(X, covariance_type, sample_weight=sw)
    repeated = _fit(np.repeat(X, sw, axis=0), covariance_type)
    _assert_fits_equal(weighted, repeated, rtol=1e-9)


def test_dask_sample_weight_equals_numpy_sample_weight(data):
    X = data["missing"]
    sw = np.random.default_rng(45).uniform(0.0, 2.0, size=N)
    ref = _fit(X, "full", sample_weight=sw)
    got = _fit(da.from_array(X, chunks=(50, D)), "full", sample_weight=da.from_array(sw, chunks=50))
    _assert_fits_equal(got, ref, rtol=1e-9)


# ------------------------------------------------------------------------ distributed


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_distributed_fit_equals_numpy_fit(client, data, covariance_type):
    X = data["missing"]
    ref = _fit(X, covariance_type)
    Xd = da.from_array(X, chunks=(37, D))
    got = _fit(Xd, covariance_type)
    _assert_fits_equal(got, ref, rtol=1e-9)
    np.testing.assert_allclose(got.predict_proba(Xd).compute(), ref.predict_proba(X), rtol=1e-9, atol=1e-12)
