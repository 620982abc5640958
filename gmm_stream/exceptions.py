"""Every exception and warning that gmm-stream raises.

All errors derive from :class:`GMMStreamError` and also from the builtin a caller
would naturally catch (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working for code written against scikit-learn.
"""

from __future__ import annotations

from sklearn.exceptions import ConvergenceWarning

__all__ = [
    "GMMStreamError",
    "InvalidInputError",
    "InvalidParameterError",
    "IllConditionedCovarianceError",
    "ModelFormatError",
    "OutputExistsError",
    "ConvergenceWarning",
    "EmptyComponentWarning",
]


class GMMStreamError(Exception):
    """Base class of every error raised by gmm-stream."""


class InvalidInputError(GMMStreamError, ValueError):
    """The data passed in cannot be used (shape, dtype, infinities, too few rows...)."""


class InvalidParameterError(GMMStreamError, ValueError):
    """A parameter of the estimator or of a function is out of its allowed range."""


class IllConditionedCovarianceError(GMMStreamError, ValueError):
    """A covariance matrix could not be factorised (not positive definite)."""


class ModelFormatError(GMMStreamError, ValueError):
    """A saved model directory is missing, incomplete or of an unknown format."""


class EmptyComponentWarning(ConvergenceWarning):
    """A component received (almost) no responsibility during an EM iteration."""


class OutputExistsError(GMMStreamError, FileExistsError):
    """An output already exists and ``overwrite`` was not requested."""
