"""Initial parameters, from a seeded sample of rows.

The initial responsibilities are computed as scikit-learn computes them ('kmeans',
'k-means++', 'random', 'random_from_data'), but on a sample of at most
``init_max_samples`` rows, so a large Dask array is never loaded: the sample is gathered
chunk by chunk. When the data has no more rows than that, the sample is the data itself, in
order, and the initial parameters are scikit-learn's for the same ``random_state``.

Sample weights: the initialisation is a function of the *weighted* rows, so that an integer
``sample_weight`` gives the same start (and so the same fit) as repeating the rows:

* rows of weight 0 never enter the sample;
* a larger data set is sampled with probability proportional to the weights (with
  replacement; each drawn row then counts once), uniformly without replacement when there
  are no weights;
* when the sample has a repeated row or a weight other than 1, it is replaced by its
  distinct rows, in a canonical (sorted) order, each with its total weight
  (:func:`distinct_rows`); k-means and k-means++ then run with these weights, and
  'random_from_data' draws rows with probability proportional to them. A sample of
  distinct, unit-weight rows is used as it is, in its order (scikit-learn's start).

So the fits with ``sample_weight`` and with repeated rows agree exactly (up to rounding)
whenever the rows of positive weight number at most ``init_max_samples``, except on
degenerate data with fewer distinct rows than ``n_components`` (then the rows are used as
they are, as scikit-learn does). On larger data the two draw different random samples and
agree only in distribution.

Missing values: for the purpose of seeding only, NaN entries of the sample are replaced by
the weighted mean of their feature in the sample (0 for a feature with no observed value
in the sample); rows with no observed value are left out of the sample.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from ._params import GaussianParams
from ._stats import SufficientStats, m_step
from .exceptions import InvalidInputError


def draw_sample(X, max_rows: int, random_state: np.random.RandomState, sample_weight=None):
    """Up to ``max_rows`` rows of ``X`` (and their weights, or None) as NumPy arrays.

    Rows of weight 0 and rows with no observed value are dropped. With at most ``max_rows``
    rows of positive weight the sample is all of them and the random state is not used;
    otherwise ``max_rows`` rows are drawn (see the module docstring).
    """
    n = X.shape[0]
    w = None
    if sample_weight is not None:
        w = np.asarray(da.compute(sample_weight)[0] if isinstance(sample_weight, da.Array) else sample_weight,
                       dtype=np.float64)
    positive = None if w is None or np.all(w > 0) else np.flatnonzero(w > 0)
    n_positive = n if positive is None else positive.size
    if n_positive > max_rows:
        rng = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        if w is None:
            idx = np.sort(rng.choice(n, size=max_rows, replace=False))
        else:
            idx = np.sort(rng.choice(n, size=max_rows, replace=True, p=w / w.sum()))
            w = np.ones(max_rows)
        X = X[idx]
    elif positive is not None:
        assert w is not None  # rows are only dropped for their weight
        X, w = X[positive], w[positive]
    if isinstance(X, da.Array):
        X = X.compute()
    X = np.asarray(X, dtype=np.float64)
    if np.isinf(X).any():
        raise InvalidInputError("X contains infinity; mark a missing value with NaN, or remove or clip the row")
    usable = ~np.all(np.isnan(X), axis=1)
    if not usable.all():
        X = X[usable]
        w = None if w is None else w[usable]
    return X, w


def distinct_rows(X: np.ndarray, sample_weight):
    """The distinct rows of ``X`` in a canonical order, each with its total weight.

    Returned only when ``X`` has a repeated row or a weight other than 1 (the weighted rows
    are then all that matters, not their order or how they are split); otherwise ``X`` and
    ``sample_weight`` are returned as they are.

    Returns
    -------
    X : ndarray of shape (n_distinct, n_features)
    sample_weight : ndarray of shape (n_distinct,) or None
    """
    n, d = X.shape
    if n == 0:
        return X, sample_weight
    X = np.ascontiguousarray(X)
    keys = X.view(np.dtype((np.void, X.dtype.itemsize * d))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    if first.size == n and (sample_weight is None or np.all(sample_weight == 1)):
        return X, sample_weight
    return X[first], np.bincount(inverse.ravel(), weights=sample_weight, minlength=first.size)


def impute_for_seeding(X: np.ndarray, sample_weight=None) -> np.ndarray:
    """NaN → the feature's weighted mean in ``X`` (0 where a feature has no observed value)."""
    missing = np.isnan(X)
    if not missing.any():
        return X
    w = np.ones(X.shape[0]) if sample_weight is None else sample_weight
    total = w @ np.where(missing, 0.0, X)
    count = w @ (~missing)
    col = np.divide(total, count, out=np.zeros(X.shape[1]), where=count > 0)
    return np.where(missing, col, X)


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
    p = None if w is None or np.all(w == w[0]) else w / w.sum()
    indices = rs.choice(X.shape[0], size=k, replace=False, p=p)
    resp[indices, np.arange(k)] = 1.0
    return resp


#: How each ``init_params`` draws the initial responsibilities (what ``GaussianMixture`` accepts).
INITIAL_RESPONSIBILITIES = {
    "kmeans": _resp_kmeans,
    "k-means++": _resp_kmeans_plusplus,
    "random": _resp_random,
    "random_from_data": _resp_random_from_data,
}
#: The values of ``init_params``, scikit-learn's default first.
INIT_PARAMS: tuple[str, ...] = tuple(INITIAL_RESPONSIBILITIES)


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


def parameters_from_responsibilities(
    X: np.ndarray, resp: np.ndarray, sample_weight, *, covariance_type: str, reg_covar: float
) -> GaussianParams:
    """scikit-learn's ``_initialize``: the M-step of complete rows ``X`` with responsibilities ``resp``.

    scikit-learn divides the initial ``N_k`` by the number of rows rather than by their sum;
    for 'k-means++' and 'random_from_data' the weights then sum to K/n, not 1. The
    responsibilities are the same either way; copying it keeps ``lower_bounds_[0]`` equal.
    """
    diagonal = covariance_type in ("diag", "spherical")
    stats = statistics_from_responsibilities(X, resp, sample_weight, diagonal)
    params = m_step(stats, reg_covar=reg_covar, covariance_type=covariance_type)
    weights = (stats.N + 10.0 * np.finfo(np.float64).eps) / stats.n_rows
    return GaussianParams(weights, params.means, params.precisions_cholesky, covariance_type, params.covariances)


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
    """Parameters from the initial responsibilities of ``init_params`` on a sample.

    The sample is first reduced to its weighted distinct rows when it has repeated rows or
    weights other than 1 (:func:`distinct_rows`).
    """
    if X_sample.shape[0] < n_components:
        raise InvalidInputError(
            f"n_components={n_components} is larger than the number of usable rows "
            f"(rows with at least one observed value and a positive weight): n_samples = {X_sample.shape[0]}. "
            "Use fewer components or more data."
        )
    distinct, distinct_weight = distinct_rows(X_sample, sample_weight)
    if distinct.shape[0] >= n_components:  # else degenerate data: seed on the rows as they are
        X_sample, sample_weight = distinct, distinct_weight
    X = impute_for_seeding(X_sample, sample_weight)
    resp = INITIAL_RESPONSIBILITIES[init_params](X, sample_weight, n_components, random_state)
    return parameters_from_responsibilities(X, resp, sample_weight, covariance_type=covariance_type,
                                            reg_covar=reg_covar)
