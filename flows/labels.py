"""Label continuity for the flows: relabel a fitted model as the job's ``labels`` section asks.

So that a scheduled job's "cluster 3" means the same thing every night, the components
are put in a canonical order (``labels.order: weight``) or matched to a reference model
(``labels.reference``, e.g. yesterday's). When the reference run's predictions share
sample ids with this run (``labels.reference: previous``, ids in the source), the matching
keeps the most shared rows' labels; otherwise it minimises the total ``labels.distance``
between the Gaussians. The math is :mod:`gmm_stream.matching`.
"""

from __future__ import annotations

import numpy as np

from gmm_stream import GaussianMixture
from gmm_stream.matching import LabelMatching, canonical_order, match_by_overlap, match_to_reference

__all__ = ["label_components"]


def label_components(model: GaussianMixture, *, order: str = "weight", reference: GaussianMixture | None = None,
                     reference_name: str | None = None, distance: str = "bhattacharyya",
                     overlap: np.ndarray | None = None) -> tuple[GaussianMixture, LabelMatching]:
    """A relabelled copy of ``model``: canonical order, or matching to ``reference`` if given.

    With ``overlap`` (the :func:`~gmm_stream.matching.contingency` table of this model's
    labels against the reference run's, on the rows they share), the components are
    matched by the rows they claim; otherwise by ``distance`` between the Gaussians.

    Returns
    -------
    (GaussianMixture, LabelMatching)
        ``model.permuted(matching.order)`` and the matching; ``model`` is unchanged.
    """
    if reference is not None and overlap is not None and np.asarray(overlap).sum() > 0:
        matching = match_by_overlap(model.params_, overlap, reference_name)
    elif reference is not None:
        matching = match_to_reference(model.params_, reference.params_, distance, reference_name)
    elif order == "weight":
        matching = LabelMatching(order=[int(i) for i in canonical_order(model.params_)])
    else:
        matching = LabelMatching(order=list(range(model.n_components)))
    return model.permuted(matching.order), matching
