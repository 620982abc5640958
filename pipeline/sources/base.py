"""The reader contract that every data source fulfils."""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import xarray as xr

from pipeline._chunks import DEFAULT_CHUNK_BYTES, rows_per_chunk
from pipeline._paths import input_paths, is_url, modification_time, normalise, path_exists
from pipeline.atomic import protect_inputs
from pipeline.exceptions import SelectionError, SourceDtypeError, SourceNotFoundError, SourceShapeError
from pipeline.options import Options

__all__ = ["Source", "Partition", "SAMPLE_DIM", "FEATURE_DIM"]

logger = logging.getLogger(__name__)

SAMPLE_DIM: str = "sample"
FEATURE_DIM: str = "feature"


@dataclass(frozen=True)
class Partition:
    """A part of a source that an incremental refresh can read alone.

    Attributes
    ----------
    key : str
        Names the partition from one run to the next (a file's path, a row range).
    start, stop : int
        Its rows in the opened matrix, ``data[start:stop]`` (they may move when other
        partitions are added or removed; the key does not).
    identity : dict or None
        What changes when the partition's data change (size, modification time, rows), as
        JSON; None when it cannot be known cheaply: the partition is then read at every
        refresh.
    """

    key: str
    start: int
    stop: int
    identity: dict[str, Any] | None

    def unchanged(self, stored: dict[str, Any] | None) -> bool:
        """Whether ``stored`` (the identity recorded at an earlier visit) still describes it."""
        return self.identity is not None and stored is not None and self.identity == stored


class Source(abc.ABC):
    """A matrix of samples x features stored in files, opened lazily.

    The reader contract
    -------------------
    ``open()`` returns an :class:`xarray.DataArray` of shape ``(n_samples, n_features)``:

    - dims are exactly ``("sample", "feature")`` and the data are a Dask array;
      nothing but metadata (and the feature names) is read before a chunk is computed;
    - rows are split into chunks of ``chunk_rows`` rows, or of about ``chunk_bytes`` bytes
      (default 128 MiB) when ``chunk_rows`` is not given; features are always one chunk;
      every chunk length is known (no NaN chunk sizes);
    - the dtype is floating point: float32 stays float32, float64 stays float64, integer
      data are cast to float64; missing values (Parquet nulls, NaN) are NaN;
    - sample ids, when the source has them, are the ``sample`` coordinate, **lazy**
      (Dask-backed, no pandas index; ``data.set_xindex("sample")`` loads them into an
      index); feature names, when the source has them, are the ``feature`` coordinate
      (loaded, they are small);
    - ``attrs`` carry ``source_kind`` and ``source_path``;
    - every local file the source reads (each match of a glob, the targets of symlinks in
      a directory) is registered with :func:`pipeline.atomic.protect_inputs`: from then
      on no output of this process (sinks, saved models, preprocessing) may touch it.

    ``identity()`` returns a JSON-able dict describing the input for provenance:
    ``kind``, ``path`` (absolute path or URL), ``selection`` (what was chosen inside the
    file), ``shape``, ``dtype`` and ``mtime`` (latest modification time, UTC ISO 8601,
    walking directories; for URLs the store's modification time or ETag, when known).

    Each source class declares its options in ``options_model`` (a
    :class:`pipeline.options.Options` model: what the constructor takes beyond ``path``,
    the chunking and ``storage_options``, and the rules between them); the constructor
    validates them through it and raises :class:`~pipeline.exceptions.SelectionError`
    naming the source and each problem.

    A missing file raises :class:`~pipeline.exceptions.SourceNotFoundError`; a missing
    array/column/key :class:`~pipeline.exceptions.SelectionError`; non-numeric data
    :class:`~pipeline.exceptions.SourceDtypeError`; data that are not 2-D
    :class:`~pipeline.exceptions.SourceShapeError`. Every message names the file.

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL.
    chunk_rows : int, optional
        Rows per chunk; wins over ``chunk_bytes``.
    chunk_bytes : int or str, default 128 MiB
        Target bytes per row chunk (as the chunk lands in memory).
    storage_options : dict, optional
        Passed to fsspec for URLs.
    """

    kind: ClassVar[str] = ""
    #: The options of this kind of source, and their rules (see :mod:`pipeline.options`).
    options_model: ClassVar[type[Options]] = Options

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_rows: int | None = None,
        chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.path = normalise(path)
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_bytes
        self.storage_options = dict(storage_options or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, selection={self.selection()!r})"

    @abc.abstractmethod
    def open(self) -> xr.DataArray:
        """Open the selected matrix lazily; see the class docstring for the contract."""

    @abc.abstractmethod
    def selection(self) -> dict[str, Any]:
        """What is selected inside the file (JSON-able), e.g. ``{"obsm": "X_pca"}``."""

    def identity(self, data: xr.DataArray | None = None) -> dict[str, Any]:
        """Identity of the input for provenance (see the class docstring); ``data``: the
        matrix :meth:`open` returned, if it is open already (it is not opened again)."""
        data = self.open() if data is None else data
        return {
            "kind": self.kind,
            "path": self.path,
            "selection": self.selection(),
            "shape": [int(s) for s in data.shape],
            "dtype": str(data.dtype),
            "mtime": self._modification_time(),
        }

    def partitions(self, data: xr.DataArray) -> list[Partition]:
        """The partitions of the opened ``data`` for incremental refreshes, in row order.

        This default is one partition, the whole input, whose identity is the input's (a
        change anywhere changes it); Parquet sources give one partition per file, Zarr
        arrays one per row chunk.
        """
        identity = self.identity(data)
        return [Partition("all", 0, int(data.shape[0]), identity if identity.get("mtime") else None)]

    def _modification_time(self) -> str | None:
        """Latest modification time of the input (UTC ISO 8601), walking directories."""
        return modification_time(self.path, self.storage_options)

    # -- helpers for subclasses -------------------------------------------------------

    def _checked_options(self, **options: Any) -> Any:
        """``options`` validated by :attr:`options_model`, or a SelectionError naming the source."""
        return self.options_model.checked(f"{self.kind} source {self.path!r}", SelectionError, **options)

    def _check_exists(self) -> None:
        if not path_exists(self.path, self.storage_options):
            raise SourceNotFoundError(
                f"{self.kind} source {self.path!r} does not exist; check the path"
                + (" and storage_options" if is_url(self.path) else "")
            )

    def _rows(self, n_rows: int, n_features: int, dtype: np.dtype[Any], multiple_of: int = 1) -> int:
        return rows_per_chunk(
            n_rows,
            n_features,
            np.dtype(dtype).itemsize,
            chunk_rows=self.chunk_rows,
            chunk_bytes=self.chunk_bytes,
            multiple_of=multiple_of,
        )

    def _check_matrix(self, shape: Sequence[int], dtype: np.dtype[Any], what: str) -> np.dtype[Any]:
        """Check 2-D numeric data; return the dtype the source will deliver."""
        if len(shape) != 2:
            raise SourceShapeError(
                f"{what} in {self.path!r} has shape {tuple(shape)}; a 2-D (samples, features) "
                "matrix is needed: select a 2-D array or reshape the data"
            )
        return output_dtype(dtype, f"{what} in {self.path!r}")

    def _data_array(
        self,
        data: da.Array,
        *,
        sample_ids: da.Array | None = None,
        feature_names: Sequence[Any] | np.ndarray | None = None,
        name: str | None = None,
    ) -> xr.DataArray:
        """Wrap a 2-D Dask array per the contract (dims, coordinates, attrs)."""
        coords: dict[str, Any] = {}
        if sample_ids is not None:
            if sample_ids.dtype.kind == "T":  # NumPy StringDType (Zarr strings): use object
                sample_ids = sample_ids.astype(object)
            coords[SAMPLE_DIM] = (SAMPLE_DIM, sample_ids.rechunk((data.chunks[0],)))
        if feature_names is not None:
            coords[FEATURE_DIM] = as_names(feature_names)
        lazy_coords = xr.Coordinates(
            {k: v for k, v in coords.items() if k == SAMPLE_DIM}, indexes={}
        )
        out = xr.DataArray(data, dims=(SAMPLE_DIM, FEATURE_DIM), coords=lazy_coords, name=name)
        if FEATURE_DIM in coords:
            out = out.assign_coords({FEATURE_DIM: coords[FEATURE_DIM]})
        out.attrs.update(source_kind=self.kind, source_path=self.path)
        protect_inputs(input_paths(self.path))  # no output of this process may touch what it reads
        logger.debug("opened %r: shape %s, chunks %s", self, data.shape, data.chunksize)
        return out


def as_names(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Feature names as a NumPy array: numbers kept, strings as fixed-width ``str``."""
    array = np.asarray(values)
    if array.dtype.kind in "iuf":
        return array
    return np.asarray([str(v) for v in array.tolist()])


def output_dtype(dtype: np.dtype[Any], what: str) -> np.dtype[Any]:
    """float32/float64 as is, float16 -> float32, integers -> float64; else SourceDtypeError."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
    if dtype.kind in "iu":
        return np.dtype(np.float64)
    raise SourceDtypeError(
        f"{what} has dtype {dtype}, which is not numeric; select integer or floating-point data"
    )
