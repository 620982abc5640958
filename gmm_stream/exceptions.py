"""Every exception and warning that gmm-stream raises.

All errors derive from :class:`GMMStreamError` and also from the builtin a caller
would naturally catch (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working for code written against scikit-learn. The errors
of files (an existing output, an output overlapping an input, a full disk) belong to the
data layer, :mod:`pipeline.exceptions`, under the same base class.
"""

from __future__ import annotations

from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError as _SklearnInvalidParameterError

__all__ = [
    "GMMStreamError",
    "InvalidInputError",
    "InvalidParameterError",
    "IllConditionedCovarianceError",
    "ModelFormatError",
    "NumericalOverflowError",
    "ComponentMatchingError",
    "ConvergenceWarning",
    "EmptyComponentWarning",
    "OverParameterizedWarning",
]


class GMMStreamError(Exception):
    """Base class of every error raised by gmm-stream."""


class InvalidInputError(GMMStreamError, ValueError):
    """The data passed in cannot be used (shape, dtype, infinities, too few rows...)."""


class InvalidParameterError(GMMStreamError, _SklearnInvalidParameterError):
    """A parameter of the estimator or of a function is out of its allowed range.

    Also scikit-learn's ``InvalidParameterError``, so both a ``ValueError`` and a
    ``TypeError``, as scikit-learn's parameter errors are.
    """


class IllConditionedCovarianceError(GMMStreamError, ValueError):
    """A covariance matrix could not be factorised (not positive definite)."""


class ModelFormatError(GMMStreamError, ValueError):
    """A saved model or checkpoint is missing, incomplete, of an unknown format or invalid.

    Raised by ``from_state`` (:meth:`GaussianMixture.from_state`,
    :meth:`EMState.from_state`) for a state that is not what ``get_state`` gives, naming
    the field, and by the data layer for a saved directory, naming the file too.

    Attributes
    ----------
    field : str or None
        The key (``params.n_components``) or array (``means``) at fault, when known.
    part : {"meta", "arrays"} or None
        Which half of a state holds it, so that a file layer can name its file.
    reason : str or None
        The message without the field (what is wrong with it).
    """

    field: str | None = None
    part: str | None = None
    reason: str | None = None


class NumericalOverflowError(GMMStreamError, OverflowError, ValueError):
    """A computation on finite data overflowed to infinity: the values are too large.

    Raised instead of the infinities and NaNs the overflow would spread (and of the
    ``ValueError: array must not contain infs or NaNs`` they end in); the message names
    the step, the quantity and the features, and says how to rescale the data. Also a
    ``ValueError``, the error scikit-learn-style callers already catch.

    Attributes
    ----------
    step : str or None
        Where it happened (``"EM"``, ``"standardize"``, ``"pca"``...).
    quantity : str or None
        What overflowed (``"the second moments"``, ``"the sum of squares"``...).
    features : list of int
        Indices of the features involved (of the input of the step).
    """

    def __init__(self, message: str, *, step: str | None = None, quantity: str | None = None, features=()):
        super().__init__(message)
        self.step = step
        self.quantity = quantity
        self.features = [int(j) for j in features]


class EmptyComponentWarning(ConvergenceWarning):
    """A component received (almost) no responsibility during an EM iteration."""


class OverParameterizedWarning(UserWarning):
    """The model has more free parameters than the data can determine well.

    Raised by :meth:`GaussianMixture.fit` when the number of free parameters exceeds
    ``MAX_PARAMETERS_PER_ROW`` (one tenth) of the usable rows.
    """


class ComponentMatchingError(GMMStreamError, ValueError):
    """Two mixtures cannot be matched component to component (e.g. different features)."""
