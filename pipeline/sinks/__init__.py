"""Results sinks: Zarr group, Parquet dataset, and a copy of the input AnnData.

>>> from pipeline.sinks import make_sink
>>> make_sink("zarr", "results.zarr").write(results, provenance=stamp)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.exceptions import SinkError
from pipeline.sinks._atomic import atomic_output
from pipeline.sinks.anndata_sink import AnnDataSink, AnnDataSinkOptions
from pipeline.sinks.base import Sink, write_results
from pipeline.sinks.parquet_sink import COMPRESSIONS, METADATA_KEY, ParquetSink, ParquetSinkOptions
from pipeline.sinks.zarr_sink import ZarrSink, ZarrSinkOptions

__all__ = ["Sink", "ZarrSink", "ParquetSink", "AnnDataSink", "ZarrSinkOptions", "ParquetSinkOptions",
           "AnnDataSinkOptions", "COMPRESSIONS", "SINKS", "METADATA_KEY", "make_sink", "atomic_output",
           "write_results"]

#: Registry of sink kinds: name -> Sink subclass.
SINKS: dict[str, type[Sink]] = {cls.kind: cls for cls in (ZarrSink, ParquetSink, AnnDataSink)}


def make_sink(kind: str, path: str | os.PathLike[str], **options: Any) -> Sink:
    """Build the :class:`Sink` of ``kind`` for ``path``; ``options`` go to its constructor.

    The options of each kind are its class's ``options_model`` (e.g. :class:`ParquetSinkOptions`).

    E.g. ``make_sink("anndata", "out.h5ad", input_path="in.h5ad", key_added="gmm")``.
    """
    try:
        cls = SINKS[kind]
    except KeyError:
        raise SinkError(f"unknown sink kind {kind!r}; use one of {sorted(SINKS)}") from None
    return cls(path, **options)
