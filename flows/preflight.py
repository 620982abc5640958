"""Checks that run before any work: before the Prefect server starts, before any data is read."""

from __future__ import annotations

from flows.config import Job

__all__ = ["preflight"]


def preflight(job: Job) -> None:
    """Refuse a job whose outputs overlap its inputs, or whose inputs are missing.

    Raises a :class:`gmm_stream.exceptions.GMMStreamError` subclass with a one-line
    message naming the path. Reads no data (only file-system metadata).
    """
    return None
