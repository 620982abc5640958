"""Checkers for the values of a saved state: JSON-like metadata and arrays, no files.

A *reporter* is any object with ``fail(field, message) -> Exception``: it builds the error
to raise for ``field`` (``params.n_components``, ``means``...). The estimator's
:class:`StateReporter` raises :class:`~gmm_stream.exceptions.ModelFormatError` naming the
field only; the data layer's reporters (``pipeline.model_files.SavedFile``) name the file
too. Every checker takes the reporter first, so one set of checkers serves both.

A checker is ``check(reporter, field, value)``: it raises ``reporter.fail(field, ...)``
when the value is not what the field holds, and returns nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from .exceptions import ModelFormatError

__all__ = [
    "Reporter",
    "StateReporter",
    "Checker",
    "Layout",
    "Headers",
    "describe",
    "is_integer",
    "join",
    "integer",
    "number",
    "string",
    "verbosity",
    "boolean",
    "timestamp",
    "optional",
    "list_of",
    "numeric_array",
    "check_object",
    "obj",
    "check_feature_names",
    "check_history",
    "check_array_names",
    "check_array_headers",
    "headers_of",
    "check_finite",
    "check_nonnegative",
    "as_checked_arrays",
]


class Reporter(Protocol):
    """Builds the error for a field: ``<where>: <field> <message>``."""

    def fail(self, field: str, message: str) -> Exception: ...


class StateReporter:
    """The reporter of a state in memory: errors name the field, not a file.

    Parameters
    ----------
    what : str
        What the state is, for messages (``"model state"``, ``"checkpoint state"``).
    part : {"meta", "arrays"}
        Which half of the state is checked; set on the error (``ModelFormatError.part``)
        so that a file layer can name the file that held it.
    error : type
        The error class (:class:`ModelFormatError` or a subclass).
    """

    def __init__(self, what: str, part: str, error: type[ModelFormatError] = ModelFormatError) -> None:
        self.what = what
        self.part = part
        self.error = error

    def fail(self, field: str, message: str) -> ModelFormatError:
        err = self.error(f"{self.what}: {field} {message}" if field else f"{self.what} {message}")
        err.field, err.part, err.reason = field, self.part, message
        return err


Checker = Callable[[Reporter, str, Any], None]

#: name -> (shape, kind) of every array of a state; kind "f" (float32 or float64, read as
#: float64) or "i" (an integer type, read as int64)
Layout = Mapping[str, tuple[tuple[int, ...], str]]
#: name -> (shape, dtype) of arrays, read from file headers or taken from arrays in memory
Headers = Mapping[str, tuple[tuple[int, ...], np.dtype]]

_JSON_TYPES = ((type(None), "null"), (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"))


def describe(value: Any) -> str:
    """A short description of a JSON value for messages: ``string '3'``, ``an array of length 2``."""
    kind = next((name for t, name in _JSON_TYPES if isinstance(value, t)), type(value).__name__)
    if value is None or isinstance(value, bool):
        return json.dumps(value) if value is None else f"boolean {json.dumps(value)}"
    if isinstance(value, (list, dict)):
        return f"an {kind} of length {len(value)}" if kind == "array" else f"an {kind}"
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def join(field: str, key: str | int) -> str:
    """``field.key`` or ``field[i]`` (``key`` alone at the top level)."""
    if isinstance(key, int):
        return f"{field}[{key}]"
    return f"{field}.{key}" if field else key


# ------------------------------------------------------------------------ JSON values


def integer(low: int | None = None, high: int | None = None) -> Checker:
    """An integer (not a boolean) in ``[low, high]``."""
    def check(src, field, value):
        if not is_integer(value):
            raise src.fail(field, f"must be an integer, got {describe(value)}")
        if low is not None and value < low:
            raise src.fail(field, f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise src.fail(field, f"must be <= {high}, got {value}")
    return check


def number(low: float | None = None, *, minus_infinity: bool = False) -> Checker:
    """A finite number (an integer is fine), ``>= low``; ``-Infinity`` too if allowed."""
    def check(src, field, value):
        if not _is_number(value):
            raise src.fail(field, f"must be a number, got {describe(value)}")
        if not math.isfinite(value) and not (minus_infinity and value == -math.inf):
            raise src.fail(field, f"must be a finite number, got {value}")
        if low is not None and value < low:
            raise src.fail(field, f"must be >= {low}, got {value}")
    return check


def string(*choices: str) -> Checker:
    """A string; one of ``choices`` when given."""
    def check(src, field, value):
        if not isinstance(value, str):
            raise src.fail(field, f"must be a string, got {describe(value)}")
        if choices and value not in choices:
            raise src.fail(field, f"must be one of {list(choices)}, got {value!r}")
    return check


def verbosity(src: Reporter, field: str, value: Any) -> None:
    """scikit-learn's ``verbose``: a boolean or a non-negative integer."""
    if isinstance(value, bool):
        return
    integer(0)(src, field, value)


def boolean(src: Reporter, field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise src.fail(field, f"must be true or false, got {describe(value)}")


def timestamp(src: Reporter, field: str, value: Any) -> None:
    """An ISO 8601 date and time."""
    string()(src, field, value)
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise src.fail(field, f"must be an ISO 8601 date and time, got {value!r}") from None


def optional(check: Checker) -> Checker:
    """``null`` or what ``check`` accepts."""
    def check_optional(src, field, value):
        if value is not None:
            check(src, field, value)
    return check_optional


def list_of(check: Checker) -> Checker:
    """An array whose every item ``check`` accepts."""
    def check_list(src, field, value):
        if not isinstance(value, list):
            raise src.fail(field, f"must be an array, got {describe(value)}")
        for i, item in enumerate(value):
            check(src, join(field, i), item)
    return check_list


def numeric_array(src: Reporter, field: str, value: Any) -> None:
    """A rectangular (nested) array of finite numbers."""
    try:
        arr = np.asarray(value, dtype=object)
    except ValueError:
        arr = None  # ragged
    if not isinstance(value, list) or arr is None or not all(_is_number(v) for v in arr.ravel()):
        raise src.fail(field, f"must be a rectangular (nested) array of numbers, got {describe(value)}")
    if not np.all(np.isfinite(arr.astype(np.float64))):
        raise src.fail(field, "must hold finite numbers only")


def check_object(src: Reporter, field: str, value: Any, spec: Mapping[str, Checker],
                 optional: Sequence[str] = ()) -> dict:
    """``value`` is an object with exactly the keys of ``spec`` (those in ``optional`` may be
    missing), each accepted by its checker."""
    name = field or "the top-level object"
    if not isinstance(value, dict):
        raise src.fail(name, f"must be an object, got {describe(value)}")
    unknown = sorted(set(value) - set(spec))
    missing = [k for k in spec if k not in value and k not in optional]
    problems = ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing key(s) {missing}"] if missing else [])
    if problems:
        raise src.fail(name, f"has {' and '.join(problems)}; expected exactly the keys {list(spec)}")
    for key, check in spec.items():
        if key in value:
            check(src, join(field, key), value[key])
    return value


def obj(spec: Mapping[str, Checker], optional: Sequence[str] = ()) -> Checker:
    """An object with exactly the keys of ``spec`` (see :func:`check_object`)."""
    def check(src, field, value):
        check_object(src, field, value, spec, optional)
    return check


def check_feature_names(src: Reporter, meta: dict) -> None:
    """``feature_names_in`` (when not null) has ``n_features_in`` names."""
    names, n = meta["feature_names_in"], meta["n_features_in"]
    if names is not None and len(names) != n:
        raise src.fail("feature_names_in", f"has {len(names)} names, expected n_features_in = {n}")


def check_history(src: Reporter, field: str, record: dict) -> None:
    """``lower_bounds`` has one value per iteration (``n_iter``); ``lower_bound`` is the last."""
    bounds = record["lower_bounds"]
    if len(bounds) != record["n_iter"]:
        raise src.fail(join(field, "lower_bounds"),
                       f"has {len(bounds)} values, expected one per iteration (n_iter = {record['n_iter']})")
    if "lower_bound" in record:
        last = bounds[-1] if bounds else -math.inf
        if record["lower_bound"] != last:
            raise src.fail(join(field, "lower_bound"),
                           f"is {record['lower_bound']}, expected the last of lower_bounds ({last})")


# ----------------------------------------------------------------------------- arrays


def check_array_names(src: Reporter, found, expected) -> None:
    """Exactly the arrays ``expected`` are there."""
    unknown, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
    problems = ([f"unknown array(s) {unknown}"] if unknown else []) + ([f"no array(s) {missing}"] if missing else [])
    if problems:
        raise src.fail("", f"has {' and '.join(problems)}; expected exactly {sorted(expected)}")


def _check_dtype(src: Reporter, name: str, dtype: np.dtype, kind: str) -> None:
    if dtype.hasobject:
        raise src.fail(name, "has dtype object (pickled Python objects), which gmm-stream never reads")
    if kind == "f" and not (dtype.kind == "f" and dtype.itemsize in (4, 8)):
        raise src.fail(name, f"has dtype {dtype}, expected float32 or float64")
    if kind == "i" and dtype.kind not in "iu":
        raise src.fail(name, f"has dtype {dtype}, expected an integer type")


def check_array_headers(src: Reporter, headers: Headers, layout: Layout,
                        context: Callable[[str], str] | str) -> None:
    """Shape and dtype of each array of ``layout`` (its names already checked).

    ``headers`` maps each name to ``(shape, dtype)`` -- read from file headers before any
    data, or taken from arrays in memory. ``context`` explains the expected shapes in
    messages (a string, or a function of the array's name).
    """
    for name, (shape, kind) in layout.items():
        found, dtype = headers[name]
        if tuple(found) != tuple(shape):
            why = context(name) if callable(context) else context
            raise src.fail(name, f"has shape {tuple(found)}, expected {tuple(shape)} ({why})")
        _check_dtype(src, name, np.dtype(dtype), kind)


def headers_of(arrays: Mapping[str, Any]) -> Headers:
    """``{name: (shape, dtype)}`` of arrays in memory (what :func:`check_array_headers` takes)."""
    return {name: (np.shape(a), np.asarray(a).dtype) for name, a in arrays.items()}


def check_finite(src: Reporter, name: str, a: np.ndarray) -> None:
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        what = "NaN" if np.isnan(a).any() else "an infinite value"
        raise src.fail(name, f"contains {what} ({np.count_nonzero(~np.isfinite(a))} non-finite of {a.size})")


def as_checked_arrays(src: Reporter, arrays: Mapping[str, Any], layout: Layout) -> dict[str, np.ndarray]:
    """The arrays of ``layout`` (shapes and dtypes already checked) as float64/int64, checked finite."""
    out = {}
    for name, (_, kind) in layout.items():
        a = np.asarray(arrays[name]).astype(np.float64 if kind == "f" else np.int64)
        check_finite(src, name, a)
        out[name] = a
    return out


def _positions(mask: np.ndarray) -> str:
    """The first few positions where ``mask`` is true, as text."""
    where = np.argwhere(mask)
    shown = [int(i[0]) if mask.ndim == 1 else tuple(int(j) for j in i) for i in where[:5]]
    more = f" and {len(where) - 5} more" if len(where) > 5 else ""
    return f"{shown}{more}" if mask.ndim else "the value"


def check_nonnegative(src: Reporter, name: str, a: np.ndarray, strict: bool = False) -> None:
    """Every value ``>= 0`` (``> 0`` if ``strict``)."""
    bad = a <= 0 if strict else a < 0
    if np.any(bad):
        raise src.fail(name, f"has value(s) {'<= 0' if strict else '< 0'} at {_positions(bad)}; "
                             f"they must be {'positive' if strict else 'non-negative'}")
