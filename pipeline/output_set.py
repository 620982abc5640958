"""A job's outputs, published together: run directories, one atomic switch, one lock.

Layout of an output directory
-----------------------------
::

    <directory>/
      .gmm-stream.lock            the lock of the run in progress (pid, start time, job)
      runs/<run-id>/              one directory per run: run.json, model/, report/,
                                  the sinks, checkpoint/ (while the run is in progress)
      current -> runs/<run-id>    the published run: a symlink, replaced atomically
      model -> current/model      stable names for every published entry (model, report,
      report -> current/report    each sink, anomalies), so readers keep their paths
      predictions.parquet -> current/predictions.parquet

A run writes everything into its own ``runs/<run-id>/``, flushes it to disk, then
replaces ``current`` with one :func:`os.replace` of a symlink: readers see the previous
set or the new one, never a mix, and a crash at any point leaves a complete published
set (or none, before the first run). Superseded runs are deleted only after the switch.

A run that was interrupted is recognised by its job fingerprint (``run.json``) and
resumed in the same run directory; an unfinished run of another job, superseded
published runs and leftovers of deletions are removed by the next run. Nothing outside
``runs/``, ``current``, the stable links and the lock file is ever touched.

One run per output directory at a time: :meth:`OutputSet.lock` takes an exclusive
``flock`` on the lock file (released by the OS if the process dies, so a crashed run
never leaves it stuck); a second run fails at once naming the first one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_output, fsync_tree, remove_path
from pipeline.exceptions import OutputExistsError, OutputLayoutError, OutputLockedError
from pipeline.formats import check_format, json_text, stamp

__all__ = ["OutputSet", "Run", "RUNS", "CURRENT", "LOCK_FILE", "RUN_FILE", "RESERVED_NAMES"]

logger = logging.getLogger(__name__)

RUNS = "runs"
CURRENT = "current"
LOCK_FILE = ".gmm-stream.lock"
RUN_FILE = "run.json"
TRASH_PREFIX = ".trash-"
NEW_PREFIX = ".new-"
#: Names an output directory reserves for its layout (entries may not use them).
RESERVED_NAMES = frozenset({RUNS, CURRENT, LOCK_FILE})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Run:
    """One run directory: where a run writes, and whether it resumes an interrupted one."""

    directory: Path
    root: Path
    fingerprint: str
    resumed: bool

    def path(self, published: str | os.PathLike[str]) -> Path:
        """Where the entry published at ``published`` (under the output directory) is written."""
        rel = os.path.relpath(os.path.abspath(published), self.root)
        if rel.startswith(os.pardir) or os.path.isabs(rel) or rel == os.curdir:
            raise OutputLayoutError(f"{published} is not inside the output directory {self.root}")
        return self.directory / rel

    @property
    def checkpoint_dir(self) -> Path:
        return self.directory / "checkpoint"


class OutputSet:
    """The published outputs of one output directory (see the module docstring).

    Parameters
    ----------
    directory : path
        The output directory (created if missing).
    entries : sequence of str
        The entries a run publishes, relative to ``directory`` (``model``, ``report``,
        ``predictions.parquet``, ...).
    """

    def __init__(self, directory: str | os.PathLike[str], entries: Sequence[str]) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(directory))))
        self.entries = [str(Path(e)) for e in entries]
        for entry in self.entries:
            first = Path(entry).parts[0]
            if Path(entry).is_absolute() or first in RESERVED_NAMES or first == os.pardir:
                raise OutputLayoutError(f"output entry {entry!r} uses a reserved or outside name")
        self._lock_fd: int | None = None

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS

    @property
    def current(self) -> Path:
        return self.root / CURRENT

    def published_run(self) -> Path | None:
        """The published run directory, or None before the first run."""
        if not self.current.is_symlink():
            return None
        target = self.runs_dir / Path(os.readlink(self.current)).name
        return target if target.is_dir() else None

    def layout_paths(self) -> list[Path]:
        """Every path this output set writes (for the overlap check with the inputs)."""
        return [self.root / LOCK_FILE, self.runs_dir, self.current] + [self.root / e for e in self.entries]

    # -- the lock -----------------------------------------------------------------------

    @contextmanager
    def lock(self, job_name: str = "") -> Iterator[None]:
        """Hold the exclusive lock of the output directory for the block.

        Raises
        ------
        OutputLockedError
            If another process holds it; the message names that run (pid, host, start
            time, job).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputLockedError(
                f"another gmm-stream run is writing to {self.root}: {holder}; wait for it to finish "
                "or choose another output.directory"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "job": job_name}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._lock_fd = fd
        try:
            yield
        finally:
            self._lock_fd = None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- starting a run -----------------------------------------------------------------

    def begin(self, fingerprint: str, *, overwrite: bool, job_name: str = "") -> Run:
        """Resume this job's interrupted run, or start a new one (call under :meth:`lock`).

        Raises
        ------
        OutputExistsError
            If a published set exists, this is not a resumed run, and ``overwrite`` is False.
        OutputLayoutError
            If a stable name is taken by something gmm-stream did not create.
        """
        self._check_stable_names()
        self._clean_trash()
        published = self.published_run()
        resumable = self._unfinished(fingerprint, published)
        for stale in self._stale_runs(published, keep=resumable):
            self._discard(stale)
        if resumable is not None:
            logger.info("resuming the interrupted run %s", resumable)
            return Run(resumable, self.root, fingerprint, resumed=True)
        if published is not None and not overwrite:
            shown = ", ".join(str(self.root / e) for e in self.entries if _exists(self.root / e)) or str(self.current)
            raise OutputExistsError(
                f"outputs exist already: {shown}; set output.overwrite: true (or --set output.overwrite=true) "
                "or choose another output.directory"
            )
        run_id = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        directory = self.runs_dir / run_id
        staging = self.runs_dir / f"{NEW_PREFIX}{run_id}"  # named with its marker in one rename
        staging.mkdir(parents=True)
        self._write_run_file(staging, {**stamp("run"), "fingerprint": fingerprint,
                                       "job": job_name, "started": _now(), "pid": os.getpid(),
                                       "status": "running"})
        os.rename(staging, directory)
        return Run(directory, self.root, fingerprint, resumed=False)

    # -- publishing ---------------------------------------------------------------------

    def publish(self, run: Run) -> None:
        """Flush the run to disk, then make it the published set in one atomic switch."""
        remove_path(run.checkpoint_dir)
        missing = [e for e in self.entries if not _exists(run.directory / e)]
        if missing:
            raise OutputLayoutError(f"run {run.directory} is incomplete (missing {missing}); it is not published")
        fsync_tree(run.directory)
        previous = self.published_run()
        self._link_stable_names()
        link_tmp = self.root / f".{CURRENT}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        os.symlink(os.path.join(RUNS, run.directory.name), link_tmp)
        os.replace(link_tmp, self.current)  # the switch
        _fsync(self.root)
        self._update_run_file(run.directory, status="published", published=_now())
        self._drop_dangling_links()
        if previous is not None and previous != run.directory:
            self._discard(previous)
        logger.info("published %s as %s", run.directory, self.current)

    # -- internals ----------------------------------------------------------------------

    def _stable_target(self, entry: str) -> str:
        link = self.root / entry
        return os.path.relpath(self.current / entry, link.parent)

    def _ours(self, link: Path) -> bool:
        """A symlink that points into ``current/`` (a stable name gmm-stream made)."""
        if not link.is_symlink():
            return False
        target = os.path.normpath(os.path.join(link.parent, os.readlink(link)))
        return target == str(self.current) or target.startswith(str(self.current) + os.sep)

    def _check_stable_names(self) -> None:
        if _exists(self.current) and not self.current.is_symlink():
            raise OutputLayoutError(f"{self.current} exists and is not gmm-stream's 'current' link; move it away "
                                    "or choose another output.directory")
        for entry in self.entries:
            link = self.root / entry
            if _exists(link) and not self._ours(link):
                raise OutputLayoutError(
                    f"{link} exists and was not published by gmm-stream's run layout (an older gmm-stream "
                    "or another program wrote it); move it away or choose another output.directory"
                )

    def _link_stable_names(self) -> None:
        for entry in self.entries:
            link = self.root / entry
            target = self._stable_target(entry)
            if link.is_symlink() and os.readlink(link) == target:
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
            os.symlink(target, tmp)
            os.replace(tmp, link)

    def _drop_dangling_links(self) -> None:
        """Stable links of entries the published run no longer has (a sink was removed)."""
        for entry in os.scandir(self.root):
            path = Path(entry.path)
            if self._ours(path) and path.name != CURRENT and not path.exists():
                path.unlink()

    def _runs(self) -> list[tuple[Path, dict[str, Any]]]:
        """Run directories that carry gmm-stream's run marker, oldest first."""
        if not self.runs_dir.is_dir():
            return []
        found = []
        for entry in sorted(os.scandir(self.runs_dir), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            info = _read_json(Path(entry.path) / RUN_FILE)
            if _is_run_marker(info, Path(entry.path) / RUN_FILE):
                found.append((Path(entry.path), info))
        return found

    def _unfinished(self, fingerprint: str, published: Path | None) -> Path | None:
        candidates = [p for p, info in self._runs()
                      if p != published and info.get("status") == "running" and info.get("fingerprint") == fingerprint]
        return candidates[-1] if candidates else None

    def _stale_runs(self, published: Path | None, keep: Path | None) -> list[Path]:
        return [p for p, _info in self._runs() if p not in (published, keep)]

    def _discard(self, run_dir: Path) -> None:
        """Delete a run directory: renamed away first, so a kill never leaves half a marked run."""
        trash = self.runs_dir / f"{TRASH_PREFIX}{run_dir.name}-{uuid.uuid4().hex[:8]}"
        os.rename(run_dir, trash)
        logger.info("removing the superseded or abandoned run %s", run_dir.name)
        shutil.rmtree(trash, ignore_errors=True)

    def _clean_trash(self) -> None:
        if not self.runs_dir.is_dir():
            return
        for entry in os.scandir(self.runs_dir):
            if entry.name.startswith((TRASH_PREFIX, NEW_PREFIX)):  # we hold the lock: nobody else's
                shutil.rmtree(entry.path, ignore_errors=True)
        for entry in os.scandir(self.root):  # switch links a killed run left
            if entry.name.startswith(f".{CURRENT}.tmp-") and entry.is_symlink():
                os.unlink(entry.path)

    @staticmethod
    def _write_run_file(directory: Path, info: dict[str, Any]) -> None:
        with atomic_output(directory / RUN_FILE, overwrite=True) as tmp:
            tmp.write_text(json_text(info))

    def _update_run_file(self, directory: Path, **changes: Any) -> None:
        info = _read_json(directory / RUN_FILE) or {}
        info.update(changes)
        self._write_run_file(directory, info)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _is_run_marker(info: Any, path: Path) -> bool:
    """Whether ``info`` is a run marker this gmm-stream reads (a newer one's run is left alone)."""
    try:
        check_format(info, "run", path, OutputLayoutError)
    except OutputLayoutError:
        return False
    return True


def _read_json(path: Path) -> Any:
    try:
        if path.is_symlink() or path.stat().st_size > 1 << 20:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "a run that is starting"
    return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
            + (f", job {info['job']!r}" if info.get("job") else ""))


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

