"""Paths of a job: environment variables expanded, relative paths resolved, URLs left alone.

``$VAR``, ``${VAR}`` and ``${VAR:-default}`` are expanded (an unset variable without a default
is an error) and ``~`` is expanded. Input paths are relative to the working directory (or the
``base_dir`` given in the validation context); output paths stay relative until the job
resolves them against ``output.directory``. URLs (``s3://...``) are left as they are.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo

__all__ = ["expand_env", "InputPath", "OutputPath"]

_ENV = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ``$VAR``, ``${VAR}`` and ``${VAR:-default}`` by their values.

    Raises
    ------
    ValueError
        If a variable is unset (or empty, for the ``:-`` form) and has no default.
    """
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        default = match.group("default")
        value = env.get(name)
        if value is None or (default is not None and value == ""):
            if default is not None:
                return default
            raise ValueError(
                f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
            )
        return value

    return _ENV.sub(replace, text)


def _is_url(path: str) -> bool:
    return "://" in path


def _resolve(path: str, base: str | os.PathLike[str] | None) -> str:
    if _is_url(path):
        return path
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    return os.path.normpath(p) if p.is_absolute() else str(p)


def _input_path(value: str, info: ValidationInfo) -> str:
    base = (info.context or {}).get("base_dir")
    return _resolve(expand_env(value), base)


def _env_only(value: str) -> str:
    return expand_env(value)


#: A path relative to the working directory (or ``base_dir``); env vars expanded.
InputPath = Annotated[str, Field(strict=True, min_length=1), AfterValidator(_input_path)]
#: A path relative to ``output.directory``; env vars expanded.
OutputPath = Annotated[str, Field(strict=True, min_length=1), AfterValidator(_env_only)]


def _relative_to(path: str, base: str) -> str | None:
    """``path`` relative to ``base`` as a normalised POSIX path (``"."`` if equal), or None if outside."""
    if _is_url(base) or _is_url(path):
        if not _is_url(path):
            if os.path.isabs(path):
                return None
            rel = posixpath.normpath(path)
        elif not _is_url(base):
            return None
        else:
            root = base.rstrip("/")
            target = path.rstrip("/")
            if target == root:
                return "."
            if not target.startswith(root + "/"):
                return None
            rel = posixpath.normpath(target[len(root) + 1:])
    else:
        rel = os.path.relpath(path, base) if os.path.isabs(path) else os.path.normpath(path)
        rel = Path(rel).as_posix()
    if rel == ".." or rel.startswith("../"):
        return None
    return rel

