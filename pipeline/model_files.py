"""Saving a fitted model to a directory and loading it back (never pickle); the readers
of every saved directory.

A model directory holds ``model.json`` (format, package version, estimator parameters,
fit history; readable by a person) and ``arrays.npz`` (weights, means, covariances and
precision factors, loaded with ``allow_pickle=False``): the state of
:meth:`GaussianMixture.get_state` with a format stamp. The directory is written beside
its destination and renamed into place, so a crash leaves the previous model or the new
one, never a mixture of both.

Loading trusts nothing in the directory. The directory may be reached through a symbolic
link, but every file in it must be a regular file (not a link, a directory or a FIFO).
A JSON file is refused above :data:`MAX_JSON_BYTES` before it is parsed and above
:data:`MAX_JSON_DEPTH` levels of nesting; it must name its format and a known
``format_version``. The ``.npz`` must be a zip archive of ``.npy`` arrays whose headers
are readable; the state's own checks (:meth:`GaussianMixture.check_state` on the headers,
before any data is read, then :meth:`GaussianMixture.from_state`) do the rest, and their
errors are given the name of the file: every failure is a :class:`ModelFormatError`
naming the file and the field, e.g.
``model/arrays.npz: means has shape (3, 2), expected (4, 2) (n_components=4, n_features=2)``.

The reading helpers (:class:`SavedFile`, :func:`read_json`, :func:`read_stamped`,
:func:`open_npz`, :func:`load_arrays`) take the error class from the :class:`SavedFile`,
so :mod:`pipeline.checkpoints` and :meth:`pipeline.Preprocessor.load` use them too, the
latter with its own error class.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

import numpy as np

from gmm_stream import GaussianMixture, __version__
from gmm_stream import _validate as v
from gmm_stream._validate import Layout
from gmm_stream.exceptions import ModelFormatError
from pipeline.atomic import atomic_output, recover
from pipeline.formats import check_format, json_text, stamp

__all__ = ["save_model", "load_model", "SavedFile", "read_json", "read_stamped", "open_npz", "load_arrays",
           "write_directory", "MAX_JSON_BYTES", "MAX_JSON_DEPTH"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Stateful(Protocol[T_co]):
    """A class that checks and rebuilds its objects from plain values (:class:`~gmm_stream.GaussianMixture`,
    :class:`~gmm_stream.EMState`)."""

    def check_state(self, meta: Any, headers: v.Headers | None = None) -> None: ...

    def from_state(self, meta: Any, arrays: Mapping[str, Any]) -> T_co: ...

#: a JSON file of a saved directory larger than this is refused before it is parsed
MAX_JSON_BYTES = 16 * 2**20
#: deepest nesting of arrays/objects in a JSON file of a saved directory
MAX_JSON_DEPTH = 32


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


# ----------------------------------------------------------------------------- npz files

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


def _check_digest(src: SavedFile, fh: BinaryIO, sha256: str, recorded_in: str) -> None:
    """The SHA-256 of the open file ``fh`` is ``sha256`` (read through, then rewound)."""
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
    fh.seek(0)
    if digest.hexdigest() != sha256:
        raise src.fail("", f"is not the file {recorded_in} was written with: its SHA-256 is {digest.hexdigest()}, "
                           f"{recorded_in} records {sha256} (it was damaged or replaced); save it again")


@contextmanager
def open_npz(src: SavedFile, *, sha256: str | None = None, recorded_in: str = "") -> Iterator[NpzArchive]:
    """Open the ``.npz`` file ``src`` (a regular file; ``np.load(..., allow_pickle=False)``).

    With ``sha256``, the file's digest must be that one (recorded in the file named
    ``recorded_in``), checked on the opened file before anything is parsed.
    """
    with open_regular(src) as fh:
        if sha256 is not None:
            _check_digest(src, fh, sha256, recorded_in)
        if fh.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise src.fail("", "is not an .npz archive (no zip signature)")
        fh.seek(0)
        try:
            npz = np.load(fh, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise src.fail("", f"cannot be read as an .npz archive ({exc})") from None
        with npz:
            yield NpzArchive(src, npz)


def read_all(npz: NpzArchive) -> dict[str, np.ndarray]:
    """Every array of the archive (headers already checked), as stored."""
    return {name: npz.read(name) for name in npz.headers}


def load_arrays(src: SavedFile, layout: Layout, context: str, *, sha256: str | None = None,
                recorded_in: str = "") -> dict[str, np.ndarray]:
    """Open ``src`` (checking its digest, see :func:`open_npz`), check its headers against
    ``layout`` and read the arrays (finite)."""
    with open_npz(src, sha256=sha256, recorded_in=recorded_in) as npz:
        v.check_array_names(src, npz.headers, layout)
        v.check_array_headers(src, npz.headers, layout, context)
        return v.as_checked_arrays(src, read_all(npz), layout)


# ------------------------------------------------------------------ states in directories


def write_directory(path: str | os.PathLike[str], files: Mapping[str, Any], *, overwrite: bool) -> None:
    """Write a directory of ``files`` atomically: into a temporary sibling of ``path``,
    then renamed into place.

    ``files`` maps each name to its content: a dict of arrays for a ``.npz``
    (``np.savez``), a JSON value for a ``.json`` (written after the arrays).
    """
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.mkdir()
        for name, content in files.items():
            if name.endswith(".npz"):
                np.savez(tmp / name, **content)
        for name, content in files.items():
            if name.endswith(".json"):
                (tmp / name).write_text(json_text(content))


def read_stamped(src: SavedFile, kind: str, keys: Mapping[str, v.Checker]) -> tuple[dict[str, Any], int | str]:
    """Read the JSON file ``src`` of the format ``kind`` (:data:`pipeline.formats.FORMATS`).

    Checks the format and version (:func:`pipeline.formats.check_format`) and the other
    stamp ``keys`` (``gmm_stream_version``...), and returns the rest of the object (the
    state's metadata) and the version found.
    """
    meta = read_json(src)
    version = check_format(meta, kind, src.path, src.error)
    missing = [key for key in keys if key not in meta]
    if missing:
        raise src.fail("the top-level object", f"has missing key(s) {missing}")
    for key, check in keys.items():
        check(src, key, meta[key])
    written = set(keys) | set(stamp(kind))
    return {key: value for key, value in meta.items() if key not in written}, version


@contextmanager
def naming_files(files: Mapping[str, SavedFile]) -> Iterator[None]:
    """Re-raise a state's :class:`ModelFormatError` naming the file that holds its ``part``
    (``files`` maps ``"meta"`` and ``"arrays"`` to their files)."""
    try:
        yield
    except ModelFormatError as err:
        src = files.get(err.part) if err.part is not None else None
        if src is None or err.reason is None:  # reason is set together with part
            raise
        raise src.fail(err.field or "", err.reason) from None


def load_state_files(cls: Stateful[T], meta: dict[str, Any], files: Mapping[str, SavedFile]) -> T:
    """``cls.from_state`` of ``meta`` and the arrays of ``files["arrays"]``: the metadata
    checked first, the array headers before their data, every error naming its file."""
    with naming_files(files):
        cls.check_state(meta)
        with open_npz(files["arrays"]) as npz:
            cls.check_state(meta, npz.headers)
            arrays = read_all(npz)
        return cls.from_state(meta, arrays)


# ------------------------------------------------------------------------------- models

_MODEL_STAMP: dict[str, v.Checker] = {"gmm_stream_version": v.string(), "created": v.timestamp}


def save_model(model: GaussianMixture, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write a fitted model to the directory ``path``: ``model.json`` and ``arrays.npz``.

    Written into a hidden sibling and renamed into place (:func:`pipeline.atomic.atomic_output`):
    a crash leaves the previous model or the new one.

    Raises
    ------
    NotFittedError
        If the model is not fitted.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    InputOverlapError
        If ``path`` (resolved) overlaps an input opened in this process.
    DiskFullError
        If the disk filled up; any previous model is intact.
    """
    state, arrays = model.get_state()
    meta = {**stamp("model"), "gmm_stream_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **state}
    write_directory(path, {"arrays.npz": arrays, "model.json": meta}, overwrite=overwrite)


def load_model(path: str | os.PathLike[str]) -> GaussianMixture:
    """Load a model written by :func:`save_model`, checking every file and value.

    Raises
    ------
    ModelFormatError
        If the directory is missing, incomplete, not a gmm-stream model, or any of its
        files or values is not what :func:`save_model` writes (see the module docstring);
        the message names the file and the field.
    """
    if not os.path.lexists(path):
        recover(path)  # a writer killed between the two renames of a replacement left it as a backup
    directory = check_directory(path)
    files = {"meta": SavedFile(directory, "model.json"), "arrays": SavedFile(directory, "arrays.npz")}
    meta, _ = read_stamped(files["meta"], "model", _MODEL_STAMP)
    return load_state_files(GaussianMixture, meta, files)
