"""Running the chunk kernels over a Dask array.

One EM iteration is one graph: ``chunk_statistics`` on every row chunk, a tree of
``+`` to merge the partial statistics, and nothing else; the M-step runs in the client on
the merged (small) result. The parameters enter the graph once, as a single key, so a
distributed scheduler ships them to each worker once and never moves the data: the
workers read their chunks themselves (from Zarr, Parquet, ...).
"""

from __future__ import annotations

import contextlib
import operator
from functools import reduce

import dask
import dask.array as da
import dask.threaded
import numpy as np
from threadpoolctl import threadpool_limits

from ._params import GaussianParams
from ._stats import SufficientStats, chunk_statistics

#: rows per chunk when a NumPy array is split to run on Dask's threads
NUMPY_CHUNK_ROWS = 131072
#: how many partial results one reduction task merges
REDUCE_FAN_IN = 8


def as_dask(X) -> da.Array:
    """A Dask view of ``X`` with every feature in one chunk."""
    if not isinstance(X, da.Array):
        rows = min(NUMPY_CHUNK_ROWS, max(X.shape[0], 1))
        return da.from_array(X, chunks=(rows, -1))
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    return X


def _sum(*parts: SufficientStats) -> SufficientStats:
    return reduce(operator.add, parts)


def _tree_sum(parts: list):
    while len(parts) > 1:
        parts = [
            dask.delayed(_sum, pure=True)(*parts[i : i + REDUCE_FAN_IN])
            for i in range(0, len(parts), REDUCE_FAN_IN)
        ]
    return parts[0]


def statistics(X, params: GaussianParams, sample_weight=None) -> SufficientStats:
    """Sufficient statistics of all rows of ``X`` under ``params``.

    Parameters
    ----------
    X : ndarray or dask.array.Array of shape (n_samples, n_features)
    params : GaussianParams
    sample_weight : ndarray or dask.array.Array of shape (n_samples,), optional

    Returns
    -------
    SufficientStats
        Computed on the active Dask scheduler (threads by default, or a
        ``distributed.Client`` the caller opened).
    """
    if not isinstance(X, da.Array) and X.shape[0] <= NUMPY_CHUNK_ROWS:
        w = None if sample_weight is None else np.asarray(sample_weight)
        return chunk_statistics(X, params, sample_weight=w)
    if isinstance(X, da.Array):
        X = as_dask(X)
        blocks = X.to_delayed().ravel()
        chunks = X.chunks[0]
    else:  # row views of the array itself: no copy of the data, whatever its size
        starts = range(0, X.shape[0], NUMPY_CHUNK_ROWS)
        blocks = [X[s : s + NUMPY_CHUNK_ROWS] for s in starts]
        chunks = tuple(b.shape[0] for b in blocks)
    if sample_weight is None:
        weights = [None] * len(blocks)
    else:
        weights = da.asarray(sample_weight).rechunk((chunks,)).to_delayed().ravel()
    p = dask.delayed(params, traverse=False)
    parts = [dask.delayed(chunk_statistics, pure=True)(b, p, sample_weight=w) for b, w in zip(blocks, weights)]
    total = _tree_sum(parts)
    with one_blas_thread_per_dask_thread([total]):
        (total,) = dask.compute(total)
    return total


def one_blas_thread_per_dask_thread(collections=None):
    """A context in which BLAS runs one thread per Dask thread, when Dask's threaded
    scheduler runs the chunks (of ``collections``, or the default scheduler).

    On the threaded scheduler the chunks already run in parallel: a multi-threaded BLAS
    inside each of them oversubscribes the cores (measured 3-10x slower on 2 cores under
    load). Distributed workers get one BLAS thread from their nanny already, and the
    synchronous scheduler runs one chunk at a time: both keep their BLAS threads. This is
    the one place gmm-stream limits BLAS threads (the EM passes, the preprocessing
    passes and the sinks' writes all go through it).
    """
    collections = None if collections is None else list(collections)
    if dask.base.get_scheduler(collections=collections) is dask.threaded.get:
        return threadpool_limits(limits=1, user_api="blas")
    return contextlib.nullcontext()


def map_rows(X: da.Array, func, params: GaussianParams, n_columns: int | None, dtype) -> da.Array:
    """Lazily apply ``func(block, params)`` to each row chunk.

    ``n_columns`` None means ``func`` returns one value per row.
    """
    p = dask.delayed(params, traverse=False)
    if n_columns is None:
        return da.map_blocks(func, X, p, drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype))
    return da.map_blocks(func, X, p, chunks=(X.chunks[0], (n_columns,)), dtype=dtype, meta=np.empty((0, 0), dtype))


def lazy_partition_statistics(X, params: GaussianParams, partitions, sample_weight=None) -> dict:
    """One lazy (``dask.delayed``) :class:`SufficientStats` per partition of the rows of ``X``.

    Parameters
    ----------
    X : ndarray or dask.array.Array of shape (n_samples, n_features)
    params : GaussianParams
    partitions : mapping of str to (start, stop)
        Row ranges of ``X``, by key.
    sample_weight : ndarray or dask.array.Array of shape (n_samples,), optional

    Returns
    -------
    dict of str to Delayed
        To compute with others in one graph (a chunk shared by two partitions is read once).
    """
    X = as_dask(X)
    w = None if sample_weight is None else da.asarray(sample_weight).rechunk((X.chunks[0],))
    p = dask.delayed(params, traverse=False)
    out = {}
    for key, (start, stop) in partitions.items():
        rows = X[int(start):int(stop)]
        if rows.shape[0] == 0:
            diagonal = params.covariance_type in ("diag", "spherical")
            out[key] = dask.delayed(SufficientStats.zeros(np.asarray(params.means, np.float64), diagonal))
            continue
        blocks = rows.to_delayed().ravel()
        weights = [None] * len(blocks) if w is None else w[int(start):int(stop)].to_delayed().ravel()
        parts = [dask.delayed(chunk_statistics, pure=True)(b, p, sample_weight=wb) for b, wb in zip(blocks, weights)]
        out[key] = _tree_sum(parts)
    return out


def partition_statistics(X, params: GaussianParams, partitions, sample_weight=None) -> dict[str, SufficientStats]:
    """:func:`lazy_partition_statistics`, computed in one graph on the active scheduler."""
    lazy = lazy_partition_statistics(X, params, partitions, sample_weight)
    if not lazy:
        return {}
    values = list(lazy.values())
    with one_blas_thread_per_dask_thread(values):
        computed = dask.compute(*values)
    return dict(zip(lazy, computed))
