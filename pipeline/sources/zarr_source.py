"""Zarr source: a 2-D array of a Zarr v3 or v2 store, or a variable of an xarray dataset in Zarr."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import dask.array as da
import xarray as xr
import zarr
from pydantic import Field, model_validator

from pipeline._chunks import DEFAULT_CHUNK_BYTES, row_chunks
from pipeline._paths import is_url
from pipeline.exceptions import OptionsError, SelectionError, SourceFormatError
from pipeline.options import NonEmptyStr, Options
from pipeline.sources._damage import (
    CheckingStore,
    ChunkLayout,
    XarrayBlocks,
    ZarrBlocks,
    cheap_listing,
    check_chunks,
    checked_array,
    lazy_blocks,
    open_store,
)
from pipeline.sources.base import FEATURE_DIM, SAMPLE_DIM, Partition, Source, as_names

__all__ = ["ZarrSource", "ZarrSourceOptions"]

logger = logging.getLogger(__name__)


def _join(*parts: str | None) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _dimension_names(array: zarr.Array) -> tuple[str, ...] | None:
    """Dimension names of a v3 array, or xarray's ``_ARRAY_DIMENSIONS`` of a v2 array."""
    names: Any = getattr(array.metadata, "dimension_names", None)
    if names is None:
        names = array.attrs.get("_ARRAY_DIMENSIONS")
    if names is None or any(n is None for n in names):
        return None
    return tuple(str(n) for n in names)


class ZarrSourceOptions(Options):
    """What to read inside a Zarr store: the options of :class:`ZarrSource` (see there)."""

    array: NonEmptyStr | None = Field(None, description="Array name inside the group.")
    group: NonEmptyStr | None = Field(None, description="Group path inside the store.")
    variable: NonEmptyStr | None = Field(
        None, description="Variable of an xarray dataset in Zarr (instead of array).")
    sample_ids: NonEmptyStr | None = Field(None, description="Sibling 1-D array with the sample ids.")
    feature_names: NonEmptyStr | None = Field(None, description="Sibling 1-D array with the feature names.")
    allow_missing_chunks: bool = Field(
        False, description="Read chunks missing from the store as the fill value instead of failing.")

    @model_validator(mode="after")
    def _array_or_variable(self) -> ZarrSourceOptions:
        if self.array is not None and self.variable is not None:
            raise OptionsError([("variable", "give either array or variable, not both")])
        return self


class ZarrSource(Source):
    """A 2-D array (or an xarray variable) in a Zarr v3 or v2 store.

    Parameters
    ----------
    path : str or os.PathLike
        The store: a local directory or an fsspec URL (``s3://...``, ``file://...``).
    array : str, optional
        Name of the array inside ``group``. Not needed when ``group`` (or the store
        root) is itself the array.
    group : str, optional
        Path of the group inside the store, e.g. ``"experiments/run1"``.
    variable : str, optional
        Name of a variable of an xarray dataset stored in Zarr (opened with
        :func:`xarray.open_zarr`); exclusive with ``array``. The variable's two
        dimensions become ``sample`` and ``feature``; their coordinates follow.
    sample_ids, feature_names : str, optional
        Names of 1-D arrays in the same group holding the sample ids and the feature
        names. When not given, sibling arrays named after the array's dimension names
        (Zarr v3 ``dimension_names`` or xarray's ``_ARRAY_DIMENSIONS``) are used if
        their length fits.
    allow_missing_chunks : bool, default False
        Zarr reads a chunk whose file is missing as the fill value, without an error, so
        a store with a deleted chunk would read as zeros. By default every chunk (or
        shard) file that the selected array -- and the sample-id and feature-name arrays
        read with it -- needs must exist: for local stores (directories, ``file://``,
        zip, memory) the store is listed once at :meth:`open`, and on every store
        (remote ones, whose listing is expensive, included) a chunk found missing while
        reading raises too. Either raises :class:`~pipeline.exceptions.MissingChunkError`
        naming the store, the array, the chunk index, its rows and its file.
        ``allow_missing_chunks=True`` skips both checks and reads missing chunks as the
        fill value: use it for stores written with chunks deliberately left out (zarr
        and anndata skip chunks that equal the fill value, e.g. all-zero row blocks,
        unless ``write_empty_chunks=True``).
    chunk_rows, chunk_bytes, storage_options
        See :class:`~pipeline.sources.base.Source`. A byte-derived chunk length is
        rounded to a multiple of the stored row chunk.

    A chunk that cannot be decoded (truncated or corrupted: codec, checksum or shape
    errors) raises :class:`~pipeline.exceptions.DamagedInputError` when that chunk is
    computed, naming the chunk index, its rows and its file. For xarray variables
    (``variable=``) the chunks of the variable and of its sample/feature coordinates
    are checked the same way.
    """

    kind = "zarr"
    options_model = ZarrSourceOptions

    def __init__(
        self,
        path: str | os.PathLike[str],
        array: str | None = None,
        *,
        group: str | None = None,
        variable: str | None = None,
        sample_ids: str | None = None,
        feature_names: str | None = None,
        allow_missing_chunks: bool = False,
        chunk_rows: int | None = None,
        chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(path, chunk_rows=chunk_rows, chunk_bytes=chunk_bytes, storage_options=storage_options)
        options = self._checked_options(array=array, group=group, variable=variable, sample_ids=sample_ids,
                                        feature_names=feature_names, allow_missing_chunks=allow_missing_chunks)
        self.array = options.array
        self.group = options.group
        self.variable = options.variable
        self.sample_ids = options.sample_ids
        self.feature_names = options.feature_names
        self.allow_missing_chunks = options.allow_missing_chunks

    def selection(self) -> dict[str, Any]:
        selection: dict[str, Any] = {
            "group": self.group,
            "array": self.array,
            "variable": self.variable,
            "sample_ids": self.sample_ids,
            "feature_names": self.feature_names,
        }
        if self.allow_missing_chunks:  # missing chunks read as the fill value: part of what was read
            selection["allow_missing_chunks"] = True
        return selection

    def open(self) -> xr.DataArray:
        self._check_exists()
        if self.variable is not None:
            return self._open_variable()
        return self._open_array()

    # -- plain Zarr array ---------------------------------------------------------------

    def _open_node(self, node_path: str) -> zarr.Array | zarr.Group:
        try:
            return zarr.open(self.path, mode="r", path=node_path or None, storage_options=self.storage_options or None)
        except (FileNotFoundError, KeyError) as err:
            raise SelectionError(
                f"no Zarr array or group at {node_path!r} in {self.path!r}"
                f"{self._listing(self.group)}; check array= and group="
            ) from err
        except (ValueError, TypeError) as err:
            raise SourceFormatError(f"{self.path!r} is not a readable Zarr store: {err}") from err

    def _listing(self, group_path: str | None) -> str:
        try:
            group = zarr.open_group(self.path, mode="r", path=group_path or None,
                                    storage_options=self.storage_options or None)
            return f" (group {group_path or '/'!r} holds {sorted(group.keys())})"
        except Exception:  # the listing is a courtesy; never mask the real error
            return ""

    def _open_array(self) -> xr.DataArray:
        node_path = _join(self.group, self.array)
        node = self._open_node(node_path)
        if isinstance(node, zarr.Group):
            raise SelectionError(
                f"{node_path or '/'!r} in {self.path!r} is a group, not an array; pass array= one of "
                f"{sorted(node.array_keys())}"
            )
        what = f"Zarr array {node_path or '/'!r}"
        dtype = self._check_matrix(node.shape, node.dtype, what)
        rows = self._rows(node.shape[0], node.shape[1], dtype, multiple_of=node.chunks[0])
        ids_node, names_node = self._coord_nodes(node, node_path)
        ids_what = None if ids_node is None else f"sample-id array {ids_node.path!r}"
        names_what = None if names_node is None else f"feature-name array {names_node.path!r}"
        self._check_chunks([(what, node), (ids_what, ids_node), (names_what, names_node)])
        self._layout = ChunkLayout.of(node, self.path)  # for partitions()
        data = self._lazy(node, what, (rows, node.shape[1]))
        if data.dtype != dtype:
            data = data.astype(dtype)
        ids = None
        if ids_node is not None:
            ids = self._lazy(ids_node, str(ids_what), (max(1, ids_node.chunks[0]),))
        names = None
        if names_node is not None:
            names = as_names(self._blocks(names_node, str(names_what))[(slice(None),)])
        return self._data_array(data, sample_ids=ids, feature_names=names, name=self.array or node.basename)

    def partitions(self, data: xr.DataArray) -> list[Partition]:
        """One partition per row chunk of ``data`` (a whole number of stored chunks), keyed by its
        rows; its identity is the size and modification time of each stored object it covers
        (local stores; for a remote store, or a variable of an xarray dataset, the base class's
        single partition)."""
        layout: ChunkLayout | None = getattr(self, "_layout", None)
        if layout is None or is_url(self.path):
            return super().partitions(data)
        parts, start = [], 0
        for n in data.data.chunks[0]:
            stop = start + int(n)
            objects = [_file_stat(layout.file(c)) for c in layout.coords_in([(start, stop), (0, layout.shape[1])])]
            parts.append(Partition(f"rows {start}-{stop}", start, stop, {"objects": objects}))
            start = stop
        return parts

    # -- damaged and missing chunks ---------------------------------------------------------

    def _check_chunks(self, arrays: list[tuple[str | None, zarr.Array | None]]) -> None:
        """At open: every chunk file of the ``(description, array)`` pairs exists, where listing
        the store is cheap (remote stores are checked chunk by chunk as they are read)."""
        if self.allow_missing_chunks:
            return
        for what, array in arrays:
            if array is not None and what is not None and cheap_listing(array.store_path.store):
                check_chunks(array, self.path, what)

    def _blocks(self, array: zarr.Array, what: str) -> ZarrBlocks:
        strict = not self.allow_missing_chunks
        reader = checked_array(array, raise_missing=strict)
        return ZarrBlocks(reader, ChunkLayout.of(array, self.path), what, strict=strict)

    def _lazy(self, array: zarr.Array, what: str, chunks: tuple[int, ...]) -> da.Array:
        """The array read block by block (as ``da.from_zarr`` with ``chunks``), errors naming the chunk."""
        return lazy_blocks(self._blocks(array, what), chunks)

    def _sibling(self, node_path: str, name: str) -> zarr.Array | None:
        parent = node_path.rsplit("/", 1)[0] if "/" in node_path else ""
        try:
            node = zarr.open(self.path, mode="r", path=_join(parent, name) or None,
                             storage_options=self.storage_options or None)
        except (FileNotFoundError, KeyError):
            return None
        return node if isinstance(node, zarr.Array) else None

    def _required_sibling(self, node_path: str, name: str, length: int, what: str) -> zarr.Array:
        node = self._sibling(node_path, name)
        if node is None or node.ndim != 1 or node.shape[0] != length:
            raise SelectionError(
                f"{what}={name!r}: no 1-D array of length {length} beside {node_path!r} in {self.path!r}"
            )
        return node

    def _coord_nodes(self, node: zarr.Array, node_path: str) -> tuple[zarr.Array | None, zarr.Array | None]:
        """The sample-id and feature-name arrays that will be read, if any."""
        n_rows, n_features = node.shape
        dims = _dimension_names(node) or (None, None)
        ids_node = names_node = None
        if self.sample_ids is not None:
            ids_node = self._required_sibling(node_path, self.sample_ids, n_rows, "sample_ids")
        elif dims[0] is not None and dims[0] != node.basename:
            ids_node = self._sibling(node_path, dims[0])
        if self.feature_names is not None:
            names_node = self._required_sibling(node_path, self.feature_names, n_features, "feature_names")
        elif dims[1] is not None and dims[1] != node.basename:
            names_node = self._sibling(node_path, dims[1])
        ids_node = ids_node if ids_node is not None and ids_node.shape == (n_rows,) else None
        names_node = names_node if names_node is not None and names_node.shape == (n_features,) else None
        return ids_node, names_node

    # -- xarray dataset variable ----------------------------------------------------------

    def _open_dataset(self) -> tuple[xr.Dataset, CheckingStore]:
        """The dataset, and the store it reads through (missing chunks raise unless allowed)."""
        store = CheckingStore(open_store(self.path, self.storage_options), raise_missing=not self.allow_missing_chunks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "not consolidated" notice
            try:
                return xr.open_zarr(store, group=self.group, chunks=None, create_default_indexes=False), store
            except (FileNotFoundError, KeyError) as err:
                raise SelectionError(
                    f"no xarray dataset at group {self.group or '/'!r} in {self.path!r}"
                    f"{self._listing(None)}; check group="
                ) from err
            except ValueError as err:
                raise SourceFormatError(
                    f"{self.path!r} (group {self.group or '/'!r}) cannot be opened as an xarray dataset: {err}"
                ) from err

    def _open_variable(self) -> xr.DataArray:
        ds, store = self._open_dataset()
        if self.variable not in ds.variables:
            raise SelectionError(
                f"variable {self.variable!r} is not in the dataset at {self.path!r} "
                f"(group {self.group or '/'!r}); it holds {sorted(map(str, ds.variables))}"
            )
        var = ds[self.variable]
        dtype = self._check_matrix(var.shape, var.dtype, f"variable {self.variable!r}")
        row_dim, col_dim = var.dims
        stored = var.encoding.get("chunks") or var.encoding.get("preferred_chunks", {}).get(row_dim)
        multiple = int(stored[0]) if isinstance(stored, tuple) else int(stored or 1)
        rows = self._rows(var.shape[0], var.shape[1], dtype, multiple_of=multiple)
        var = var.drop_vars([c for c in var.coords if set(var[c].dims) - {row_dim, col_dim}])
        chunks = {row_dim: row_chunks(var.shape[0], rows), col_dim: (var.shape[1],)}
        readers = self._variable_readers(var)
        self._check_chunks([(what, array) for _name, array, what in readers])
        for _name, array, _what in readers:
            store.watch(array)
        lazy: dict[str, da.Array] = {}
        for name, array, what in readers:
            variable = var.variable if name == self.variable else var[name].variable
            blocks = XarrayBlocks(variable, ChunkLayout.of(array, self.path), what,
                                  strict=not self.allow_missing_chunks)
            lazy[name] = lazy_blocks(blocks, tuple(chunks[d] for d in variable.dims))
        var = var.chunk({row_dim: rows, col_dim: -1})  # coordinates without a Zarr array of their own
        if self.variable in lazy:
            var = var.copy(deep=False, data=lazy.pop(self.variable))
        if lazy:
            var = var.assign_coords(xr.Coordinates(
                {n: xr.Variable(var[n].dims, a, attrs=var[n].attrs) for n, a in lazy.items()}, indexes={}))
        var = var.astype(dtype, copy=False)
        var = var.rename({row_dim: SAMPLE_DIM, col_dim: FEATURE_DIM})
        strings = {k: c.variable.astype(object) for k, c in var.coords.items() if c.dtype.kind == "T"}
        if strings:  # NumPy StringDType from Zarr v3 strings: use object, and stay lazy (no index)
            var = var.assign_coords(xr.Coordinates(strings, indexes={}))
        if FEATURE_DIM in var.coords:  # feature names are small: load them into an index
            var = var.assign_coords({FEATURE_DIM: as_names(var[FEATURE_DIM].values)})
        var.attrs = {"source_kind": self.kind, "source_path": self.path}
        logger.debug("opened %r: shape %s, chunks %s", self, var.shape, var.data.chunksize)
        return var

    def _variable_readers(self, var: xr.DataArray) -> list[tuple[str, zarr.Array, str]]:
        """``(name, Zarr array, description)`` of the variable and of its non-scalar coordinates.

        Each is read block by block through xarray (keeping its decoding), with errors naming
        the chunk; a coordinate without a Zarr array of that name is left to xarray.
        """
        store = open_store(self.path, self.storage_options)
        readers = []
        for name in [self.variable, *map(str, var.coords)]:
            if name != self.variable and var[name].ndim == 0:
                continue
            try:
                array = zarr.open_array(store=store, path=_join(self.group, name), mode="r")
            except (FileNotFoundError, KeyError, ValueError, TypeError):
                continue
            what = f"variable {name!r}" if name == self.variable else \
                f"coordinate {name!r} of variable {self.variable!r}"
            readers.append((name, array, what))
        return readers


def _file_stat(path: str) -> list[int] | None:
    """``[size, mtime_ns]`` of a stored object, or None where there is none (a fill-value chunk)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]
