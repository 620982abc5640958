"""The E-step's fast paths against the brute force, at the shapes and block sizes they specialise on.

The 'full' and 'tied' kernels multiply every block by the wide ``[L_1 … L_K]`` (or the one
``L``), fold the Mahalanobis terms and the weighted, centred rows into compiled loops, and,
for rows with missing entries, keep each row's packed inverse factor of ``P_mm`` from the
E-step for the statistics. Each of those depends on the block length (``block_rows``: 4096
rows at small K·d, 512 at large), on d (one feature; d = 50 as in the benchmarks), on how
many entries a row misses (0 to d − 1, so the packed factors have every size) and on the
input's dtype.
Here every combination is compared with ``pattern_statistics`` (SciPy densities and
explicit conditional moments, no precision algebra), over one and a half blocks plus a few
rows, with zero weights and rows with no observed value.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_large_blocks import assert_statistics_equal, pattern_statistics

from gmm_stream import GaussianParams, chunk_statistics, estimate_weighted_log_prob
from gmm_stream._stats import block_rows

from gmm_testing import assert_allclose_scaled, make_mixture, random_params

SHAPES = [(1, 1), (3, 2), (10, 5), (50, 20)]  # (d, K)
MISSING = ["none", "mcar", "every_count"]


def rows_for(d: int, K: int, missing: str, seed: int):
    """One and a half kernel blocks plus 7 rows, with weights (some 0) and the missing pattern."""
    block = block_rows(K, d)
    n = block + block // 2 + 7
    X, *_ = make_mixture(n, d, K, seed=seed, separation=2.5)
    rng = np.random.default_rng(seed + 1)
    if missing == "mcar":
        X[rng.random(X.shape) < 0.1] = np.nan
    elif missing == "every_count":  # row i misses i mod d entries, at random places
        for i in range(n):
            X[i, rng.permutation(d)[: i % d]] = np.nan
    if missing != "none":
        X[[0, block - 1, block, n - 1]] = np.nan  # no observed value, at the block boundaries
    weights = rng.uniform(0.0, 2.0, n)
    weights[rng.random(n) < 0.05] = 0.0
    return X, weights, block


CASES = [(d, K, missing) for d, K in SHAPES for missing in MISSING if d > 1 or missing == "none"]


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize(("d", "K", "missing"), CASES)
def test_fast_path_equals_the_brute_force(d, K, missing, covariance_type):
    X, sw, block = rows_for(d, K, missing, seed=70 + d + K)
    assert X.shape[0] > block  # the chunk spans blocks, the last one partial
    params = random_params(d, K, covariance_type, seed=71 + d)
    gp = GaussianParams.from_covariances(*params, covariance_type)
    stats = chunk_statistics(X, gp, sample_weight=sw)
    expected = pattern_statistics(X, *params, covariance_type, sw, stats.center)
    assert_statistics_equal(stats, expected, covariance_type, rtol=1e-9)
    assert_allclose_scaled(stats.S2, stats.S2.transpose(0, 2, 1), rtol=1e-14)  # symmetric to rounding

    # the log-probabilities, through the same kernels: every row without an observed value,
    # and the rows about the first block boundary and at the end (a row-by-row reference)
    logp = estimate_weighted_log_prob(X, gp)
    usable = ~np.isnan(X).all(axis=1)
    assert np.isnan(logp[~usable]).all()
    rows = np.intersect1d(np.r_[:40, block - 40 : block + 40, X.shape[0] - 40 : X.shape[0]], np.flatnonzero(usable))
    reference = _reference_log_prob(X[rows], *params, covariance_type)
    np.testing.assert_allclose(logp[rows], reference, rtol=1e-10, atol=1e-10)

    # float32 input: the GEMMs and the weighted rows in float32, the sums in float64
    X32 = X.astype(np.float32)
    stats32 = chunk_statistics(X32, gp, sample_weight=sw)
    expected32 = pattern_statistics(X32.astype(np.float64), *params, covariance_type, sw, stats32.center)
    np.testing.assert_allclose(stats32.N, expected32["N"], rtol=1e-4, atol=1e-6 * sw.sum())
    assert_allclose_scaled(stats32.S1, expected32["S1"], rtol=1e-4)
    assert_allclose_scaled(stats32.S2, expected32["S2"], rtol=1e-4)
    np.testing.assert_allclose(stats32.loglik, expected32["loglik"], rtol=1e-5)


def _reference_log_prob(X, weights, means, covariances, covariance_type):
    from scipy.stats import multivariate_normal

    from reference import full_covariances

    K, d = means.shape
    cov = full_covariances(covariances, covariance_type, K, d)
    out = np.empty((X.shape[0], K))
    for i, x in enumerate(X):
        o = ~np.isnan(x)
        for k in range(K):
            out[i, k] = np.log(weights[k]) + multivariate_normal.logpdf(x[o], means[k, o], cov[k][np.ix_(o, o)])
    return out

