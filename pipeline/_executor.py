"""Where the chunk writes of a sink run: Dask's threads in this process, or the workers of a
``distributed`` cluster when a client is the active scheduler."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import dask
import dask.base

from gmm_stream import one_blas_thread_per_dask_thread

__all__ = ["active_client", "private_threads", "compute_all"]


def active_client() -> Any | None:
    """The ``distributed.Client`` Dask would compute on (``dask.compute``'s default), or None."""
    scheduler = dask.base.get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    if owner is None or type(owner).__module__.split(".")[0] != "distributed":
        return None
    return owner


@contextmanager
def private_threads(num_workers: int | None = None) -> Iterator[None]:
    """Run Dask computations in the block on a private thread pool, joined on exit.

    When a chunk fails, Dask raises at once while other chunks may still be writing;
    joining the pool (pending chunks cancelled) before the temporary output is removed
    guarantees that no writer recreates files after the cleanup. While the block runs,
    BLAS libraries are limited to one thread each (process-wide, via threadpoolctl), so
    that ``num_workers`` chunks run in parallel without oversubscribing the cores.
    """
    workers = num_workers or dask.config.get("num_workers", None) or os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers, thread_name_prefix="pipeline-sink")
    try:
        # one BLAS thread per Dask thread: workers x BLAS threads would oversubscribe the cores
        with dask.config.set(scheduler="threads", pool=pool), one_blas_thread_per_dask_thread():
            yield
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def compute_all(writes: Sequence[Any], values: Sequence[Any] = ()) -> list[Any]:
    """Run the chunk ``writes`` and compute ``values`` in one graph; return ``values`` computed.

    Keys the collections share (the read of an input chunk, its E-step) are computed
    once. On a ``distributed`` client the tasks run on its workers, which write their
    chunks themselves; every chunk write is its own future and the call returns only
    when all of them have ended (failed or not), so no worker is still writing when the
    caller cleans up after an error. Otherwise the tasks run on a private thread pool
    (:func:`private_threads`). The graph is not optimised: fusing the tasks of each
    collection would split the shared keys apart and compute them once per collection.
    """
    everything = list(writes) + list(values)
    client = active_client()
    if client is None:
        with private_threads():
            out = dask.compute(*everything, optimize_graph=False)
        return list(out[len(writes):])
    from distributed import wait

    futures = client.compute(everything, optimize_graph=False)
    try:
        wait(futures)
        return list(client.gather(futures[len(writes):] + futures[:len(writes)]))[:len(values)]
    finally:
        client.cancel(futures)
