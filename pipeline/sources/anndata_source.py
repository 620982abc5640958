"""AnnData source: ``X``, a layer or an ``obsm`` matrix of an ``.h5ad`` file or an AnnData Zarr store."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import anndata
import dask.array as da
import h5py
import numpy as np
import scipy.sparse as sp
import xarray as xr
import zarr
from anndata import OldFormatWarning
from anndata.experimental import read_elem_lazy
from anndata.io import read_elem, sparse_dataset
from dask.base import tokenize
from pydantic import Field, model_validator

from pipeline._chunks import DEFAULT_CHUNK_BYTES, row_chunks
from pipeline._paths import is_url
from pipeline.exceptions import (
    DamagedInputError,
    OptionsError,
    SelectionError,
    SourceDtypeError,
    SourceFormatError,
    SparseMatrixError,
)
from pipeline.options import NonEmptyStr, Options
from pipeline.sources._damage import (
    RESTORE,
    CheckingStore,
    ChunkLayout,
    MissingKey,
    ZarrBlocks,
    cheap_listing,
    check_chunks,
    describe_error,
    first_failing_rows,
    is_damage,
    lazy_blocks,
    missing_key_error,
    open_store,
)
from pipeline.sources.base import Source, as_names

__all__ = ["AnnDataSource", "AnnDataSourceOptions", "anndata_format", "is_legacy_h5ad"]

logger = logging.getLogger(__name__)

Group: TypeAlias = h5py.Group | zarr.Group

#: Old-format .h5ad files already reported in this process.
_LEGACY_NOTED: set[str] = set()


def anndata_format(path: str) -> Literal["h5ad", "zarr"]:
    """``"h5ad"`` for an HDF5 file, ``"zarr"`` for a directory or a URL."""
    if is_url(path) or os.path.isdir(path):
        return "zarr"
    if not h5py.is_hdf5(path):
        raise SourceFormatError(
            f"{path!r} is neither an .h5ad (HDF5) file nor an AnnData Zarr store; "
            "write it with AnnData.write_h5ad or AnnData.write_zarr"
        )
    return "h5ad"


def _densify(block: Any) -> np.ndarray:
    """One CSR row block as a dense array (shape unchanged)."""
    return block.toarray() if sp.issparse(block) else np.asarray(block)


def _damaged_rows(path: str, element: str, first: int, last: int, err: BaseException,
                  chunk: str = "") -> DamagedInputError:
    return DamagedInputError(
        f"{element!r} of AnnData {path!r}: rows {first}-{last}{chunk} cannot be read ({describe_error(err)}); "
        f"the file is damaged or truncated: {RESTORE}"
    )


def _h5_dense_block(source: str, name: str, element: str, path: str, field: str | None = None,
                    block_info: Any = None) -> np.ndarray:
    """Rows of a dense HDF5 dataset, the file opened in the task (h5py objects do not pickle).

    ``field``: the matrix is one field of a compound dataset (the ``obsm`` of files written
    by anndata before 0.7), read alone (HDF5 reads only that member of each row).
    On a read error the block's HDF5 chunks are read again one by one to name the damaged one.
    """
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    try:
        with h5py.File(source, "r") as f:
            dataset = f[name]

            def read(a: int, b: int) -> np.ndarray:
                if field is None:
                    return dataset[a:b, c0:c1]
                return _field_rows(dataset, field, a, b)[:, c0:c1]

            try:
                return read(r0, r1)
            except Exception as err:
                if not is_damage(err):
                    raise
                step = (dataset.chunks or (0,))[0]
                found = first_failing_rows(read, r0, r1, step) if step else None
                if found is None:
                    raise _damaged_rows(path, element, r0, r1 - 1, err) from err
                a, b, again = found
                raise _damaged_rows(path, element, r0, r1 - 1, again,
                                    f" (its HDF5 chunk {a // step} holding rows {a}-{b})") from again
    except Exception as err:  # opening the file in the task (our own errors pass: they are not "damage")
        if not is_damage(err):
            raise
        raise _damaged_rows(path, element, r0, r1 - 1, err) from err


def _field_rows(dataset: h5py.Dataset, field: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of one field of a compound dataset (a subarray field gives ``(rows, k)``)."""
    return np.asarray(dataset.fields(field)[start:stop])


def _decode_names(values: np.ndarray) -> np.ndarray:
    """Names stored by old anndata (fixed-length or variable-length bytes) as an object array of ``str``."""
    return np.asarray([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()],
                      dtype=object)


def _h5_names_block(source: str, name: str, field: str, path: str, block_info: Any = None) -> np.ndarray:
    """Rows of the index field of an old-format (compound) ``obs`` dataset, as ``str``."""
    ((r0, r1),) = block_info[None]["array-location"]
    try:
        with h5py.File(source, "r") as f:
            return _decode_names(np.asarray(f[name].fields(field)[r0:r1]))
    except Exception as err:
        if not is_damage(err):
            raise
        raise _damaged_rows(path, f"obs index (field {field!r} of {name!r})", r0, r1 - 1, err) from err


def _csr_block(source: Any, name: str, element: str, path: str, block_info: Any = None) -> np.ndarray:
    """Rows of a CSR matrix, densified; ``source`` is the .h5ad path or a Zarr sparse dataset."""
    (r0, r1), _ = block_info[None]["array-location"]
    try:
        if isinstance(source, str):
            with h5py.File(source, "r") as f:
                block = sparse_dataset(f[name], should_cache_indptr=False)[r0:r1]
        else:
            block = source[r0:r1]
    except MissingKey as err:
        raise missing_key_error(None, err.key, f"{element!r} (rows {r0}-{r1 - 1})", path) from None
    except Exception as err:
        if not is_damage(err):
            raise
        raise _damaged_rows(path, element, r0, r1 - 1, err) from err
    return _densify(block)


def _index_key(group: Group, where: str, path: str) -> str:
    key = group.attrs.get("_index")
    if key is None:
        raise SourceFormatError(f"{where} of {path!r} has no '_index' attribute; is this an AnnData store?")
    return str(key)


def is_legacy_h5ad(root: Group) -> bool:
    """An ``.h5ad`` written by anndata before 0.8: no ``encoding-type`` on the root.

    Its ``obs``/``var``/``obsm``/``varm`` may be HDF5 compound datasets (before 0.7),
    sparse matrices h5sparse groups, ``uns`` groups without encoding metadata.
    """
    return isinstance(root, h5py.Group) and "encoding-type" not in root.attrs


@dataclass(frozen=True)
class _Field:
    """A matrix stored as one field of a compound HDF5 dataset (``obsm`` before anndata 0.7)."""

    dataset: h5py.Dataset
    field: str

    @property
    def name(self) -> str:
        return str(self.dataset.name)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.dataset.shape) + tuple(self.dataset.dtype.fields[self.field][0].shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.dataset.dtype.fields[self.field][0].base)

    @property
    def chunks(self) -> tuple[int, ...] | None:
        return self.dataset.chunks


class _NeedsAnnData(Exception):
    """Part of an old-format .h5ad the lazy reader does not understand: anndata's reader takes over."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class AnnDataSourceOptions(Options):
    """``X``, a layer, or an ``obsm`` matrix of an AnnData file: the options of :class:`AnnDataSource`."""

    layer: NonEmptyStr | None = Field(None, description="adata.layers[layer] instead of X.")
    obsm: NonEmptyStr | None = Field(None, description="adata.obsm[obsm] (e.g. X_pca) instead of X.")
    sparse: Literal["densify", "raise"] = Field("densify", description="What to do with a sparse X.")
    allow_missing_chunks: bool = Field(
        False, description="AnnData Zarr stores: read missing chunks as the fill value instead of failing.")

    @model_validator(mode="after")
    def _layer_or_obsm(self) -> AnnDataSourceOptions:
        if self.layer is not None and self.obsm is not None:
            raise OptionsError([("obsm", "give either layer or obsm, not both")])
        return self


class AnnDataSource(Source):
    """The ``X`` matrix, a layer, or an ``obsm`` entry of an AnnData file, opened lazily.

    ``obs_names`` become the (lazy) ``sample`` coordinate; for ``X`` and layers,
    ``var_names`` become the ``feature`` coordinate (``obsm`` matrices have no
    feature names).

    Sparse matrices: a CSR ``X`` or layer is **densified chunk by chunk** (each row
    chunk becomes a dense NumPy block; ``chunk_bytes`` counts the dense size) unless
    ``sparse="raise"``, which refuses it with a
    :class:`~pipeline.exceptions.SparseMatrixError` suggesting ``obsm='X_pca'``.
    A CSC matrix cannot be read by rows and is always refused.

    Old-format ``.h5ad`` files (written by anndata before 0.8, e.g. scanpy's
    ``pbmc68k_reduced.h5ad``) open like current ones, lazily where their layout allows:
    ``obs``/``var`` stored as HDF5 compound datasets give their first field as the names
    (as ``anndata.read_h5ad`` does), an ``obsm`` compound dataset gives each field as a
    matrix (``obsm="X_pca"`` reads only that field, by row chunks), and an ``h5sparse``
    group is a CSR/CSC matrix. Any other legacy layout that the lazy reader does not know
    is read through ``anndata.read_h5ad(path, backed="r")`` (``X`` stays on disk; a layer
    or ``obsm`` entry is what anndata loads). Either way the result equals what
    ``anndata.read_h5ad`` reads.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.h5ad`` file, or an AnnData Zarr store (v2 or v3; directory or fsspec URL).
    layer : str, optional
        Use ``adata.layers[layer]`` instead of ``X``.
    obsm : str, optional
        Use ``adata.obsm[obsm]`` (e.g. ``"X_pca"``) instead of ``X``; exclusive with ``layer``.
    sparse : {"densify", "raise"}, default "densify"
        What to do with a sparse (CSR) matrix.
    allow_missing_chunks : bool, default False
        AnnData Zarr stores only. By default a missing chunk file of the selected matrix
        (``data``/``indices``/``indptr`` for CSR) or of the ``obs`` index raises
        :class:`~pipeline.exceptions.MissingChunkError` -- at :meth:`open` for local stores
        (listed once), when the chunk is read for remote ones -- instead of being read as
        the fill value. Pass ``True`` for stores whose chunks equal to the fill value were
        deliberately not written (anndata and zarr skip all-zero chunks by default); see
        :class:`~pipeline.sources.ZarrSource`.
    chunk_rows, chunk_bytes, storage_options
        See :class:`~pipeline.sources.base.Source`.

    Damaged files: a truncated or otherwise unreadable ``.h5ad`` raises
    :class:`~pipeline.exceptions.DamagedInputError` at :meth:`open`, naming the file; a
    chunk that cannot be read or decoded (HDF5 filter errors, Zarr codec errors) raises it
    when computed, naming the file, the element and the rows (and the chunk).
    """

    kind = "anndata"
    options_model = AnnDataSourceOptions

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        layer: str | None = None,
        obsm: str | None = None,
        sparse: Literal["densify", "raise"] = "densify",
        allow_missing_chunks: bool = False,
        chunk_rows: int | None = None,
        chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(path, chunk_rows=chunk_rows, chunk_bytes=chunk_bytes, storage_options=storage_options)
        options = self._checked_options(layer=layer, obsm=obsm, sparse=sparse,
                                        allow_missing_chunks=allow_missing_chunks)
        self.layer = options.layer
        self.obsm = options.obsm
        self.sparse = options.sparse
        self.allow_missing_chunks = options.allow_missing_chunks

    def selection(self) -> dict[str, Any]:
        selection: dict[str, Any] = {"layer": self.layer, "obsm": self.obsm, "sparse": self.sparse}
        if self.allow_missing_chunks:  # missing chunks read as the fill value: part of what was read
            selection["allow_missing_chunks"] = True
        return selection

    @property
    def element(self) -> str:
        """Path of the selected matrix inside the store (``X``, ``layers/...``, ``obsm/...``)."""
        if self.layer is not None:
            return f"layers/{self.layer}"
        if self.obsm is not None:
            return f"obsm/{self.obsm}"
        return "X"

    def open(self) -> xr.DataArray:
        self._check_exists()
        if anndata_format(self.path) == "h5ad":
            try:
                root = h5py.File(self.path, "r")
            except OSError as err:
                if not is_damage(err):
                    raise
                raise DamagedInputError(
                    f"{self.path!r} is damaged or truncated: h5py cannot open it ({describe_error(err)}); "
                    f"{RESTORE}"
                ) from err
            with root:
                try:
                    return self._open_root(root)
                except _NeedsAnnData as legacy:
                    reason = legacy.error
                except OSError as err:  # h5py: a damaged object header, B-tree or attribute
                    if not is_damage(err):
                        raise
                    raise DamagedInputError(
                        f"{self.path!r} is damaged: h5py cannot read its {self.element!r} or obs/var "
                        f"metadata ({describe_error(err)}); {RESTORE}"
                    ) from err
            return self._open_with_anndata(reason)
        store = CheckingStore(open_store(self.path, self.storage_options), raise_missing=not self.allow_missing_chunks)
        root = zarr.open_group(store=store, mode="r")
        return self._open_root(root)

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Data read at open (names, an .h5ad obs index): damage raises an error naming the file."""
        try:
            yield
        except MissingKey as err:
            raise missing_key_error(None, err.key, what, self.path) from None
        except Exception as err:
            if not is_damage(err):
                raise
            raise DamagedInputError(
                f"{what} of AnnData {self.path!r} cannot be read ({describe_error(err)}); the file is damaged "
                f"or truncated: {RESTORE}"
            ) from err

    def _check_chunks(self, arrays: list[tuple[str, Any]]) -> None:
        """At open: every chunk file of the Zarr ``arrays`` exists (where listing the store is cheap);
        the store checks their Blosc frames as they are read."""
        for what, array in arrays:
            if not isinstance(array, zarr.Array):
                continue
            store = array.store_path.store
            if isinstance(store, CheckingStore):
                store.watch(array)
            if not self.allow_missing_chunks and cheap_listing(store):
                check_chunks(array, self.path, what)

    def _open_root(self, root: Group) -> xr.DataArray:
        self._check_anndata(root)
        elem = self._element(root)
        encoding, shape, stored = self._layout(root, elem)
        dtype = self._check_matrix(shape, stored, repr(self.element))
        if is_legacy_h5ad(root) and self.path not in _LEGACY_NOTED:
            _LEGACY_NOTED.add(self.path)  # once per file and process: open() runs again for identity()
            logger.info("%s was written by an old anndata (no encoding metadata); reading its elements "
                        "in their legacy layout", self.path)
        data = self._lazy_matrix(elem, encoding, shape, stored, dtype)
        ids = self._obs_ids(root, data.chunks[0])
        names = None if self.obsm is not None else self._var_names(root)
        return self._data_array(data, sample_ids=ids, feature_names=names, name=self.element)

    def _not_understood(self, root: Group, error: Exception) -> Exception:
        """``error`` for a current file; for an old-format .h5ad, the signal to let anndata read it."""
        return _NeedsAnnData(error) if is_legacy_h5ad(root) else error

    def _layout(self, root: Group, elem: Any) -> tuple[str, tuple[int, ...], np.dtype[Any]]:
        """``(encoding, shape, stored dtype)`` of the selected element."""
        if isinstance(elem, _Field):
            return "array", elem.shape, elem.dtype
        encoding = str(elem.attrs.get("encoding-type", "array"))
        if encoding in ("csr_matrix", "csc_matrix"):
            return encoding, tuple(int(s) for s in elem.attrs["shape"]), elem["data"].dtype
        if isinstance(elem, h5py.Group) and "h5sparse_format" in elem.attrs:  # sparse, anndata < 0.7
            fmt = elem.attrs["h5sparse_format"]
            fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
            return f"{fmt}_matrix", tuple(int(s) for s in elem.attrs["h5sparse_shape"]), elem["data"].dtype
        if isinstance(elem, (h5py.Dataset, zarr.Array)):
            if elem.dtype.names is not None:
                raise self._not_understood(root, SourceDtypeError(
                    f"{self.element!r} of {self.path!r} is a table (fields {list(elem.dtype.names)}), not a "
                    "numeric matrix; select an array (X, a layer, or an obsm matrix such as 'X_pca')"))
            return "array", tuple(elem.shape), elem.dtype
        raise self._not_understood(root, SourceDtypeError(
            f"{self.element!r} of {self.path!r} is a {encoding!r}, not a numeric matrix; "
            "select an array (X, a layer, or an obsm matrix such as 'X_pca')"
        ))

    def _obs_ids(self, root: Group, chunks: tuple[int, ...]) -> da.Array:
        """The obs names, lazy: from the obs index array, or the first field of an old compound ``obs``."""
        obs: Any = root["obs"]  # a group, or (HDF5) an old compound dataset
        if isinstance(obs, h5py.Dataset):  # anndata < 0.7: a compound dataset, the index its first field
            fields = obs.dtype.names
            if not fields or obs.shape != (sum(chunks),):
                raise self._not_understood(root, SourceFormatError(
                    f"obs of {self.path!r} is a dataset of shape {obs.shape} and dtype {obs.dtype}, "
                    f"not a table of {sum(chunks)} cells; is this an AnnData file?"))
            name = "anndata-obs-names-" + tokenize(self.path, obs.name, fields[0], chunks)
            return da.map_blocks(_h5_names_block, self.path, obs.name, fields[0], self.path, chunks=(chunks,),
                                 dtype=object, meta=np.empty((0,), object), name=name)
        try:
            obs_key = _index_key(obs, "obs", self.path)
        except SourceFormatError as err:
            raise self._not_understood(root, err) from None
        return self._lazy_ids(obs[obs_key], chunks)

    def _lazy_ids(self, index: Any, chunks: tuple[int, ...]) -> da.Array:
        """The obs names; a Zarr index read block by block with the chunk checks of the matrix."""
        if isinstance(index, zarr.Array) and index.attrs.get("encoding-type", "array") in ("string-array", "array"):
            what = f"obs index {index.path!r}"
            self._check_chunks([(what, index)])
            blocks = ZarrBlocks(index, ChunkLayout.of(index, self.path), what, strict=not self.allow_missing_chunks)
            return lazy_blocks(blocks, (chunks,))  # what read_elem_lazy does (da.from_zarr), errors named
        with self._reading("the obs index"):  # .h5ad: anndata reads the strings at open
            return read_elem_lazy(index, chunks=(chunks[0],))

    def _check_anndata(self, root: Group) -> None:
        encoding = root.attrs.get("encoding-type")
        if encoding not in (None, "anndata") or "obs" not in root:
            raise SourceFormatError(
                f"{self.path!r} is not an AnnData store (encoding-type {encoding!r}); "
                "open a plain Zarr array with kind='zarr'"
            )

    def _element(self, root: Group) -> Any:
        parent, _, key = self.element.rpartition("/")
        holder: Any = root[parent] if parent and parent in root else (root if not parent else None)
        if isinstance(holder, h5py.Dataset):  # anndata < 0.7: obsm is a compound dataset, one field per key
            fields = list(holder.dtype.names or [])
            if key in fields:
                return _Field(holder, key)
            available: list[str] = fields
        elif holder is None or key not in holder:
            available = sorted(holder.keys()) if holder is not None else []
        else:
            return holder[key]
        where = f"{parent} keys" if parent else "top-level keys"
        raise SelectionError(
            f"{self.element!r} is not in AnnData {self.path!r} ({where}: {available}); "
            "choose X, layer= or obsm= accordingly"
        )

    def _lazy_matrix(self, elem: Any, encoding: str, shape: tuple[int, ...], stored: np.dtype[Any],
                     dtype: np.dtype[Any]) -> da.Array:
        """The matrix in row chunks, read block by block so that damage names the file and the rows.

        Same chunks as ``read_elem_lazy(elem, chunks=(rows, n_features))``; CSR blocks are
        densified in the task that reads them.
        """
        n_rows, n_features = shape
        self._check_sparse(encoding)
        stored_rows = 1 if encoding == "csr_matrix" else int((getattr(elem, "chunks", None) or (1,))[0])
        rows = self._rows(n_rows, n_features, dtype, multiple_of=stored_rows)
        chunks = (row_chunks(n_rows, rows), (n_features,))
        what = f"{self.element!r}"
        strict = not self.allow_missing_chunks
        if isinstance(elem, zarr.Array):
            self._check_chunks([(what, elem)])
            data = lazy_blocks(ZarrBlocks(elem, ChunkLayout.of(elem, self.path), what, strict=strict), chunks)
        else:
            if encoding == "csr_matrix" and isinstance(elem, zarr.Group):
                self._check_chunks([(f"{what} ({part})", elem[part]) for part in ("data", "indices", "indptr")])
                source: Any = sparse_dataset(elem, should_cache_indptr=False)
                read: Any = _csr_block
            elif encoding == "csr_matrix":
                source, read = self.path, _csr_block
            else:
                source, read = self.path, _h5_dense_block
            extra = {"field": elem.field} if isinstance(elem, _Field) else {}
            name = f"anndata-{read.__name__.strip('_')}-" + tokenize(self.path, elem.name, extra, chunks, str(stored),
                                                                     strict)
            data = da.map_blocks(read, source, elem.name, self.element, self.path, chunks=chunks, dtype=stored,
                                 meta=np.empty((0, 0), stored), name=name, **extra)
        return data.astype(dtype) if data.dtype != dtype else data

    def _check_sparse(self, encoding: str) -> None:
        """Refuse a CSC matrix, and a CSR one when ``sparse="raise"``."""
        if encoding == "csc_matrix":
            raise SparseMatrixError(
                f"{self.element!r} of {self.path!r} is a CSC sparse matrix, which cannot be read by rows; "
                "store it as CSR (adata.X = adata.X.tocsr()) or use obsm='X_pca'"
            )
        if encoding == "csr_matrix" and self.sparse == "raise":
            raise SparseMatrixError(
                f"{self.element!r} of {self.path!r} is sparse and sparse='raise'; use the dense "
                "embedding obsm='X_pca' (the usual single-cell input) or sparse='densify'"
            )

    def _var_names(self, root: Group) -> np.ndarray:
        var: Any = root["var"]  # a group, or (HDF5) an old compound dataset
        if isinstance(var, h5py.Dataset) and var.dtype.names:  # anndata < 0.7: the first field is the index
            with self._reading("the var names"):
                return as_names(_decode_names(np.asarray(var.fields(var.dtype.names[0])[()])))
        try:
            key = _index_key(var, "var", self.path)
        except SourceFormatError as err:
            raise self._not_understood(root, err) from None
        with self._reading("the var names"):
            return as_names(read_elem(var[key]))

    # -- old-format files that the lazy reader does not understand --------------------------

    def _open_with_anndata(self, reason: Exception) -> xr.DataArray:
        """Read an old-format .h5ad with ``anndata.read_h5ad(path, backed="r")``.

        ``X`` stays on disk (read by row chunks as usual); a layer or ``obsm`` entry is what
        anndata's backed mode loads into memory, then cut into row chunks.
        """
        logger.info("%s: a legacy layout the lazy reader does not know (%s); reading it with "
                    "anndata.read_h5ad(backed='r')", self.path, reason)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OldFormatWarning)  # the format is known to be old
            warnings.filterwarnings("ignore", message="Moving element from", category=FutureWarning)  # uns -> obsp
            try:
                adata = anndata.read_h5ad(self.path, backed="r")
            except Exception as err:
                if not is_damage(err):
                    raise
                raise DamagedInputError(
                    f"{self.path!r} (an old-format .h5ad) cannot be read by anndata ({describe_error(err)}); "
                    f"{RESTORE}"
                ) from err
        try:
            if self.layer is not None or self.obsm is not None:
                mapping, key = (adata.layers, self.layer) if self.layer is not None else (adata.obsm, self.obsm)
                if key not in mapping:
                    where = "layers" if self.layer is not None else "obsm"
                    raise SelectionError(
                        f"{self.element!r} is not in AnnData {self.path!r} ({where} keys: {sorted(mapping.keys())}); "
                        "choose X, layer= or obsm= accordingly"
                    )
                value = mapping[key]
            else:
                value = adata.X
            data = self._anndata_matrix(value)
            ids = da.from_array(np.asarray(adata.obs_names, dtype=object), chunks=(data.chunks[0],))
            names = None if self.obsm is not None else as_names(np.asarray(adata.var_names))
        finally:
            adata.file.close()
        return self._data_array(data, sample_ids=ids, feature_names=names, name=self.element)

    def _anndata_matrix(self, value: Any) -> da.Array:
        """A matrix of a backed AnnData as row chunks: on disk when anndata left it there."""
        if isinstance(value, h5py.Dataset):
            dtype = self._check_matrix(value.shape, value.dtype, repr(self.element))
            return self._lazy_matrix(value, "array", tuple(value.shape), value.dtype, dtype)
        group = getattr(value, "group", None)
        if isinstance(group, h5py.Group) and getattr(value, "format", None) in ("csr", "csc"):  # backed sparse
            shape, stored = tuple(int(s) for s in value.shape), group["data"].dtype
            dtype = self._check_matrix(shape, stored, repr(self.element))
            return self._lazy_matrix(group, f"{value.format}_matrix", shape, stored, dtype)
        if sp.issparse(value):
            self._check_sparse("csr_matrix" if value.format == "csr" else "csc_matrix")
        elif hasattr(value, "columns"):  # a data frame in obsm
            raise SourceDtypeError(
                f"{self.element!r} of {self.path!r} is a table (columns {list(value.columns)}), not a numeric "
                "matrix; select an array (X, a layer, or an obsm matrix such as 'X_pca')"
            )
        else:
            value = np.asarray(value)
        dtype = self._check_matrix(value.shape, value.dtype, repr(self.element))
        n_rows, n_features = value.shape
        chunks = (row_chunks(n_rows, self._rows(n_rows, n_features, dtype)), (n_features,))
        data = da.from_array(value, chunks=chunks, asarray=False)  # named by a hash of the values
        if sp.issparse(value):
            data = da.map_blocks(_densify, data, dtype=value.dtype, meta=np.empty((0, 0), value.dtype))
        return data.astype(dtype) if data.dtype != dtype else data
