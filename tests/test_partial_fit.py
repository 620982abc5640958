"""Online (stepwise) EM, ``GaussianMixture.partial_fit``, against brute force and batch EM."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from gmm_stream import GaussianMixture
from pipeline import load_model, save_model

from gmm_testing import COVARIANCE_TYPES, add_missing, assert_allclose_scaled, kmeans_init, make_mixture

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _brute_m_step(batches, params, reg_covar=1e-6):
    """Full-covariance M-step of the summed statistics of ``batches``, batch ``b`` taken under
    ``params[b]`` (weights, means, covariances), by responsibilities from scipy's densities."""
    k = len(params[0][0])
    n_k, s1, s2 = np.zeros(k), 0.0, 0.0
    rs = []
    for X, (w, m, c) in zip(batches, params):
        dens = np.column_stack([w[j] * multivariate_normal(m[j], c[j]).pdf(X) for j in range(k)])
        rs.append((X, dens / dens.sum(axis=1, keepdims=True)))
    for X, r in rs:
        n_k = n_k + r.sum(axis=0)
        s1 = s1 + r.T @ X
    means = s1 / n_k[:, None]
    for X, r in rs:
        s2 = s2 + np.stack([(r[:, j, None] * (X - means[j])).T @ (X - means[j]) for j in range(k)])
    covs = s2 / n_k[:, None, None] + reg_covar * np.eye(X.shape[1])
    return n_k / n_k.sum(), means, covs


def _params(gm):
    return np.asarray(gm.weights_), np.asarray(gm.means_), np.asarray(gm.covariances_)


def test_two_steps_equal_the_brute_force_update():
    X, *_ = make_mixture(4000, 3, 3, seed=1, separation=3.0)
    B1, B2 = X[:2000], X[2000:]
    start = kmeans_init(X[:500], 3, "full")
    # learning_decay=1, offset=1: η = 1/2 on the second batch of the same size, so the running
    # statistics are the plain sum of the two batches' statistics (each under its own parameters)
    gm = GaussianMixture(3, learning_decay=1.0, learning_offset=1.0, **start)
    gm.partial_fit(B1)
    first = _params(gm)
    init = (start["weights_init"], start["means_init"], np.linalg.inv(start["precisions_init"]))
    for got, want in zip(first, _brute_m_step([B1], [init]), strict=True):
        assert_allclose_scaled(got, want, rtol=1e-9)
    gm.partial_fit(B2)
    for got, want in zip(_params(gm), _brute_m_step([B1, B2], [init, first]), strict=True):
        assert_allclose_scaled(got, want, rtol=1e-9)
    assert gm.n_steps_ == 2 and gm.lower_bounds_.shape == (2,)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_first_step_is_one_batch_em_step_with_missing_values_and_weights(covariance_type):
    X, *_ = make_mixture(3000, 4, 3, seed=2, separation=3.0)
    X = add_missing(X, 0.1, seed=3)
    w = np.random.default_rng(4).uniform(0.2, 3.0, X.shape[0])
    start = kmeans_init(X, 3, covariance_type, seed=2)
    online = GaussianMixture(3, covariance_type=covariance_type, **start).partial_fit(X, sample_weight=w)
    batch = GaussianMixture(3, covariance_type=covariance_type, max_iter=1, **start).fit(X, sample_weight=w)
    for name in ("weights_", "means_", "covariances_"):
        assert_allclose_scaled(getattr(online, name), getattr(batch, name), rtol=1e-10, err_msg=name)
    np.testing.assert_allclose(online.lower_bounds_[0], batch.lower_bounds_[0], rtol=1e-12)


def test_a_dask_array_is_a_stream_of_its_chunks_in_order_or_shuffled():
    X, *_ = make_mixture(6000, 3, 2, seed=5)
    X = add_missing(X, 0.05, seed=6)
    start = kmeans_init(X[:1000], 2, "full")
    by_hand = GaussianMixture(2, **start)
    for s in range(0, 6000, 1500):
        by_hand.partial_fit(X[s:s + 1500])
    stream = GaussianMixture(2, **start).partial_fit(da.from_array(X, chunks=(1500, -1)))
    np.testing.assert_allclose(stream.means_, by_hand.means_, rtol=1e-12)
    assert stream.n_steps_ == 4
    a = GaussianMixture(2, random_state=3, **start).partial_fit(da.from_array(X, chunks=(1500, -1)), shuffle=True)
    b = GaussianMixture(2, random_state=3, **start).partial_fit(da.from_array(X, chunks=(1500, -1)), shuffle=True)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert not np.allclose(a.means_, stream.means_, rtol=1e-12)  # another order, another path
    orders = []
    for _ in range(3):  # successive shuffled passes of one stream take different orders
        orders.append(tuple(a._stream_order_rng().permutation(4)))
        a.partial_fit(da.from_array(X, chunks=(1500, -1)), shuffle=True)
    assert len(set(orders)) > 1


def test_a_saved_model_continues_its_stream(tmp_path):
    X, *_ = make_mixture(6000, 3, 3, seed=7, separation=3.0)
    start = kmeans_init(X[:1000], 3, "diag")
    straight = GaussianMixture(3, covariance_type="diag", **start)
    straight.partial_fit(X[:3000]).partial_fit(X[3000:])
    first = GaussianMixture(3, covariance_type="diag", **start).partial_fit(X[:3000])
    save_model(first, tmp_path / "m")
    resumed = load_model(tmp_path / "m")
    assert resumed.n_steps_ == 1
    resumed.partial_fit(X[3000:])
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(resumed, name), getattr(straight, name), rtol=1e-12, err_msg=name)


def test_partial_fit_after_fit_continues_from_the_fitted_model():
    X, *_ = make_mixture(4000, 3, 2, seed=8)
    gm = GaussianMixture(2, random_state=0).fit(X)
    fitted = gm.means_.copy()
    gm.partial_fit(X[:1000])
    assert gm.n_steps_ == 1
    np.testing.assert_allclose(gm.means_, fitted, atol=0.2)  # one step from the optimum stays near it
    gm.fit(X)
    assert gm.n_steps_ == 0 and "_online" not in gm.__dict__


def test_online_em_converges_on_a_stationary_stream():
    """One pass gets within 0.01 of the batch optimum's mean log-likelihood; three passes and
    one batch EM step within 1e-3 (the figures the README states)."""
    X, *_ = make_mixture(120_000, 5, 4, seed=9, separation=3.0)
    X = add_missing(X, 0.05, seed=10)
    start = kmeans_init(X[:3000], 4, "full", seed=1)
    optimum = GaussianMixture(4, tol=1e-8, max_iter=500, **start).fit(X).score(X)
    stream = da.from_array(X, chunks=(4000, -1))
    gm = GaussianMixture(4, **start)
    gm.partial_fit(stream, shuffle=True)
    one_pass = gm.score(X)
    gm.partial_fit(stream, shuffle=True).partial_fit(stream, shuffle=True)
    step = GaussianMixture(4, max_iter=1, sample_first=False, weights_init=gm.weights_, means_init=gm.means_,
                           precisions_init=gm.precisions_).fit(X)  # one full-data EM step, nothing else
    print(f"batch optimum {optimum:.6f}; one pass {one_pass:.6f} (gap {optimum - one_pass:.2e}); "
          f"three passes + one batch step {step.score(X):.6f} (gap {optimum - step.score(X):.2e}); "
          f"trajectory of the first pass: {np.round(gm.lower_bounds_[:30:3], 4).tolist()}")
    assert optimum - one_pass < 1e-2
    assert optimum - step.score(X) < 1e-3
    assert gm.n_steps_ == 90 and gm.lower_bounds_.shape == (90,)


def test_damaged_online_statistics_are_refused(tmp_path):
    from gmm_stream.exceptions import ModelFormatError

    X, *_ = make_mixture(2000, 3, 2, seed=11)
    gm = GaussianMixture(2, random_state=0).partial_fit(X)
    meta, arrays = gm.get_state()
    assert meta["online"]["steps"] == 1 and "online_S2" in arrays
    bad = dict(arrays, online_N=-arrays["online_N"])
    with pytest.raises(ModelFormatError, match="online_N"):
        GaussianMixture.from_state(meta, bad)
    missing = {k: v for k, v in arrays.items() if k != "online_S1"}
    with pytest.raises(ModelFormatError, match="online_S1"):
        GaussianMixture.from_state(meta, missing)
