"""Outputs that are either the old result or the new one, never half of one.

:func:`atomic_output` yields a hidden temporary sibling of the target to write into and
moves it into place when the writing succeeded. Used for saved models, checkpoints,
preprocessing and every sink. It also guards the inputs: every target is resolved
(symlinks and ``..``, :func:`os.path.realpath`) and refused when it equals, lies inside
or contains an input, either one passed in or one registered by :func:`protect_inputs`
(every data source registers the files it reads when it is opened).

Replacing an existing output
----------------------------
- a file replaces a file with one :func:`os.replace`;
- a directory (or a file by a directory) is swapped in with one
  ``renameat2(RENAME_EXCHANGE)`` where the kernel and file system offer it (Linux ≥ 3.15;
  ext4, xfs, btrfs, tmpfs, overlayfs), then the old one, now at the temporary name, is
  deleted;
- elsewhere two renames (old → ``.<name>.old-<pid>-<random>``, new → target): a process
  killed between them leaves no target but the old one under its backup name, and the
  next :func:`atomic_output` of the same target (or :func:`recover`) puts it back.

Leftovers of killed writers (``.<name>.tmp-<pid>-<random>`` and ``.<name>.old-…``
siblings whose process is gone) are removed by the next write of the same target; no
other file is ever touched.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.exceptions import DiskFullError, InputOverlapError, OutputExistsError

__all__ = [
    "atomic_output",
    "remove_path",
    "recover",
    "protect_inputs",
    "protected_inputs",
    "check_not_input",
    "overlaps",
    "real_path",
    "fsync_tree",
    "disk_full",
]

logger = logging.getLogger(__name__)

_PROTECTED: set[str] = set()
_PROTECTED_LOCK = threading.Lock()
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<tag>tmp|old)-(?P<pid>\d+)-[0-9a-f]{12}$")
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


# ------------------------------------------------------------------------- the inputs


def real_path(path: str | os.PathLike[str]) -> str:
    """``path`` with ``~``, ``..`` and every symlink resolved (it need not exist)."""
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def overlaps(a: str, b: str) -> bool:
    """Whether resolved paths ``a`` and ``b`` are equal or one lies inside the other."""
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep)


def protect_inputs(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Register input paths (resolved) that no output of this process may touch."""
    resolved = {real_path(p) for p in paths}
    with _PROTECTED_LOCK:
        _PROTECTED.update(resolved)


def protected_inputs() -> frozenset[str]:
    """The resolved input paths registered in this process."""
    with _PROTECTED_LOCK:
        return frozenset(_PROTECTED)


def check_not_input(target: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Raise :class:`InputOverlapError` if ``target`` equals, lies inside or contains an input.

    ``inputs`` are checked together with the inputs registered by :func:`protect_inputs`;
    all paths are compared resolved (symlinks and ``..``).
    """
    resolved = real_path(target)
    for item in sorted({real_path(p) for p in inputs} | protected_inputs()):
        if overlaps(resolved, item):
            shown = str(target) if resolved == os.path.abspath(os.fspath(target)) else f"{target} (= {resolved})"
            raise InputOverlapError(
                f"output {shown} overlaps the input {item}; the input is never modified: "
                "write the output to another path"
            )


# ----------------------------------------------------------------------- file helpers


def remove_path(path: Path) -> None:
    """Remove a file, a symlink or a directory tree, if present (never following a link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _sibling(target: Path, tag: str) -> Path:
    return target.with_name(f".{target.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(target: str | os.PathLike[str]) -> None:
    """Clean up after killed writers of ``target``: restore a lost old version, drop temporaries.

    Only siblings named ``.<name>.tmp-<pid>-<random>`` or ``.<name>.old-<pid>-<random>``
    whose process ``pid`` has ended are touched. If ``target`` is missing and such a
    backup exists (a kill between the two renames of a replacement), the newest backup
    becomes ``target`` again.
    """
    final = Path(os.path.abspath(os.path.expanduser(os.fspath(target))))
    try:
        entries = list(os.scandir(final.parent))
    except FileNotFoundError:
        return
    leftovers = []
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if match and match["name"] == final.name and not _alive(int(match["pid"])):
            leftovers.append((match["tag"], Path(entry.path)))
    backups = sorted((p for tag, p in leftovers if tag == "old"), key=lambda p: p.lstat().st_mtime)
    if backups and not _exists(final):
        os.rename(backups[-1], final)
        logger.warning("restored %s from the backup a killed writer left (%s)", final, backups[-1].name)
        backups = backups[:-1]
    for path in [p for tag, p in leftovers if tag == "tmp"] + backups:
        logger.info("removing %s, left by a killed writer", path)
        remove_path(path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """Flush every file and directory under ``path`` (and ``path``) to stable storage."""
    root = Path(path)
    if root.is_file() and not root.is_symlink():
        with open(root, "rb") as fh:
            os.fsync(fh.fileno())
        return
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            file = os.path.join(dirpath, name)
            if not os.path.islink(file):
                with open(file, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2: Callable[..., int] | None
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (OSError, AttributeError):  # not Linux/glibc: two renames
    _renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap ``a`` and ``b``; False where the system cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


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
    if tmp.is_file() and target.is_file() and not target.is_symlink():
        os.replace(tmp, target)  # atomic for single files
        return
    if _exchange(tmp, target):
        remove_path(tmp)  # the old output, now under the temporary name
        return
    backup = _sibling(target, "old")
    os.rename(target, backup)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(backup, target)
        raise
    remove_path(backup)


def disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) says the disk or the quota is full."""
    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def atomic_output(
    target: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[Path]:
    """Yield a temporary sibling path to write; move it to ``target`` on success.

    The temporary path is ``<parent>/.<name>.tmp-<pid>-<random>`` (same file system, so
    the move is a rename). If the block raises, the temporary output is removed and
    ``target`` is untouched. See the module docstring for how an existing target is
    replaced and how leftovers of killed writers are cleaned.

    Parameters
    ----------
    target : path
        The output.
    overwrite : bool, default False
        Replace an existing ``target``.
    inputs : iterable of paths
        Inputs the target must not overlap (besides those registered by
        :func:`protect_inputs`).

    Raises
    ------
    InputOverlapError
        If ``target`` (resolved) equals, lies inside or contains an input.
    OutputExistsError
        If ``target`` exists and ``overwrite`` is False (checked before writing and
        again before the rename).
    DiskFullError
        If the file system ran out of space (or quota) while writing; the partial
        output is removed and an existing ``target`` is intact.
    """
    final = Path(os.path.abspath(os.path.expanduser(os.fspath(target))))
    check_not_input(final, inputs)
    recover(final)
    if _exists(final) and not overwrite:
        raise OutputExistsError(f"{final} exists; pass overwrite=True to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(final, "tmp")
    try:
        yield tmp
        _commit(tmp, final, overwrite)
        _fsync_dir(final.parent)
    except BaseException as err:
        logger.warning("writing %s failed; removing the partial output %s", final, tmp.name)
        remove_path(tmp)
        if disk_full(err) and not isinstance(err, DiskFullError):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on the device while writing {final}; the partial output was removed "
                "and any previous output is intact: free space (or choose another output directory) "
                "and run again",
                str(final),
            ) from err
        raise
    logger.info("wrote %s", final)
