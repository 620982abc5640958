"""The one check that data have the features a fitted object was fitted on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .exceptions import InvalidInputError

__all__ = ["check_features"]


def check_features(n_features: int, names: Iterable[Any] | None, *, expected: int,
                   expected_names: Iterable[Any] | None, owner: str,
                   error: type[Exception] = InvalidInputError) -> None:
    """Raise ``error`` unless the data have ``expected`` features, named as in fit.

    Parameters
    ----------
    n_features, names : int, iterable or None
        The data's number of features and their names (None: the data carry no names).
    expected, expected_names : int, iterable or None
        What the fitted object saw in fit (``n_features_in_``, ``feature_names_in_``).
    owner : str
        The fitted object, for the message (e.g. ``"GaussianMixture"``).
    error : exception class, default InvalidInputError
        What the caller's layer raises.
    """
    if n_features != expected:
        raise error(f"X has {n_features} features, but {owner} is expecting {expected} features as input")
    if names is None or expected_names is None:
        return
    got, want = [str(v) for v in names], [str(v) for v in expected_names]
    if got != want:
        diff = [(a, b) for a, b in zip(got, want, strict=True) if a != b][:5]
        raise error(f"the feature names of X differ from those seen in fit (first differences, got vs fitted: "
                    f"{diff}); select the same features in the same order")
