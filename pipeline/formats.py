"""Every format gmm-stream writes, its name and version, in one table; one check on reading.

=============== =========================== ================== ==================================
kind            name                        version            where
=============== =========================== ================== ==================================
model           ``gmm-stream-model``        1                  ``model.json`` of a model directory
checkpoint      ``gmm-stream-em-state``     1                  ``state.json`` of an EM checkpoint
preprocessing   ``gmm-stream-preprocessing`` 2 (reads 1)       ``preprocessing.json``
training        ``gmm-stream-training``     1                  ``training.json`` beside a model
run             ``gmm-stream-run``          1                  ``run.json`` of a run directory
partitions      ``gmm-stream-partitions``   1                  ``partitions.json`` beside a model
result          ``gmm_stream_result``       ``"0.1.0"``        the stamp of every sink's output
anomalies       ``gmm_stream_anomalies``    ``"0.1.0"``        the stamp of the anomaly flags
=============== =========================== ================== ==================================

Two families, each kept as files already hold it:

- gmm-stream's own JSON files name themselves with ``format`` (dashed names) and an
  integer ``format_version``, raised when the layout changes;
- results, written inside other formats (AnnData ``uns``, Zarr attributes, Parquet schema
  metadata), carry the scverse-style ``encoding-type`` (underscored names) and a semver
  ``encoding-version`` string, as anndata stamps its own elements. AnnData's ``uns`` entry
  holds the same stamp under ``encoding_type`` / ``encoding_version``.

:func:`check_format` is the one check of a stamp read back: the name, then a version from
the oldest one still read to the current one, with a message that names the file, the
version found and those supported, and says what to do. :func:`stamp` gives the keys to
write. :func:`jsonable` is the one conversion of NumPy values (and tuples, sets, paths,
datetimes) to JSON, and :func:`json_text` the text of every JSON file gmm-stream writes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from gmm_stream import __version__
from gmm_stream._state import jsonable
from gmm_stream._validate import describe, is_integer
from gmm_stream.exceptions import ModelFormatError

__all__ = ["Format", "FORMATS", "stamp", "check_format", "jsonable", "json_text"]

Version = int | str


@dataclass(frozen=True)
class Format:
    """One format: what names it in a file and which versions gmm-stream reads.

    Attributes
    ----------
    kind : str
        The key of :data:`FORMATS`.
    name : str
        The value of ``name_key`` in a file of this format.
    version : int or str
        The version written now (an integer, or a semver string ``"X.Y.Z"``).
    what : str
        What such a file is, for messages (``"gmm-stream model"``).
    oldest : int or str
        The oldest version still read.
    name_key, version_key : str
        The keys of the name and of the version.
    """

    kind: str
    name: str
    version: Version
    what: str
    oldest: Version = 1
    name_key: str = "format"
    version_key: str = "format_version"

    @property
    def supported(self) -> str:
        """The versions read, as text (``1``, ``1 to 2``)."""
        return f"{self.oldest}" if self.oldest == self.version else f"{self.oldest} to {self.version}"


def _encoding(kind: str, name: str, version: str, what: str) -> Format:
    return Format(kind, name, version, what, oldest=version, name_key="encoding-type", version_key="encoding-version")


#: every format gmm-stream writes, by kind
FORMATS: dict[str, Format] = {f.kind: f for f in (
    Format("model", "gmm-stream-model", 1, "gmm-stream model"),
    Format("checkpoint", "gmm-stream-em-state", 1, "gmm-stream checkpoint"),
    Format("preprocessing", "gmm-stream-preprocessing", 2, "saved gmm-stream preprocessing"),
    Format("training", "gmm-stream-training", 1, "gmm-stream training record"),
    Format("run", "gmm-stream-run", 1, "gmm-stream run marker"),
    Format("partitions", "gmm-stream-partitions", 1, "gmm-stream partition identities"),
    _encoding("result", "gmm_stream_result", "0.1.0", "gmm-stream result"),
    _encoding("anomalies", "gmm_stream_anomalies", "0.1.0", "gmm-stream anomaly table"),
)}


def stamp(kind: str) -> dict[str, Version]:
    """The name and current version of ``kind``, as written: ``{"format": ..., "format_version": ...}``."""
    fmt = FORMATS[kind]
    return {fmt.name_key: fmt.name, fmt.version_key: fmt.version}


_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def _order(version: Version) -> tuple[int, ...]:
    return (version,) if isinstance(version, int) else tuple(int(p) for p in version.split("."))


def check_format(meta: Any, kind: str, file: str | os.PathLike[str],
                 error: type[Exception] = ModelFormatError) -> Version:
    """Check that ``meta`` (read from ``file``) is of the format ``kind``, in a version gmm-stream reads.

    Parameters
    ----------
    meta : Any
        The parsed JSON object (or attributes) holding the stamp.
    kind : str
        A key of :data:`FORMATS`.
    file : path
        Where ``meta`` was read, named in every message.
    error : type
        The exception raised (:class:`ModelFormatError` by default).

    Returns
    -------
    int or str
        The version found (older files may need reading their own way).

    Raises
    ------
    error
        If ``meta`` is not an object, names another format, or has a version that is not
        an integer (a semver string for result stamps), newer than this gmm-stream reads
        (upgrade) or older than it still reads (re-create the file).
    """
    fmt = FORMATS[kind]

    def fail(field: str, message: str) -> Exception:
        return error(f"{file}: {field} {message}" if field else f"{file} {message}")

    if not isinstance(meta, dict):
        raise fail("", f"must hold a JSON object, got {describe(meta)}; it is not a {fmt.what}")
    if fmt.name_key not in meta:
        raise fail("", f"has no {fmt.name_key!r} key; it is not a {fmt.what}")
    found = meta[fmt.name_key]
    if found != fmt.name:
        shown = repr(found) if isinstance(found, str) and len(found) <= 60 else describe(found)
        raise fail("", f"has {fmt.name_key} {shown}, expected {fmt.name!r}; it is not a {fmt.what}")
    key = fmt.version_key
    if key not in meta:
        raise fail(key, f"is missing; a {fmt.what} names its version ({fmt.supported})")
    found = meta[key]
    if isinstance(fmt.version, int) and not is_integer(found):
        raise fail(key, f"must be an integer, got {describe(found)}")
    if isinstance(fmt.version, str) and not (isinstance(found, str) and _SEMVER.match(found)):
        raise fail(key, f"must be a version string like {fmt.version!r}, got {describe(found)}")
    if _order(found) > _order(fmt.version):
        raise fail(key, f"is {found}: the file was written by a newer gmm-stream (this is gmm-stream "
                        f"{__version__}, which reads {key} {fmt.supported}); upgrade gmm-stream to read it")
    if _order(found) < _order(fmt.oldest):
        raise fail(key, f"is {found}, not a version gmm-stream {__version__} reads ({fmt.supported}); "
                        f"re-create the file with this gmm-stream")
    return found


def json_text(value: Any) -> str:
    """The text of a JSON file gmm-stream writes: :func:`jsonable` values, indented, one final newline."""
    return json.dumps(jsonable(value), indent=2) + "\n"
