"""Brute-force reference implementation of the EM in ``docs/math.md``.

Written independently of ``gmm_stream``: explicit covariance blocks (not the
precision-block algebra the library uses), one row and one component at a time,
densities from :func:`scipy.stats.multivariate_normal.logpdf`. Slow (a Python loop
over rows): keep ``n`` to a few hundred rows.

Parameters use scikit-learn's covariance shapes: ``full`` (K, d, d), ``tied`` (d, d),
``diag`` (K, d), ``spherical`` (K,). A NaN in ``X`` is a missing value.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def full_covariances(covariances, covariance_type, n_components, n_features):
    """Expand covariances of any type to an array of shape (K, d, d)."""
    cov = np.asarray(covariances, dtype=np.float64)
    if covariance_type == "full":
        out = cov.copy()
    elif covariance_type == "tied":
        out = np.broadcast_to(cov, (n_components, n_features, n_features)).copy()
    elif covariance_type == "diag":
        out = np.stack([np.diag(c) for c in cov])
    elif covariance_type == "spherical":
        out = np.stack([c * np.eye(n_features) for c in cov])
    else:
        raise ValueError(f"unknown covariance_type {covariance_type!r}")
    assert out.shape == (n_components, n_features, n_features)
    return out


def precisions_from_covariances(covariances, covariance_type):
    """Precisions in scikit-learn's ``precisions_init`` convention."""
    cov = np.asarray(covariances, dtype=np.float64)
    if covariance_type == "full":
        return np.stack([np.linalg.inv(c) for c in cov])
    if covariance_type == "tied":
        return np.linalg.inv(cov)
    return 1.0 / cov


def weighted_log_prob(X, weights, means, covariances, covariance_type):
    """log pi_k + log N(x_o; mu_o, Sigma_oo) for every row and component, (n, K).

    Rows with no observed entry give a row of NaN.
    """
    X = np.asarray(X, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    n, d = X.shape
    K = means.shape[0]
    cov = full_covariances(covariances, covariance_type, K, d)
    log_w = np.log(np.asarray(weights, dtype=np.float64))
    out = np.full((n, K), np.nan)
    for i in range(n):
        o = ~np.isnan(X[i])
        if not o.any():
            continue
        for k in range(K):
            out[i, k] = log_w[k] + multivariate_normal.logpdf(
                X[i, o], mean=means[k, o], cov=cov[k][np.ix_(o, o)]
            )
    return out


def marginal_log_density(X, weights, means, covariances, covariance_type):
    """log sum_k pi_k N(x_o; mu_o, Sigma_oo) per row, shape (n,); NaN for empty rows."""
    lp = weighted_log_prob(X, weights, means, covariances, covariance_type)
    out = np.full(lp.shape[0], np.nan)
    ok = ~np.isnan(lp).any(axis=1)
    out[ok] = logsumexp(lp[ok], axis=1)
    return out


def conditional_moments(x, mean, cov):
    """Conditional mean completion and conditional covariance of one row.

    Returns ``x_hat`` (d,) with x_m := mu_m + S_mo S_oo^-1 (x_o - mu_o) and ``C`` (d, d)
    zero except C_mm := S_mm - S_mo S_oo^-1 S_om.
    """
    d = x.shape[0]
    m = np.isnan(x)
    o = ~m
    x_hat = x.copy()
    C = np.zeros((d, d))
    if m.any():
        S_oo = cov[np.ix_(o, o)]
        S_mo = cov[np.ix_(m, o)]
        gain = np.linalg.solve(S_oo, S_mo.T).T  # S_mo S_oo^-1
        x_hat[m] = mean[m] + gain @ (x[o] - mean[o])
        C[np.ix_(m, m)] = cov[np.ix_(m, m)] - gain @ S_mo.T
    return x_hat, C


def _e_step(X, weights, means, covariances, covariance_type, sample_weight):
    """Per-row weighted responsibilities, completed rows and conditional covariances."""
    X = np.asarray(X, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    n, d = X.shape
    K = means.shape[0]
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    cov = full_covariances(covariances, covariance_type, K, d)
    lp = weighted_log_prob(X, weights, means, covariances, covariance_type)
    usable = ~np.isnan(X).all(axis=1)
    resp = np.zeros((n, K))  # w_i r_ik
    x_hat = np.zeros((n, K, d))
    C = np.zeros((n, K, d, d))
    loglik = 0.0
    for i in np.flatnonzero(usable):
        norm = logsumexp(lp[i])
        loglik += w[i] * norm
        resp[i] = w[i] * np.exp(lp[i] - norm)
        for k in range(K):
            x_hat[i, k], C[i, k] = conditional_moments(X[i], means[k], cov[k])
    return resp, x_hat, C, loglik, float(w[usable].sum()), int((~usable).sum())


def sufficient_statistics(X, weights, means, covariances, covariance_type,
                          sample_weight=None, center=None):
    """The statistics of docs/math.md, about ``center`` (K, d) (0 = raw moments).

    Returns a dict with N (K,), S1 (K, d) = sum w r (x_hat - c),
    S2 (K, d, d) = sum w r ((x_hat - c)(x_hat - c)^T + C), loglik, n_rows, n_empty,
    feature_counts (d,) = number of rows observing each feature (unweighted).
    """
    resp, x_hat, C, loglik, n_rows, n_empty = _e_step(
        X, weights, means, covariances, covariance_type, sample_weight)
    K, d = np.shape(means)
    c = np.zeros((K, d)) if center is None else np.asarray(center, dtype=np.float64)
    S1 = np.zeros((K, d))
    S2 = np.zeros((K, d, d))
    for k in range(K):
        diff = x_hat[:, k] - c[k]
        S1[k] = resp[:, k] @ diff
        S2[k] = (resp[:, k, None] * diff).T @ diff + np.einsum("i,ijl->jl", resp[:, k], C[:, k])
    return {
        "N": resp.sum(axis=0), "S1": S1, "S2": S2, "loglik": loglik, "n_rows": n_rows,
        "n_empty": n_empty, "feature_counts": (~np.isnan(np.asarray(X))).sum(axis=0),
    }


def em_step(X, weights, means, covariances, covariance_type, reg_covar, sample_weight=None):
    """One EM step of docs/math.md, row by row.

    Returns
    -------
    new_weights : (K,)
    new_means : (K, d)
    new_covariances : sklearn shape for ``covariance_type``
    mean_loglik : float
        sum_i w_i log sum_k p_k(x_i) / sum_i w_i over rows with an observed entry,
        evaluated at the *input* parameters (scikit-learn's ``lower_bound_`` convention).
    """
    resp, x_hat, C, loglik, n_obs, _ = _e_step(
        X, weights, means, covariances, covariance_type, sample_weight)
    K, d = np.shape(means)
    # M-step, two-pass (centred on the new means) for accuracy.
    N = resp.sum(axis=0)
    new_weights = N / N.sum()
    new_means = np.einsum("ik,ikd->kd", resp, x_hat) / N[:, None]
    scatter = np.zeros((K, d, d))  # sum_i w_i r_ik ((x_hat - mu)(x_hat - mu)^T + C)
    for k in range(K):
        diff = x_hat[:, k] - new_means[k]
        scatter[k] = (resp[:, k, None] * diff).T @ diff + np.einsum("i,ijl->jl", resp[:, k], C[:, k])
    full_cov = scatter / N[:, None, None] + reg_covar * np.eye(d)
    if covariance_type == "full":
        new_cov = full_cov
    elif covariance_type == "tied":
        new_cov = scatter.sum(axis=0) / N.sum() + reg_covar * np.eye(d)
    elif covariance_type == "diag":
        new_cov = np.stack([np.diag(c) for c in full_cov])
    elif covariance_type == "spherical":
        new_cov = np.stack([np.diag(c).mean() for c in full_cov])
    else:
        raise ValueError(f"unknown covariance_type {covariance_type!r}")
    return new_weights, new_means, new_cov, loglik / n_obs
