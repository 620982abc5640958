"""A fit job reads its data once per purpose: counted on the chunk reads of a real Zarr store.

A fit job with standardize + PCA and two sinks reads every chunk of the input at most
``n_iter + 3`` times: once for the preprocessing (moments and cross-products together),
once for the initial sample, once per EM iteration, and once for the pass that writes
both sinks and gathers the scores.
"""

from __future__ import annotations

import collections
import re
import threading

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
import zarr.storage

from flows.fit import fit_flow

from flows_testing import small_data, write_job

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(300)]

N_ROWS, CHUNK = 12_000, 1_500


class ChunkReads:
    """Counts the reads of each chunk key of one array of a local Zarr store (LocalStore.get)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: str, array: str) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        pattern = re.compile(rf"^{re.escape(array)}/c/")
        original = zarr.storage.LocalStore.get
        root = str(store)

        async def get(store_self, key, prototype=None, byte_range=None):
            if str(store_self.root) == root and pattern.match(key):
                with self._lock:
                    self.counts[key] += 1
            return await original(store_self, key, prototype, byte_range)

        monkeypatch.setattr(zarr.storage.LocalStore, "get", get)

    def passes(self, n_chunks: int) -> tuple[int, float]:
        """(most reads of one chunk, total reads / number of chunks)."""
        return max(self.counts.values(), default=0), sum(self.counts.values()) / n_chunks


def _input_store(tmp_path) -> tuple[str, np.ndarray]:
    data = small_data(n=N_ROWS, d=6, k=3, seed=4, missing=0.03)
    path = tmp_path / "cells.zarr"
    group = zarr.open_group(str(path), mode="w-")
    X = group.create_array("X", shape=data.X.shape, chunks=(CHUNK, data.X.shape[1]), dtype="float64")
    X[:] = data.X
    return str(path), data.X


def test_fit_job_reads_each_chunk_at_most_n_iter_plus_3_times(tmp_path, monkeypatch):
    store, X = _input_store(tmp_path)
    job = write_job(tmp_path / "job.yaml", {
        "flow": "fit",
        "source": {"format": "zarr", "path": store, "selection": {"array": "X"}},
        "preprocessing": ["standardize", {"name": "pca", "n_components": 4}],
        "model": {"n_components": 3, "covariance_type": "full", "max_iter": 50, "tol": 1e-4,
                  "init_max_samples": 2000},
        "output": {"directory": str(tmp_path / "out"),
                   "sinks": [{"format": "zarr", "path": "predictions.zarr"},
                             {"format": "parquet", "path": "predictions.parquet"}]},
        "compute": {"kind": "threads", "num_workers": 2},
        "report": {"plots": False, "artifacts": False},
    })
    reads = ChunkReads(monkeypatch, store, "X")
    summary = fit_flow(str(job))
    n_iter = int(summary["n_iter"])
    n_chunks = N_ROWS // CHUNK
    most, mean = reads.passes(n_chunks)
    assert len(reads.counts) == n_chunks  # every chunk was read
    print(f"passes: most {most}, mean {mean:.2f}, n_iter {n_iter}")
    assert most <= n_iter + 3 and mean <= n_iter + 3, (most, mean, n_iter)
    assert most >= n_iter + 1  # the count sees the EM passes: it can fail
    # both sinks are complete, from that one pass
    z = xr.open_zarr(tmp_path / "out" / "predictions.zarr")
    p = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    np.testing.assert_array_equal(z["label"].values, p["label"].to_numpy())
    assert z["label"].dtype == np.int64 and p["label"].dtype == np.int64
