"""AnnData sink: a copy of the input AnnData with the results added where scverse users look."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeAlias, cast

import anndata
import dask.array as da
import h5py
import numpy as np
import pandas as pd
import zarr
from anndata import OldFormatWarning
from anndata.experimental import read_elem_lazy
from anndata.io import write_elem
from pydantic import Field

from pipeline._paths import input_paths
from pipeline.exceptions import SinkError, SourceNotFoundError
from pipeline.options import Options
from pipeline.provenance import canonical_json
from pipeline.results import Results
from pipeline.sinks._atomic import remove_path
from pipeline.sinks.base import Plan, Sink, WriteContext, str_block
from pipeline.sinks.zarr_sink import row_writes
from pipeline.sources.anndata_source import anndata_format, is_legacy_h5ad

__all__ = ["AnnDataSink", "AnnDataSinkOptions", "KeyAdded"]

#: ``key_added``: a name without '/' (it names entries of ``obs``, ``obsm`` and ``uns``).
KeyAdded = Annotated[str, Field(pattern=r"^[^/]+$")]

logger = logging.getLogger(__name__)

Group: TypeAlias = h5py.Group | zarr.Group


def _group(parent: Group, key: str) -> Group:
    """``parent[key]``, a group in the AnnData layout (``obs``, ``obsm``, ``uns``, or one below them)."""
    return cast(Group, parent[key])


def _codes_dtype(n_components: int) -> np.dtype[Any]:
    for dtype in (np.int8, np.int16, np.int32):
        if n_components <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _to_uns(value: Any) -> Any:
    """A JSON-able value as anndata can store it in ``uns``.

    Mappings stay mappings, homogeneous lists become arrays, ``None`` stays ``None``;
    anything anndata cannot store (mixed lists, lists holding ``None``) becomes JSON text.
    """
    if isinstance(value, Mapping):
        return {str(k): _to_uns(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            return np.asarray([], dtype=np.float64)
        if all(isinstance(v, str) for v in value):
            return np.asarray(value, dtype=object)
        try:
            array = np.asarray(value)
        except ValueError:  # ragged
            return canonical_json(list(value))
        return array if array.dtype.kind in "biuf" else canonical_json(list(value))
    return value


def _delete(group: Group, key: str) -> None:
    if key in group:
        del group[key]


class AnnDataSinkOptions(Options):
    """The options of :class:`AnnDataSink`."""

    input_path: Path = Field(description="The AnnData the results were computed from (local).")
    key_added: KeyAdded = Field(
        "gmm", description="Name of the results: obs[key_added], obsm[key_added_proba], uns[key_added].")


class AnnDataSink(Sink):
    """Copy the input AnnData and add the results to the copy.

    What is added (``key`` is ``key_added``, default ``"gmm"``):

    - ``obs[key]``: categorical labels, categories ``"0" ... "K-1"``; a row with no
      observed value gets a missing category (NaN);
    - ``obsm[key + "_proba"]``: posterior probabilities, float32 (n_obs, K);
    - ``obs[key + "_logdens"]``: log-density of each cell, float64 (the anomaly score);
    - ``uns[key]``: ``encoding_type`` (``"gmm_stream_result"``), ``encoding_version``,
      ``params`` (weights, means, covariances, ...), ``settings`` and ``provenance``.

    The input (``.h5ad`` file or AnnData Zarr store) is copied byte for byte into the
    hidden temporary sibling, the new elements are written into the copy (``X`` is
    never loaded) and the copy is renamed into place. The three per-cell arrays are
    created with anndata's ``array`` encoding and filled by a single
    ``dask.array.store``, chunk by chunk, so each row chunk is computed once; the
    categories and ``uns`` go through anndata's own writer (``anndata.io.write_elem``).
    Existing elements of the same names in the copy are replaced. The output has the
    input's format (a file for ``.h5ad``, a directory for Zarr; Zarr metadata are
    re-consolidated). If the results carry sample ids they must equal the input's
    ``obs_names``, in order (checked in one pass over the ids before writing).

    An ``.h5ad`` written by an old anndata (no ``encoding-type`` on its root, e.g.
    scanpy's ``pbmc68k_reduced.h5ad`` whose ``obs`` and ``obsm`` are HDF5 compound
    datasets) cannot take new elements in place: it is read with
    ``anndata.read_h5ad(input, backed="r")``, the same elements are added, and the
    output is written by ``AnnData.write_h5ad`` in the current format (anndata's own
    conversion of the legacy layout; the per-cell results are computed into memory).

    Parameters
    ----------
    path : str or os.PathLike
        Output path (``.h5ad`` file or Zarr directory), not the input.
    input_path : str or os.PathLike
        The AnnData the results were computed from (local).
    key_added : str, default "gmm"
        A name without '/'.
    overwrite : bool, default False
    """

    kind = "anndata"
    options_model = AnnDataSinkOptions

    def __init__(self, path: str | os.PathLike[str], input_path: str | os.PathLike[str], *,
                 key_added: str = "gmm", overwrite: bool = False) -> None:
        super().__init__(path, overwrite=overwrite)
        options = self._checked_options(input_path=Path(input_path), key_added=key_added)
        self.input_path = options.input_path.expanduser().absolute()
        self.key_added = options.key_added

    def _check(self, provenance: Mapping[str, Any]) -> None:
        if not self.input_path.exists():
            raise SourceNotFoundError(f"AnnData input {self.input_path} does not exist; check input_path")
        self._check_not_input({"input": {"path": str(self.input_path)}})
        super()._check(provenance)

    def _plan(self, tmp: Path, results: Results, stamp: dict[str, Any], params: dict[str, Any],
              context: WriteContext) -> Plan:
        context.stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=".*autosharding.*", category=UserWarning)
        if anndata_format(str(self.input_path)) == "h5ad":
            with h5py.File(self.input_path, "r") as root:
                legacy = is_legacy_h5ad(root)
            if legacy:  # computed into memory, written by anndata in _finish
                self._mode = "legacy"
                names = self._legacy_names()
                self._check_count(names.shape[0], results)
                arrays = [results.labels, results.proba, results.logdens]
                if results.anomaly is not None:
                    arrays.append(results.anomaly)
                return Plan(values=[self._same_ids(da.from_array(names, chunks=(results.labels.chunks[0][0] or 1,)),
                                                   results), *arrays])
            shutil.copyfile(self.input_path, tmp)
            if context.distributed:  # the workers cannot write into this process's HDF5 file: stage in Zarr
                self._mode = "staged"
                self._stage = tmp.with_name(tmp.name + ".stage")
                context.stack.callback(remove_path, self._stage)
                stage = zarr.open_group(str(self._stage), mode="w-")
                with h5py.File(tmp, "r") as root:
                    check = self._check_rows(root, results)
                pairs = self._arrays(results)
                targets = [stage.create_array(name.replace("/", "__"), shape=a.shape, dtype=a.dtype,
                                              chunks=tuple(max(c[0], 1) for c in a.chunks))
                           for a, _, name in pairs]
                return Plan(writes=row_writes([a for a, _, _ in pairs], targets), values=[check])
            self._mode = "h5ad"
            root = context.stack.enter_context(h5py.File(tmp, "r+"))
            check = self._check_rows(root, results)
            targets = self._prepare(root, results)
            pairs = self._arrays(results)
            # HDF5 writes from threads must not interleave
            return Plan(writes=row_writes([a for a, _, _ in pairs], targets, lock=threading.Lock()), values=[check])
        self._mode = "zarr"
        shutil.copytree(self.input_path, tmp)
        root = zarr.open_group(str(tmp), mode="r+", use_consolidated=False)
        check = self._check_rows(root, results)
        targets = self._prepare(root, results)
        return Plan(writes=row_writes([a for a, _, _ in self._arrays(results)], targets), values=[check])

    def _finish(self, tmp: Path, results: Results, stamp: dict[str, Any], params: dict[str, Any],
                values: list[Any]) -> None:
        self._raise_if_ids_differ(bool(values[0]))
        if self._mode == "legacy":
            self._rewrite_legacy(tmp, results, stamp, params, values[1:])
            return
        if self._mode == "staged":
            stage = zarr.open_group(str(self._stage), mode="r")
            with h5py.File(tmp, "r+") as root:
                targets = self._prepare(root, results)
                for (_, _, name), target in zip(self._arrays(results), targets, strict=True):
                    source = cast(zarr.Array, stage[name.replace("/", "__")])
                    step = max(source.chunks[0], 1)
                    for start in range(0, source.shape[0], step):
                        target[start:start + step] = source[start:start + step]
                self._complete(root, stamp, params)
            return
        if self._mode == "h5ad":
            with h5py.File(tmp, "r+") as root:
                self._complete(root, stamp, params)
            return
        root = zarr.open_group(str(tmp), mode="r+", use_consolidated=False)
        self._complete(root, stamp, params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that consolidated v3 metadata are not in the spec
            zarr.consolidate_metadata(str(tmp))

    def _arrays(self, results: Results) -> list[tuple[da.Array, str, str]]:
        """(array, group, name) of every per-cell result: obs codes, obs log-density, obsm probabilities."""
        key = self.key_added
        pairs = [(results.labels.astype(_codes_dtype(results.n_components)), "obs", f"{key}/codes"),
                 (results.logdens, "obs", f"{key}_logdens"), (results.proba, "obsm", f"{key}_proba")]
        if results.anomaly is not None:
            pairs.append((results.anomaly, "obs", f"{key}_anomaly"))
        return pairs

    def _obs_columns(self, results: Results) -> list[str]:
        key = self.key_added
        return [key, f"{key}_logdens"] + ([f"{key}_anomaly"] if results.anomaly is not None else [])

    def _prepare(self, root: Group, results: Results) -> list[Any]:
        """Remove elements of the same names and create the empty per-cell arrays."""
        key = self.key_added
        obs = _group(root, "obs")
        obsm = _group(root, "obsm") if "obsm" in root else _new_dict_group(root, "obsm")
        for group, name in [(obs, c) for c in (key, f"{key}_logdens", f"{key}_anomaly")] + [(obsm, f"{key}_proba")]:
            _delete(group, name)
        self._categorical_group(obs, key, results.n_components)
        groups = {"obs": obs, "obsm": obsm}
        targets = []
        for array, group, name in self._arrays(results):
            parent, _, leaf = name.rpartition("/")
            where = _group(groups[group], parent) if parent else groups[group]
            targets.append(_empty_array(where, leaf, array))
        return targets

    def _complete(self, root: Group, stamp: dict[str, Any], params: dict[str, Any]) -> None:
        """Column order and ``uns[key]``, once the per-cell arrays are written."""
        key = self.key_added
        obs = _group(root, "obs")
        added = [c for c in (key, f"{key}_logdens", f"{key}_anomaly") if c in obs]
        order = [c for c in _column_order(obs) if c not in added] + added
        # HDF5 stores the strings as an object array, Zarr as a JSON list
        column_order: Any = np.asarray(order, dtype=object) if isinstance(root, h5py.Group) else order
        obs.attrs["column-order"] = column_order
        uns = _group(root, "uns") if "uns" in root else _new_dict_group(root, "uns")
        _delete(uns, key)
        write_elem(uns, key, _to_uns(self._uns_entry(stamp, params)))

    def _legacy_names(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OldFormatWarning)
            warnings.filterwarnings("ignore", message="Moving element from", category=FutureWarning)
            adata = anndata.read_h5ad(self.input_path, backed="r")
        try:
            return np.asarray(adata.obs_names, dtype=object)
        finally:
            if adata.isbacked:
                adata.file.close()

    def _rewrite_legacy(self, tmp: Path, results: Results, stamp: dict[str, Any], params: dict[str, Any],
                        arrays: list[Any]) -> None:
        """An .h5ad written by an old anndata: read it with anndata, add the results, write it anew.

        Its compound ``obs``/``obsm`` datasets cannot take new columns in place, so the
        output is written by ``AnnData.write_h5ad`` (the current format) from
        ``anndata.read_h5ad(input, backed="r")`` plus the results. ``X`` is read from the
        input by anndata while writing; the per-cell results were computed into memory
        (``n_obs x K`` values): this path is for the small files of that era, modern
        inputs are never loaded.
        """
        logger.info("%s was written by an old anndata; writing %s with anndata.write_h5ad (current format)",
                    self.input_path, self.path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OldFormatWarning)  # the format is known to be old
            warnings.filterwarnings("ignore", message="Moving element from", category=FutureWarning)  # uns -> obsp
            adata = anndata.read_h5ad(self.input_path, backed="r")
        try:
            labels, proba, logdens = arrays[:3]
            key = self.key_added
            adata.obs.drop(columns=[c for c in self._obs_columns(results) if c in adata.obs.columns], inplace=True)
            adata.obs[key] = pd.Categorical.from_codes(np.asarray(labels, dtype=np.int64),
                                                       categories=[str(k) for k in range(results.n_components)])
            adata.obs[f"{key}_logdens"] = np.asarray(logdens, dtype=np.float64)
            if len(arrays) > 3:
                adata.obs[f"{key}_anomaly"] = np.asarray(arrays[3], dtype=bool)
            adata.obsm[f"{key}_proba"] = np.asarray(proba, dtype=np.float32)
            adata.uns[key] = _to_uns(self._uns_entry(stamp, params))
            adata.write_h5ad(tmp)
        finally:
            if adata.isbacked:
                adata.file.close()

    def _uns_entry(self, stamp: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return {
            "encoding_type": stamp["encoding-type"],
            "encoding_version": stamp["encoding-version"],
            "params": params,
            "settings": json.loads(canonical_json(stamp["settings"])),
            "provenance": json.loads(canonical_json(stamp["provenance"])),
        }

    def _inputs(self) -> list[str]:
        return input_paths(self.input_path)

    def _check_rows(self, root: Group, results: Results) -> Any:
        """The number of cells now; a lazy "ids equal obs_names", computed with the writes."""
        obs = _group(root, "obs")
        index = read_elem_lazy(obs[str(obs.attrs["_index"])], chunks=(results.labels.chunks[0][0] or 1,))
        self._check_count(index.shape[0], results)
        return self._same_ids(index, results)

    def _check_count(self, n_cells: int, results: Results) -> None:
        if n_cells != results.n_samples:
            raise SinkError(
                f"results have {results.n_samples} rows but AnnData {self.input_path} has "
                f"{n_cells} cells; write results computed from this AnnData"
            )

    @staticmethod
    def _same_ids(index: da.Array, results: Results) -> Any:
        if results.sample_ids is None or results.n_samples == 0:
            return True
        ids = da.map_blocks(str_block, results.sample_ids, dtype=object)
        return da.all(ids == da.map_blocks(str_block, index.rechunk(ids.chunks), dtype=object))

    def _raise_if_ids_differ(self, same: bool) -> None:
        if not same:
            raise SinkError(
                f"the results' sample ids differ from the obs_names of {self.input_path}; "
                "results must be in the AnnData's cell order"
            )

    @staticmethod
    def _categorical_group(obs: Group, key: str, n_components: int) -> Group:
        """``obs[key]`` as an anndata categorical; its ``codes`` are created by the caller."""
        group = obs.create_group(key)
        group.attrs.update({"encoding-type": "categorical", "encoding-version": "0.2.0", "ordered": False})
        write_elem(group, "categories", np.asarray([str(k) for k in range(n_components)], dtype=object))
        return group


def _empty_array(group: Group, name: str, array: da.Array) -> Any:
    """A dense array element as anndata encodes it (``encoding-type: array``), chunked like ``array``.

    The data are stored afterwards with one ``dask.array.store`` over all new arrays;
    anndata's ``write_elem`` would store (and so compute) each array separately.
    """
    chunks = tuple(max(c[0], 1) for c in array.chunks) if array.shape[0] else None
    if isinstance(group, h5py.Group):
        target = group.create_dataset(name, shape=array.shape, dtype=array.dtype, chunks=chunks)
    else:
        target = group.create_array(name, shape=array.shape, dtype=array.dtype, chunks=chunks or "auto")
    target.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    return target


def _column_order(obs: Group) -> list[str]:
    order: Any = obs.attrs.get("column-order", [])  # a list (Zarr) or an array (HDF5)
    return [str(c) for c in np.asarray(order).tolist()] if len(order) else []


def _new_dict_group(root: Group, name: str) -> Group:
    group = root.create_group(name)
    group.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
    return group
