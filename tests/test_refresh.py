"""Incremental EM (Neal & Hinton 1998), ``GaussianMixture.refresh``, against brute force and batch EM.

The brute force (``_brute_force_rows``) is written from docs/math.md with SciPy's densities
and explicit conditional Gaussians, one missing-value pattern at a time: for each row, the
posterior ``q`` of some parameters over its label and missing entries, its log-likelihood,
``E_q[log p(x, z | θ')]`` under other parameters ``θ'`` and the entropy of ``q``. The free
energy of a row is ``E_q[log p(x, z | θ')] + H(q)``; with ``θ' = θ`` it is the row's
log-likelihood (checked below, so the brute force is itself checked).

Every test uses ~5 % NaN entries and non-uniform sample weights on 2000 rows, d = 3, K = 3.
"""

from __future__ import annotations

import copy
import json

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy.special import logsumexp, xlogy
from scipy.stats import multivariate_normal
from sklearn.exceptions import NotFittedError

from gmm_stream import (
    GaussianMixture,
    GaussianParams,
    PartitionStatistics,
    chunk_statistics,
    expected_complete_loglik,
    m_step,
    partition_statistics,
)
from gmm_stream._dask import statistics
from gmm_stream.exceptions import ConvergenceWarning, InvalidInputError, ModelFormatError
from pipeline import load_model, save_model

import reference
from gmm_testing import COVARIANCE_TYPES, add_missing, assert_allclose_scaled, kmeans_init, make_mixture, random_params

# refresh warns (ConvergenceWarning) whenever max_iter ends it; the tests that care say so
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_ROWS, D, K = 2000, 3, 3
REG = 1e-6
#: the record's partitions (disjoint row ranges, not aligned to any chunk below) ...
PARTS = {"a": (0, 430), "b": (430, 800), "c": (800, 1177), "d": (1177, 1600)}
#: ... and one that enters later; together they cover every row
NEW = {"e": (1600, N_ROWS)}
ALL = {**PARTS, **NEW}


@pytest.fixture(scope="module")
def data():
    X, *_ = make_mixture(N_ROWS, D, K, seed=41, separation=3.0)
    Xm = add_missing(X, 0.05, seed=42)
    w = np.random.default_rng(43).uniform(0.2, 3.0, N_ROWS)
    assert 0.03 < np.isnan(Xm).mean() < 0.07
    return X, Xm, w


_STARTS: dict = {}


def _start(Xm, covariance_type):
    """``*_init`` from k-means on the first 200 rows: a start EM still moves a long way from."""
    if covariance_type not in _STARTS:
        _STARTS[covariance_type] = kmeans_init(Xm[:200], K, covariance_type, seed=0)
    return _STARTS[covariance_type]


def _model_at_start(Xm, w, covariance_type, **params):
    """A fitted model whose parameters are the start (``max_iter=0``: no iteration)."""
    gm = GaussianMixture(K, covariance_type=covariance_type, max_iter=0, sample_first=False,
                         **_start(Xm, covariance_type))
    gm.fit(Xm, sample_weight=w)
    return gm.set_params(**params)


def _recorded(Xm, w, covariance_type, parts=PARTS, **params):
    """The model at the start with a record of ``parts`` visited under its parameters."""
    gm = _model_at_start(Xm, w, covariance_type, **params)
    return gm.record_partitions(partition_statistics(Xm, gm.params_, parts, w))


def _sk(params: GaussianParams):
    """(weights, means, covariances) in scikit-learn's shapes, float64."""
    return (np.asarray(params.weights, np.float64), np.asarray(params.means, np.float64),
            np.asarray(params.covariances, np.float64))


def _params(covariance_type, seed):
    return GaussianParams.from_covariances(*random_params(D, K, covariance_type, seed), covariance_type)


def _perturbed(params: GaussianParams, seed):
    """Other parameters of the same type: weights, means and covariances all moved."""
    rng = np.random.default_rng(seed)
    weights, means, cov = _sk(params)
    weights = weights * rng.uniform(0.5, 1.5, K)
    means = means + 0.7 * rng.standard_normal(means.shape)
    if params.covariance_type in ("full", "tied"):
        A = 0.5 * rng.standard_normal((D, D))
        cov = cov * rng.uniform(0.7, 1.4) + A @ A.T
    else:
        cov = cov * rng.uniform(0.6, 1.6, cov.shape)
    return GaussianParams.from_covariances(weights / weights.sum(), means, cov, params.covariance_type)


def _brute_force_rows(X, w, theta: GaussianParams, theta_prime: GaussianParams):
    """Per row, weighted: ``log p(x_o | θ)``, ``E_q[log p(x, z | θ')]`` and ``H(q)``, with ``q``
    the posterior under ``θ`` of the row's label and missing entries. Shape (3, n)."""
    kind = theta.covariance_type
    weights, means, covs = _sk(theta)
    weights2, means2, covs2 = _sk(theta_prime)
    covs = reference.full_covariances(covs, kind, K, D)
    covs2 = reference.full_covariances(covs2, kind, K, D)
    mask = np.isnan(X)
    out = np.zeros((3, X.shape[0]))
    for pattern in np.unique(mask, axis=0):
        rows = np.flatnonzero((mask == pattern).all(axis=1))
        o, m = ~pattern, pattern
        xo = X[np.ix_(rows, o)]
        log_joint = np.empty((rows.size, K))  # log π_k N(x_o; μ_o, Σ_oo) under θ
        expected = np.empty((rows.size, K))  # E[log π'_k N(x; μ'_k, Σ'_k) | x_o, z = k, θ]
        entropy = np.zeros(K)  # of x_m given x_o and z = k, under θ
        for k in range(K):
            S = covs[k]
            log_joint[:, k] = np.log(weights[k]) + np.atleast_1d(
                multivariate_normal.logpdf(xo, means[k, o], S[np.ix_(o, o)]))
            x_hat = np.empty((rows.size, D))
            x_hat[:, o] = xo
            C = np.zeros((D, D))
            if m.any():
                gain = np.linalg.solve(S[np.ix_(o, o)], S[np.ix_(o, m)]).T  # Σ_mo Σ_oo⁻¹
                x_hat[:, m] = means[k, m] + (xo - means[k, o]) @ gain.T
                C[np.ix_(m, m)] = S[np.ix_(m, m)] - gain @ S[np.ix_(o, m)]
                entropy[k] = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * C[np.ix_(m, m)])[1]
            expected[:, k] = (np.log(weights2[k])
                              + np.atleast_1d(multivariate_normal.logpdf(x_hat, means2[k], covs2[k]))
                              - 0.5 * np.trace(np.linalg.solve(covs2[k], C)))
        loglik = logsumexp(log_joint, axis=1)
        r = np.exp(log_joint - loglik[:, None])
        out[0, rows] = loglik
        out[1, rows] = np.sum(r * expected, axis=1)
        out[2, rows] = -np.sum(xlogy(r, r), axis=1) + r @ entropy
    return out * w


def _assert_params_close(got, want, rtol, what=""):
    for name in ("weights", "means", "covariances"):
        assert_allclose_scaled(getattr(got, name), getattr(want, name), rtol=rtol, err_msg=f"{what} {name}")


def _assert_model_is_m_step_of_its_record(gm):
    """What refresh keeps invariant: the parameters are the M-step of the record's sum."""
    want = m_step(gm.partitions_.total(), reg_covar=gm.reg_covar, covariance_type=gm.covariance_type)
    _assert_params_close(gm.params_, want, rtol=1e-12, what="M(S)")


def _assert_records_close(got: PartitionStatistics, want: PartitionStatistics, rtol):
    assert got.keys == want.keys
    assert got.visits == want.visits and got.refreshes == want.refreshes
    np.testing.assert_allclose([got.entropy[k] for k in got.keys], [want.entropy[k] for k in want.keys], rtol=rtol)
    a, b = got.total(), want.total().recentred(got.total().center)
    for name in ("N", "S1", "S2"):
        assert_allclose_scaled(getattr(a, name), getattr(b, name), rtol=rtol, err_msg=name)


# ------------------------------------------------------------- the free energy, by brute force


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_expected_complete_loglik_matches_scipy_on_complete_data(data, covariance_type):
    """``Q(θ'; s(θ))`` = Σ_i w_i Σ_k r_ik(θ) [log π'_k + log N(x_i; μ'_k, Σ'_k)], with r from SciPy."""
    X, _, w = data
    theta = _params(covariance_type, seed=1)
    theta2 = _perturbed(theta, seed=2)
    weights, means, covs = _sk(theta)
    covs = reference.full_covariances(covs, covariance_type, K, D)
    weights2, means2, covs2 = _sk(theta2)
    covs2 = reference.full_covariances(covs2, covariance_type, K, D)
    log_joint = np.column_stack([np.log(weights[k]) + multivariate_normal.logpdf(X, means[k], covs[k])
                                 for k in range(K)])
    r = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    log_joint2 = np.column_stack([np.log(weights2[k]) + multivariate_normal.logpdf(X, means2[k], covs2[k])
                                  for k in range(K)])
    want = float(np.sum(w[:, None] * r * log_joint2))
    got = expected_complete_loglik(chunk_statistics(X, theta, sample_weight=w), theta2)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # Q is linear in the statistics: the partitions' sum gives the same
    parts = partition_statistics(X, theta, ALL, w)
    np.testing.assert_allclose(sum(expected_complete_loglik(s, theta2) for s in parts.values()), want, rtol=1e-9)
    # and under θ itself it is Σ w log p − the entropy of the labels
    entropy = -float(np.sum(w[:, None] * xlogy(r, r)))
    got_same = expected_complete_loglik(chunk_statistics(X, theta, sample_weight=w), theta)
    np.testing.assert_allclose(got_same + entropy, float(w @ logsumexp(log_joint, axis=1)), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_expected_complete_loglik_with_missing_values_matches_brute_force(data, covariance_type):
    _, Xm, w = data
    theta = _params(covariance_type, seed=3)
    theta2 = _perturbed(theta, seed=4)
    loglik, expected, entropy = _brute_force_rows(Xm, w, theta, theta2).sum(axis=1)
    got = expected_complete_loglik(chunk_statistics(Xm, theta, sample_weight=w), theta2)
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # the brute force itself: under θ' = θ the free energy of each row is its log-likelihood
    rows = _brute_force_rows(Xm, w, theta, theta)
    np.testing.assert_allclose(rows[1] + rows[2], rows[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loglik, rows[0].sum(), rtol=0)
    loglik2 = _brute_force_rows(Xm, w, theta2, theta2)[0].sum()
    assert expected + entropy < loglik2  # of the log-likelihood under θ', strict as θ' ≠ θ


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_free_energy_of_a_record_visited_under_theta_is_the_loglik(data, covariance_type):
    _, Xm, w = data
    theta = _params(covariance_type, seed=5)
    other = _perturbed(theta, seed=6)
    want = float(w @ reference.marginal_log_density(Xm, *_sk(theta), covariance_type))
    stats = partition_statistics(Xm, theta, ALL, w)
    record = PartitionStatistics().visited(theta, stats)
    np.testing.assert_allclose(record.free_energy(theta), want, rtol=1e-10)
    # visited in two goes, one partition first visited under other parameters and then again under θ
    first = {k: stats[k] for k in ("a", "b")}
    rest = {k: stats[k] for k in ("c", "d", "e")}
    stale = partition_statistics(Xm, other, {"c": ALL["c"]}, w)
    record = PartitionStatistics().visited(other, stale).visited(theta, first).visited(theta, rest)
    assert sorted(record.keys) == sorted(ALL) and len(record) == 5
    np.testing.assert_allclose(record.free_energy(theta), want, rtol=1e-10)
    np.testing.assert_allclose(record.n_rows, w.sum(), rtol=1e-13)
    # through the estimator: the record of record_partitions, at the model's parameters
    gm = _recorded(Xm, w, covariance_type, parts=ALL)
    want_model = float(w @ reference.marginal_log_density(Xm, *_sk(gm.params_), covariance_type))
    np.testing.assert_allclose(gm.partitions_.free_energy(gm.params_), want_model, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_free_energy_of_a_stale_record_matches_brute_force(data, covariance_type):
    """Partitions last visited under different parameters (θ1 and θ2), evaluated at θ3."""
    _, Xm, w = data
    theta1 = _params(covariance_type, seed=7)
    theta2 = _perturbed(theta1, seed=8)
    theta3 = _perturbed(theta1, seed=9)
    first, second = {k: ALL[k] for k in ("a", "c", "e")}, {k: ALL[k] for k in ("b", "d")}
    record = (PartitionStatistics()
              .visited(theta1, partition_statistics(Xm, theta1, first, w))
              .visited(theta2, partition_statistics(Xm, theta2, second, w)))
    rows1 = np.zeros(N_ROWS, bool)
    for start, stop in first.values():
        rows1[start:stop] = True
    by1 = _brute_force_rows(Xm[rows1], w[rows1], theta1, theta3)
    by2 = _brute_force_rows(Xm[~rows1], w[~rows1], theta2, theta3)
    want = float(by1[1:].sum() + by2[1:].sum())
    np.testing.assert_allclose(record.free_energy(theta3), want, rtol=1e-9)
    loglik3 = float(w @ reference.marginal_log_density(Xm, *_sk(theta3), covariance_type))
    assert record.free_energy(theta3) < loglik3  # a lower bound, strict when stale


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_of_a_partial_refresh_is_the_brute_force_free_energy(data, covariance_type):
    """``lower_bounds_[0]`` of a refresh of one partition: that partition's log-likelihood under
    the current parameters plus the stale partitions' free energy, per unit of weight."""
    _, Xm, w = data
    gm = _recorded(Xm, w, covariance_type, max_iter=1)
    theta0 = gm.params_
    gm.refresh(Xm, {"a": PARTS["a"]}, w)  # visits a under θ0 (no change), then θ1 = M(S)
    theta1 = gm.params_
    gm.refresh(Xm, {"b": PARTS["b"]}, w)  # b under θ1; a, c, d still under θ0
    assert gm.partitions_.visits == {"a": 1, "b": 2, "c": 0, "d": 0} and gm.partitions_.refreshes == 2
    b = slice(*PARTS["b"])
    stale = np.zeros(N_ROWS, bool)
    for key in ("a", "c", "d"):
        stale[slice(*PARTS[key])] = True
    by0 = _brute_force_rows(Xm[stale], w[stale], theta0, theta1)
    want = (by0[1:].sum() + float(w[b] @ reference.marginal_log_density(Xm[b], *_sk(theta1), covariance_type)))
    np.testing.assert_allclose(gm.lower_bounds_, [want / w[:1600].sum()], rtol=1e-10)
    _assert_model_is_m_step_of_its_record(gm)


# ------------------------------------------------------------------ refresh and batch EM


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_refresh_of_every_partition_is_one_batch_em_step(data, covariance_type):
    _, Xm, w = data
    gm = _recorded(Xm, w, covariance_type, parts=ALL, max_iter=1)
    theta0 = gm.params_
    with pytest.warns(ConvergenceWarning, match="refresh did not converge"):
        gm.refresh(Xm, ALL, w)
    assert (gm.n_iter_, gm.converged_, gm.partitions_.refreshes) == (1, False, 1)
    want = m_step(statistics(Xm, theta0, w), reg_covar=REG, covariance_type=covariance_type, previous=theta0)
    _assert_params_close(gm.params_, want, rtol=1e-10, what="m_step(statistics)")
    with pytest.warns(ConvergenceWarning):
        batch = GaussianMixture(K, covariance_type=covariance_type, max_iter=1, sample_first=False,
                                **_start(Xm, covariance_type)).fit(Xm, sample_weight=w)
    _assert_params_close(gm.params_, batch.params_, rtol=1e-10, what="fit(max_iter=1)")
    np.testing.assert_allclose(gm.lower_bounds_, batch.lower_bounds_, rtol=1e-12)
    # and the brute-force EM step of docs/math.md
    weights, means, covs, mean_loglik = reference.em_step(Xm, *_sk(theta0), covariance_type, REG, sample_weight=w)
    assert_allclose_scaled(gm.weights_, weights, rtol=1e-9)
    assert_allclose_scaled(gm.means_, means, rtol=1e-9)
    assert_allclose_scaled(gm.covariances_, covs, rtol=1e-9)
    np.testing.assert_allclose(gm.lower_bounds_[0], mean_loglik, rtol=1e-10)
    # a model with no record yet: the same step
    fresh = _model_at_start(Xm, w, covariance_type, max_iter=1).refresh(Xm, ALL, w)
    _assert_params_close(fresh.params_, gm.params_, rtol=1e-12, what="no record")
    assert fresh.partitions_.visits == dict.fromkeys(ALL, 1)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_removing_a_partition_subtracts_its_statistics(data, covariance_type):
    _, Xm, w = data
    gm = _recorded(Xm, w, covariance_type, max_iter=5)
    theta0 = gm.params_
    gm.refresh(Xm, {}, w, remove=["b"])
    assert gm.partitions_.keys == ["a", "c", "d"] and (gm.n_iter_, gm.converged_) == (1, True)
    keep = np.r_[0:PARTS["b"][0], PARTS["b"][1]:PARTS["d"][1]]
    left = statistics(Xm[keep], theta0, w[keep])
    want = m_step(left, reg_covar=REG, covariance_type=covariance_type, previous=theta0)
    _assert_params_close(gm.params_, want, rtol=1e-10)
    np.testing.assert_allclose(gm.lower_bounds_, [left.loglik / left.n_rows], rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_refresh_never_decreases_the_free_energy(data, covariance_type):
    """A stale record, one partition visited, one entering and one removed, in one refresh."""
    _, Xm, w = data
    gm = _recorded(Xm, w, covariance_type, parts={k: PARTS[k] for k in ("a", "b", "c")}, max_iter=2)
    gm.refresh(Xm, {"a": PARTS["a"]}, w)  # b and c stay under the start
    gm.set_params(max_iter=60, tol=1e-14)
    gm.refresh(Xm, {"b": PARTS["b"], "d": PARTS["d"]}, w, remove=["c"])
    bounds = gm.lower_bounds_
    assert gm.converged_ and 10 <= bounds.size == gm.n_iter_ < 60  # to rounding (about 20 iterations)
    steps = np.diff(bounds)
    assert np.all(steps >= -1e-10 * np.abs(bounds[:-1])), steps
    assert bounds[-1] - bounds[0] > 1e-3  # it moved: a test of something
    assert gm.partitions_.keys == ["a", "b", "d"]
    assert gm.partitions_.visits == {"a": 1, "b": 2, "d": 2} and gm.partitions_.refreshes == 2
    _assert_model_is_m_step_of_its_record(gm)
    # the free energy at the end is a lower bound of the log-likelihood of the rows it holds (a is stale)
    rows = np.r_[0:PARTS["b"][1], slice(*PARTS["d"])]
    loglik = float(w[rows] @ reference.marginal_log_density(Xm[rows], *_sk(gm.params_), covariance_type))
    free_energy = gm.partitions_.free_energy(gm.params_)
    assert free_energy < loglik
    np.testing.assert_allclose(gm.partitions_.n_rows, w[rows].sum(), rtol=1e-13)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_repeated_refreshes_of_every_partition_reach_the_batch_fixed_point(data, covariance_type):
    _, Xm, w = data
    gm = _recorded(Xm, w, covariance_type, max_iter=3)
    gm.refresh(Xm, {"a": PARTS["a"], "c": PARTS["c"]}, w)  # another path: stale partitions first
    gm.refresh(Xm, NEW, w)
    gm.set_params(max_iter=2000, tol=1e-12).refresh(Xm, ALL, w)
    batch = GaussianMixture(K, covariance_type=covariance_type, tol=1e-12, max_iter=2000, sample_first=False,
                            **_start(Xm, covariance_type)).fit(Xm, sample_weight=w)
    assert gm.converged_ and batch.converged_
    _assert_params_close(gm.params_, batch.params_, rtol=1e-6)
    np.testing.assert_allclose(gm.lower_bound_, batch.lower_bound_, rtol=1e-10)
    assert set(gm.partitions_.visits.values()) == {gm.partitions_.refreshes}


# ------------------------------------------------------------------------------ inputs


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_numpy_dask_and_xarray_inputs_agree(data, covariance_type):
    _, Xm, w = data
    gm = _recorded(Xm, w, covariance_type, max_iter=2)
    gm.refresh(Xm, {"a": PARTS["a"]}, w)
    visit = {"b": PARTS["b"], "c": PARTS["c"], "e": NEW["e"], "empty": (1000, 1000)}
    Xd = da.from_array(Xm, chunks=(333, -1))  # chunks cross every partition boundary
    inputs = {
        "numpy": (Xm, w),
        "dask": (Xd, w),
        "dask, dask weights": (Xd, da.from_array(w, chunks=250)),
        "xarray over numpy": (xr.DataArray(Xm, dims=("sample", "feature")), w),
        "xarray over dask": (xr.DataArray(Xd, dims=("sample", "feature")), da.from_array(w, chunks=500)),
    }
    results = {}
    for name, (X, sw) in inputs.items():
        model = copy.deepcopy(gm).set_params(max_iter=3)
        results[name] = model.refresh(X, visit, sw, remove=["d"])
        stats = partition_statistics(X if not isinstance(X, xr.DataArray) else X.data, gm.params_, visit, sw)
        base = partition_statistics(Xm, gm.params_, visit, w)
        for key in visit:
            for field in ("N", "S1", "S2"):
                assert_allclose_scaled(getattr(stats[key], field), getattr(base[key], field), rtol=1e-10,
                                       err_msg=f"{name} {key} {field}")
            np.testing.assert_allclose(stats[key].loglik, base[key].loglik, rtol=1e-10)
    want = results.pop("numpy")
    assert want.n_iter_ == 3 and want.partitions_.keys == ["a", "b", "c", "e", "empty"]
    assert want.partitions_.stats["empty"].n_rows == 0 and want.partitions_.entropy["empty"] == 0
    for name, got in results.items():
        _assert_params_close(got.params_, want.params_, rtol=1e-10, what=name)
        np.testing.assert_allclose(got.lower_bounds_, want.lower_bounds_, rtol=1e-10, err_msg=name)
        _assert_records_close(got.partitions_, want.partitions_, rtol=1e-10)


# ------------------------------------------------------------------------------- state


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_state_round_trip_keeps_the_record_and_the_refresh_continues(data, covariance_type, tmp_path):
    _, Xm, w = data
    gm = _recorded(Xm, w, covariance_type, max_iter=2)
    gm.refresh(Xm, {"a": PARTS["a"], "e": NEW["e"]}, w)
    meta, arrays = gm.get_state()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["partitions"]["keys"] == ["a", "b", "c", "d", "e"]
    loaded = GaussianMixture.from_state(meta, arrays)
    save_model(gm, tmp_path / "model")
    from_files = load_model(tmp_path / "model")
    for other in (loaded, from_files):
        record, want = other.partitions_, gm.partitions_
        assert record.keys == want.keys and record.visits == want.visits == {"a": 1, "b": 0, "c": 0, "d": 0, "e": 1}
        assert record.refreshes == want.refreshes == 1
        assert record.entropy == want.entropy
        for key in want.keys:
            for field in ("N", "S1", "S2", "center", "feature_counts"):
                np.testing.assert_array_equal(getattr(record.stats[key], field), getattr(want.stats[key], field))
            for field in ("loglik", "n_rows", "n_empty"):
                assert getattr(record.stats[key], field) == getattr(want.stats[key], field)
    visit = {"b": PARTS["b"], "d": PARTS["d"]}
    straight = copy.deepcopy(gm).set_params(max_iter=4).refresh(Xm, visit, w, remove=["c"])
    for other in (loaded, from_files):
        other.set_params(max_iter=4).refresh(Xm, visit, w, remove=["c"])
        _assert_params_close(other.params_, straight.params_, rtol=1e-12)
        np.testing.assert_allclose(other.lower_bounds_, straight.lower_bounds_, rtol=1e-12)
        assert other.partitions_.visits == straight.partitions_.visits
    # fit starts a new record: none is saved
    gm.set_params(max_iter=5).fit(Xm, sample_weight=w)
    assert "partitions_" not in gm.__dict__ and "partitions" not in gm.get_state()[0]


def test_damaged_partition_metadata_is_refused(data):
    _, Xm, w = data
    meta, arrays = _recorded(Xm, w, "full").get_state()
    info = meta["partitions"]
    short = dict(meta, partitions=dict(info, visits=info["visits"][:-1]))
    with pytest.raises(ModelFormatError, match=r"partitions\.visits has 3 entries, expected 4") as err:
        GaussianMixture.from_state(short, arrays)
    assert err.value.field == "partitions.visits"
    for name in ("entropy", "loglik", "n_rows", "n_empty"):
        longer = dict(meta, partitions=dict(info, **{name: info[name] + info[name][:1]}))
        with pytest.raises(ModelFormatError, match=rf"partitions\.{name} has 5 entries") as err:
            GaussianMixture.from_state(longer, arrays)
        assert err.value.field == f"partitions.{name}"
    duplicate = dict(meta, partitions=dict(info, keys=["a", "b", "a", "d"]))
    with pytest.raises(ModelFormatError, match=r"partitions\.keys has duplicate keys") as err:
        GaussianMixture.from_state(duplicate, arrays)
    assert err.value.field == "partitions.keys"
    headers = {name: (a.shape, a.dtype) for name, a in arrays.items()}
    with pytest.raises(ModelFormatError, match=r"partitions\.keys"):
        GaussianMixture.check_state(duplicate, headers)
    GaussianMixture.from_state(meta, arrays)  # the undamaged state loads


# ------------------------------------------------------------------------------ errors


def test_refresh_errors_name_the_problem_and_change_nothing(data):
    _, Xm, w = data
    with pytest.raises(NotFittedError):
        GaussianMixture(K).refresh(Xm, PARTS, w)
    gm = _recorded(Xm, w, "full", max_iter=2)
    before = copy.deepcopy(gm)
    with pytest.raises(InvalidInputError, match=r"partition 'far': rows 1900:2001 are not a row range of X"):
        gm.refresh(Xm, {"a": PARTS["a"], "far": (1900, 2001)}, w)
    with pytest.raises(InvalidInputError, match=r"partition 'back': rows 10:5 "):
        gm.refresh(Xm, {"back": (10, 5)}, w)
    with pytest.raises(InvalidInputError, match=r"partition 'neg': rows -1:5 "):
        gm.refresh(Xm, {"neg": (-1, 5)}, w)
    with pytest.raises(InvalidInputError, match=r"\['b'\] are both visited and removed"):
        gm.refresh(Xm, {"a": PARTS["a"], "b": PARTS["b"]}, w, remove=["b"])
    with pytest.raises(InvalidInputError, match="no partition is left"):
        gm.refresh(Xm, {}, w, remove=list(PARTS))
    with pytest.raises(InvalidInputError, match="no partition is left"):
        _model_at_start(Xm, w, "full").refresh(Xm, {}, w)  # no record, nothing given
    _assert_params_close(gm.params_, before.params_, rtol=0)
    _assert_records_close(gm.partitions_, before.partitions_, rtol=0)
    # statistics of other parameters
    other = _perturbed(gm.params_, seed=10)
    stats = partition_statistics(Xm, gm.params_, {"a": PARTS["a"]}, w)
    stats.update(partition_statistics(Xm, other, {"b": PARTS["b"]}, w))
    with pytest.raises(InvalidInputError, match=r"partition 'b' were not computed under this model's parameters"):
        gm.record_partitions(stats)
    _assert_records_close(gm.partitions_, before.partitions_, rtol=0)


# --------------------------------------------------------------------------- permutation


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_a_permuted_model_refreshes_as_the_original_permuted(data, covariance_type):
    _, Xm, w = data
    order = np.array([2, 0, 1])
    gm = _recorded(Xm, w, covariance_type, max_iter=2)
    gm.refresh(Xm, {"a": PARTS["a"]}, w)
    perm = gm.permuted(order)
    record = gm.partitions_
    for key in record.keys:
        np.testing.assert_array_equal(perm.partitions_.stats[key].N, record.stats[key].N[order])
        np.testing.assert_array_equal(perm.partitions_.stats[key].S2, record.stats[key].S2[order])
    visit = {"b": PARTS["b"], "e": NEW["e"]}
    gm.set_params(max_iter=3).refresh(Xm, visit, w, remove=["c"])
    perm.set_params(max_iter=3).refresh(Xm, visit, w, remove=["c"])
    assert_allclose_scaled(perm.weights_, gm.weights_[order], rtol=1e-12)
    assert_allclose_scaled(perm.means_, gm.means_[order], rtol=1e-12)
    cov = gm.covariances_ if covariance_type == "tied" else gm.covariances_[order]
    assert_allclose_scaled(perm.covariances_, cov, rtol=1e-12)
    np.testing.assert_allclose(perm.lower_bounds_, gm.lower_bounds_, rtol=1e-12)
    assert perm.partitions_.visits == gm.partitions_.visits
    np.testing.assert_allclose([perm.partitions_.entropy[k] for k in visit],
                               [gm.partitions_.entropy[k] for k in visit], rtol=1e-10)
    got, want = perm.partitions_.total(), gm.partitions_.total()
    for name in ("N", "S1", "S2"):
        assert_allclose_scaled(getattr(got, name), getattr(want, name)[order], rtol=1e-10, err_msg=name)
    _assert_model_is_m_step_of_its_record(perm)


def test_remove_accepts_any_iterable(data):
    """``remove`` is an ``Iterable[str]``: a generator removes what the list removes."""
    _, Xm, w = data
    by_list = _recorded(Xm, w, "diag", max_iter=2).refresh(Xm, {"a": PARTS["a"]}, w, remove=["c"])
    by_generator = _recorded(Xm, w, "diag", max_iter=2).refresh(Xm, {"a": PARTS["a"]}, w,
                                                               remove=(k for k in ["c"]))
    assert by_generator.partitions_.keys == by_list.partitions_.keys == ["a", "b", "d"]


def test_partition_keys_are_the_same_in_record_partitions_and_refresh(data):
    """Keys are strings everywhere: partition 0 of record_partitions is '0' of a refresh."""
    _, Xm, w = data
    halves = {0: (0, 1000), 1: (1000, N_ROWS)}
    gm = _model_at_start(Xm, w, "full", max_iter=1)
    gm.record_partitions(partition_statistics(Xm, gm.params_, halves, w))
    gm.refresh(Xm, {0: halves[0]}, w)
    np.testing.assert_allclose(gm.partitions_.n_rows, w.sum(), rtol=1e-13)
    assert GaussianMixture.from_state(*gm.get_state()).partitions_.keys == ["0", "1"]


def test_removing_an_unknown_partition_is_an_error(data):
    _, Xm, w = data
    gm = _recorded(Xm, w, "diag", max_iter=2)
    with pytest.raises(InvalidInputError, match=r"cannot remove partition\(s\) \['zz'\]"):
        gm.refresh(Xm, {}, w, remove=["zz"])
