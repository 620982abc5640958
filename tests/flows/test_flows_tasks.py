"""The logic under the tasks, as plain functions: scores, quantiles, synthetic data, compute."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from gmm_stream import GaussianMixture
from flows.compute import dask_compute
from flows.config import LocalClusterCompute, SchedulerCompute, SyntheticConfig, ThreadsCompute, parse_job
from flows.demo import ensure_synthetic, make_synthetic
from flows.exceptions import ClusterConnectionError
from flows.tasks import QUANTILE_LEVELS, _sketch, anomaly_threshold, merge_quantiles, open_data, score
from flows_testing import free_port, small_data


@pytest.fixture(scope="module")
def fitted():
    data = small_data(n=2000, d=3, k=3, seed=2, missing=0.02)
    X = data.X.copy()
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
    assert s.icl >= s.bic
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
    threshold = anomaly_threshold(training, 0.05)
    assert np.mean(finite < threshold) == pytest.approx(0.05, abs=0.002)


def test_merged_sketches_of_large_chunks_are_close_to_exact_quantiles():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(60_000)
    sketches = np.concatenate([_sketch(b) for b in np.array_split(x, 4)])
    got = merge_quantiles(sketches, QUANTILE_LEVELS)
    ranks = np.searchsorted(np.sort(x), got) / x.size  # rank error: 1/4001 per chunk at most
    np.testing.assert_allclose(ranks, QUANTILE_LEVELS, atol=3e-4)


def test_synthetic_data_are_seeded_and_readable_by_the_sources(tmp_path):
    cfg = SyntheticConfig(n_samples=500, n_features=3, n_components=2, missing_fraction=0.05, seed=3)
    a, b = make_synthetic(cfg), make_synthetic(cfg)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.any(np.all(np.isnan(a.X), axis=1))
    for fmt, name in (("zarr", "d.zarr"), ("parquet", "d.parquet")):
        job = parse_job({"source": {"format": fmt, "path": str(tmp_path / name), "selection": {},
                                    "synthetic": cfg.model_dump()},
                         "model": {"n_components": 2}, "output": {"directory": str(tmp_path / "out")}})
        assert ensure_synthetic(job) is True
        assert ensure_synthetic(job) is False  # generated once
        data = open_data(job)
        np.testing.assert_array_equal(data.values, a.X)
        assert list(data["feature"].values) == ["x0", "x1", "x2"]
        assert str(data["sample"].values[0]) == "s000000"


def test_threads_compute_is_the_default_scheduler():
    with dask_compute(ThreadsCompute(num_workers=2)) as info:
        assert not info.distributed and dask.config.get("scheduler") == "threads"
        assert int(da.ones(10, chunks=5).sum().compute()) == 10


def test_local_cluster_compute_starts_and_stops():
    from distributed import default_client

    with dask_compute(LocalClusterCompute(kind="local_cluster", n_workers=1, processes=False,
                                          memory_limit="1GiB")) as info:
        assert info.distributed and info.n_workers == 1
        assert default_client().scheduler.address == info.address
        assert int(da.ones(10, chunks=5).sum().compute()) == 10
    with pytest.raises(ValueError):
        default_client()


def test_unreachable_scheduler_is_one_clear_error():
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterConnectionError, match="cannot reach the Dask scheduler"):
        with dask_compute(SchedulerCompute(kind="scheduler", address=address, timeout=1)):
            pass
