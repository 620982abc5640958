"""gmm-stream: out-of-core Gaussian mixture models, exact with missing values.

``gmm_stream`` is the math: arrays in, arrays out (NumPy and Dask). The estimator is
:class:`GaussianMixture`; the pure pieces it is made of are public too:
:func:`chunk_statistics` (E-step of one chunk), :class:`SufficientStats` (mergeable by
``+``) and :func:`m_step`. :mod:`gmm_stream.matching` puts a mixture's components in a
canonical order or matches them to a reference mixture's (:func:`match_to_reference`).
"""

from . import _criteria as criteria
from ._params import GaussianParams
from ._persist import load_model, load_state, save_state
from ._stats import SufficientStats, chunk_statistics, estimate_weighted_log_prob, m_step, posterior
from ._version import __version__
from .matching import LabelMatching, canonical_order, contingency, distance_matrix, match_by_overlap, match_to_reference
from .mixture import EMState, GaussianMixture

__all__ = [
    "EMState",
    "GaussianMixture",
    "GaussianParams",
    "LabelMatching",
    "SufficientStats",
    "canonical_order",
    "chunk_statistics",
    "criteria",
    "contingency",
    "distance_matrix",
    "estimate_weighted_log_prob",
    "load_model",
    "load_state",
    "save_state",
    "m_step",
    "match_by_overlap",
    "match_to_reference",
    "posterior",
    "__version__",
]
