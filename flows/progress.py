"""Progress of EM fits, for whoever listens (the CLI's progress bars).

The fit task calls :func:`notify` after every EM iteration; listeners registered with
:func:`listening` receive a :class:`FitProgress`. Listeners run in the thread of the fit
and must be quick and thread-safe. Nothing listens by default (deployments, tests).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["FitProgress", "notify", "listening"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitProgress:
    """One EM iteration of one fit.

    Attributes
    ----------
    fit_id : str
        Which fit (``"K=4 full"``): several may run at once in the select flow.
    init, n_init : int
        Initialisation being run (0-based) and their number.
    n_iter, max_iter : int
        Iterations done in this initialisation, and the limit.
    lower_bound : float
        Mean log-likelihood of the last E-step.
    converged : bool
    resumed_from : int or None
        The iteration a resumed fit started from.
    """

    fit_id: str
    init: int
    n_init: int
    n_iter: int
    max_iter: int
    lower_bound: float
    converged: bool
    resumed_from: int | None = None


Listener = Callable[[FitProgress], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def notify(event: FitProgress) -> None:
    """Send ``event`` to every listener; a failing listener is logged, never raised."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a progress bar must never break a fit
            logger.exception("progress listener %r failed", listener)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Register ``listener`` for the duration of the block."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
