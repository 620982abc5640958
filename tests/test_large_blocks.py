"""Sizes that split the work: chunks longer than the kernel's block, NumPy input longer than
the driver's chunk, with sample weights and missing values, against a brute-force E-step.

The row-by-row reference (tests/reference.py) takes seconds per hundred rows, too slow for
the 10 000 and 132 072 rows these paths need. :func:`pattern_statistics` computes the same
formulas of docs/math.md for every row at once among the rows that share a missingness
pattern (the conditional moments of a pattern are the same for all its rows), and the
first test checks it against the row-by-row reference.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from gmm_stream import GaussianMixture, GaussianParams, _dask, chunk_statistics, m_step
from gmm_stream._dask import NUMPY_CHUNK_ROWS
from gmm_stream._stats import block_rows

import reference
from gmm_testing import COVARIANCE_TYPES, assert_allclose_scaled, init_kwargs, make_mixture, random_params

REG_COVAR = 1e-6


# ------------------------------------------------------------------- brute force by pattern


def pattern_statistics(X, weights, means, covariances, covariance_type, sample_weight=None, center=None):
    """``reference.sufficient_statistics``, vectorised over the rows of each missingness pattern.

    The same dict: N (K,), S1 (K, d) and S2 (K, d, d) about ``center`` (0 = raw moments),
    loglik, n_rows, n_empty and feature_counts.
    """
    X = np.asarray(X, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    n, d = X.shape
    K = means.shape[0]
    cov = reference.full_covariances(covariances, covariance_type, K, d)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    c = np.zeros((K, d)) if center is None else np.asarray(center, dtype=np.float64)
    missing = np.isnan(X)
    patterns, which = np.unique(missing, axis=0, return_inverse=True)
    which = which.reshape(-1)
    groups = [(m, np.flatnonzero(which == p)) for p, m in enumerate(patterns) if not m.all()]
    log_prob = np.full((n, K), np.nan)
    for m, rows in groups:
        o = ~m
        for k in range(K):
            log_prob[rows, k] = np.log(weights[k]) + np.reshape(
                multivariate_normal.logpdf(X[np.ix_(rows, o)], mean=means[k, o], cov=cov[k][np.ix_(o, o)]), -1)
    usable = ~missing.all(axis=1)
    norm = np.zeros(n)
    norm[usable] = logsumexp(log_prob[usable], axis=1)
    resp = np.zeros((n, K))
    resp[usable] = w[usable, None] * np.exp(log_prob[usable] - norm[usable, None])  # w_i r_ik
    S1, S2 = np.zeros((K, d)), np.zeros((K, d, d))
    for m, rows in groups:
        o = ~m
        for k in range(K):
            x_hat = X[rows].copy()
            C = np.zeros((d, d))
            if m.any():
                gain = np.linalg.solve(cov[k][np.ix_(o, o)], cov[k][np.ix_(m, o)].T).T  # S_mo S_oo^-1
                x_hat[:, m] = means[k, m] + (X[np.ix_(rows, o)] - means[k, o]) @ gain.T
                C[np.ix_(m, m)] = cov[k][np.ix_(m, m)] - gain @ cov[k][np.ix_(m, o)].T
            r = resp[rows, k]
            diff = x_hat - c[k]
            S1[k] += r @ diff
            S2[k] += (r[:, None] * diff).T @ diff + r.sum() * C
    return {"N": resp.sum(axis=0), "S1": S1, "S2": S2, "loglik": float(w[usable] @ norm[usable]),
            "n_rows": float(w[usable].sum()), "n_empty": int((~usable).sum()), "feature_counts": (~missing).sum(axis=0)}


def pattern_em_step(X, weights, means, covariances, covariance_type, sample_weight=None):
    """``reference.em_step`` on :func:`pattern_statistics` (two passes: the scatter about the new means)."""
    first = pattern_statistics(X, weights, means, covariances, covariance_type, sample_weight)
    N = first["N"]
    new_means = first["S1"] / N[:, None]
    scatter = pattern_statistics(X, weights, means, covariances, covariance_type, sample_weight, center=new_means)["S2"]
    d = new_means.shape[1]
    full = scatter / N[:, None, None] + REG_COVAR * np.eye(d)
    new_cov = {"full": lambda: full,
               "tied": lambda: scatter.sum(axis=0) / N.sum() + REG_COVAR * np.eye(d),
               "diag": lambda: np.stack([np.diag(c) for c in full]),
               "spherical": lambda: np.stack([np.diag(c).mean() for c in full])}[covariance_type]()
    return N / N.sum(), new_means, new_cov, first["loglik"] / first["n_rows"]


def assert_statistics_equal(stats, expected, covariance_type, rtol):
    diagonal = covariance_type in ("diag", "spherical")
    take = (lambda s2: np.diagonal(s2, axis1=1, axis2=2)) if diagonal else (lambda s2: s2)
    np.testing.assert_allclose(stats.N, expected["N"], rtol=rtol)
    assert_allclose_scaled(stats.S1, expected["S1"], rtol=rtol)
    assert_allclose_scaled(stats.S2, take(expected["S2"]), rtol=rtol)
    np.testing.assert_allclose(stats.loglik, expected["loglik"], rtol=rtol)
    np.testing.assert_allclose(stats.n_rows, expected["n_rows"], rtol=1e-12)
    assert stats.n_empty == expected["n_empty"]
    np.testing.assert_array_equal(stats.feature_counts, expected["feature_counts"])


def assert_em_step_equal(new, expected, rtol):
    weights, means, covariances, _ = expected
    np.testing.assert_allclose(new.weights, weights, rtol=rtol)
    assert_allclose_scaled(new.means, means, rtol=rtol)
    assert_allclose_scaled(new.covariances, covariances, rtol=rtol)


def weighted_incomplete_rows(n, d, K, seed, missing_by_row):
    """Mixture rows with a fraction ``missing_by_row[i]`` of NaN entries in row ``i`` (some rows
    entirely NaN) and weights in [0, 3) of which some are exactly 0."""
    X, *_ = make_mixture(n, d, K, seed=seed, separation=2.5)
    rng = np.random.default_rng(seed + 1)
    X[rng.random((n, d)) < missing_by_row[:, None]] = np.nan
    X[rng.random(n) < 0.01] = np.nan
    weights = rng.uniform(0.0, 3.0, n)
    weights[rng.random(n) < 0.02] = 0.0
    return X, weights


def fit_one_step(X, params, covariance_type, sample_weight):
    # one EM step from the given start: no EM on the initialisation's sample first
    gm = GaussianMixture(len(params[0]), covariance_type=covariance_type, max_iter=1, tol=0.0, reg_covar=REG_COVAR,
                         sample_first=False, **init_kwargs(*params, covariance_type))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # ConvergenceWarning after one iteration
        return gm.fit(X, sample_weight=sample_weight)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_pattern_brute_force_equals_the_row_by_row_reference(covariance_type):
    n = 240
    X, sw = weighted_incomplete_rows(n, 4, 3, seed=40, missing_by_row=np.full(n, 0.3))
    X[:2] = np.nan
    params = random_params(4, 3, covariance_type, seed=41)
    center = params[1] + 0.5
    for got, expected in [
        (pattern_statistics(X, *params, covariance_type, sw, center), reference.sufficient_statistics(
            X, *params, covariance_type, sample_weight=sw, center=center)),
        (pattern_statistics(X, *params, covariance_type), reference.sufficient_statistics(X, *params, covariance_type)),
    ]:
        for key in ("N", "S1", "S2", "loglik", "n_rows"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-12, err_msg=key)
        assert got["n_empty"] == expected["n_empty"] >= 2
        np.testing.assert_array_equal(got["feature_counts"], expected["feature_counts"])
    step = reference.em_step(X, *params, covariance_type, REG_COVAR, sample_weight=sw)
    for got, expected in zip(pattern_em_step(X, *params, covariance_type, sw), step):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


# ----------------------------------------------- (a) one chunk of several kernel blocks

D_BLOCKS, K_BLOCKS = 4, 3
BLOCK = block_rows(K_BLOCKS, D_BLOCKS)


@pytest.fixture(scope="module")
def several_blocks():
    """Two full blocks and a partial one: the first mostly complete (its complete and incomplete
    rows are split), the second mostly incomplete (one part), empty rows at every boundary."""
    n = 2 * BLOCK + 1808
    fraction = np.where(np.arange(n) < BLOCK, 0.08, np.where(np.arange(n) < 2 * BLOCK, 0.45, 0.2))
    X, sw = weighted_incomplete_rows(n, D_BLOCKS, K_BLOCKS, seed=50, missing_by_row=fraction)
    X[[0, BLOCK - 1, BLOCK, 2 * BLOCK - 1, 2 * BLOCK, n - 1]] = np.nan
    return X, sw


def test_the_chunk_spans_several_kernel_blocks(several_blocks):
    X, _ = several_blocks
    assert BLOCK == 4096  # the kernel's largest block, for these K and d
    assert X.shape[0] > 2 * BLOCK


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunk_statistics_over_several_blocks_equal_the_brute_force(several_blocks, covariance_type):
    X, sw = several_blocks
    params = random_params(D_BLOCKS, K_BLOCKS, covariance_type, seed=51)
    stats = chunk_statistics(X, GaussianParams.from_covariances(*params, covariance_type), sample_weight=sw)
    np.testing.assert_array_equal(stats.center, params[1])
    assert_statistics_equal(stats, pattern_statistics(X, *params, covariance_type, sw, stats.center),
                            covariance_type, rtol=1e-10)
    raw1, raw2 = stats.raw_moments()
    raw = pattern_statistics(X, *params, covariance_type, sw)
    assert_allclose_scaled(raw1, raw["S1"], rtol=1e-10)
    assert_allclose_scaled(raw2, raw["S2"] if raw2.ndim == 3 else np.diagonal(raw["S2"], axis1=1, axis2=2),
                           rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_step_over_several_blocks_equals_the_brute_force(several_blocks, covariance_type):
    X, sw = several_blocks
    params = random_params(D_BLOCKS, K_BLOCKS, covariance_type, seed=52)
    expected = pattern_em_step(X, *params, covariance_type, sw)
    stats = chunk_statistics(X, GaussianParams.from_covariances(*params, covariance_type), sample_weight=sw)
    assert_em_step_equal(m_step(stats, reg_covar=REG_COVAR, covariance_type=covariance_type), expected, rtol=1e-10)
    gm = fit_one_step(X, params, covariance_type, sw)
    assert_em_step_equal(gm.params_, expected, rtol=1e-10)
    np.testing.assert_allclose(gm.lower_bounds_, [expected[3]], rtol=1e-10)


# ------------------------------------------- (b) NumPy input longer than the driver's chunk

D_SPLIT, K_SPLIT = 2, 2
N_SPLIT = NUMPY_CHUNK_ROWS + 1000


@pytest.fixture(scope="module")
def split_rows():
    X, sw = weighted_incomplete_rows(N_SPLIT, D_SPLIT, K_SPLIT, seed=60, missing_by_row=np.full(N_SPLIT, 0.15))
    X[[NUMPY_CHUNK_ROWS - 1, NUMPY_CHUNK_ROWS]] = np.nan  # empty rows on both sides of the split
    return X, sw


@pytest.fixture
def chunk_lengths(monkeypatch):
    """The row counts of the chunks the driver hands to the kernel."""
    lengths: list[int] = []

    def counting(X, params, **kw):
        lengths.append(X.shape[0])
        return chunk_statistics(X, params, **kw)

    monkeypatch.setattr(_dask, "chunk_statistics", counting)
    return lengths


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_numpy_input_above_the_split_size_equals_the_brute_force_and_one_dask_chunk(split_rows, chunk_lengths,
                                                                                    covariance_type):
    X, sw = split_rows
    params = random_params(D_SPLIT, K_SPLIT, covariance_type, seed=61)
    gp = GaussianParams.from_covariances(*params, covariance_type)
    stats = _dask.statistics(X, gp, sw)
    assert sorted(chunk_lengths) == [1000, NUMPY_CHUNK_ROWS]  # split in two row views
    chunk_lengths.clear()
    one_chunk = _dask.statistics(da.from_array(X, chunks=(N_SPLIT, -1)), gp, da.from_array(sw, chunks=N_SPLIT))
    assert chunk_lengths == [N_SPLIT]
    expected = pattern_statistics(X, *params, covariance_type, sw, stats.center)
    assert_statistics_equal(stats, expected, covariance_type, rtol=1e-10)
    assert_statistics_equal(one_chunk, expected, covariance_type, rtol=1e-10)
    for name in ("N", "S1", "S2"):  # the same rows in two chunks or one: rounding apart at most
        assert_allclose_scaled(getattr(stats, name), getattr(one_chunk, name), rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(stats.loglik, one_chunk.loglik, rtol=1e-12)

    expected_step = pattern_em_step(X, *params, covariance_type, sw)
    fitted = fit_one_step(X, params, covariance_type, sw)
    assert_em_step_equal(fitted.params_, expected_step, rtol=1e-10)
    np.testing.assert_allclose(fitted.lower_bounds_, [expected_step[3]], rtol=1e-10)
    on_dask = fit_one_step(da.from_array(X, chunks=(N_SPLIT, -1)), params, covariance_type,
                           da.from_array(sw, chunks=N_SPLIT))
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        np.testing.assert_allclose(getattr(fitted, name), getattr(on_dask, name), rtol=1e-12, atol=0, err_msg=name)
    assert fitted.n_empty_rows_ == on_dask.n_empty_rows_ == expected["n_empty"]
