"""Parquet source: a file, a directory of files, or a glob, read per row group."""

from __future__ import annotations

import logging
import os
import warnings
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
from pydantic import Field, model_validator

from pipeline._chunks import DEFAULT_CHUNK_BYTES, row_chunks
from pipeline._paths import modification_time
from pipeline.exceptions import (
    DamagedInputError,
    OptionsError,
    SchemaMismatchError,
    SelectionError,
    SourceDtypeError,
    SourceFormatError,
    SourceNotFoundError,
)
from pipeline.options import NonEmptyStr, Options
from pipeline.sources._damage import RESTORE, describe_error, is_damage
from pipeline.sources.base import Partition, Source

__all__ = ["ParquetSource", "ParquetSourceOptions", "IntegerColumnWarning"]

logger = logging.getLogger(__name__)

_GLOB_CHARS = "*?["


class IntegerColumnWarning(UserWarning):
    """The default column selection of a :class:`ParquetSource` took integer columns as features.

    Integer columns are often labels (a ground truth), counts or ids rather than
    measurements; pass ``columns=[...]`` to choose the features explicitly (which also
    silences this warning).
    """


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


def _display(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A file as the user can find it: the local path, or the URL with its protocol."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def _damaged_file(fs: fsspec.AbstractFileSystem, path: str, err: BaseException) -> DamagedInputError:
    return DamagedInputError(
        f"parquet file {_display(fs, path)!r} cannot be read ({describe_error(err)}); it is damaged or "
        f"truncated: {RESTORE}"
    )


def _damaged_row_group(fs: fsspec.AbstractFileSystem, path: str, parquet: pq.ParquetFile, group: int,
                       err: BaseException) -> DamagedInputError:
    meta = parquet.metadata
    first = sum(meta.row_group(g).num_rows for g in range(group))
    last = first + meta.row_group(group).num_rows - 1
    return DamagedInputError(
        f"row group {group} (rows {first}-{last} of the file) of parquet file {_display(fs, path)!r} cannot be "
        f"read ({describe_error(err)}); the file is damaged or truncated: {RESTORE}"
    )


def _read_pieces(fs: fsspec.AbstractFileSystem, pieces: Sequence[_Piece],
                 columns: Sequence[str]) -> list[tuple[_Piece, pa.Table]]:
    """Read the pieces of one chunk (only ``columns``), opening each file once.

    The tables are returned one per piece, not concatenated: files may store a column with
    different numeric types. A file or row group that cannot be read or decoded raises
    :class:`~pipeline.exceptions.DamagedInputError` naming the file and the row group.
    """
    tables: list[tuple[_Piece, pa.Table]] = []
    by_file: dict[str, list[_Piece]] = {}
    for piece in pieces:
        by_file.setdefault(piece.path, []).append(piece)
    for path, file_pieces in by_file.items():
        try:
            with _open(fs, path) as parquet:
                for piece in file_pieces:
                    try:
                        group = parquet.read_row_group(piece.row_group, columns=list(columns), use_threads=False)
                    except Exception as err:
                        if not is_damage(err):
                            raise
                        raise _damaged_row_group(fs, path, parquet, piece.row_group, err) from err
                    if group.num_rows < piece.stop:
                        raise SourceFormatError(
                            f"row group {piece.row_group} of parquet file {_display(fs, path)!r} has "
                            f"{group.num_rows} rows, {piece.stop} or more were planned: the file changed "
                            "after the source was opened; open the source again"
                        )
                    tables.append((piece, group.slice(piece.start, piece.stop - piece.start)))
        except Exception as err:
            if not is_damage(err):  # our own errors (DamagedInputError too) are not "damage" here
                raise
            raise _damaged_file(fs, path, err) from err
    return tables


def _read_matrix(fs: fsspec.AbstractFileSystem, pieces: Sequence[_Piece], columns: Sequence[str],
                 dtype: np.dtype[Any]) -> np.ndarray:
    out = np.empty((sum(p.stop - p.start for p in pieces), len(columns)), dtype=dtype)
    row = 0
    for _piece, table in _read_pieces(fs, pieces, columns):
        stop = row + table.num_rows
        for j, name in enumerate(columns):
            out[row:stop, j] = _to_numpy(table.column(name), dtype)
        row = stop
    return out


def _read_ids(fs: fsspec.AbstractFileSystem, pieces: Sequence[_Piece], column: str,
              dtype: np.dtype[Any]) -> np.ndarray:
    parts = [np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=dtype)
             for _piece, table in _read_pieces(fs, pieces, [column])]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class ParquetSourceOptions(Options):
    """Which Parquet columns are the features, and which holds the sample ids: the options of
    :class:`ParquetSource`."""

    columns: list[NonEmptyStr] | None = Field(
        None, min_length=1, description="Feature columns (default: every numeric column).")
    id_column: NonEmptyStr | None = Field(None, description="Column holding the sample ids.")

    @model_validator(mode="after")
    def _distinct(self) -> ParquetSourceOptions:
        problems = []
        if self.columns is not None:
            dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
            if dupes:
                problems.append(("columns", f"columns are listed twice: {dupes}"))
            if self.id_column is not None and self.id_column in self.columns:
                problems.append(("id_column", f"{self.id_column!r} is also a feature column"))
        if problems:
            raise OptionsError(problems)
        return self


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
        column of the first file, in file order, except ``id_column``; the columns so
        chosen are logged (INFO), and an :class:`IntegerColumnWarning` names the integer
        ones among them (often labels or counts: pass ``columns=[...]`` to leave them out).
        At least one, each once, and not ``id_column``.
    id_column : str, optional
        Column holding the sample ids (the ``sample`` coordinate).
    chunk_rows, chunk_bytes, storage_options
        See :class:`~pipeline.sources.base.Source`.

    Damaged files: :meth:`open` reads every file's footer, so a truncated file, or one
    that is not Parquet, raises :class:`~pipeline.exceptions.DamagedInputError` there,
    naming the file; a selected column that is missing from one file raises
    :class:`~pipeline.exceptions.SelectionError`, and one that is not numeric in one file
    (a string column where the others hold floats) raises
    :class:`~pipeline.exceptions.SchemaMismatchError` naming the file, the column and both
    types. Numeric types may differ between files (int64 here, float32 there): the
    matrix is float32 only when the column is float32 (or float16) in every file. A data
    page that cannot be decoded raises :class:`~pipeline.exceptions.DamagedInputError`
    when its chunk is computed, naming the file and the row group.
    """

    kind = "parquet"
    options_model = ParquetSourceOptions

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
        options = self._checked_options(columns=None if columns is None else list(columns), id_column=id_column)
        self.columns = options.columns
        self.id_column = options.id_column

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
        row_groups, schemas = self._inspect(fs, files)
        columns = self._select(schemas[0][1], _display(fs, files[0]))
        self._check_schemas(fs, schemas, columns)
        if self.columns is None:
            self._report_default_selection(columns, schemas)
        dtype = _matrix_dtype([schema.field(c).type for _, schema in schemas for c in columns])
        self._file_rows = _rows_per_file(files, row_groups)
        n_rows = sum(n for _, _, n in row_groups)
        chunks = row_chunks(n_rows, self._rows(n_rows, len(columns), dtype))
        plan = _plan(row_groups, chunks) if n_rows else []
        data = self._lazy_matrix(fs, plan, chunks, columns, dtype)
        ids = self._lazy_ids(fs, plan, chunks, schemas) if self.id_column else None
        return self._data_array(data, sample_ids=ids, feature_names=np.asarray(columns), name=None)

    def partitions(self, data: xr.DataArray) -> list[Partition]:
        """One partition per file, keyed by its path; its identity is the file's size,
        modification time and row count (from the listing and the footers read at open)."""
        rows = getattr(self, "_file_rows", None)
        if rows is None:
            raise RuntimeError("open() the source before asking for its partitions")
        fs, _ = self._filesystem()
        parts, start = [], 0
        for path, n in rows:
            info = fs.info(path)
            mtime = info.get("mtime", info.get("LastModified", info.get("ETag")))
            identity = {"size": info.get("size"), "mtime": str(mtime) if mtime is not None else None, "rows": n}
            parts.append(Partition(_display(fs, path), start, start + n, identity if mtime is not None else None))
            start += n
        return parts

    def _inspect(
        self, fs: fsspec.AbstractFileSystem, files: Sequence[str]
    ) -> tuple[list[tuple[str, int, int]], list[tuple[str, pa.Schema]]]:
        """Row counts of every row group of every file, and every file's schema (from the footers)."""
        row_groups: list[tuple[str, int, int]] = []
        schemas: list[tuple[str, pa.Schema]] = []
        for path in files:
            try:
                with _open(fs, path) as parquet:
                    meta, file_schema = parquet.metadata, parquet.schema_arrow
            except (pa.ArrowInvalid, OSError) as err:
                where = f"{_display(fs, path)!r} (in parquet source {self.path!r})"
                if is_damage(err):
                    raise DamagedInputError(
                        f"{where} is not a readable Parquet file ({describe_error(err)}): it is truncated, "
                        f"damaged or not Parquet; {RESTORE}, or remove it from the source"
                    ) from err
                raise SourceFormatError(f"{where} is not a readable Parquet file: {err}") from err
            schemas.append((path, file_schema))
            self._check_columns(file_schema, _display(fs, path), self.columns)
            row_groups += [(path, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        return row_groups, schemas

    def _check_columns(self, schema: pa.Schema, path: str, columns: Sequence[str] | None) -> None:
        wanted = list(columns or []) + ([self.id_column] if self.id_column else [])
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise SelectionError(
                f"column(s) {missing} not in parquet file {path!r}; it has columns {schema.names}"
            )

    def _check_schemas(self, fs: fsspec.AbstractFileSystem, schemas: Sequence[tuple[str, pa.Schema]],
                       columns: Sequence[str]) -> None:
        """Every file holds the selected columns, numeric, and an id column of the same kind.

        Checked on the footers at open, so a file that would break the fit half-way
        (``ArrowInvalid: Schema at index 1 was different``) is named before any data are read.
        """
        first_path, first = schemas[0]
        for path, schema in schemas[1:]:
            self._check_columns(schema, _display(fs, path), columns)
            for name in columns:
                type_ = schema.field(name).type
                if not _is_numeric(type_):
                    raise SchemaMismatchError(
                        f"column {name!r} of parquet file {_display(fs, path)!r} is {type_}, but "
                        f"{first.field(name).type} in {_display(fs, first_path)!r} (parquet source {self.path!r}); "
                        f"every file must store the selected columns as numbers: re-write that file with a "
                        "numeric column, remove it from the source, or leave the column out (columns=)"
                    )
            if self.id_column:
                type_, first_type = schema.field(self.id_column).type, first.field(self.id_column).type
                if _id_kind(type_) != _id_kind(first_type):
                    raise SchemaMismatchError(
                        f"id column {self.id_column!r} of parquet file {_display(fs, path)!r} is {type_}, but "
                        f"{first_type} in {_display(fs, first_path)!r} (parquet source {self.path!r}); store the "
                        "ids with the same kind of type (all strings or all numbers) in every file"
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

    def _report_default_selection(self, columns: list[str], schemas: Sequence[tuple[str, pa.Schema]]) -> None:
        """Log the features the default selection chose; warn about the integer ones among them."""
        logger.info("parquet source %r: no columns given, using every numeric column but the id as a "
                    "feature (%d): %s", self.path, len(columns), columns)
        integers = [c for c in columns if any(pa.types.is_integer(schema.field(c).type) for _, schema in schemas)]
        if not integers:
            return
        others = [c for c in columns if c not in integers]
        hint = (f"columns={others!r}" if others else "columns=[...] with the feature columns")
        warnings.warn(
            f"parquet source {self.path!r}: no columns given, so the integer column(s) {integers} are used as "
            f"features along with the floating-point ones; integer columns are often labels, counts or ids. "
            f"To leave them out, select the features explicitly: {hint} (in a job: source.selection.columns); "
            f"to keep them, list them in columns=[...] too",
            IntegerColumnWarning,
            stacklevel=3,
        )

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
                  schemas: Sequence[tuple[str, pa.Schema]]) -> da.Array:
        assert self.id_column is not None
        types = [schema.field(self.id_column).type for _, schema in schemas]
        numeric = all(_is_numeric(t) for t in types)
        dtype = np.result_type(*(_column_dtype(t) for t in types)) if numeric else np.dtype(object)
        if not plan:
            return da.zeros((0,), dtype=dtype, chunks=((0,),))
        blocks = [
            da.from_delayed(dask.delayed(_read_ids, pure=True)(fs, pieces, self.id_column, dtype),
                            shape=(n,), dtype=dtype, meta=np.empty((0,), dtype))
            for pieces, n in zip(plan, chunks, strict=True)
        ]
        return da.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def _rows_per_file(files: Sequence[str], row_groups: Sequence[tuple[str, int, int]]) -> list[tuple[str, int]]:
    """``(file, rows)`` of every file, in the order of the matrix's rows."""
    counts = dict.fromkeys(files, 0)
    for path, _, n in row_groups:
        counts[path] += n
    return list(counts.items())


def _hidden(path: str, root: str) -> bool:
    rel = path[len(root):].strip("/")
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def _id_kind(type_: pa.DataType) -> str:
    """``"number"``, ``"text"`` or the type itself: id columns of one kind concatenate cleanly."""
    if _is_numeric(type_):
        return "number"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        return "text"
    return str(type_)


def _matrix_dtype(types: Sequence[pa.DataType]) -> np.dtype[Any]:
    small = all(pa.types.is_float32(t) or pa.types.is_float16(t) for t in types)
    return np.dtype(np.float32 if small else np.float64)
