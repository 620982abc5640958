"""Row-chunk sizing shared by every source: by rows or by bytes, features in one chunk."""

from __future__ import annotations

from dask.utils import parse_bytes

from pipeline.exceptions import ChunkSizeError

__all__ = ["DEFAULT_CHUNK_BYTES", "rows_per_chunk", "row_chunks"]

#: Default target size of one row chunk, in bytes (128 MiB).
DEFAULT_CHUNK_BYTES: int = 128 * 2**20


def _as_bytes(chunk_bytes: int | str) -> int:
    value = parse_bytes(chunk_bytes) if isinstance(chunk_bytes, str) else int(chunk_bytes)
    if value <= 0:
        raise ChunkSizeError(
            f"chunk_bytes must be positive, got {chunk_bytes!r}; pass e.g. 134217728 or '128MiB'"
        )
    return value


def rows_per_chunk(
    n_rows: int,
    n_features: int,
    itemsize: int,
    *,
    chunk_rows: int | None = None,
    chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
    multiple_of: int = 1,
) -> int:
    """Number of rows in one chunk.

    Parameters
    ----------
    n_rows, n_features : int
        Shape of the (selected) matrix.
    itemsize : int
        Bytes per element of the array as it lands in memory (after densifying).
    chunk_rows : int, optional
        Rows per chunk; when given it wins over ``chunk_bytes`` and is used as is.
    chunk_bytes : int or str, default 128 MiB
        Target bytes per chunk (``'64MiB'`` style strings accepted).
    multiple_of : int, default 1
        Storage chunk length along rows; a byte-derived size is rounded down to a
        multiple of it (but never below it) so that no stored chunk is read twice.

    Returns
    -------
    int
        Rows per chunk, between 1 and ``max(n_rows, 1)``.
    """
    if chunk_rows is not None:
        if int(chunk_rows) <= 0:
            raise ChunkSizeError(f"chunk_rows must be positive, got {chunk_rows!r}")
        return max(1, min(int(chunk_rows), max(n_rows, 1)))
    row_bytes = max(1, n_features * itemsize)
    rows = max(1, _as_bytes(chunk_bytes) // row_bytes)
    step = max(1, int(multiple_of))
    if rows >= step:
        rows -= rows % step
    else:
        rows = step
    return max(1, min(rows, max(n_rows, 1)))


def row_chunks(n_rows: int, rows: int) -> tuple[int, ...]:
    """Chunk lengths along rows: ``rows`` each, the last one shorter.

    Returns ``(0,)`` for an empty axis, as Dask does.
    """
    if n_rows == 0:
        return (0,)
    full, rest = divmod(n_rows, rows)
    return (rows,) * full + ((rest,) if rest else ())
