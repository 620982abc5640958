"""Local paths and fsspec URLs: existence checks and the identity stamp of an input."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec

__all__ = ["is_url", "normalise", "path_exists", "local_mtime", "remote_mtime", "modification_time"]


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
