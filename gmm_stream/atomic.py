"""Outputs that are either the old result or the new one, never half of one.

:func:`atomic_output` yields a hidden temporary sibling of the target to write into and
renames it into place when the writing succeeded. Used for saved models, checkpoints,
preprocessing and every sink.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .exceptions import OutputExistsError

__all__ = ["atomic_output", "remove_path"]

logger = logging.getLogger(__name__)


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree, if present."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _sibling(target: Path, tag: str) -> Path:
    return target.with_name(f".{target.name}.{tag}-{uuid.uuid4().hex[:12]}")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``target``; the old target survives until then."""
    if not _exists(target):
        try:
            os.rename(tmp, target)
            return
        except OSError as err:  # a non-empty directory appeared meanwhile
            if not overwrite:
                raise OutputExistsError(f"{target} appeared while writing; pass overwrite=True to replace it") from err
    if not overwrite:
        raise OutputExistsError(f"{target} appeared while writing; pass overwrite=True to replace it")
    if tmp.is_file() and target.is_file():
        os.replace(tmp, target)  # atomic for single files
        return
    backup = _sibling(target, "old")
    os.rename(target, backup)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(backup, target)
        raise
    remove_path(backup)


@contextmanager
def atomic_output(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write; rename it to ``target`` on success.

    The temporary path is ``<parent>/.<name>.tmp-<random>`` (same file system, so the
    rename is cheap). If the block raises, the temporary output is removed and
    ``target`` is untouched. A single file replaces the old one atomically
    (``os.replace``); a directory replaces the old one by two renames (old -> hidden
    backup, new -> target), then the backup is deleted, and the old directory is put
    back if the second rename fails.

    Raises
    ------
    OutputExistsError
        If ``target`` exists and ``overwrite`` is False (checked before writing and
        again before the rename).
    """
    final = Path(target).expanduser().absolute()
    if _exists(final) and not overwrite:
        raise OutputExistsError(f"{final} exists; pass overwrite=True to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(final, "tmp")
    try:
        yield tmp
        _commit(tmp, final, overwrite)
    except BaseException:
        logger.warning("writing %s failed; removing the partial output %s", final, tmp)
        remove_path(tmp)
        raise
    logger.info("wrote %s", final)
