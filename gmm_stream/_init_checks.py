"""The rules for the user's initial parameters: ``weights_init``, ``means_init``, ``precisions_init``.

They live here once, with their messages (scikit-learn's for the same conditions, followed
by the parameter's name). :meth:`GaussianMixture.fit <gmm_stream.GaussianMixture.fit>` runs
them once the data's features are known (its ``_check_init*`` methods call the functions
below), and a caller that has no data yet -- a job file checked before anything is read --
runs the same rules through :func:`check_initial_parameters` with ``n_features=None``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_array

from ._array_api import to_numpy
from ._params import check_covariance_type, covariance_shape
from .exceptions import InvalidParameterError

__all__ = ["check_initial_parameters"]


def check_initial_parameters(
    covariance_type: str,
    n_components: int,
    n_features: int | None,
    *,
    weights_init: Any = None,
    means_init: Any = None,
    precisions_init: Any = None,
) -> dict[str, np.ndarray | None]:
    """Check the initial parameters of a mixture as :meth:`GaussianMixture.fit` does.

    Parameters
    ----------
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    n_components : int
    n_features : int or None
        The data's number of features. None when it is not known yet (a job checked before
        its data are read): it is then taken from the arrays themselves, the last axis of
        ``means_init`` or else of ``precisions_init`` (not for 'spherical', whose shape has no
        feature axis), so the arrays given must agree with each other.
    weights_init : array-like of shape (n_components,), optional
        In [0, 1] and summing to 1 (within 1e-8; 1e-6 for float32 weights).
    means_init : array-like of shape (n_components, n_features), optional
    precisions_init : array-like, optional
        Shape (n_components, n_features, n_features) for 'full', (n_features, n_features)
        for 'tied', (n_components, n_features) for 'diag', (n_components,) for 'spherical';
        positive for 'diag' and 'spherical', symmetric positive-definite matrices for 'full'
        and 'tied'.

    Every array must be finite.

    Returns
    -------
    dict
        ``{"weights": ..., "means": ..., "precisions": ...}``: the checked arrays (weights and
        precisions as float64, means as float32 or float64 as given), None for those not given.

    Raises
    ------
    InvalidParameterError
        For the first parameter breaking a rule, in the order weights, means, precisions
        (a ``ValueError``); the message is scikit-learn's for the same condition and names
        the parameter, e.g. ``The parameter 'means' should have the shape of (3, 2), but got
        (2, 2) (means_init, for n_components=3, covariance_type='full' and the data's
        features)``.
    """
    check_covariance_type(covariance_type)
    if n_features is None:
        n_features = _features_of(covariance_type, means_init, precisions_init)
    shape = covariance_shape(covariance_type, n_components, n_features)
    return {
        "weights": check_weights_init(weights_init, n_components, covariance_type),
        "means": check_init_array(means_init, "means_init", "means", (n_components, n_features),
                                  n_components=n_components, covariance_type=covariance_type),
        "precisions": check_precisions_init(precisions_init, shape, n_components, covariance_type),
    }


def check_init_array(value: Any, name: str, label: str, shape: tuple, *, n_components: int,
                     covariance_type: str, **check: Any) -> np.ndarray | None:
    """``value`` (the parameter ``name``) as a finite float array of ``shape``, or None.

    ``label`` is scikit-learn's name of the parameter in the message (``'means'``); ``check``
    goes to :func:`sklearn.utils.validation.check_array` (e.g. ``allow_nd=True``).
    """
    if value is None:
        return None
    value = to_numpy(value, name)
    try:
        arr = check_array(value, dtype=[np.float64, np.float32], ensure_2d=False, **check)
    except ValueError as exc:
        raise InvalidParameterError(f"{name}: {exc}") from None
    if arr.shape != shape:
        raise InvalidParameterError(  # scikit-learn's message, then which parameter it is
            f"The parameter '{label}' should have the shape of {shape}, but got {arr.shape} "
            f"({name}, for n_components={n_components}, covariance_type={covariance_type!r} "
            "and the data's features)"
        )
    return arr


def check_weights_init(value: Any, n_components: int, covariance_type: str) -> np.ndarray | None:
    """``weights_init`` of shape (n_components,), in [0, 1], summing to 1; as float64, or None."""
    arr = check_init_array(value, "weights_init", "weights", (n_components,), n_components=n_components,
                           covariance_type=covariance_type)
    if arr is None:
        return None
    if np.any(arr < 0.0) or np.any(arr > 1.0):
        raise InvalidParameterError(
            "The parameter 'weights' should be in the range [0, 1], but got "
            f"max value {np.min(arr):.5f}, min value {np.max(arr):.5f}"  # scikit-learn's wording, as is
        )
    atol = 1e-6 if arr.dtype == np.float32 else 1e-8  # scikit-learn's tolerance
    if not abs(1.0 - float(np.sum(arr))) <= atol:
        raise InvalidParameterError(
            f"The parameter 'weights' should be normalized, but got sum(weights) = {np.sum(arr):.5f}"
        )
    return arr.astype(np.float64)


def check_precisions_init(value: Any, shape: tuple, n_components: int, covariance_type: str) -> np.ndarray | None:
    """``precisions_init`` of ``shape`` (:func:`~gmm_stream._params.covariance_shape`), positive
    ('diag', 'spherical') or symmetric positive-definite ('full', 'tied'); as float64, or None."""
    kind = covariance_type
    arr = check_init_array(value, "precisions_init", f"{kind} precision", shape, n_components=n_components,
                           covariance_type=kind, allow_nd=kind == "full")
    if arr is None:
        return None
    if kind in ("diag", "spherical"):
        if np.any(arr <= 0.0):
            raise InvalidParameterError(f"'{kind} precision' should be positive")
    else:
        for matrix in arr.reshape((-1,) + arr.shape[-2:]):
            if not (np.allclose(matrix, matrix.T, rtol=1e-5, atol=1e-8) and np.all(np.linalg.eigvalsh(matrix) > 0)):
                raise InvalidParameterError(f"'{kind} precision' should be symmetric, positive-definite")
    return arr.astype(np.float64)


def _features_of(covariance_type: str, means_init: Any, precisions_init: Any) -> int | None:
    """The number of features the given arrays carry: ``means_init``'s last axis, else
    ``precisions_init``'s (not for 'spherical'); None when neither tells (the array checks
    then report what is wrong with them)."""
    given = [means_init] + ([precisions_init] if covariance_type != "spherical" else [])
    for value in given:
        if value is None:
            continue
        try:
            shape = np.shape(to_numpy(value))
        except (TypeError, ValueError):  # ragged, or not an array: check_init_array says so
            continue
        if shape:
            return int(shape[-1])
    return None
