"""Checkpoints on disk: EM states, and the fingerprint of the job a checkpoint belongs to.

A checkpoint directory of an EM fit holds ``state.json`` (format, package version and the
metadata of :meth:`EMState.get_state <gmm_stream.EMState.get_state>`) and ``state.npz``
(its arrays), written atomically and checked on load as strictly as a model
(:mod:`pipeline.model_files`).

A checkpoint is only resumed by the job that wrote it: ``fingerprint.json``
(``{"fingerprint": "<sha256>"}``) beside the saved state records what it depends on, and
:func:`matching_checkpoint` discards a checkpoint of another job or input.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gmm_stream import EMState, __version__
from gmm_stream import _validate as v
from gmm_stream.exceptions import GMMStreamError
from pipeline.atomic import atomic_output, remove_path
from pipeline.formats import json_text, stamp
from pipeline.model_files import SavedFile, check_directory, load_state_files, read_json, read_stamped, write_directory

__all__ = ["save_state", "load_state", "read_fingerprint", "write_fingerprint", "matching_checkpoint",
           "FINGERPRINT_FILE"]

logger = logging.getLogger(__name__)

#: the file of a checkpoint directory that names the job and input it belongs to
FINGERPRINT_FILE = "fingerprint.json"
_WHAT = "checkpoint directory"
_STATE_STAMP: dict[str, v.Checker] = {"gmm_stream_version": v.string()}


# ------------------------------------------------------------------------ EM states


def save_state(state: EMState, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """Write an :class:`~gmm_stream.EMState` to the directory ``path``, atomically.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    InputOverlapError, DiskFullError
        As :func:`pipeline.atomic.atomic_output`.
    """
    body, arrays = state.get_state()
    meta = {**stamp("checkpoint"), "gmm_stream_version": __version__, **body}
    write_directory(path, {"state.npz": arrays, "state.json": meta}, overwrite=overwrite)


def load_state(path: str | os.PathLike[str]) -> EMState:
    """Read a checkpoint written by :func:`save_state`, checking every file and value.

    Raises
    ------
    ModelFormatError
        If the directory is not a gmm-stream checkpoint or any of its files or values is
        not what :func:`save_state` writes; the message names the file and the field.
    """
    directory = check_directory(path, _WHAT)
    files = {"meta": SavedFile(directory, "state.json", _WHAT), "arrays": SavedFile(directory, "state.npz", _WHAT)}
    meta, _ = read_stamped(files["meta"], "checkpoint", _STATE_STAMP)
    return load_state_files(EMState, meta, files)


# ---------------------------------------------------------------------- fingerprints


def read_fingerprint(directory: str | os.PathLike[str]) -> str | None:
    """The fingerprint recorded in ``directory``, or None if there is none (or it is unreadable)."""
    try:
        value = read_json(SavedFile(Path(directory), FINGERPRINT_FILE, _WHAT))
    except GMMStreamError:
        return None
    found = value.get("fingerprint") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def write_fingerprint(directory: str | os.PathLike[str], value: str) -> None:
    """Record in ``directory`` (created if missing) the fingerprint of the job it belongs to, atomically."""
    with atomic_output(Path(directory) / FINGERPRINT_FILE, overwrite=True) as tmp:
        tmp.write_text(json_text({"fingerprint": value}))


def matching_checkpoint(directory: str | os.PathLike[str], fingerprint: str, what: str) -> bool:
    """True if ``directory`` holds a checkpoint of the job with ``fingerprint``.

    A checkpoint of another job or input (or with no readable fingerprint) is removed,
    with a warning naming ``what`` it was (``"EM"``, ``"preprocessing"``).
    """
    directory = Path(directory)
    if not directory.exists():
        return False
    if read_fingerprint(directory) == fingerprint:
        return True
    logger.warning("ignoring the %s checkpoint in %s: it belongs to another job or input "
                   "(the configuration or the data changed)", what, directory)
    remove_path(directory)
    return False
