"""Parquet sink: a dataset directory, one file per row chunk."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, get_args

import dask
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from pipeline.options import NonEmptyStr, Options
from pipeline.provenance import canonical_json
from pipeline.results import Results
from pipeline.sinks.base import Plan, Sink, WriteContext

__all__ = ["ParquetSink", "ParquetSinkOptions", "METADATA_KEY", "COMPRESSIONS"]

logger = logging.getLogger(__name__)

#: Key of the stamp (JSON) in the Parquet schema metadata of every file.
METADATA_KEY: bytes = b"gmm_stream"

Compression = Literal["snappy", "zstd", "gzip", "lz4", "brotli", "none"]
#: The codecs the sink writes with (``pyarrow.parquet.write_table``'s; "none": uncompressed).
COMPRESSIONS: tuple[str, ...] = get_args(Compression)


def _write_part(path: Path, id_column: str, metadata: dict[bytes, bytes], compression: str,
                ids: np.ndarray, labels: np.ndarray, proba: np.ndarray, logdens: np.ndarray,
                anomaly: np.ndarray | None = None) -> int:
    ids = np.asarray(ids)
    columns: dict[str, Any] = {
        id_column: pa.array(ids.tolist() if ids.dtype == object else ids),
        "label": pa.array(labels, type=pa.int64()),
    }
    for k in range(proba.shape[1]):
        columns[f"proba_{k}"] = pa.array(proba[:, k], type=pa.float32())
    columns["logdens"] = pa.array(logdens, type=pa.float64())
    if anomaly is not None:
        columns["anomaly"] = pa.array(anomaly, type=pa.bool_())
    table = pa.table(columns).replace_schema_metadata(metadata)
    pq.write_table(table, path, compression=compression, use_dictionary=[id_column])
    return len(labels)


class ParquetSinkOptions(Options):
    """The options of :class:`ParquetSink`."""

    id_column: NonEmptyStr = Field("sample_id", description="Name of the column of sample ids.")
    compression: Compression = Field("snappy", description="Codec of the Parquet files.")


class ParquetSink(Sink):
    """Results as a Parquet dataset: ``<path>/part-00000.parquet, ...`` (one per row chunk).

    Columns: ``<id_column>`` (sample ids, or row numbers), ``label`` (int64, -1 where a
    row has no observed value; never a float column), ``proba_0 ... proba_{K-1}``
    (float32), ``logdens`` (float64, the log-density / anomaly score), and ``anomaly``
    (bool) when the results flag anomalies: the names of the
    Zarr sink's variables ``label``, ``proba`` (one ``(sample, component)`` array there)
    and ``logdens``. Every file's schema metadata holds the stamp as JSON under the key
    ``gmm_stream``. Read back with ``pandas.read_parquet(path)`` (``label`` is int64)
    or ``pyarrow.parquet.read_table(path)``.

    Parameters
    ----------
    path : str or os.PathLike
        Local directory of the new dataset.
    overwrite : bool, default False
    id_column : str, default "sample_id"
    compression : {"snappy", "zstd", "gzip", "lz4", "brotli", "none"}, default "snappy"
    """

    kind = "parquet"
    options_model = ParquetSinkOptions

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False,
                 id_column: str = "sample_id", compression: str = "snappy") -> None:
        super().__init__(path, overwrite=overwrite)
        options = self._checked_options(id_column=id_column, compression=compression)
        self.id_column = options.id_column
        self.compression = options.compression

    def _plan(self, tmp: Path, results: Results, stamp: dict[str, Any], params: dict[str, Any],
              context: WriteContext) -> Plan:
        tmp.mkdir()
        metadata = {METADATA_KEY: canonical_json(stamp).encode("utf-8")}
        arrays = [results.ids_or_row_numbers(), results.labels, results.proba, results.logdens]
        if results.anomaly is not None:
            arrays.append(results.anomaly)
        # optimize_graph=False keeps the keys the arrays share (the E-step of a chunk, the
        # read of the input chunk) shared with every other collection of the same compute
        blocks = zip(*(a.to_delayed(optimize_graph=False).reshape(-1) for a in arrays), strict=True)
        write = dask.delayed(_write_part, pure=False)
        return Plan(writes=[write(tmp / f"part-{i:05d}.parquet", self.id_column, metadata, self.compression, *parts)
                            for i, parts in enumerate(blocks)])
