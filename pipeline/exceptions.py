"""Every exception and warning that :mod:`pipeline` raises.

Each error derives from :class:`gmm_stream.exceptions.GMMStreamError` (through
:class:`PipelineError`) and from the builtin a caller would naturally catch, so
``except FileNotFoundError`` or ``except ValueError`` keeps working. Messages name
the file, key or value at fault and say what to do.
"""

from __future__ import annotations

from gmm_stream.exceptions import GMMStreamError, ModelFormatError

__all__ = [
    "PipelineError",
    "OptionsError",
    "SourceNotFoundError",
    "SelectionError",
    "SourceDtypeError",
    "SourceShapeError",
    "SourceFormatError",
    "DamagedInputError",
    "MissingChunkError",
    "SchemaMismatchError",
    "SparseMatrixError",
    "ChunkSizeError",
    "PreprocessingError",
    "PreprocessingFormatError",
    "PreprocessingNotFoundError",
    "OutputExistsError",
    "SinkError",
    "OutputLayoutError",
    "OutputLockedError",
    "InputOverlapError",
    "DiskFullError",
    "ConstantFeatureWarning",
]


class PipelineError(GMMStreamError):
    """Base class of every error raised by the data layer."""


class OptionsError(PipelineError, ValueError):
    """Options of a source or sink break a rule of its options model (:mod:`pipeline.options`).

    Raised inside the model's validators, with one ``(key, message)`` pair per problem in
    ``problems``; the classes' constructors report it as a
    :class:`SelectionError` or :class:`SinkError` naming the file.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = [(str(k), str(m)) for k, m in problems]
        super().__init__("; ".join(f"{k}: {m}" for k, m in self.problems))


class SourceNotFoundError(PipelineError, FileNotFoundError):
    """The file, directory, glob or URL of a source does not exist."""


class SelectionError(PipelineError, KeyError, ValueError):
    """A selected array, variable, column, layer or ``obsm`` key is not in the source.

    Subclasses both ``KeyError`` and ``ValueError``; the message is shown as is
    (``KeyError`` would otherwise quote it).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SourceDtypeError(PipelineError, TypeError):
    """The selected data are not numeric (integer or floating point)."""


class SourceShapeError(PipelineError, ValueError):
    """The selected data are not 2-D (samples x features) or are empty."""


class SourceFormatError(PipelineError, ValueError):
    """The path is not a store of the expected format, or the format kind is unknown."""


class DamagedInputError(OSError, SourceFormatError):
    """A file of the source is damaged: truncated, undecodable, or a stored chunk is gone.

    Raised when a chunk, a row group or a whole file cannot be read or decoded (codec,
    checksum, thrift or HDF5 errors, truncated files); the message names the file and,
    where known, the Zarr chunk (index and rows) or the Parquet row group, and says to
    re-create or restore the file.

    Subclasses ``ValueError`` (through :class:`SourceFormatError`: the bytes are not a valid
    store) and ``OSError``, which is what pyarrow and h5py raise for such files today, so
    code written against either library, ``except ValueError`` or ``except OSError``, keeps
    catching it. (``io.UnsupportedOperation`` combines the same two.) ``OSError`` comes
    first on purpose: it has its own instance layout, and with it first ``cls.__new__`` is
    ``OSError.__new__``, which tblib (how Dask distributed sends a task's error back to the
    client) needs to rebuild the error; the other order arrives as a bare ``Exception``.
    """


class MissingChunkError(DamagedInputError):
    """A chunk (or shard) file that a Zarr array needs is not in the store.

    Zarr itself reads such a chunk as the fill value, silently; the sources refuse it
    unless ``allow_missing_chunks=True``. A :class:`DamagedInputError`, so one ``except``
    catches every kind of damage.
    """


class SchemaMismatchError(SourceDtypeError):
    """A selected column has different, incompatible types in the files of one source.

    For example a string column in one Parquet file where the others hold floats; the
    message names the file, the column and both types.
    """


class SparseMatrixError(SourceDtypeError):
    """A sparse matrix was selected with ``sparse='raise'`` or in an unsupported layout."""


class ChunkSizeError(PipelineError, ValueError):
    """A chunk size (in rows or in bytes) is not a positive number."""


class PreprocessingError(PipelineError, ValueError):
    """A preprocessing step is unknown, out of order, not fitted, or got unusable data."""


class PreprocessingFormatError(PipelineError, ModelFormatError):
    """A saved preprocessing directory is incomplete or of an unknown format."""


class PreprocessingNotFoundError(PreprocessingFormatError, FileNotFoundError):
    """A saved preprocessing directory does not exist."""


class OutputExistsError(PipelineError, FileExistsError):
    """An output already exists and ``overwrite`` was not requested."""


class InputOverlapError(PipelineError, ValueError):
    """An output path equals, lies inside, or contains an input: the input is never written."""


class DiskFullError(PipelineError, OSError):
    """The file system has no room (ENOSPC/EDQUOT) for an output; it is not retried."""


class SinkError(PipelineError, ValueError):
    """Results cannot be written: mismatched lengths, output equal to the input, ..."""


class OutputLayoutError(PipelineError, FileExistsError):
    """An output directory holds something in the place of its run layout, or a run is incomplete."""


class OutputLockedError(PipelineError, RuntimeError):
    """Another run holds the lock of the output directory."""


class ConstantFeatureWarning(UserWarning):
    """A feature is constant (or has no observed value) and is left unscaled."""
