"""Array-API inputs under scikit-learn's ``array_api_dispatch``: moved to NumPy, results moved back.

The EM runs on NumPy and Dask. With ``sklearn.config_context(array_api_dispatch=True)``
an array of another array-API namespace (array-api-strict, PyTorch, CuPy...) is copied to
a NumPy array on the CPU for the computation; the fitted attributes are given back in the
namespace and on the device of the training data, and ``predict``, ``predict_proba``,
``score_samples`` in those of their input, as scikit-learn does. An array that cannot be
copied to NumPy is refused with a message saying so.

This is the only module that uses scikit-learn's array-API helpers (private, so the
scikit-learn version is pinned in pyproject.toml).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import get_config
from sklearn.utils._array_api import _max_precision_float_dtype, get_namespace_and_device

from .exceptions import InvalidInputError

try:  # scikit-learn >= 1.9
    from sklearn.utils._array_api import check_same_namespace as _sklearn_check_same_namespace
except ImportError:  # older: scikit-learn did not check it either

    def _sklearn_check_same_namespace(X, estimator, *, attribute, method):
        return None


try:  # scikit-learn >= 1.8
    from sklearn.utils._array_api import move_to
except ImportError:  # older: through NumPy
    from sklearn.utils._array_api import _convert_to_numpy

    def move_to(a, *, xp, device):
        if xp is np:
            return _convert_to_numpy(a, get_namespace_and_device(a)[0])
        return xp.asarray(a, device=device)

__all__ = ["Namespace", "check_same_namespace", "dispatch_enabled", "input_namespace", "to_numpy"]

NEEDS_NUMPY = (
    "gmm_stream.GaussianMixture computes on NumPy, Dask or xarray input: pass a NumPy array, "
    "a Dask array or an xarray.DataArray"
)


@dataclass(frozen=True, eq=False)
class Namespace:
    """An array-API namespace and device that results are moved to."""

    xp: Any
    device: Any

    def __deepcopy__(self, memo):  # modules and devices are not copyable; they are shared
        return self

    def __reduce__(self):  # a module pickles by its name
        return _namespace, (self.xp.__name__, self.device)

    def asarray(self, a, dtype=None):
        """``a`` (NumPy) in this namespace and on this device, in ``dtype`` of this namespace
        when given (a name such as ``"int64"``, or ``"max_float"``)."""
        a = np.asarray(a)
        out = move_to(a, xp=self.xp, device=self.device)
        if dtype == "max_float":
            out = self.xp.astype(out, _max_precision_float_dtype(self.xp, self.device))
        elif dtype is not None:
            out = self.xp.astype(out, getattr(self.xp, dtype))
        return out


def _namespace(module_name: str, device) -> Namespace:
    return Namespace(importlib.import_module(module_name), device)


def dispatch_enabled() -> bool:
    return bool(get_config().get("array_api_dispatch", False))


def _is_native(X) -> bool:
    """NumPy, Dask, xarray, pandas or plain Python input: computed on directly."""
    if isinstance(X, (np.ndarray, np.generic, list, tuple)) or X is None:
        return True
    module = type(X).__module__.split(".")[0]
    return module in ("numpy", "dask", "xarray", "pandas", "builtins")


def input_namespace(X) -> Namespace | None:
    """The namespace to give results back in: None for NumPy-like input or without dispatch."""
    if _is_native(X) or not dispatch_enabled():
        return None
    try:
        xp, is_array_api, device = get_namespace_and_device(X)
    except Exception as exc:  # not an array of any namespace scikit-learn knows
        raise InvalidInputError(f"{NEEDS_NUMPY}; got a {type(X).__module__}.{type(X).__name__} ({exc})") from exc
    if not is_array_api or xp.__name__.endswith("numpy"):
        return None
    return Namespace(xp, device)


def check_same_namespace(X, estimator, *, attribute: str, method: str) -> None:
    """Under ``array_api_dispatch``, ``X`` must be in the namespace and on the device of the
    training data (scikit-learn's rule and ``ValueError``); NumPy, Dask and xarray input of a
    model fitted on such input always passes."""
    if not dispatch_enabled():
        return
    if estimator.__dict__.get("_xp") is None and _is_native(X):
        return
    _sklearn_check_same_namespace(X, estimator, attribute=attribute, method=method)


def to_numpy(X, what: str = "X"):
    """``X`` as NumPy when it is an array of another array-API namespace, else ``X`` itself.

    Raises
    ------
    InvalidInputError
        If ``X`` cannot be copied to a NumPy array (say, it lives on a device NumPy cannot
        read); the message says that NumPy, Dask or xarray input is needed.
    """
    if _is_native(X):
        return X
    if not hasattr(X, "__array_namespace__") and not hasattr(X, "__array__"):
        return X
    try:
        if hasattr(X, "__array_namespace__"):
            return move_to(X, xp=np, device="cpu")
        return np.asarray(X)
    except Exception as exc:  # each namespace raises its own error type
        raise InvalidInputError(
            f"{NEEDS_NUMPY} ({what} is a {type(X).__module__}.{type(X).__name__} that could not be "
            f"copied to NumPy: {exc})"
        ) from exc
