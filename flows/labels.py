"""Label continuity: a canonical order of the components, and matching to a reference model.

EM numbers its components arbitrarily (the order depends on the initialisation). So that a
scheduled job's "cluster 3" means the same thing every night:

1. **Canonical order** (``labels.order: weight``): components sorted by decreasing weight,
   ties broken by the means in lexicographic order.
2. **Matching to a reference** (``labels.reference``, e.g. yesterday's model): the new
   components are assigned to the reference's by the Hungarian algorithm
   (:func:`scipy.optimize.linear_sum_assignment`) and take the labels of the reference
   components they are assigned to. When the reference run's predictions share sample
   ids with this run (``labels.reference: previous``, ids in the source), the assignment
   maximises the number of shared rows that keep their label (the contingency table of
   the two labellings); otherwise it minimises the total distance between the Gaussians.

Distances between a new component ``N(m1, S1)`` and a reference component ``N(m2, S2)``
(every covariance type is expanded to full matrices first):

- ``bhattacharyya`` (default, symmetric, uses means and covariances)::

      D_B = 1/8 (m1 - m2)^T S^-1 (m1 - m2) + 1/2 ln( det S / sqrt(det S1 det S2) ),  S = (S1 + S2) / 2

- ``mahalanobis``: ``sqrt((m1 - m2)^T S2^-1 (m1 - m2))``, the distance of the new mean from
  the reference component (reference covariance only).

When the two models have different numbers of components, ``min(K_new, K_ref)`` pairs are
matched. With more new components, the unmatched ones take the labels after the
reference's, in canonical order; with fewer, the matched ones keep the reference's order
(the labels are then renumbered ``0 .. K_new-1``, and the report says so).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from gmm_stream import GaussianMixture, GaussianParams
from gmm_stream.exceptions import InvalidParameterError

from flows.exceptions import LabelMatchingError

__all__ = [
    "LabelMatching",
    "full_covariances",
    "canonical_order",
    "distance_matrix",
    "match_to_reference",
    "contingency",
    "match_by_overlap",
    "permute_params",
    "reorder_model",
    "label_components",
]

logger = logging.getLogger(__name__)


@dataclass
class LabelMatching:
    """How the components of a new model were labelled.

    Attributes
    ----------
    order : list of int
        ``order[j]`` is the index (in the fitted model) of the component that gets label ``j``.
    reference : str or None
        The reference model directory, or None (canonical order only).
    distance : str or None
        The distance used for the matching.
    pairs : list of dict
        One per new label: ``label``, ``reference_label`` (None if unmatched) and ``distance``.
    total_cost : float or None
        Sum of the distances of the matched pairs.
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
    """The covariances of every component as full matrices, shape (n_components, d, d)."""
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
    runs does not flip the order of two equally weighted components.
    """
    means = np.asarray(params.means)
    keys = tuple(means[:, j] for j in reversed(range(means.shape[1])))
    return np.lexsort(keys + (-np.round(np.asarray(params.weights), 12),))


def _bhattacharyya(m1, S1, m2, S2) -> float:
    S = 0.5 * (S1 + S2)
    diff = m1 - m2
    maha = float(diff @ np.linalg.solve(S, diff))
    _, logdet = np.linalg.slogdet(S)
    _, logdet1 = np.linalg.slogdet(S1)
    _, logdet2 = np.linalg.slogdet(S2)
    return max(0.125 * maha + 0.5 * (logdet - 0.5 * (logdet1 + logdet2)), 0.0)  # >= 0 up to rounding


def _mahalanobis(m1, S1, m2, S2) -> float:
    diff = m1 - m2
    return float(np.sqrt(max(diff @ np.linalg.solve(S2, diff), 0.0)))


_DISTANCES = {"bhattacharyya": _bhattacharyya, "mahalanobis": _mahalanobis}


def distance_matrix(new: GaussianParams, reference: GaussianParams, distance: str = "bhattacharyya") -> np.ndarray:
    """Distances between every new and every reference component, shape (K_new, K_ref).

    Raises
    ------
    LabelMatchingError
        If the models do not have the same number of features, or the distance is unknown.
    """
    if distance not in _DISTANCES:
        raise LabelMatchingError(f"unknown distance {distance!r}; use one of {sorted(_DISTANCES)}")
    if new.means.shape[1] != reference.means.shape[1]:
        raise LabelMatchingError(
            f"the reference model has {reference.means.shape[1]} features and the new one "
            f"{new.means.shape[1]}: they cannot be matched; fit on the same features or drop labels.reference"
        )
    func = _DISTANCES[distance]
    c_new, c_ref = full_covariances(new), full_covariances(reference)
    return np.array([[func(new.means[i], c_new[i], reference.means[j], c_ref[j])
                      for j in range(reference.n_components)] for i in range(new.n_components)])


def _assignment(cost: np.ndarray, new: GaussianParams) -> tuple[list[int], dict[int, int], str]:
    """Hungarian assignment on ``cost`` (K_new, K_ref): the label order, new -> reference, a note."""
    rows, cols = linear_sum_assignment(cost)
    k_new, k_ref = cost.shape
    by_ref = np.argsort(cols)
    matched_new, matched_ref = rows[by_ref], cols[by_ref]
    unmatched = [int(i) for i in canonical_order(new) if i not in set(rows.tolist())]
    order = [int(i) for i in matched_new] + unmatched
    note = ""
    if k_new > k_ref:
        note = (f"{k_new - k_ref} new component(s) have no counterpart in the reference; "
                f"they get labels {k_ref}..{k_new - 1}")
    elif k_new < k_ref:
        note = (f"the reference has {k_ref} components and the new model {k_new}: matched components keep "
                "the reference's order but are renumbered 0..{}".format(k_new - 1))
    return order, dict(zip(matched_new.tolist(), matched_ref.tolist())), note


def match_to_reference(new: GaussianParams, reference: GaussianParams, distance: str = "bhattacharyya",
                       reference_name: str | None = None) -> LabelMatching:
    """Hungarian assignment of the new components to the reference's (see the module doc)."""
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
    """Counts of rows with new label ``i`` and reference label ``j``, shape (k_new, k_ref).

    Rows where either label is negative (no observed value) are not counted.
    """
    new_labels, reference_labels = np.asarray(new_labels), np.asarray(reference_labels)
    keep = (new_labels >= 0) & (reference_labels >= 0) & (new_labels < k_new) & (reference_labels < k_ref)
    flat = new_labels[keep].astype(np.int64) * k_ref + reference_labels[keep].astype(np.int64)
    return np.bincount(flat, minlength=k_new * k_ref).reshape(k_new, k_ref)


def match_by_overlap(new: GaussianParams, counts: np.ndarray, reference_name: str | None = None) -> LabelMatching:
    """Match the new components to the reference's by the rows they share.

    ``counts[i, j]`` is the number of rows (matched by sample id) that the new component
    ``i`` and the reference component ``j`` claim (:func:`contingency`). The Hungarian
    assignment maximises the number of rows that keep their label; ``total_cost`` is the
    fraction of shared rows whose label is kept.
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


def permute_params(params: GaussianParams, order: np.ndarray | list[int]) -> GaussianParams:
    """The same mixture with its components in ``order`` (``order[j]`` becomes component ``j``)."""
    try:
        return params.permute(order)
    except InvalidParameterError as exc:
        raise LabelMatchingError(str(exc)) from None


def reorder_model(model: GaussianMixture, order: np.ndarray | list[int]) -> GaussianMixture:
    """Put the fitted components of ``model`` in ``order``, in place; return the model."""
    try:
        return model.permute_components(order)
    except InvalidParameterError as exc:
        raise LabelMatchingError(str(exc)) from None


def label_components(model: GaussianMixture, *, order: str = "weight", reference: GaussianMixture | None = None,
                     reference_name: str | None = None, distance: str = "bhattacharyya",
                     overlap: np.ndarray | None = None) -> LabelMatching:
    """Relabel ``model`` in place: canonical order, then matching to ``reference`` if given.

    With ``overlap`` (the :func:`contingency` table of this model's labels against the
    reference run's, on the rows they share), the components are matched by the rows
    they claim; otherwise by ``distance`` between the Gaussians.
    """
    if reference is not None and overlap is not None and np.asarray(overlap).sum() > 0:
        matching = match_by_overlap(model.params_, overlap, reference_name)
    elif reference is not None:
        matching = match_to_reference(model.params_, reference.params_, distance, reference_name)
    elif order == "weight":
        matching = LabelMatching(order=[int(i) for i in canonical_order(model.params_)])
    else:
        matching = LabelMatching(order=list(range(model.n_components)))
    reorder_model(model, matching.order)
    return matching
