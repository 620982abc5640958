"""gmm-stream: out-of-core Gaussian mixture models, exact with missing values.

``gmm_stream`` is the math: arrays in, arrays out (NumPy and Dask). The estimator is
:class:`GaussianMixture`; the pure pieces it is made of are public too:
:func:`chunk_statistics` (E-step of one chunk), :class:`SufficientStats` (mergeable by
``+``) and :func:`m_step`. The estimator's choices and rules are public for callers that
check a configuration before any data exist: :data:`COVARIANCE_TYPES`, :data:`INIT_PARAMS`
and :func:`check_initial_parameters` (the checks ``fit`` applies to ``weights_init``,
``means_init`` and ``precisions_init``).
"""

from ._init import INIT_PARAMS
from ._init_checks import check_initial_parameters
from ._params import COVARIANCE_TYPES, GaussianParams
from ._persist import load_model, load_state, save_state
from ._stats import SufficientStats, chunk_statistics, estimate_weighted_log_prob, m_step, posterior
from ._version import __version__
from .mixture import EMState, GaussianMixture

__all__ = [
    "COVARIANCE_TYPES",
    "INIT_PARAMS",
    "EMState",
    "GaussianMixture",
    "GaussianParams",
    "SufficientStats",
    "check_initial_parameters",
    "chunk_statistics",
    "estimate_weighted_log_prob",
    "load_model",
    "load_state",
    "save_state",
    "m_step",
    "posterior",
    "__version__",
]
