"""Scores of a fitted mixture (pipeline.scoring) against the estimator and brute force."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from gmm_stream import GaussianMixture
from pipeline.scoring import QUANTILE_LEVELS, _sketch, merge_quantiles, quantile_at, score


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(2)
    centres = 8.0 * rng.standard_normal((3, 3))
    X = centres[rng.integers(0, 3, 2000)] + rng.standard_normal((2000, 3))
    X[rng.random(X.shape) < 0.02] = np.nan
    X[5] = np.nan  # one row with no observed value
    gm = GaussianMixture(3, random_state=0).fit(X)
    Z = xr.DataArray(da.from_array(X, chunks=(300, -1)), dims=("sample", "feature"))
    return gm, X, Z


def test_scores_against_the_estimator_and_a_brute_force_entropy(fitted):
    gm, X, Z = fitted
    s = score(gm, Z, max_points=500)
    np.testing.assert_allclose(s.bic, gm.bic(X), rtol=1e-10)
    np.testing.assert_allclose(s.aic, gm.aic(X), rtol=1e-10)
    usable = ~np.all(np.isnan(X), axis=1)
    r = gm.predict_proba(X[usable])
    entropy = -np.sum(np.where(r > 0, r * np.log(np.where(r > 0, r, 1)), 0))
    # proba pass through the float32 results of the pipeline: entropy to ~1e-6 relative
    np.testing.assert_allclose(s.entropy, entropy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.icl, gm.bic(X) + 2 * entropy, rtol=1e-9)
    labels = gm.predict(X)
    assert s.sizes == [int(np.sum(labels == k)) for k in range(3)] and s.n_empty == 1
    assert s.n_rows == usable.sum() and s.sample_X.shape == (500, 3) and s.sample_labels.shape == (500,)


def test_log_density_quantiles_and_anomalies(fitted):
    gm, X, Z = fitted
    s = score(gm, Z, threshold=-8.0)
    logd = gm.score_samples(X)
    finite = logd[~np.isnan(logd)]
    # chunks of 300 rows are below the sketch size: the quantiles are exact (mid-rank interpolation)
    for q in (0.01, 0.1, 0.5, 0.9):
        lo, hi = np.quantile(finite, [max(q - 1e-3, 0), min(q + 1e-3, 1)])
        assert lo - 1e-9 <= np.interp(q, s.quantile_levels, s.quantiles) <= hi + 1e-9
    assert s.n_anomalies == int(np.sum(finite < -8.0))
    training = {"logdens_quantiles": {"levels": s.quantile_levels, "values": s.quantiles}}
    threshold = quantile_at(training["logdens_quantiles"], 0.05)
    assert np.mean(finite < threshold) == pytest.approx(0.05, abs=0.002)


def test_merged_sketches_of_large_chunks_are_close_to_exact_quantiles():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(60_000)
    sketches = np.concatenate([_sketch(b) for b in np.array_split(x, 4)])
    got = merge_quantiles(sketches, QUANTILE_LEVELS)
    ranks = np.searchsorted(np.sort(x), got) / x.size  # rank error: 1/4001 per chunk at most
    np.testing.assert_allclose(ranks, QUANTILE_LEVELS, atol=3e-4)


