"""Initial parameters, from a seeded sample of rows.

The initial responsibilities are computed as scikit-learn computes them ('kmeans',
'k-means++', 'random', 'random_from_data'), but on a sample of at most
``init_max_samples`` rows drawn without replacement with the estimator's random state, so
a large Dask array is never loaded: the sample is gathered chunk by chunk. When the data
has no more rows than that, the sample is the data itself, in order, and the initial
parameters are scikit-learn's for the same ``random_state``.

Missing values: for the purpose of seeding only, NaN entries of the sample are replaced by
the mean of their feature in the sample (0 for a feature with no observed value in the
sample); rows with no observed value are left out of the sample.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from ._params import GaussianParams
from ._stats import SufficientStats, m_step
from .exceptions import InvalidInputError


def draw_sample(X, max_rows: int, random_state: np.random.RandomState, sample_weight=None):
    """Up to ``max_rows`` rows of ``X`` (and their weights) as NumPy arrays.

    Rows with no observed value are dropped. With ``n_samples <= max_rows`` the sample is
    all of ``X`` and the random state is not used.
    """
    n = X.shape[0]
    if n > max_rows:
        rng = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        idx = np.sort(rng.choice(n, size=max_rows, replace=False))
        X = X[idx]
        sample_weight = None if sample_weight is None else sample_weight[idx]
    if isinstance(X, da.Array):
        X, sample_weight = da.compute(X, sample_weight)
    X = np.asarray(X, dtype=np.float64)
    if np.isinf(X).any():
        raise InvalidInputError("X contains infinity; mark a missing value with NaN, or remove or clip the row")
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    usable = ~np.all(np.isnan(X), axis=1)
    if not usable.all():
        X = X[usable]
        w = None if w is None else w[usable]
    return X, w


def impute_for_seeding(X: np.ndarray) -> np.ndarray:
    """NaN → the feature's mean in ``X`` (0 where a feature has no observed value)."""
    if not np.isnan(X).any():
        return X
    with np.errstate(invalid="ignore"):
        col = np.nanmean(np.where(np.isnan(X), np.nan, X), axis=0) if X.size else np.zeros(X.shape[1])
    col = np.where(np.isnan(col), 0.0, col)
    return np.where(np.isnan(X), col, X)


def _resp_kmeans(X, w, k, rs):
    labels = KMeans(n_clusters=k, n_init=1, random_state=rs).fit(X, sample_weight=w).labels_
    resp = np.zeros((X.shape[0], k))
    resp[np.arange(X.shape[0]), labels] = 1.0
    return resp


def _resp_kmeans_plusplus(X, w, k, rs):
    _, indices = kmeans_plusplus(X, k, random_state=rs, sample_weight=w)
    resp = np.zeros((X.shape[0], k))
    resp[indices, np.arange(k)] = 1.0
    return resp


def _resp_random(X, w, k, rs):
    resp = rs.uniform(size=(X.shape[0], k))
    return resp / resp.sum(axis=1)[:, None]


def _resp_random_from_data(X, w, k, rs):
    resp = np.zeros((X.shape[0], k))
    indices = rs.choice(X.shape[0], size=k, replace=False)
    resp[indices, np.arange(k)] = 1.0
    return resp


INITIAL_RESPONSIBILITIES = {
    "kmeans": _resp_kmeans,
    "k-means++": _resp_kmeans_plusplus,
    "random": _resp_random,
    "random_from_data": _resp_random_from_data,
}


def statistics_from_responsibilities(X: np.ndarray, resp: np.ndarray, sample_weight, diagonal: bool) -> SufficientStats:
    """Statistics of complete rows ``X`` with given responsibilities (centred on the data mean)."""
    rw = resp if sample_weight is None else resp * sample_weight[:, None]
    center = np.average(X, axis=0)
    Z = X - center
    N = rw.sum(axis=0)
    S1 = rw.T @ Z
    k, d = resp.shape[1], X.shape[1]
    if diagonal:
        S2 = rw.T @ (Z * Z)
    else:
        S2 = np.stack([(Z * rw[:, j, None]).T @ Z for j in range(k)])
    n_rows = float(X.shape[0] if sample_weight is None else sample_weight.sum())
    return SufficientStats(N, S1, S2, np.tile(center, (k, 1)), 0.0, n_rows, 0, np.full(d, X.shape[0]))


def initial_parameters(
    X_sample: np.ndarray,
    sample_weight,
    *,
    n_components: int,
    covariance_type: str,
    init_params: str,
    reg_covar: float,
    random_state: np.random.RandomState,
) -> GaussianParams:
    """Parameters from the initial responsibilities of ``init_params`` on a sample."""
    if X_sample.shape[0] < n_components:
        raise InvalidInputError(
            f"n_components={n_components} is larger than the number of usable rows "
            f"(rows with at least one observed value): n_samples = {X_sample.shape[0]}. "
            "Use fewer components or more data."
        )
    X = impute_for_seeding(X_sample)
    resp = INITIAL_RESPONSIBILITIES[init_params](X, sample_weight, n_components, random_state)
    diagonal = covariance_type in ("diag", "spherical")
    stats = statistics_from_responsibilities(X, resp, sample_weight, diagonal)
    params = m_step(stats, reg_covar=reg_covar, covariance_type=covariance_type)
    # scikit-learn divides the initial N_k by the number of rows rather than by their sum;
    # for 'k-means++' and 'random_from_data' the weights then sum to K/n, not 1. The
    # responsibilities are the same either way; copying it keeps lower_bounds_[0] equal.
    weights = (stats.N + 10.0 * np.finfo(np.float64).eps) / stats.n_rows
    return GaussianParams(weights, params.means, params.precisions_cholesky, covariance_type, params.covariances)
