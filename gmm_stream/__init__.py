"""gmm-stream: out-of-core Gaussian mixture models, exact with missing values.

``gmm_stream`` is the math: arrays in, arrays out (NumPy and Dask). The estimator is
:class:`GaussianMixture`; the pure pieces it is made of are public too:
:func:`chunk_statistics` (E-step of one chunk), :class:`SufficientStats` (mergeable by
``+``) and :func:`m_step`. A fitted model gives its state as plain values
(:meth:`GaussianMixture.get_state`, :meth:`GaussianMixture.from_state`); writing it to
files is the data layer's (``pipeline.save_model``, ``pipeline.load_model``).
"""

from ._params import GaussianParams
from ._stats import SufficientStats, chunk_statistics, estimate_weighted_log_prob, m_step, posterior
from ._version import __version__
from .mixture import EMResult, EMState, GaussianMixture

__all__ = [
    "EMResult",
    "EMState",
    "GaussianMixture",
    "GaussianParams",
    "SufficientStats",
    "chunk_statistics",
    "estimate_weighted_log_prob",
    "m_step",
    "posterior",
    "__version__",
]
