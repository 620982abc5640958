"""Sinks compute on a private thread pool (see :func:`private_threads`); atomic writes
come from :mod:`pipeline.atomic`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import dask
from threadpoolctl import threadpool_limits

from pipeline.atomic import atomic_output, remove_path

__all__ = ["atomic_output", "remove_path", "private_threads"]


@contextmanager
def private_threads(num_workers: int | None = None) -> Iterator[None]:
    """Run Dask computations in the block on a private thread pool, joined on exit.

    When a chunk fails, Dask raises at once while other chunks may still be writing;
    joining the pool (pending chunks cancelled) before the temporary output is removed
    guarantees that no writer recreates files after the cleanup. This also means a
    sink computes in the calling process (threads) even if a distributed client is
    active. While the block runs, BLAS libraries are limited to one thread each
    (process-wide, via threadpoolctl), so that ``num_workers`` chunks run in parallel
    without oversubscribing the cores.
    """
    workers = num_workers or dask.config.get("num_workers", None) or os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers, thread_name_prefix="pipeline-sink")
    try:
        # one BLAS thread per Dask thread: workers x BLAS threads would oversubscribe the cores
        with dask.config.set(scheduler="threads", pool=pool), threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
