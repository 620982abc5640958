"""Local paths and fsspec URLs: existence checks and the identity stamp of an input."""

from __future__ import annotations

import glob
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec

__all__ = ["is_url", "normalise", "path_exists", "local_mtime", "remote_mtime", "modification_time", "input_paths"]


def is_url(path: str | os.PathLike[str]) -> bool:
    """True for an fsspec URL such as ``s3://bucket/x.zarr`` or ``file:///tmp/x``."""
    return "://" in str(path)


def normalise(path: str | os.PathLike[str]) -> str:
    """An absolute local path, or the URL unchanged."""
    if is_url(path):
        return str(path)
    return str(Path(path).expanduser().absolute())


def path_exists(path: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether a local path or an fsspec URL exists."""
    if not is_url(path):
        return os.path.exists(path)
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return bool(fs.exists(root))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


def local_mtime(path: str) -> str:
    """Latest modification time (UTC, ISO 8601) of a file or of any file under a directory."""
    latest = os.stat(path).st_mtime
    if os.path.isdir(path):
        for root, _dirs, files in os.walk(path):
            for name in files:
                latest = max(latest, os.stat(os.path.join(root, name)).st_mtime)
    return _iso(latest)


def remote_mtime(path: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """Best-effort modification time or ETag of a remote object, ``None`` when unknown."""
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    try:
        info = fs.info(root)
    except (OSError, ValueError):
        return None
    for key in ("mtime", "LastModified", "last_modified", "updated", "created", "ETag", "etag"):
        value = info.get(key)
        if value is not None:
            return _iso(value) if isinstance(value, (int, float)) else str(value)
    return None


def modification_time(path: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """Modification time of a local path (walking directories) or of a URL."""
    if is_url(path) and not path.startswith("file://"):
        return remote_mtime(path, storage_options)
    local = path[len("file://"):] if path.startswith("file://") else path
    return local_mtime(local)


def input_paths(path: str | os.PathLike[str]) -> list[str]:
    """Every local path an input reads, resolved: what no output may touch.

    A glob gives each match; a directory gives itself and the target of every symlink
    below it (a store may link chunks or files from elsewhere); every path has its
    symlinks and ``..`` resolved (:func:`os.path.realpath`). URLs other than
    ``file://`` give nothing (remote stores are not written by gmm-stream).
    """
    text = os.fspath(path)
    if is_url(text):
        if not text.startswith("file://"):
            return []
        text = text[len("file://"):]
    text = os.path.expanduser(text)
    matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
    found: set[str] = set()
    for match in matches:
        found.add(os.path.realpath(match))
        if os.path.isdir(match):
            found.update(_linked_below(match))
    return sorted(found)


def _linked_below(root: str) -> set[str]:
    """Resolved targets of the symlinks below ``root`` (not following linked directories)."""
    found: set[str] = set()
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                found.add(os.path.realpath(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return found
