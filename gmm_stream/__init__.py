"""gmm-stream: out-of-core Gaussian mixture models, exact with missing values.

``gmm_stream`` is the math: arrays in, arrays out (NumPy and Dask). The estimator is
:class:`GaussianMixture`; the pure pieces it is made of are public too:
:func:`chunk_statistics` (E-step of one chunk), :class:`SufficientStats` (mergeable by
``+``) and :func:`m_step`. :mod:`gmm_stream.matching` puts a mixture's components in a
canonical order or matches them to a reference mixture's (:func:`match_to_reference`).
The estimator's choices and rules are public for callers that check a configuration
before any data exist: :data:`COVARIANCE_TYPES`, :data:`INIT_PARAMS` and
:func:`check_initial_parameters` (the checks ``fit`` applies to ``weights_init``,
``means_init`` and ``precisions_init``). A fitted model gives its state as plain values
(:meth:`GaussianMixture.get_state`, :meth:`GaussianMixture.from_state`); writing it to
files is the data layer's (``pipeline.save_model``, ``pipeline.load_model``).
"""

from . import _criteria as criteria
from ._dask import lazy_partition_statistics, one_blas_thread_per_dask_thread, partition_statistics
from ._features import check_features
from ._incremental import PartitionStatistics, expected_complete_loglik
from ._init import INIT_PARAMS
from ._init_checks import check_initial_parameters
from ._params import COVARIANCE_TYPES, GaussianParams
from ._stats import SufficientStats, chunk_statistics, estimate_weighted_log_prob, m_step, posterior
from ._version import __version__
from .matching import LabelMatching, canonical_order, contingency, distance_matrix, match_by_overlap, match_to_reference
from .mixture import EMResult, EMState, GaussianMixture

__all__ = [
    "COVARIANCE_TYPES",
    "INIT_PARAMS",
    "EMResult",
    "EMState",
    "GaussianMixture",
    "GaussianParams",
    "LabelMatching",
    "PartitionStatistics",
    "SufficientStats",
    "canonical_order",
    "check_initial_parameters",
    "check_features",
    "chunk_statistics",
    "criteria",
    "contingency",
    "distance_matrix",
    "estimate_weighted_log_prob",
    "expected_complete_loglik",
    "lazy_partition_statistics",
    "m_step",
    "one_blas_thread_per_dask_thread",
    "partition_statistics",
    "match_by_overlap",
    "match_to_reference",
    "posterior",
    "__version__",
]
