"""Data sources: Zarr, Parquet and AnnData, each opened lazily as an ``xarray.DataArray``.

>>> from pipeline.sources import open_source
>>> X = open_source("anndata", "pbmc.h5ad", obsm="X_pca")            # doctest: +SKIP
>>> X.dims, X.data.chunks                                              # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import xarray as xr

from pipeline.exceptions import SourceFormatError
from pipeline.sources.anndata_source import AnnDataSource, AnnDataSourceOptions
from pipeline.sources.base import FEATURE_DIM, SAMPLE_DIM, Partition, Source
from pipeline.sources.parquet_source import IntegerColumnWarning, ParquetSource, ParquetSourceOptions
from pipeline.sources.zarr_source import ZarrSource, ZarrSourceOptions

__all__ = [
    "Source",
    "Partition",
    "ZarrSource",
    "ParquetSource",
    "IntegerColumnWarning",
    "AnnDataSource",
    "ZarrSourceOptions",
    "ParquetSourceOptions",
    "AnnDataSourceOptions",
    "SAMPLE_DIM",
    "FEATURE_DIM",
    "SOURCES",
    "register_source",
    "make_source",
    "open_source",
    "infer_kind",
]

#: Registry of source kinds: name -> Source subclass.
SOURCES: dict[str, type[Source]] = {}

S = TypeVar("S", bound=type[Source])


def register_source(kind: str) -> Callable[[S], S]:
    """Class decorator that registers a :class:`Source` subclass under ``kind``."""

    def decorate(cls: S) -> S:
        SOURCES[kind] = cls
        return cls

    return decorate


for _cls in (ZarrSource, ParquetSource, AnnDataSource):
    register_source(_cls.kind)(_cls)


def infer_kind(path: str | os.PathLike[str]) -> str:
    """Guess the source kind from the path.

    ``.h5ad`` -> ``anndata``; ``.parquet``/``.pq``, or a glob -> ``parquet``; a ``.zarr``
    store whose root is marked ``encoding-type: anndata`` -> ``anndata``, other ``.zarr``
    -> ``zarr``. Anything else raises :class:`~pipeline.exceptions.SourceFormatError`.
    """
    text = str(path).rstrip("/")
    lower = text.lower()
    if lower.endswith(".h5ad"):
        return "anndata"
    if lower.endswith((".parquet", ".pq")) or any(c in text for c in "*?["):
        return "parquet"
    if lower.endswith(".zarr"):
        return "anndata" if _is_anndata_zarr(text) else "zarr"
    raise SourceFormatError(
        f"cannot tell the format of {text!r} from its name; pass kind= one of {sorted(SOURCES)}"
    )


def _is_anndata_zarr(path: str) -> bool:
    import zarr

    try:
        return zarr.open_group(path, mode="r").attrs.get("encoding-type") == "anndata"
    except Exception:  # not a readable group: let the Zarr source report the problem
        return False


def make_source(kind: str | None, path: str | os.PathLike[str], **options: Any) -> Source:
    """Build the :class:`Source` of ``kind`` (``None``: :func:`infer_kind`) for ``path``.

    ``options`` are the selection and chunking arguments of that source class, e.g.
    ``obsm="X_pca"`` for AnnData or ``columns=[...], id_column="id"`` for Parquet, and
    ``allow_missing_chunks=True`` (Zarr, AnnData Zarr) to read missing chunk files as the
    fill value instead of raising :class:`~pipeline.exceptions.MissingChunkError`. The
    selection arguments of each kind are its class's ``options_model`` (e.g.
    :class:`ZarrSourceOptions`).
    """
    kind = infer_kind(path) if kind is None else kind
    try:
        cls = SOURCES[kind]
    except KeyError:
        raise SourceFormatError(f"unknown source kind {kind!r}; use one of {sorted(SOURCES)}") from None
    return cls(path, **options)


def open_source(kind: str | None, path: str | os.PathLike[str], **selection: Any) -> xr.DataArray:
    """Open ``path`` lazily as a ``(sample, feature)`` DataArray: ``make_source(...).open()``."""
    return make_source(kind, path, **selection).open()
