"""Zarr sink: one group with ``sample``, ``label``, ``proba`` and ``logdens`` arrays, consolidated."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import zarr
from pydantic import Field
from zarr.errors import ZarrUserWarning

from pipeline.options import Options
from pipeline.provenance import canonical_json
from pipeline.results import Results
from pipeline.sinks.base import Plan, Sink, WriteContext, str_block

__all__ = ["ZarrSink", "ZarrSinkOptions", "store_rows", "row_writes"]

logger = logging.getLogger(__name__)


def _ids_for_zarr(ids: da.Array) -> da.Array:
    """Numeric ids as they are; anything else as Python strings."""
    if ids.dtype.kind in "iuf":
        return ids
    return da.map_blocks(str_block, ids, dtype=object)


def store_rows(targets: list[Any], start: int, stop: int, *blocks: np.ndarray, lock: Any = None) -> int:
    """Write rows ``start:stop`` of every target array (one task per row chunk)."""
    with lock if lock is not None else contextlib.nullcontext():
        for target, block in zip(targets, blocks, strict=True):
            target[start:stop] = np.asarray(block)
    return stop - start


def row_writes(arrays: list[da.Array], targets: list[Any], lock: Any = None) -> list[Any]:
    """One ``dask.delayed`` write per row chunk of ``arrays`` (aligned rows) into ``targets``.

    The blocks come from ``to_delayed(optimize_graph=False)``, so the tasks the arrays
    share (the read and E-step of a chunk) stay shared with every other collection of
    the same compute.
    """
    if not arrays or arrays[0].shape[0] == 0:
        return []
    blocks = [a.to_delayed(optimize_graph=False).reshape(-1) if a.ndim == 1 else
              a.to_delayed(optimize_graph=False)[:, 0] for a in arrays]
    stops = np.cumsum(arrays[0].chunks[0])
    starts = stops - np.asarray(arrays[0].chunks[0])
    write = dask.delayed(store_rows, pure=False)
    return [write(targets, int(a), int(b), *parts, lock=lock)
            for a, b, *parts in zip(starts, stops, *blocks, strict=True)]


def consolidate(path: str | os.PathLike[str], zarr_format: Literal[2, 3]) -> None:
    """Write the consolidated metadata of the store at ``path`` (``.zmetadata`` in v2, the root
    ``zarr.json`` in v3), so that ``xarray.open_zarr(path)`` opens it without a warning.

    zarr warns (``ZarrUserWarning``) that consolidated metadata are not part of the v3
    specification; that warning, and only that one, is silenced: zarr-python and xarray
    read them, and a reader that does not know them reads the store's own metadata.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part",
                                category=ZarrUserWarning)
        zarr.consolidate_metadata(str(path), zarr_format=zarr_format)


class ZarrSinkOptions(Options):
    """The options of :class:`ZarrSink`."""

    zarr_format: Literal[2, 3] = Field(3, description="Zarr format of the store (2 for readers without v3).")


class ZarrSink(Sink):
    """Results as a Zarr group that ``xarray.open_zarr(path)`` opens directly, without a warning.

    Layout (row chunks as the results'; variable names as the Parquet sink's columns)::

        <path>/              attrs: encoding-type, encoding-version, provenance, settings
          sample   (sample,)             sample ids (strings or integers; row numbers if none)
          label    (sample,)             int64, -1 where a row has no observed value
          proba    (sample, component)   float32 (the Parquet sink's proba_0 ... proba_{K-1})
          logdens  (sample,)             float64, the log-density (anomaly score)
          anomaly  (sample,)             bool, when the results flag anomalies

    Arrays carry dimension names (``dimension_names`` in v3, ``_ARRAY_DIMENSIONS`` in v2)
    and xarray reads no stored value as missing (v2 arrays have no fill value; xarray does
    not mask with v3 fill values), so ``label`` reads back as int64, zeros and -1 included.
    The group's metadata are consolidated once every array is written (``.zmetadata`` in
    v2, inside the root ``zarr.json`` in v3), which is what ``xarray.open_zarr`` looks for
    first: it opens the store with no ``RuntimeWarning`` in either format.

    Parameters
    ----------
    path : str or os.PathLike
        Local directory of the new store.
    overwrite : bool, default False
    zarr_format : {3, 2}, default 3
    """

    kind = "zarr"
    options_model = ZarrSinkOptions

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False,
                 zarr_format: Literal[2, 3] = 3) -> None:
        super().__init__(path, overwrite=overwrite)
        self.zarr_format = self._checked_options(zarr_format=zarr_format).zarr_format

    def _create(self, group: zarr.Group, name: str, array: da.Array, dims: list[str]) -> zarr.Array:
        chunks = tuple(c[0] if c[0] else 1 for c in array.chunks)
        dtype: Any = str if array.dtype == object else array.dtype
        # v2: no fill value, or xarray would read stored zeros as missing (_FillValue)
        kwargs: dict[str, Any] = {"dimension_names": dims} if self.zarr_format == 3 else {"fill_value": None}
        target = group.create_array(name, shape=array.shape, chunks=chunks, dtype=dtype, **kwargs)
        if self.zarr_format == 2:
            target.attrs["_ARRAY_DIMENSIONS"] = dims
        return target

    def _plan(self, tmp: Path, results: Results, stamp: dict[str, Any], params: dict[str, Any],
              context: WriteContext) -> Plan:
        group = zarr.open_group(str(tmp), mode="w-", zarr_format=self.zarr_format)
        group.attrs.update(json.loads(canonical_json(stamp)))
        sources = {
            "sample": (_ids_for_zarr(results.ids_or_row_numbers()), ["sample"]),
            "label": (results.labels, ["sample"]),
            "proba": (results.proba, ["sample", "component"]),
            "logdens": (results.logdens, ["sample"]),
        }
        if results.anomaly is not None:
            sources["anomaly"] = (results.anomaly, ["sample"])
        targets = [self._create(group, name, arr, dims) for name, (arr, dims) in sources.items()]
        return Plan(writes=row_writes([arr for arr, _ in sources.values()], targets))

    def _finish(self, tmp: Path, results: Results, stamp: dict[str, Any], params: dict[str, Any],
                values: list[Any]) -> None:
        consolidate(tmp, self.zarr_format)
