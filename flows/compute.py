"""Where the Dask work of a job runs: threads in-process, a LocalCluster, or an existing scheduler."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dask

from flows.config import LocalClusterCompute, SchedulerCompute, ThreadsCompute
from flows.exceptions import ClusterConnectionError

__all__ = ["ComputeInfo", "dask_compute"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComputeInfo:
    """What :func:`dask_compute` opened.

    Attributes
    ----------
    kind : str
        ``threads``, ``local_cluster`` or ``scheduler``.
    distributed : bool
        True when a ``distributed.Client`` is the default scheduler (fits may run concurrently).
    address : str or None
        The scheduler address, for distributed compute.
    n_workers : int
        Dask workers (threads for ``threads``).
    """

    kind: str
    distributed: bool
    address: str | None
    n_workers: int

    def describe(self) -> str:
        if self.kind == "threads":
            return f"threaded scheduler in-process ({self.n_workers} threads)"
        return f"{self.kind} {self.address} ({self.n_workers} workers)"


@contextmanager
def dask_compute(config: ThreadsCompute | LocalClusterCompute | SchedulerCompute) -> Iterator[ComputeInfo]:
    """Make the job's compute the default Dask scheduler for the block; close what was opened.

    - ``threads`` (the default): Dask's threaded scheduler in this process;
    - ``local_cluster``: a ``distributed.LocalCluster(n_workers, threads_per_worker,
      memory_limit, dashboard_address=None)`` started here and stopped on exit;
    - ``scheduler``: a ``distributed.Client`` to an existing scheduler (closed on exit;
      the cluster itself keeps running).

    Raises
    ------
    ClusterConnectionError
        If the scheduler cannot be reached within ``timeout`` seconds.
    """
    if isinstance(config, ThreadsCompute):
        workers = config.num_workers or os.cpu_count() or 1
        with dask.config.set(scheduler="threads", num_workers=workers):
            yield ComputeInfo("threads", False, None, workers)
        return

    from distributed import Client, LocalCluster

    if isinstance(config, LocalClusterCompute):
        cluster = LocalCluster(
            n_workers=config.n_workers,
            threads_per_worker=config.threads_per_worker,
            memory_limit=config.memory_limit,
            processes=config.processes,
            dashboard_address=None,
        )
        try:
            with Client(cluster) as client:
                logger.info("started a LocalCluster at %s", cluster.scheduler_address)
                workers = len(client.scheduler_info()["workers"])
                yield ComputeInfo("local_cluster", True, cluster.scheduler_address, workers)
        finally:
            cluster.close()
        return

    try:
        client = Client(config.address, timeout=config.timeout)
    except (OSError, TimeoutError) as err:
        raise ClusterConnectionError(
            f"cannot reach the Dask scheduler at {config.address} within {config.timeout:g} s ({err}); "
            "check compute.address and that the scheduler is running"
        ) from None
    try:
        workers = len(client.scheduler_info()["workers"])
        logger.info("connected to the Dask scheduler at %s (%d workers)", config.address, workers)
        yield ComputeInfo("scheduler", True, config.address, workers)
    finally:
        client.close()
