"""Run a fit job on a Dask cluster and measure this (the flow's) process: driven by
``test_flows_services.py::test_on_a_cluster_the_workers_write_the_predictions``.

Usage: ``python cluster_write_driver.py JOB.yaml``; prints one JSON line: the flow's peak
RSS above its level before the flow started (sampled every 10 ms; the imports and the
compiled E-step kernels, which numba loads on first use, are in that level: fixed costs, not
results), and the bytes this
process read and wrote through any file descriptor while the flow ran (``rchar`` and
``wchar`` of ``/proc/self/io``: sockets, pipes and files together, so an upper bound
of its network traffic).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import distributed  # noqa: F401 - imported before the baseline, as the flow imports it
import numpy as np
import psutil
import pyarrow.parquet  # noqa: F401
import zarr  # noqa: F401

from flows.fit import fit_flow
from gmm_stream import GaussianParams, chunk_statistics


def load_kernels() -> None:
    """Call the E-step once per input dtype, with and without a missing value, so that numba
    loads its compiled kernels (a fixed cost, like an import) before the baseline."""
    params = GaussianParams.from_covariances(np.ones(1), np.zeros((1, 2)), np.eye(2)[None], "full")
    for dtype in (np.float64, np.float32):
        chunk_statistics(np.array([[0.0, 1.0], [np.nan, 2.0]], dtype=dtype), params)
        chunk_statistics(np.array([[0.0, 1.0], [1.0, 2.0]], dtype=dtype), params)


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as fh:
        return {k: int(v) for k, v in (line.split(":") for line in fh)}


def main(job: str) -> None:
    load_kernels()
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    timeline: dict[int, int] = {}  # second of the flow -> peak RSS above the baseline in it
    done = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while not done.is_set():
            rss = process.memory_info().rss
            peak[0] = max(peak[0], rss)
            second = int(time.monotonic() - start)
            timeline[second] = max(timeline.get(second, 0), rss - baseline)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    before = io_counters()
    sampler.start()
    summary = fit_flow(job)
    done.set()
    sampler.join()
    after = io_counters()
    print(json.dumps({"rss_increase": peak[0] - baseline, "rchar": after["rchar"] - before["rchar"],
                      "wchar": after["wchar"] - before["wchar"], "n_iter": summary["n_iter"],
                      "rows": summary.get("rows"), "timeline": {k: round(v / 2**20, 1) for k, v in timeline.items()}}))


if __name__ == "__main__":
    main(sys.argv[1])
