"""The logic under the tasks, as plain functions: synthetic data, compute."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from flows.compute import dask_compute
from flows.config import LocalClusterCompute, SchedulerCompute, SyntheticConfig, ThreadsCompute, parse_job
from flows.demo import ensure_synthetic, make_synthetic
from flows.exceptions import ClusterConnectionError
from flows.tasks import open_dataset

from flows_testing import free_port


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
        data = open_dataset(job).data
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
    with (pytest.raises(ClusterConnectionError, match="cannot reach the Dask scheduler"),
          dask_compute(SchedulerCompute(kind="scheduler", address=address, timeout=1))):
        pass
