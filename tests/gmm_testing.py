"""Data and initial parameters shared by the EM tests (fixed seeds, small sizes)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

from reference import precisions_from_covariances

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def make_mixture(n, d, K, seed, separation=4.0, shift=0.0):
    """Rows from a K-component Gaussian mixture with random correlated covariances.

    Returns X (n, d), labels (n,), weights (K,), means (K, d), covariances (K, d, d).
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(K, 5.0))
    means = shift + separation * rng.standard_normal((K, d))
    covs = random_covariances(rng, K, d)
    X, labels = sample_mixture(rng, n, weights, means, covs)
    return X, labels, weights, means, covs


def random_covariances(rng, K, d):
    """K random correlated covariances ``A Aᵀ + 0.5 I`` of shape (K, d, d)."""
    covs = []
    for _ in range(K):
        A = rng.standard_normal((d, d)) / np.sqrt(d)
        covs.append(A @ A.T + 0.5 * np.eye(d))
    return np.stack(covs)


def sample_mixture(rng, n, weights, means, covs):
    """n rows of the full-covariance mixture; returns X (n, d) and labels (n,)."""
    labels = rng.choice(len(weights), size=n, p=weights)
    X = np.empty((n, means.shape[1]))
    for k in range(len(weights)):
        idx = labels == k
        X[idx] = rng.multivariate_normal(means[k], covs[k], size=idx.sum())
    return X, labels


def add_missing(X, fraction, seed, keep_one=True):
    """Copy of X with a fraction of entries set to NaN completely at random.

    With ``keep_one`` every row keeps at least one observed entry.
    """
    rng = np.random.default_rng(seed)
    X = np.array(X, dtype=np.float64, copy=True)
    mask = rng.random(X.shape) < fraction
    if keep_one:
        full = mask.all(axis=1)
        mask[full, rng.integers(0, X.shape[1], size=full.sum())] = False
    X[mask] = np.nan
    return X


def kmeans_init(X, K, covariance_type, seed=0, reg_covar=1e-6):
    """weights_init, means_init, precisions_init (sklearn conventions) from k-means labels.

    NaN entries are replaced by column means for the purpose of the initialisation only.
    """
    Xf = np.where(np.isnan(X), np.nanmean(X, axis=0), X)
    labels = KMeans(K, n_init=3, random_state=seed).fit(Xf).labels_
    resp = np.zeros((Xf.shape[0], K))
    resp[np.arange(Xf.shape[0]), labels] = 1.0
    nk, means, covs = _estimate_gaussian_parameters(Xf, resp, reg_covar, covariance_type)
    return {
        "weights_init": nk / nk.sum(),
        "means_init": means,
        "precisions_init": precisions_from_covariances(covs, covariance_type),
    }


def random_params(d, K, covariance_type, seed):
    """(weights, means, covariances) in sklearn shapes, well conditioned."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(K, 5.0))
    means = 2.0 * rng.standard_normal((K, d))
    if covariance_type == "full":
        covs = []
        for _ in range(K):
            A = rng.standard_normal((d, d)) / np.sqrt(d)
            covs.append(A @ A.T + 0.5 * np.eye(d))
        covariances = np.stack(covs)
    elif covariance_type == "tied":
        A = rng.standard_normal((d, d)) / np.sqrt(d)
        covariances = A @ A.T + 0.5 * np.eye(d)
    elif covariance_type == "diag":
        covariances = rng.uniform(0.5, 2.0, size=(K, d))
    else:
        covariances = rng.uniform(0.5, 2.0, size=K)
    return weights, means, covariances


def init_kwargs(weights, means, covariances, covariance_type):
    """Estimator keyword arguments that start EM at the given parameters."""
    return {
        "weights_init": np.asarray(weights),
        "means_init": np.asarray(means),
        "precisions_init": precisions_from_covariances(covariances, covariance_type),
    }


def assert_allclose_scaled(actual, desired, rtol, err_msg=""):
    """assert_allclose with atol = rtol * max|desired|.

    Rounding errors of an EM iteration are relative to the magnitude of the whole
    array (sums over rows and features), not to each entry, so an entry that is
    near zero (a mean of standardised data, an off-diagonal covariance) is compared
    at the array's scale.
    """
    desired = np.asarray(desired, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    scale = np.nanmax(np.abs(desired)) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=err_msg)
