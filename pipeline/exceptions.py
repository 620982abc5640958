"""Every exception and warning that :mod:`pipeline` raises.

Each error derives from :class:`gmm_stream.exceptions.GMMStreamError` (through
:class:`PipelineError`) and from the builtin a caller would naturally catch, so
``except FileNotFoundError`` or ``except ValueError`` keeps working. Messages name
the file, key or value at fault and say what to do.
"""

from __future__ import annotations

from gmm_stream.exceptions import GMMStreamError, OutputExistsError

__all__ = [
    "PipelineError",
    "SourceNotFoundError",
    "SelectionError",
    "SourceDtypeError",
    "SourceShapeError",
    "SourceFormatError",
    "SparseMatrixError",
    "ChunkSizeError",
    "PreprocessingError",
    "PreprocessingFormatError",
    "PreprocessingNotFoundError",
    "OutputExistsError",
    "SinkError",
    "ConstantFeatureWarning",
]


class PipelineError(GMMStreamError):
    """Base class of every error raised by the data layer."""


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


class SparseMatrixError(SourceDtypeError):
    """A sparse matrix was selected with ``sparse='raise'`` or in an unsupported layout."""


class ChunkSizeError(PipelineError, ValueError):
    """A chunk size (in rows or in bytes) is not a positive number."""


class PreprocessingError(PipelineError, ValueError):
    """A preprocessing step is unknown, out of order, not fitted, or got unusable data."""


class PreprocessingFormatError(PipelineError, ValueError):
    """A saved preprocessing directory is incomplete or of an unknown format."""


class PreprocessingNotFoundError(PreprocessingFormatError, FileNotFoundError):
    """A saved preprocessing directory does not exist."""




class SinkError(PipelineError, ValueError):
    """Results cannot be written: mismatched lengths, output equal to the input, ..."""


class ConstantFeatureWarning(UserWarning):
    """A feature is constant (or has no observed value) and is left unscaled."""
