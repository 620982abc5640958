"""Upper bounds of a job: fixed ones (counts, sizes, durations) and ones from this machine.

A job is checked before anything runs, so the values it can hold are bounded: the fixed
``MAX_*`` bounds below, threads at most :data:`THREADS_PER_CORE` per core of this machine, and
byte sizes against its physical memory (read when the job is validated).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import AfterValidator, Field

__all__ = [
    "MAX_ROWS", "MAX_COMPONENTS", "MAX_FEATURES", "MAX_ITER", "MAX_N_INIT", "MAX_GRID", "MAX_TIMEOUT",
    "MAX_PLOT_POINTS", "MAX_CHECKPOINT_EVERY", "MAX_SYNTHETIC_GRID", "MAX_SEED", "THREADS_PER_CORE",
    "ByteSize", "MemoryLimit",
]

MAX_ROWS = 10**9  #: rows per chunk, rows held by the initialisation, synthetic rows
MAX_COMPONENTS = 10**5  #: mixture components (model, selection grid, synthetic data)
MAX_FEATURES = 10**5  #: synthetic features, PCA axes
MAX_ITER = 10**6  #: EM iterations
MAX_N_INIT = 1000  #: EM restarts
MAX_GRID = 1000  #: values of one selection-grid axis
MAX_TIMEOUT = 3600.0  #: seconds to wait for a Dask scheduler
MAX_PLOT_POINTS = 10**6  #: rows in the report's scatter plot
MAX_CHECKPOINT_EVERY = 10**6  #: EM iterations between checkpoints
MAX_SYNTHETIC_GRID = 10**6  #: candidate centres of synthetic data, ceil(k ** (1 / d)) ** d
MAX_SEED = 2**32 - 1  #: numpy's RandomState accepts seeds below 2**32
THREADS_PER_CORE = 4  #: Dask threads (all workers together) per core of this machine


# --------------------------------------------------------------------- byte sizes


def _parse_size(value: int | str) -> int:
    """The number of bytes of a size already checked by :func:`_byte_size` (not ``'auto'``)."""
    from dask.utils import parse_bytes

    return int(parse_bytes(value)) if isinstance(value, str) else int(value)


def _byte_size(value: Any, *, allow_zero: bool = False) -> Any:
    from dask.utils import parse_bytes

    if isinstance(value, bool):
        raise ValueError(f"must be a size like '2GiB' or a number of bytes, got {value!r}")
    if isinstance(value, str) and value != "auto":
        try:
            size = parse_bytes(value)
        except (ValueError, TypeError, OverflowError):
            raise ValueError(f"must be a size like '2GiB', '512MB' or a number of bytes, got {value!r}") from None
        if size < 0 or (size == 0 and not allow_zero):
            raise ValueError(f"must be positive, got {value!r}")
    if isinstance(value, int) and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f"must be positive, got {value!r}")
    return value


def _memory_size(value: Any) -> Any:
    return _byte_size(value, allow_zero=True)


_SizeValue = Annotated[int, Field(strict=True)] | Annotated[str, Field(strict=True)]
ByteSize = Annotated[_SizeValue, AfterValidator(_byte_size)]
#: A byte size, ``'auto'``, or 0 (Dask's "no limit").
MemoryLimit = Annotated[_SizeValue, AfterValidator(_memory_size)]


# ------------------------------------------------------------------- this machine


def _cpu_count() -> int:
    """Cores of this machine (1 when the OS does not say)."""
    return os.cpu_count() or 1


def _physical_memory() -> int:
    """Bytes of physical memory of this machine."""
    import psutil

    return int(psutil.virtual_memory().total)


def _bytes(n: float) -> str:
    from dask.utils import format_bytes

    return format_bytes(int(n))


def _max_threads() -> int:
    return THREADS_PER_CORE * _cpu_count()
