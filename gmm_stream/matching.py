"""Component matching: a canonical order of a mixture's components, and matching to a reference.

EM numbers its components arbitrarily (the order depends on the initialisation). These
functions find the order that makes two mixtures' labels agree; they work on
:class:`~gmm_stream.GaussianParams` and label arrays only, and return a
:class:`LabelMatching` whose ``order`` is applied with :meth:`GaussianParams.permute` or
:meth:`GaussianMixture.permuted <gmm_stream.GaussianMixture.permuted>`.

1. **Canonical order** (:func:`canonical_order`): components sorted by decreasing weight,
   ties broken by the means in lexicographic order.
2. **Matching to a reference** (:func:`match_to_reference`, :func:`match_by_overlap`): the
   new components are assigned to the reference's by the Hungarian algorithm
   (:func:`scipy.optimize.linear_sum_assignment`) and take the labels of the reference
   components they are assigned to. The assignment either minimises the total distance
   between the Gaussians (:func:`distance_matrix`) or maximises the number of rows shared
   by the two labellings that keep their label (the :func:`contingency` table).

Distances between a new component ``N(m1, S1)`` and a reference component ``N(m2, S2)``
(every covariance type is expanded to full matrices first, :func:`full_covariances`):

- ``bhattacharyya`` (symmetric, uses means and covariances)::

      D_B = 1/8 (m1 - m2)^T S^-1 (m1 - m2) + 1/2 ln( det S / sqrt(det S1 det S2) ),  S = (S1 + S2) / 2

- ``mahalanobis``: ``sqrt((m1 - m2)^T S2^-1 (m1 - m2))``, the distance of the new mean from
  the reference component (reference covariance only).

When the two mixtures have different numbers of components, ``min(K_new, K_ref)`` pairs
are matched. With more new components, the unmatched ones take the labels after the
reference's, in canonical order; with fewer, the matched ones keep the reference's order
(the labels are then renumbered ``0 .. K_new-1``, and :attr:`LabelMatching.note` says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._params import GaussianParams
from .exceptions import ComponentMatchingError, InvalidParameterError

__all__ = [
    "DISTANCES",
    "LabelMatching",
    "bhattacharyya",
    "canonical_order",
    "contingency",
    "distance_matrix",
    "full_covariances",
    "mahalanobis",
    "match_by_overlap",
    "match_to_reference",
]

logger = logging.getLogger(__name__)


@dataclass
class LabelMatching:
    """How the components of a new mixture were labelled.

    Attributes
    ----------
    order : list of int
        ``order[j]`` is the index (in the new mixture) of the component that gets label ``j``;
        the argument of :meth:`GaussianParams.permute`.
    reference : str or None
        A name for the reference (e.g. its model directory), or None (canonical order only).
    distance : str or None
        The distance used for the matching (``"overlap"`` for :func:`match_by_overlap`).
    pairs : list of dict
        One per new label: ``label``, ``reference_label`` (None if unmatched) and
        ``distance`` (:func:`match_to_reference`) or ``shared_rows`` (:func:`match_by_overlap`).
    total_cost : float or None
        Sum of the distances of the matched pairs; for :func:`match_by_overlap`, the
        fraction of shared rows that keep their label.
    note : str
        Anything the reader should know (different numbers of components...).
    """

    order: list[int]
    reference: str | None = None
    distance: str | None = None
    pairs: list[dict[str, Any]] = field(default_factory=list)
    total_cost: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def full_covariances(params: GaussianParams) -> np.ndarray:
    """The covariances of every component as full matrices.

    Returns
    -------
    ndarray of shape (n_components, n_features, n_features), float64
    """
    k, d = params.means.shape
    cov = np.asarray(params.covariances, dtype=np.float64)
    kind = params.covariance_type
    if kind == "full":
        return cov
    if kind == "tied":
        return np.broadcast_to(cov, (k, d, d)).copy()
    if kind == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)[None]  # spherical


def canonical_order(params: GaussianParams) -> np.ndarray:
    """Component indices by decreasing weight (ties: means in lexicographic order).

    Weights are rounded to 12 significant decimals first, so that float noise between two
    fits does not flip the order of two equally weighted components.

    Returns
    -------
    ndarray of shape (n_components,), int
        ``order[j]`` is the component that comes ``j``-th.
    """
    means = np.asarray(params.means)
    keys = tuple(means[:, j] for j in reversed(range(means.shape[1])))
    return np.lexsort(keys + (-np.round(np.asarray(params.weights), 12),))


def bhattacharyya(m1: np.ndarray, S1: np.ndarray, m2: np.ndarray, S2: np.ndarray) -> float:
    """Bhattacharyya distance between ``N(m1, S1)`` and ``N(m2, S2)`` (formula in the module doc).

    Parameters
    ----------
    m1, m2 : ndarray of shape (n_features,)
    S1, S2 : ndarray of shape (n_features, n_features)
        Symmetric positive definite covariances.
    """
    S = 0.5 * (S1 + S2)
    diff = m1 - m2
    maha = float(diff @ np.linalg.solve(S, diff))
    _, logdet = np.linalg.slogdet(S)
    _, logdet1 = np.linalg.slogdet(S1)
    _, logdet2 = np.linalg.slogdet(S2)
    return max(0.125 * maha + 0.5 * (logdet - 0.5 * (logdet1 + logdet2)), 0.0)  # >= 0 up to rounding


def mahalanobis(m1: np.ndarray, S1: np.ndarray, m2: np.ndarray, S2: np.ndarray) -> float:
    """Mahalanobis distance of the mean ``m1`` from ``N(m2, S2)`` (``S1`` is not used).

    Parameters as :func:`bhattacharyya`.
    """
    diff = m1 - m2
    return float(np.sqrt(max(diff @ np.linalg.solve(S2, diff), 0.0)))


#: The distances :func:`distance_matrix` knows, by name.
DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]] = {
    "bhattacharyya": bhattacharyya,
    "mahalanobis": mahalanobis,
}


def distance_matrix(new: GaussianParams, reference: GaussianParams, distance: str = "bhattacharyya") -> np.ndarray:
    """Distances between every new and every reference component.

    Parameters
    ----------
    new, reference : GaussianParams
        Mixtures over the same features (any covariance types).
    distance : {'bhattacharyya', 'mahalanobis'}, default='bhattacharyya'

    Returns
    -------
    ndarray of shape (new.n_components, reference.n_components)

    Raises
    ------
    InvalidParameterError
        If the distance is unknown.
    ComponentMatchingError
        If the mixtures do not have the same number of features.
    """
    if distance not in DISTANCES:
        raise InvalidParameterError(f"unknown distance {distance!r}; use one of {sorted(DISTANCES)}")
    if new.n_features != reference.n_features:
        raise ComponentMatchingError(
            f"the reference model has {reference.n_features} features and the new one "
            f"{new.n_features}: they cannot be matched; fit on the same features or drop the reference"
        )
    func = DISTANCES[distance]
    c_new, c_ref = full_covariances(new), full_covariances(reference)
    m_new, m_ref = np.asarray(new.means, np.float64), np.asarray(reference.means, np.float64)
    return np.array([[func(m_new[i], c_new[i], m_ref[j], c_ref[j])
                      for j in range(reference.n_components)] for i in range(new.n_components)])


def _assignment(cost: np.ndarray, new: GaussianParams) -> tuple[list[int], dict[int, int], str]:
    """Hungarian assignment on ``cost`` (K_new, K_ref): the label order, new -> reference, a note."""
    rows, cols = linear_sum_assignment(cost)
    k_new, k_ref = cost.shape
    by_ref = np.argsort(cols)
    matched_new, matched_ref = rows[by_ref], cols[by_ref]
    matched = set(rows.tolist())
    unmatched = [int(i) for i in canonical_order(new) if i not in matched]
    order = [int(i) for i in matched_new] + unmatched
    note = ""
    if k_new > k_ref:
        note = (f"{k_new - k_ref} new component(s) have no counterpart in the reference; "
                f"they get labels {k_ref}..{k_new - 1}")
    elif k_new < k_ref:
        note = (f"the reference has {k_ref} components and the new model {k_new}: matched components keep "
                f"the reference's order but are renumbered 0..{k_new - 1}")
    return order, dict(zip(matched_new.tolist(), matched_ref.tolist())), note


def match_to_reference(new: GaussianParams, reference: GaussianParams, distance: str = "bhattacharyya",
                       reference_name: str | None = None) -> LabelMatching:
    """Label the new components after the reference's, minimising the total distance.

    Parameters
    ----------
    new, reference : GaussianParams
    distance : {'bhattacharyya', 'mahalanobis'}, default='bhattacharyya'
    reference_name : str, optional
        Stored as :attr:`LabelMatching.reference`.

    Returns
    -------
    LabelMatching
        ``total_cost`` is the sum of the distances of the matched pairs, the least over
        every assignment of ``min(K_new, K_ref)`` pairs.

    Raises
    ------
    InvalidParameterError, ComponentMatchingError
        As :func:`distance_matrix`.
    """
    cost = distance_matrix(new, reference, distance)
    order, ref_of, note = _assignment(cost, new)
    pairs = [{"label": j, "reference_label": ref_of.get(i),
              "distance": float(cost[i, ref_of[i]]) if i in ref_of else None}
             for j, i in enumerate(order)]
    total = float(sum(cost[i, r] for i, r in ref_of.items()))
    logger.info("matched %d components to the reference (%s distance, total %.4g)", len(ref_of), distance, total)
    return LabelMatching(order=order, reference=reference_name, distance=distance, pairs=pairs,
                         total_cost=total, note=note)


def contingency(new_labels: np.ndarray, reference_labels: np.ndarray, k_new: int, k_ref: int) -> np.ndarray:
    """Counts of rows with new label ``i`` and reference label ``j``.

    Parameters
    ----------
    new_labels, reference_labels : array-like of shape (n_samples,), int
        Two labellings of the same rows.
    k_new, k_ref : int
        Numbers of labels; rows whose label is negative (no observed value) or out of range
        are not counted.

    Returns
    -------
    ndarray of shape (k_new, k_ref), int64
    """
    new_labels, reference_labels = np.asarray(new_labels), np.asarray(reference_labels)
    keep = (new_labels >= 0) & (reference_labels >= 0) & (new_labels < k_new) & (reference_labels < k_ref)
    flat = new_labels[keep].astype(np.int64) * k_ref + reference_labels[keep].astype(np.int64)
    return np.bincount(flat, minlength=k_new * k_ref).reshape(k_new, k_ref)


def match_by_overlap(new: GaussianParams, counts: np.ndarray, reference_name: str | None = None) -> LabelMatching:
    """Label the new components after the reference's by the rows they share.

    Parameters
    ----------
    new : GaussianParams
        The new mixture (its canonical order numbers the unmatched components).
    counts : array-like of shape (new.n_components, k_ref)
        ``counts[i, j]`` is the number of rows that the new component ``i`` and the
        reference component ``j`` claim (:func:`contingency`).
    reference_name : str, optional

    Returns
    -------
    LabelMatching
        The assignment keeps the most rows' labels; ``total_cost`` is the fraction of
        shared rows whose label is kept.
    """
    counts = np.asarray(counts, dtype=np.float64)
    order, ref_of, note = _assignment(-counts, new)
    shared = counts.sum()
    pairs = [{"label": j, "reference_label": ref_of.get(i),
              "shared_rows": int(counts[i, ref_of[i]]) if i in ref_of else 0}
             for j, i in enumerate(order)]
    kept = float(sum(counts[i, r] for i, r in ref_of.items()) / shared) if shared else 0.0
    logger.info("matched %d components to the reference by the rows they share (%.1f %% of %d rows keep "
                "their label)", len(ref_of), 100 * kept, int(shared))
    return LabelMatching(order=order, reference=reference_name, distance="overlap", pairs=pairs,
                         total_cost=kept, note=note)
