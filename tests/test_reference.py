"""The brute-force reference is itself checked against scikit-learn and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.mixture._gaussian_mixture import (
    _compute_precision_cholesky,
    _estimate_gaussian_parameters,
    _estimate_log_gaussian_prob,
)

import reference
from gmm_testing import COVARIANCE_TYPES, add_missing, make_mixture, random_params


@pytest.fixture(scope="module")
def data():
    X, *_ = make_mixture(120, 4, 3, seed=1)
    return X


def _sklearn_weighted_log_prob(X, weights, means, covariances, covariance_type):
    prec_chol = _compute_precision_cholesky(covariances, covariance_type)
    return _estimate_log_gaussian_prob(X, means, prec_chol, covariance_type) + np.log(weights)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_reference_density_matches_sklearn_on_complete_data(data, covariance_type):
    params = random_params(4, 3, covariance_type, seed=2)
    expected = logsumexp(_sklearn_weighted_log_prob(data, *params, covariance_type), axis=1)
    got = reference.marginal_log_density(data, *params, covariance_type)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_reference_density_diag_with_missing_is_product_of_univariate_normals(data):
    weights, means, variances = random_params(4, 3, "diag", seed=3)
    X = add_missing(data, 0.3, seed=4)
    X[5] = np.nan
    lp = np.log(weights) + np.stack(
        [np.nansum(norm.logpdf(X, means[k], np.sqrt(variances[k])), axis=1) for k in range(3)],
        axis=1,
    )
    expected = logsumexp(lp, axis=1)
    expected[5] = np.nan
    got = reference.marginal_log_density(X, weights, means, variances, "diag")
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_reference_conditionals_match_precision_identities():
    """docs/math.md: E[x_m|x_o] = mu_m - P_mm^-1 P_mo (x_o - mu_o), Cov = P_mm^-1."""
    rng = np.random.default_rng(5)
    _, means, covs = random_params(5, 2, "full", seed=6)
    for _ in range(20):
        x = rng.standard_normal(5)
        m = rng.random(5) < 0.4
        if m.all() or not m.any():
            continue
        x[m] = np.nan
        o = ~m
        P = np.linalg.inv(covs[0])
        P_mm_inv = np.linalg.inv(P[np.ix_(m, m)])
        x_hat, C = reference.conditional_moments(x, means[0], covs[0])
        expected_xm = means[0, m] - P_mm_inv @ P[np.ix_(m, o)] @ (x[o] - means[0, o])
        np.testing.assert_allclose(x_hat[m], expected_xm, rtol=1e-10)
        np.testing.assert_array_equal(x_hat[o], x[o])
        np.testing.assert_allclose(C[np.ix_(m, m)], P_mm_inv, rtol=1e-10)
        assert not C[o].any() and not C[:, o].any()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_reference_em_step_matches_sklearn_on_complete_data(data, covariance_type):
    params = random_params(4, 3, covariance_type, seed=7)
    lp = _sklearn_weighted_log_prob(data, *params, covariance_type)
    resp = np.exp(lp - logsumexp(lp, axis=1, keepdims=True))
    nk, means, covs = _estimate_gaussian_parameters(data, resp, 1e-6, covariance_type)
    w, mu, cov, ll = reference.em_step(data, *params, covariance_type, reg_covar=1e-6)
    # sklearn adds 10*eps to N_k: a relative change of ~1e-17 / N_k, far below 1e-10.
    np.testing.assert_allclose(w, nk / nk.sum(), rtol=1e-10)
    np.testing.assert_allclose(mu, means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov, covs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ll, logsumexp(lp, axis=1).mean(), rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_reference_em_with_missing_increases_loglik(data, covariance_type):
    X = add_missing(data, 0.2, seed=8)
    params = random_params(4, 3, covariance_type, seed=9)
    lls = []
    for _ in range(4):
        *params, ll = reference.em_step(X, *params, covariance_type, reg_covar=1e-6)
        lls.append(ll)
    assert np.all(np.diff(lls) >= -1e-12 * np.abs(lls[:-1])), lls


def test_reference_integer_weights_equal_repeated_rows(data):
    X = add_missing(data[:60], 0.2, seed=10)
    sw = np.random.default_rng(11).integers(0, 4, size=60)
    params = random_params(4, 3, "full", seed=12)
    a = reference.em_step(X, *params, "full", 1e-6, sample_weight=sw)
    b = reference.em_step(np.repeat(X, sw, axis=0), *params, "full", 1e-6)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-10)
