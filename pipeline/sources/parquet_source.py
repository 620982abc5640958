"""Parquet source: a file, a directory of files, or a glob, read per row group."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xarray as xr
from fsspec.implementations.local import LocalFileSystem

from pipeline._chunks import DEFAULT_CHUNK_BYTES, row_chunks
from pipeline._paths import modification_time
from pipeline.exceptions import SelectionError, SourceDtypeError, SourceFormatError, SourceNotFoundError
from pipeline.sources.base import Source

__all__ = ["ParquetSource"]

logger = logging.getLogger(__name__)

_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class _Piece:
    """Rows ``start:stop`` of row group ``row_group`` of file ``path``."""

    path: str
    row_group: int
    start: int
    stop: int


def _is_numeric(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_null(type_)


def _column_dtype(type_: pa.DataType) -> np.dtype[Any]:
    if pa.types.is_null(type_):
        return np.dtype(np.float64)
    return np.dtype(type_.to_pandas_dtype())


def _to_numpy(column: pa.ChunkedArray | pa.Array, dtype: np.dtype[Any]) -> np.ndarray:
    """A numeric Arrow column as a NumPy array of ``dtype``; nulls become NaN."""
    target = pa.float32() if dtype == np.float32 else pa.float64()
    return np.asarray(pc.cast(column, target, safe=False).to_numpy(zero_copy_only=False), dtype=dtype)


def _plan(row_groups: Sequence[tuple[str, int, int]], chunks: Sequence[int]) -> list[list[_Piece]]:
    """Cut the row groups ``(path, index, n_rows)`` into the pieces of each row chunk."""
    plan: list[list[_Piece]] = []
    queue = [(p, g, 0, n) for p, g, n in row_groups if n > 0]
    q = 0
    for length in chunks:
        pieces: list[_Piece] = []
        need = length
        while need > 0:
            path, group, start, stop = queue[q]
            take = min(need, stop - start)
            pieces.append(_Piece(path, group, start, start + take))
            need -= take
            if start + take == stop:
                q += 1
            else:
                queue[q] = (path, group, start + take, stop)
        plan.append(pieces)
    return plan


@contextmanager
def _open(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[pq.ParquetFile]:
    """A ParquetFile, closed on exit; local files through Arrow's own reader, others through fsspec."""
    if isinstance(fs, LocalFileSystem):
        with pq.ParquetFile(path) as parquet:
            yield parquet
        return
    with fs.open(path, "rb") as handle, pq.ParquetFile(handle) as parquet:
        yield parquet


def _read_pieces(fs: fsspec.AbstractFileSystem, pieces: Sequence[_Piece], columns: Sequence[str]) -> pa.Table:
    """Read the pieces of one chunk (only ``columns``), opening each file once."""
    tables: list[pa.Table] = []
    by_file: dict[str, list[_Piece]] = {}
    for piece in pieces:
        by_file.setdefault(piece.path, []).append(piece)
    for path, file_pieces in by_file.items():
        with _open(fs, path) as parquet:
            for piece in file_pieces:
                group = parquet.read_row_group(piece.row_group, columns=list(columns), use_threads=False)
                tables.append(group.slice(piece.start, piece.stop - piece.start))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _read_matrix(fs: fsspec.AbstractFileSystem, pieces: Sequence[_Piece], columns: Sequence[str],
                 dtype: np.dtype[Any]) -> np.ndarray:
    table = _read_pieces(fs, pieces, columns)
    out = np.empty((table.num_rows, len(columns)), dtype=dtype)
    for j, name in enumerate(columns):
        out[:, j] = _to_numpy(table.column(name), dtype)
    return out


def _read_ids(fs: fsspec.AbstractFileSystem, pieces: Sequence[_Piece], column: str) -> np.ndarray:
    ids = _read_pieces(fs, pieces, [column]).column(column)
    return np.asarray(ids.to_numpy(zero_copy_only=False))


class ParquetSource(Source):
    """Numeric columns of a Parquet file, directory of files, or glob.

    The Dask array is built from the Parquet footers (row counts of every row group),
    so every chunk length is known; each chunk reads only the row groups it covers and
    only the selected columns. Nulls become NaN; the dtype is float32 when every
    selected column is float32 (or float16), float64 otherwise.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.parquet`` file, a directory (every file under it whose name starts with
        neither ``.`` nor ``_``, sorted by path), or a glob such as ``"data/*.parquet"``.
        Hive partition columns (``key=value`` directories) are not read.
    columns : sequence of str, optional
        The feature columns, in this order. Default: every integer or floating-point
        column of the first file, in file order, except ``id_column``.
    id_column : str, optional
        Column holding the sample ids (the ``sample`` coordinate).
    chunk_rows, chunk_bytes, storage_options
        See :class:`~pipeline.sources.base.Source`.
    """

    kind = "parquet"

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[str] | None = None,
        *,
        id_column: str | None = None,
        chunk_rows: int | None = None,
        chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(path, chunk_rows=chunk_rows, chunk_bytes=chunk_bytes, storage_options=storage_options)
        if isinstance(columns, str):
            columns = [columns]
        self.columns = None if columns is None else list(columns)
        self.id_column = id_column

    def selection(self) -> dict[str, Any]:
        return {"columns": self.columns, "id_column": self.id_column}

    def _modification_time(self) -> str | None:
        """Latest modification time over the files of the source."""
        fs, _ = self._filesystem()
        times = [modification_time(p if fs.protocol in ("file", ("file", "local")) else fs.unstrip_protocol(p),
                                   self.storage_options) for p in self.files()]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def _filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return fsspec.core.url_to_fs(self.path, **self.storage_options)

    def files(self) -> list[str]:
        """The Parquet files of the source, sorted by path."""
        fs, root = self._filesystem()
        if any(c in root for c in _GLOB_CHARS):
            found = sorted(fs.glob(root))
        elif fs.isdir(root):
            found = sorted(p for p in fs.find(root) if not _hidden(p, root))
        elif fs.exists(root):
            found = [root]
        else:
            found = []
        found = [p for p in found if fs.isfile(p)]
        if not found:
            raise SourceNotFoundError(
                f"parquet source {self.path!r} matches no file; check the path, directory or glob"
            )
        return found

    def open(self) -> xr.DataArray:
        fs, _ = self._filesystem()
        files = self.files()
        row_groups, schema = self._inspect(fs, files)
        columns = self._select(schema, files[0])
        dtype = _matrix_dtype([schema.field(c).type for c in columns])
        n_rows = sum(n for _, _, n in row_groups)
        chunks = row_chunks(n_rows, self._rows(n_rows, len(columns), dtype))
        plan = _plan(row_groups, chunks) if n_rows else []
        data = self._lazy_matrix(fs, plan, chunks, columns, dtype)
        ids = self._lazy_ids(fs, plan, chunks, schema) if self.id_column else None
        return self._data_array(data, sample_ids=ids, feature_names=np.asarray(columns), name=None)

    def _inspect(
        self, fs: fsspec.AbstractFileSystem, files: Sequence[str]
    ) -> tuple[list[tuple[str, int, int]], pa.Schema]:
        """Row counts of every row group of every file, and the first file's schema."""
        row_groups: list[tuple[str, int, int]] = []
        schema: pa.Schema | None = None
        for path in files:
            try:
                with _open(fs, path) as parquet:
                    meta, file_schema = parquet.metadata, parquet.schema_arrow
            except (pa.ArrowInvalid, OSError) as err:
                raise SourceFormatError(
                    f"{path!r} (in parquet source {self.path!r}) is not a readable Parquet file: {err}"
                ) from err
            schema = file_schema if schema is None else schema
            self._check_columns(file_schema, path)
            row_groups += [(path, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        assert schema is not None
        return row_groups, schema

    def _check_columns(self, schema: pa.Schema, path: str) -> None:
        wanted = list(self.columns or []) + ([self.id_column] if self.id_column else [])
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise SelectionError(
                f"column(s) {missing} not in parquet file {path!r}; it has columns {schema.names}"
            )

    def _select(self, schema: pa.Schema, first: str) -> list[str]:
        if self.columns is None:
            columns = [f.name for f in schema if f.name != self.id_column and _is_numeric(f.type)]
            if not columns:
                raise SourceDtypeError(
                    f"parquet file {first!r} has no numeric column (columns: {schema.names}); "
                    "store the features as integers or floats"
                )
            return columns
        bad = {c: str(schema.field(c).type) for c in self.columns if not _is_numeric(schema.field(c).type)}
        if bad:
            raise SourceDtypeError(
                f"column(s) {bad} of parquet file {first!r} are not numeric; select integer or float columns"
            )
        if not self.columns:
            raise SelectionError(f"columns=[] selects nothing from {self.path!r}; give at least one column")
        return list(self.columns)

    def _lazy_matrix(self, fs: fsspec.AbstractFileSystem, plan: list[list[_Piece]], chunks: tuple[int, ...],
                     columns: list[str], dtype: np.dtype[Any]) -> da.Array:
        if not plan:
            return da.zeros((0, len(columns)), dtype=dtype, chunks=((0,), (len(columns),)))
        blocks = [
            da.from_delayed(dask.delayed(_read_matrix, pure=True)(fs, pieces, columns, dtype),
                            shape=(n, len(columns)), dtype=dtype, meta=np.empty((0, 0), dtype))
            for pieces, n in zip(plan, chunks, strict=True)
        ]
        return da.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]

    def _lazy_ids(self, fs: fsspec.AbstractFileSystem, plan: list[list[_Piece]], chunks: tuple[int, ...],
                  schema: pa.Schema) -> da.Array:
        assert self.id_column is not None
        type_ = schema.field(self.id_column).type
        dtype = _column_dtype(type_) if _is_numeric(type_) else np.dtype(object)
        if not plan:
            return da.zeros((0,), dtype=dtype, chunks=((0,),))
        blocks = [
            da.from_delayed(dask.delayed(_read_ids, pure=True)(fs, pieces, self.id_column),
                            shape=(n,), dtype=dtype, meta=np.empty((0,), dtype))
            for pieces, n in zip(plan, chunks, strict=True)
        ]
        return da.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def _hidden(path: str, root: str) -> bool:
    rel = path[len(root):].strip("/")
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def _matrix_dtype(types: Sequence[pa.DataType]) -> np.dtype[Any]:
    small = all(pa.types.is_float32(t) or pa.types.is_float16(t) for t in types)
    return np.dtype(np.float32 if small else np.float64)
