"""Saving a fitted model to a directory and loading it back (never pickle).

A model directory holds ``model.json`` (format, package version, estimator parameters,
fit history; readable by a person) and ``arrays.npz`` (weights, means, covariances and
precision factors, loaded with ``allow_pickle=False``). The directory is written beside
its destination and renamed into place, so a crash leaves the previous model or the new
one, never a mixture of both.

Loading trusts nothing in the directory. The directory may be reached through a symbolic
link, but every file in it must be a regular file (not a link, a directory or a FIFO).
A JSON file is refused above :data:`MAX_JSON_BYTES` before it is parsed and above
:data:`MAX_JSON_DEPTH` levels of nesting; it must name its format and a known
``format_version``, and hold exactly the expected keys at every level, each value of the
expected type and range. The ``.npz`` must hold exactly the expected arrays; their
headers (shape against ``n_components``, ``n_features`` and ``covariance_type``, dtype
float32/float64, never object) are checked before any data is read, then the values:
finite, weights non-negative summing to 1, covariances symmetric positive definite,
precision factors triangular and inverting the covariances. Every failure is a
:class:`ModelFormatError` naming the file and the field, e.g.
``model/arrays.npz: means has shape (3, 2), expected (4, 2) (n_components=4, n_features=2)``.

The reading and checking helpers (:class:`SavedFile`, :func:`read_json`,
:func:`check_format`, :func:`check_object`, :func:`load_arrays` and the value checkers)
take the error class from the :class:`SavedFile`, so :meth:`pipeline.Preprocessor.load`
uses them too, with its own error class.
"""

from __future__ import annotations

import json
import math
import os
import stat
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ._init import INITIAL_RESPONSIBILITIES
from ._params import COVARIANCE_TYPES, GaussianParams, covariance_shape
from ._version import __version__
from .atomic import atomic_output, recover
from .exceptions import ModelFormatError

FORMAT = "gmm-stream-model"
FORMAT_VERSION = 1
_ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")

#: a JSON file of a saved directory larger than this is refused before it is parsed
MAX_JSON_BYTES = 16 * 2**20
#: deepest nesting of arrays/objects in a JSON file of a saved directory
MAX_JSON_DEPTH = 32
#: the weights of a model sum to 1 within this
WEIGHTS_TOLERANCE = 1e-6
#: largest ``|C - Cᵀ|`` of a covariance, relative to its largest entry
SYMMETRY_TOLERANCE = 1e-6
#: largest ``|Lᵀ Σ L - I|`` of a precision factor ``L`` and its covariance ``Σ``
INVERSE_TOLERANCE = 1e-3


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return None  # e.g. a RandomState instance: not reproducible from a file


def model_to_dict(model) -> tuple[dict, dict]:
    """The JSON metadata and the arrays of a fitted model."""
    p: GaussianParams = model.params_
    names = getattr(model, "feature_names_in_", None)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gmm_stream_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "estimator": type(model).__name__,
        "params": {k: _jsonable(v) for k, v in model.get_params().items()},
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": None if names is None else [str(n) for n in names],
        "converged": bool(model.converged_),
        "n_iter": int(model.n_iter_),
        "lower_bound": float(model.lower_bound_),
        "lower_bounds": [float(v) for v in model.lower_bounds_],
        "n_empty_rows": int(getattr(model, "n_empty_rows_", 0)),
    }
    arrays = {name: np.asarray(getattr(p, name)) for name in _ARRAYS}
    return meta, arrays


def _write_directory(path, write, *, overwrite: bool) -> None:
    """Run ``write(directory)`` on a temporary sibling of ``path``, then rename it into place."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.mkdir()
        write(tmp)


def save_model(model, path, *, overwrite: bool = False) -> None:
    meta, arrays = model_to_dict(model)

    def write(tmp: Path) -> None:
        np.savez(tmp / "arrays.npz", **arrays)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")

    _write_directory(path, write, overwrite=overwrite)


# ------------------------------------------------------------ the files of a saved directory


class SavedFile:
    """One file of a saved directory: its path, what the directory is, the error to raise.

    Parameters
    ----------
    directory : Path
    name : str
        File name inside ``directory``.
    what : str
        What the directory is, for messages (``"model directory"``...).
    error : type
        Exception class raised for this file (:class:`ModelFormatError` by default).
    """

    def __init__(self, directory: Path, name: str, what: str = "model directory",
                 error: type[Exception] = ModelFormatError) -> None:
        self.path = Path(directory) / name
        self.what = what
        self.error = error

    def __str__(self) -> str:
        return str(self.path)

    def fail(self, field: str, message: str) -> Exception:
        """The error ``<file>: <field> <message>`` (``<file> <message>`` without a field), to raise."""
        return self.error(f"{self.path}: {field} {message}" if field else f"{self.path} {message}")


def check_directory(path, what: str = "model directory", error: type[Exception] = ModelFormatError) -> Path:
    """``path`` as a Path, if it is an existing directory (possibly through a symbolic link)."""
    directory = Path(path)
    if not directory.exists():
        raise error(f"{directory} is not a gmm-stream {what}: it does not exist")
    if not directory.is_dir():
        raise error(f"{directory} is not a gmm-stream {what}: it is not a directory")
    return directory


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _file_kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def _regular_file_status(src: SavedFile) -> os.stat_result:
    """``lstat`` of the file; raises unless it is a regular file (never followed if a link)."""
    try:
        status = os.lstat(src.path)
    except FileNotFoundError:
        raise src.error(f"{src.path.parent} is not a gmm-stream {src.what}: {src.path.name} is missing") from None
    except OSError as exc:
        raise src.fail("", f"cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(status.st_mode):
        raise src.fail("", f"is a symbolic link; a {src.what} holds regular files only")
    if not stat.S_ISREG(status.st_mode):
        kind = _file_kind(status.st_mode)
        raise src.fail("", f"is {kind}, not a regular file; a {src.what} holds regular files only")
    return status


def open_regular(src: SavedFile) -> BinaryIO:
    """Open the file for reading, if it is a regular file (not a link, directory, FIFO...).

    The file is opened without following a link and without blocking, and checked again
    once open, so it cannot be swapped for something else in between.
    """
    status = _regular_file_status(src)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(src.path, flags)
    except OSError as exc:
        raise src.fail("", f"cannot be opened ({exc.strerror})") from None
    fh = os.fdopen(fd, "rb")
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (status.st_dev, status.st_ino):
        fh.close()
        raise src.fail("", f"was replaced while being opened; a {src.what} holds regular files only")
    return fh


# ------------------------------------------------------------------------------- JSON files


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _json_depth(value: Any) -> int:
    """Nesting depth of arrays and objects (0 for a scalar); stops counting past the limit."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest if isinstance(value, (dict, list)) else 0


def _read_bounded(src: SavedFile) -> bytes:
    with open_regular(src) as fh:
        size = os.fstat(fh.fileno()).st_size
        data = b"" if size > MAX_JSON_BYTES else fh.read(MAX_JSON_BYTES + 1)
    if size > MAX_JSON_BYTES or len(data) > MAX_JSON_BYTES:
        raise src.fail("", f"is {max(size, len(data))} bytes; a gmm-stream JSON file is at most "
                           f"{MAX_JSON_BYTES} bytes (not parsed)")
    return data


def read_json(src: SavedFile) -> Any:
    """Parse the JSON file ``src``: a regular file of at most :data:`MAX_JSON_BYTES`, UTF-8,
    no key twice in an object, nested at most :data:`MAX_JSON_DEPTH` levels."""
    data = _read_bounded(src)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise src.fail("", f"is not UTF-8 text ({exc})") from None
    too_deep = f"is nested more than {MAX_JSON_DEPTH} levels deep; a gmm-stream JSON file is not"
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise src.fail("", too_deep) from None
    except _DuplicateKey as exc:
        raise src.fail("", f"has the key {exc.args[0]!r} twice in one object") from None
    except json.JSONDecodeError as exc:
        raise src.fail("", f"is not valid JSON: {exc}") from None
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise src.fail("", too_deep)
    return value


def check_format(src: SavedFile, meta: Any, fmt: str, version: int, what: str) -> None:
    """``meta`` is an object with ``format == fmt`` and an integer ``1 <= format_version <= version``."""
    if not isinstance(meta, dict):
        raise src.fail("", f"must hold a JSON object, got {_describe(meta)}; it is not a {what}")
    if "format" not in meta:
        raise src.fail("", f"has no 'format' key; it is not a {what}")
    found = meta["format"]
    if found != fmt:
        shown = repr(found) if isinstance(found, str) and len(found) <= 60 else _describe(found)
        raise src.fail("", f"has format {shown}, expected {fmt!r}; it is not a {what}")
    if "format_version" not in meta:
        raise src.fail("format_version", "is missing")
    found = meta["format_version"]
    if not _is_integer(found):
        raise src.fail("format_version", f"must be an integer, got {_describe(found)}")
    if found > version:
        raise src.fail("format_version", f"is {found}: the file was written by a newer gmm-stream (this is "
                                         f"gmm-stream {__version__}, which reads format_version {version}); "
                                         "upgrade gmm-stream to read it")
    if found < 1:
        raise src.fail("format_version", f"is {found}, not a known version (1 to {version})")


# --------------------------------------------------------------------- JSON value checkers
# A checker is ``check(src, field, value)``: it raises ``src.fail(field, ...)`` when the
# value is not what the field holds, and returns nothing.

Checker = Callable[[SavedFile, str, Any], None]

_JSON_TYPES = ((type(None), "null"), (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"))


def _describe(value: Any) -> str:
    kind = next((name for t, name in _JSON_TYPES if isinstance(value, t)), type(value).__name__)
    if value is None or isinstance(value, bool):
        return json.dumps(value) if value is None else f"boolean {json.dumps(value)}"
    if isinstance(value, (list, dict)):
        return f"an {kind} of length {len(value)}" if kind == "array" else f"an {kind}"
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _join(field: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{field}[{key}]"
    return f"{field}.{key}" if field else key


def integer(low: int | None = None, high: int | None = None) -> Checker:
    def check(src, field, value):
        if not _is_integer(value):
            raise src.fail(field, f"must be an integer, got {_describe(value)}")
        if low is not None and value < low:
            raise src.fail(field, f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise src.fail(field, f"must be <= {high}, got {value}")
    return check


def number(low: float | None = None, *, minus_infinity: bool = False) -> Checker:
    """A finite number (an integer is fine), ``>= low``; ``-Infinity`` too if allowed."""
    def check(src, field, value):
        if not _is_number(value):
            raise src.fail(field, f"must be a number, got {_describe(value)}")
        if not math.isfinite(value) and not (minus_infinity and value == -math.inf):
            raise src.fail(field, f"must be a finite number, got {value}")
        if low is not None and value < low:
            raise src.fail(field, f"must be >= {low}, got {value}")
    return check


def string(*choices: str) -> Checker:
    """A string; one of ``choices`` when given."""
    def check(src, field, value):
        if not isinstance(value, str):
            raise src.fail(field, f"must be a string, got {_describe(value)}")
        if choices and value not in choices:
            raise src.fail(field, f"must be one of {list(choices)}, got {value!r}")
    return check


def verbosity(src: SavedFile, field: str, value: Any) -> None:
    """scikit-learn's ``verbose``: a boolean or a non-negative integer."""
    if isinstance(value, bool):
        return
    integer(0)(src, field, value)


def boolean(src: SavedFile, field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise src.fail(field, f"must be true or false, got {_describe(value)}")


def timestamp(src: SavedFile, field: str, value: Any) -> None:
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
    def check_list(src, field, value):
        if not isinstance(value, list):
            raise src.fail(field, f"must be an array, got {_describe(value)}")
        for i, item in enumerate(value):
            check(src, _join(field, i), item)
    return check_list


def numeric_array(src: SavedFile, field: str, value: Any) -> None:
    """A rectangular (nested) array of finite numbers."""
    try:
        arr = np.asarray(value, dtype=object)
    except ValueError:
        arr = None  # ragged
    if not isinstance(value, list) or arr is None or not all(_is_number(v) for v in arr.ravel()):
        raise src.fail(field, f"must be a rectangular (nested) array of numbers, got {_describe(value)}")
    if not np.all(np.isfinite(arr.astype(np.float64))):
        raise src.fail(field, "must hold finite numbers only")


def check_object(src: SavedFile, field: str, value: Any, spec: Mapping[str, Checker]) -> dict:
    """``value`` is an object with exactly the keys of ``spec``, each accepted by its checker."""
    name = field or "the top-level object"
    if not isinstance(value, dict):
        raise src.fail(name, f"must be an object, got {_describe(value)}")
    unknown = sorted(set(value) - set(spec))
    missing = [k for k in spec if k not in value]
    problems = ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing key(s) {missing}"] if missing else [])
    if problems:
        raise src.fail(name, f"has {' and '.join(problems)}; expected exactly the keys {list(spec)}")
    for key, check in spec.items():
        check(src, _join(field, key), value[key])
    return value


def obj(spec: Mapping[str, Checker]) -> Checker:
    """An object with exactly the keys of ``spec`` (see :func:`check_object`)."""
    def check(src, field, value):
        check_object(src, field, value, spec)
    return check


def check_feature_names(src: SavedFile, meta: dict) -> None:
    """``feature_names_in`` (when not null) has ``n_features_in`` names."""
    names, n = meta["feature_names_in"], meta["n_features_in"]
    if names is not None and len(names) != n:
        raise src.fail("feature_names_in", f"has {len(names)} names, expected n_features_in = {n}")


def _check_history(src: SavedFile, field: str, record: dict) -> None:
    """``lower_bounds`` has one value per iteration (``n_iter``); ``lower_bound`` is the last."""
    bounds = record["lower_bounds"]
    if len(bounds) != record["n_iter"]:
        raise src.fail(_join(field, "lower_bounds"),
                       f"has {len(bounds)} values, expected one per iteration (n_iter = {record['n_iter']})")
    if "lower_bound" in record:
        last = bounds[-1] if bounds else -math.inf
        if record["lower_bound"] != last:
            raise src.fail(_join(field, "lower_bound"),
                           f"is {record['lower_bound']}, expected the last of lower_bounds ({last})")


# ----------------------------------------------------------------------------- npz files
# A layout maps each array name to its expected shape and kind: "f" (float32 or float64,
# returned as float64) or "i" (an integer type, returned as int64).

Layout = Mapping[str, tuple[tuple[int, ...], str]]

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError)


class NpzArchive:
    """The arrays of an open ``.npz``: ``headers`` (name -> (shape, dtype)) read before any data."""

    def __init__(self, src: SavedFile, npz) -> None:
        self.src = src
        self._npz = npz
        self.headers = {}
        members = npz.zip.namelist()
        if len(set(members)) != len(members):
            raise src.fail("", "holds the same array twice")
        for member in members:
            if not member.endswith(".npy"):
                raise src.fail("", f"holds {member!r}, which is not a .npy array")
            self.headers[member[:-4]] = self._header(member)

    def _header(self, member: str) -> tuple[tuple[int, ...], np.dtype]:
        name = member[:-4]
        try:
            with self._npz.zip.open(member) as fp:
                version = np.lib.format.read_magic(fp)
                reader = _HEADER_READERS.get(version)
                header = None if reader is None else reader(fp)
        except _READ_ERRORS as exc:
            raise self.src.fail(name, f"is not a readable .npy array ({exc})") from None
        if header is None:
            raise self.src.fail(name, f"is a .npy array of format version {version}, which gmm-stream does not read")
        shape, _, dtype = header
        return shape, dtype

    def read(self, name: str) -> np.ndarray:
        try:
            return self._npz[name]
        except _READ_ERRORS as exc:
            raise self.src.fail(name, f"cannot be read ({exc})") from None


@contextmanager
def open_npz(src: SavedFile) -> Iterator[NpzArchive]:
    """Open the ``.npz`` file ``src`` (a regular file; ``np.load(..., allow_pickle=False)``)."""
    with open_regular(src) as fh:
        if fh.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise src.fail("", "is not an .npz archive (no zip signature)")
        fh.seek(0)
        try:
            npz = np.load(fh, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise src.fail("", f"cannot be read as an .npz archive ({exc})") from None
        with npz:
            yield NpzArchive(src, npz)


def check_array_names(src: SavedFile, found, expected) -> None:
    """The archive holds exactly the arrays ``expected``."""
    unknown, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
    problems = ([f"unknown array(s) {unknown}"] if unknown else []) + ([f"no array(s) {missing}"] if missing else [])
    if problems:
        raise src.fail("", f"has {' and '.join(problems)}; expected exactly {sorted(expected)}")


def _check_dtype(src: SavedFile, name: str, dtype: np.dtype, kind: str) -> None:
    if dtype.hasobject:
        raise src.fail(name, "has dtype object (pickled Python objects), which gmm-stream never reads")
    if kind == "f" and not (dtype.kind == "f" and dtype.itemsize in (4, 8)):
        raise src.fail(name, f"has dtype {dtype}, expected float32 or float64")
    if kind == "i" and dtype.kind not in "iu":
        raise src.fail(name, f"has dtype {dtype}, expected an integer type")


def check_array_header(src: SavedFile, npz: NpzArchive, name: str, shape: tuple, kind: str, context: str) -> None:
    """Shape and dtype of one array (from its header); ``context`` explains the shape in messages."""
    found, dtype = npz.headers[name]
    if tuple(found) != tuple(shape):
        raise src.fail(name, f"has shape {tuple(found)}, expected {tuple(shape)} ({context})")
    _check_dtype(src, name, dtype, kind)


def check_array_headers(src: SavedFile, npz: NpzArchive, layout: Layout, context: str) -> None:
    """Shapes and dtypes of the arrays of ``layout`` (their names already checked)."""
    for name, (shape, kind) in layout.items():
        check_array_header(src, npz, name, shape, kind, context)


def check_finite(src: SavedFile, name: str, a: np.ndarray) -> None:
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        what = "NaN" if np.isnan(a).any() else "an infinite value"
        raise src.fail(name, f"contains {what} ({np.count_nonzero(~np.isfinite(a))} non-finite of {a.size})")


def read_arrays(src: SavedFile, npz: NpzArchive, layout: Layout) -> dict[str, np.ndarray]:
    """The arrays of ``layout`` (headers already checked), as float64/int64, checked finite."""
    arrays = {}
    for name, (_, kind) in layout.items():
        a = npz.read(name).astype(np.float64 if kind == "f" else np.int64)
        check_finite(src, name, a)
        arrays[name] = a
    return arrays


def load_arrays(src: SavedFile, layout: Layout, context: str) -> dict[str, np.ndarray]:
    """Open ``src``, check its headers against ``layout`` and read the arrays (finite)."""
    with open_npz(src) as npz:
        check_array_names(src, npz.headers, layout)
        check_array_headers(src, npz, layout, context)
        return read_arrays(src, npz, layout)


def _positions(mask: np.ndarray) -> str:
    """The first few positions where ``mask`` is true, as text."""
    where = np.argwhere(mask)
    shown = [int(i[0]) if mask.ndim == 1 else tuple(int(j) for j in i) for i in where[:5]]
    more = f" and {len(where) - 5} more" if len(where) > 5 else ""
    return f"{shown}{more}" if mask.ndim else "the value"


def check_nonnegative(src: SavedFile, name: str, a: np.ndarray, strict: bool = False) -> None:
    """Every value ``>= 0`` (``> 0`` if ``strict``)."""
    bad = a <= 0 if strict else a < 0
    if np.any(bad):
        raise src.fail(name, f"has value(s) {'<= 0' if strict else '< 0'} at {_positions(bad)}; "
                             f"they must be {'positive' if strict else 'non-negative'}")


# ----------------------------------------------------------------- mixture parameter checks


def _params_layout(prefix: str, covariance_type: str, k: int, d: int) -> dict:
    cov = covariance_shape(covariance_type, k, d)
    shapes = {"weights": (k,), "means": (k, d), "covariances": cov, "precisions_cholesky": cov}
    return {f"{prefix}{name}": (shapes[name], "f") for name in _ARRAYS}


def _shape_context(covariance_type: str, k: int, d: int, name: str = "") -> str:
    """``n_components=…, n_features=…`` (and the covariance type, for the arrays it shapes)."""
    context = f"n_components={k}, n_features={d}"
    by_type = name.endswith(("covariances", "precisions_cholesky", "precisions_init", "S2"))
    return context + f", covariance_type={covariance_type!r}" if by_type else context


def _check_weights(src: SavedFile, name: str, weights: np.ndarray, sums_to_one: bool) -> None:
    check_nonnegative(src, name, weights)
    total = float(weights.sum())
    if sums_to_one and abs(total - 1.0) > WEIGHTS_TOLERANCE:
        raise src.fail(name, f"sum to {total:.10g}, expected 1 (within {WEIGHTS_TOLERANCE})")
    if total <= 0:
        raise src.fail(name, "sum to 0; at least one weight must be positive")


def _matrices(a: np.ndarray, covariance_type: str, name: str) -> list[tuple[str, np.ndarray]]:
    """The matrices of a full (K, d, d) or tied (d, d) array, each with its label."""
    if covariance_type == "tied":
        return [(name, a)]
    return [(f"{name}[{i}]", m) for i, m in enumerate(a)]


def _check_covariances(src: SavedFile, name: str, cov: np.ndarray, covariance_type: str) -> None:
    """Positive variances; symmetric positive definite matrices (their Cholesky succeeds)."""
    if covariance_type in ("diag", "spherical"):
        check_nonnegative(src, name, cov, strict=True)
        return
    for label, c in _matrices(cov, covariance_type, name):
        asym = float(np.max(np.abs(c - c.T)))
        if asym > SYMMETRY_TOLERANCE * float(np.max(np.abs(c))):
            raise src.fail(label, f"is not symmetric (largest |C - Cᵀ| is {asym:.3g})")
        try:
            np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            raise src.fail(label, "is not positive definite (its Cholesky factorisation fails)") from None


def _check_triangular(src: SavedFile, label: str, chol: np.ndarray) -> None:
    if np.any(np.triu(chol, 1)) and np.any(np.tril(chol, -1)):
        raise src.fail(label, "is not triangular, so it is not a Cholesky factor")
    if np.any(np.diag(chol) <= 0):
        raise src.fail(label, "has a diagonal entry <= 0, so it is not a Cholesky factor")


def _check_precisions_cholesky(src: SavedFile, name: str, chol: np.ndarray, cov: np.ndarray,
                               covariance_type: str) -> None:
    """``L`` is a Cholesky factor of the inverse of ``Σ``: ``Lᵀ Σ L = I`` (to :data:`INVERSE_TOLERANCE`)."""
    if covariance_type in ("diag", "spherical"):
        check_nonnegative(src, name, chol, strict=True)
        errors = [(name, float(np.max(np.abs(chol**2 * cov - 1.0))))]
    else:
        errors = []
        for (label, factor), (_, c) in zip(_matrices(chol, covariance_type, name), _matrices(cov, covariance_type, "")):
            _check_triangular(src, label, factor)
            errors.append((label, float(np.max(np.abs(factor.T @ c @ factor - np.eye(c.shape[0]))))))
    for label, err in errors:
        if not err <= INVERSE_TOLERANCE:
            raise src.fail(label, f"does not match the covariances: it is not the Cholesky factor of their "
                                  f"inverse (largest |Lᵀ Σ L - I| is {err:.3g})")


def checked_params(src: SavedFile, arrays: dict, prefix: str, covariance_type: str, *,
                   sums_to_one: bool = True) -> GaussianParams:
    """The mixture parameters of ``arrays`` (shapes and finiteness already checked)."""
    a = {name: arrays[f"{prefix}{name}"] for name in _ARRAYS}
    _check_weights(src, f"{prefix}weights", a["weights"], sums_to_one)
    _check_covariances(src, f"{prefix}covariances", a["covariances"], covariance_type)
    _check_precisions_cholesky(src, f"{prefix}precisions_cholesky", a["precisions_cholesky"], a["covariances"],
                               covariance_type)
    return GaussianParams(a["weights"], a["means"], a["precisions_cholesky"], covariance_type, a["covariances"])


def _load_params(src: SavedFile, npz: NpzArchive, prefix: str, covariance_type: str, k: int, d: int, *,
                 sums_to_one: bool) -> GaussianParams:
    """Headers, then values, of the four parameter arrays named ``<prefix><name>``."""
    layout = _params_layout(prefix, covariance_type, k, d)
    for name, (shape, kind) in layout.items():
        check_array_header(src, npz, name, shape, kind, _shape_context(covariance_type, k, d, name))
    arrays = read_arrays(src, npz, layout)
    return checked_params(src, arrays, prefix, covariance_type, sums_to_one=sums_to_one)


# ----------------------------------------------------------------------------- load_model

_ESTIMATOR_PARAMS: dict[str, Checker] = {
    "n_components": integer(1),
    "covariance_type": string(*COVARIANCE_TYPES),
    "tol": number(0.0),
    "reg_covar": number(0.0),
    "max_iter": integer(0),
    "n_init": integer(1),
    "init_params": string(*INITIAL_RESPONSIBILITIES),
    "weights_init": optional(numeric_array),
    "means_init": optional(numeric_array),
    "precisions_init": optional(numeric_array),
    "random_state": optional(integer(0, 2**32 - 1)),
    "warm_start": boolean,
    "verbose": verbosity,
    "verbose_interval": integer(1),
    "init_max_samples": integer(1),
}

_MODEL_KEYS: dict[str, Checker] = {
    "format": string(FORMAT),
    "format_version": integer(1, FORMAT_VERSION),
    "gmm_stream_version": string(),
    "created": timestamp,
    "estimator": string("GaussianMixture"),
    "params": obj(_ESTIMATOR_PARAMS),
    "n_features_in": integer(1),
    "feature_names_in": optional(list_of(string())),
    "converged": boolean,
    "n_iter": integer(0),
    "lower_bound": number(minus_infinity=True),
    "lower_bounds": list_of(number()),
    "n_empty_rows": integer(0),
}


def _check_init_shapes(src: SavedFile, params: dict, n_features: int) -> None:
    """``weights_init``, ``means_init`` and ``precisions_init`` fit the model's shapes."""
    k, ct = params["n_components"], params["covariance_type"]
    shapes = {"weights_init": (k,), "means_init": (k, n_features),
              "precisions_init": covariance_shape(ct, k, n_features)}
    for name, shape in shapes.items():
        if params[name] is not None and np.shape(params[name]) != shape:
            raise src.fail(f"params.{name}", f"has shape {np.shape(params[name])}, expected {shape} "
                                             f"({_shape_context(ct, k, n_features, name)})")


def read_model_meta(directory: Path) -> dict:
    """``model.json``, checked: format, keys, types, and the consistency of its values."""
    src = SavedFile(directory, "model.json")
    meta = read_json(src)
    check_format(src, meta, FORMAT, FORMAT_VERSION, "gmm-stream model")
    check_object(src, "", meta, _MODEL_KEYS)
    check_feature_names(src, meta)
    _check_history(src, "", meta)
    _check_init_shapes(src, meta["params"], meta["n_features_in"])
    return meta


def read_model_params(directory: Path, meta: dict) -> GaussianParams:
    """``arrays.npz``, checked against ``meta`` (from :func:`read_model_meta`)."""
    src = SavedFile(directory, "arrays.npz")
    ct, k, d = meta["params"]["covariance_type"], meta["params"]["n_components"], meta["n_features_in"]
    with open_npz(src) as npz:
        check_array_names(src, npz.headers, _ARRAYS)
        # scikit-learn's initial weights of 'k-means++' and 'random_from_data' sum to K/n;
        # a model fitted with max_iter=0 keeps them
        return _load_params(src, npz, "", ct, k, d, sums_to_one=meta["n_iter"] > 0)


def load_model(path):
    """Load a model written by :meth:`GaussianMixture.save`, checking every file and value.

    Raises
    ------
    ModelFormatError
        If the directory is missing, incomplete, not a gmm-stream model, or any of its
        files or values is not what :func:`save_model` writes (see the module docstring);
        the message names the file and the field.
    """
    from .mixture import GaussianMixture

    if not os.path.lexists(path):
        recover(path)  # a writer killed between the two renames of a replacement left it as a backup
    directory = check_directory(path)
    meta = read_model_meta(directory)
    params = read_model_params(directory, meta)
    model = GaussianMixture(**meta["params"])
    model._params = params
    model.n_features_in_ = meta["n_features_in"]
    if meta["feature_names_in"] is not None:
        model.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
    model.converged_ = meta["converged"]
    model.n_iter_ = meta["n_iter"]
    model.lower_bound_ = float(meta["lower_bound"])
    model.lower_bounds_ = np.asarray(meta["lower_bounds"], dtype=np.float64)
    model.n_empty_rows_ = meta["n_empty_rows"]
    return model


# ------------------------------------------------------------------------- EM checkpoints

STATE_FORMAT = "gmm-stream-em-state"
_STATS = ("N", "S1", "S2", "center", "loglik", "n_rows", "n_empty", "feature_counts")


def _params_arrays(prefix: str, p: GaussianParams) -> dict:
    return {f"{prefix}{name}": np.asarray(getattr(p, name)) for name in _ARRAYS}


def save_state(state, path, *, overwrite: bool = True) -> None:
    """Write an :class:`~gmm_stream.mixture.EMState` (a checkpoint) to a directory, atomically."""
    arrays = _params_arrays("params_", state.params)
    best = state.best
    meta = {
        "format": STATE_FORMAT,
        "format_version": FORMAT_VERSION,
        "gmm_stream_version": __version__,
        "covariance_type": state.params.covariance_type,
        "init": state.init,
        "n_iter": state.n_iter,
        "lower_bounds": [float(v) for v in state.lower_bounds],
        "converged": bool(state.converged),
        "n_empty": int(state.n_empty),
        "best": None if best is None else {k: _jsonable(v) for k, v in best.items() if k != "params"},
    }
    if best is not None:
        arrays.update(_params_arrays("best_", best["params"]))
    if state.stats is not None:
        arrays.update({f"stats_{k}": v for k, v in state.stats.to_arrays().items()})

    def write(tmp: Path) -> None:
        np.savez(tmp / "state.npz", **arrays)
        (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n")

    _write_directory(path, write, overwrite=overwrite)


_BEST_KEYS: dict[str, Checker] = {
    "converged": boolean,
    "n_iter": integer(0),
    "lower_bound": number(minus_infinity=True),
    "lower_bounds": list_of(number()),
    "n_empty": integer(0),
}

_STATE_KEYS: dict[str, Checker] = {
    "format": string(STATE_FORMAT),
    "format_version": integer(1, FORMAT_VERSION),
    "gmm_stream_version": string(),
    "covariance_type": string(*COVARIANCE_TYPES),
    "init": integer(0),
    "n_iter": integer(0),
    "lower_bounds": list_of(number()),
    "converged": boolean,
    "n_empty": integer(0),
    "best": optional(obj(_BEST_KEYS)),
}


def read_state_meta(directory: Path) -> dict:
    """``state.json``, checked: format, keys, types, and the consistency of its values."""
    src = SavedFile(directory, "state.json", "checkpoint directory")
    meta = read_json(src)
    check_format(src, meta, STATE_FORMAT, FORMAT_VERSION, "gmm-stream checkpoint")
    check_object(src, "", meta, _STATE_KEYS)
    _check_history(src, "", meta)
    if meta["best"] is not None:
        _check_history(src, "best", meta["best"])
    return meta


def _state_dimensions(src: SavedFile, npz: NpzArchive) -> tuple[int, int]:
    """``(n_components, n_features)``, from the shape of ``params_means``."""
    shape = tuple(npz.headers["params_means"][0])
    if len(shape) != 2 or min(shape) < 1:
        raise src.fail("params_means", f"has shape {shape}, expected (n_components, n_features), both >= 1")
    return shape


def _stats_layout(covariance_type: str, k: int, d: int) -> dict:
    s2 = (k, d) if covariance_type in ("diag", "spherical") else (k, d, d)
    shapes = {"N": ((k,), "f"), "S1": ((k, d), "f"), "S2": (s2, "f"), "center": ((k, d), "f"),
              "loglik": ((), "f"), "n_rows": ((), "f"), "n_empty": ((), "i"), "feature_counts": ((d,), "i")}
    return {f"stats_{name}": shapes[name] for name in _STATS}


def _read_stats(src: SavedFile, npz: NpzArchive, covariance_type: str, k: int, d: int):
    from ._stats import SufficientStats

    layout = _stats_layout(covariance_type, k, d)
    check_array_headers(src, npz, layout, _shape_context(covariance_type, k, d, "covariances"))
    arrays = read_arrays(src, npz, layout)
    for name in ("stats_N", "stats_n_rows", "stats_n_empty", "stats_feature_counts"):
        check_nonnegative(src, name, arrays[name])
    return SufficientStats.from_arrays({name[len("stats_"):]: a for name, a in arrays.items()})


def _state_array_names(meta: dict, found) -> list[str]:
    names = [f"params_{n}" for n in _ARRAYS]
    if meta["best"] is not None:
        names += [f"best_{n}" for n in _ARRAYS]
    if any(n.startswith("stats_") for n in found):  # the statistics are optional, but all or none
        names += [f"stats_{n}" for n in _STATS]
    return names


def load_state(path):
    """Read a checkpoint written by :func:`save_state`, checking every file and value.

    Raises
    ------
    ModelFormatError
        If the directory is not a gmm-stream checkpoint or any of its files or values is
        not what :func:`save_state` writes; the message names the file and the field.
    """
    from .mixture import EMState

    directory = check_directory(path, "checkpoint directory")
    meta = read_state_meta(directory)
    src = SavedFile(directory, "state.npz", "checkpoint directory")
    ct = meta["covariance_type"]
    with open_npz(src) as npz:
        check_array_names(src, npz.headers, _state_array_names(meta, npz.headers))
        k, d = _state_dimensions(src, npz)
        params = _load_params(src, npz, "params_", ct, k, d, sums_to_one=meta["n_iter"] > 0)
        best = None
        if meta["best"] is not None:
            best_params = _load_params(src, npz, "best_", ct, k, d, sums_to_one=meta["best"]["n_iter"] > 0)
            best = dict(meta["best"], params=best_params)
        stats = _read_stats(src, npz, ct, k, d) if "stats_N" in npz.headers else None
    return EMState(meta["init"], meta["n_iter"], params, meta["lower_bounds"],
                   meta["converged"], meta["n_empty"], best, stats)
