"""Sinks compute on a private thread pool or on the cluster (see :mod:`pipeline._executor`);
atomic writes come from :mod:`pipeline.atomic`."""

from __future__ import annotations

from pipeline._executor import private_threads
from pipeline.atomic import atomic_output, remove_path

__all__ = ["atomic_output", "remove_path", "private_threads"]
