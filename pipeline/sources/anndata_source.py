"""AnnData source: ``X``, a layer or an ``obsm`` matrix of an ``.h5ad`` file or an AnnData Zarr store."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import dask.array as da
import h5py
import numpy as np
import scipy.sparse as sp
import xarray as xr
import zarr
from anndata.experimental import read_elem_lazy
from anndata.io import read_elem

from pipeline._chunks import DEFAULT_CHUNK_BYTES
from pipeline._paths import is_url
from pipeline.exceptions import SelectionError, SourceDtypeError, SourceFormatError, SparseMatrixError
from pipeline.sources.base import Source, as_names

__all__ = ["AnnDataSource", "anndata_format"]

logger = logging.getLogger(__name__)

Group = h5py.Group | zarr.Group


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


def _index_key(group: Group, where: str, path: str) -> str:
    key = group.attrs.get("_index")
    if key is None:
        raise SourceFormatError(f"{where} of {path!r} has no '_index' attribute; is this an AnnData store?")
    return str(key)


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
    chunk_rows, chunk_bytes, storage_options
        See :class:`~pipeline.sources.base.Source`.
    """

    kind = "anndata"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        layer: str | None = None,
        obsm: str | None = None,
        sparse: Literal["densify", "raise"] = "densify",
        chunk_rows: int | None = None,
        chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(path, chunk_rows=chunk_rows, chunk_bytes=chunk_bytes, storage_options=storage_options)
        if layer is not None and obsm is not None:
            raise SelectionError(f"give either layer={layer!r} or obsm={obsm!r} for {self.path!r}, not both")
        if sparse not in ("densify", "raise"):
            raise SelectionError(f"sparse must be 'densify' or 'raise', got {sparse!r}")
        self.layer = layer
        self.obsm = obsm
        self.sparse = sparse

    def selection(self) -> dict[str, Any]:
        return {"layer": self.layer, "obsm": self.obsm, "sparse": self.sparse}

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
            with h5py.File(self.path, "r") as root:
                return self._open_root(root)
        root = zarr.open_group(self.path, mode="r", storage_options=self.storage_options or None)
        return self._open_root(root)

    def _open_root(self, root: Group) -> xr.DataArray:
        self._check_anndata(root)
        elem = self._element(root)
        encoding = str(elem.attrs.get("encoding-type", "array"))
        if encoding in ("csr_matrix", "csc_matrix"):
            shape, stored = tuple(int(s) for s in elem.attrs["shape"]), elem["data"].dtype
        elif isinstance(elem, (h5py.Dataset, zarr.Array)):
            shape, stored = elem.shape, elem.dtype
        else:
            raise SourceDtypeError(
                f"{self.element!r} of {self.path!r} is a {encoding!r}, not a numeric matrix; "
                "select an array (X, a layer, or an obsm matrix such as 'X_pca')"
            )
        dtype = self._check_matrix(shape, stored, repr(self.element))
        data = self._lazy_matrix(elem, encoding, shape, dtype)
        obs_key = _index_key(root["obs"], "obs", self.path)
        ids = read_elem_lazy(root["obs"][obs_key], chunks=(data.chunks[0][0],))
        names = None if self.obsm is not None else self._var_names(root)
        return self._data_array(data, sample_ids=ids, feature_names=names, name=self.element)

    def _check_anndata(self, root: Group) -> None:
        encoding = root.attrs.get("encoding-type")
        if encoding not in (None, "anndata") or "obs" not in root:
            raise SourceFormatError(
                f"{self.path!r} is not an AnnData store (encoding-type {encoding!r}); "
                "open a plain Zarr array with kind='zarr'"
            )

    def _element(self, root: Group) -> Any:
        parent, _, key = self.element.rpartition("/")
        holder = root[parent] if parent and parent in root else (root if not parent else None)
        if holder is None or key not in holder:
            available = sorted(holder.keys()) if holder is not None else []
            where = f"{parent} keys" if parent else "top-level keys"
            raise SelectionError(
                f"{self.element!r} is not in AnnData {self.path!r} ({where}: {available}); "
                "choose X, layer= or obsm= accordingly"
            )
        return holder[key]

    def _lazy_matrix(self, elem: Any, encoding: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> da.Array:
        n_rows, n_features = shape
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
        stored_rows = 1 if encoding == "csr_matrix" else int((getattr(elem, "chunks", None) or (1,))[0])
        rows = self._rows(n_rows, n_features, dtype, multiple_of=stored_rows)
        data = read_elem_lazy(elem, chunks=(rows, n_features))
        if encoding == "csr_matrix":
            data = data.map_blocks(_densify, dtype=data.dtype, meta=np.empty((0, 0), data.dtype))
        return data.astype(dtype) if data.dtype != dtype else data

    def _var_names(self, root: Group) -> np.ndarray:
        key = _index_key(root["var"], "var", self.path)
        return as_names(read_elem(root["var"][key]))
