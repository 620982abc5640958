"""EM with missing values (NaN) against the brute-force reference of docs/math.md."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

from gmm_stream import GaussianMixture, GaussianParams, chunk_statistics, estimate_weighted_log_prob, m_step

import reference
from gmm_testing import (
    COVARIANCE_TYPES,
    add_missing,
    assert_allclose_scaled,
    init_kwargs,
    make_mixture,
    random_covariances,
    random_params,
    sample_mixture,
)

N_ROWS, N_FEATURES, N_COMPONENTS = 300, 4, 3


@pytest.fixture(scope="module")
def X_missing():
    X, *_ = make_mixture(N_ROWS, N_FEATURES, N_COMPONENTS, seed=20, separation=2.5)
    return add_missing(X, 0.15, seed=21)


def _fit_quietly(gm, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # ConvergenceWarning with small max_iter
        return gm.fit(X, **kw)


# ------------------------------------------------------------------------ log densities


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_estimate_weighted_log_prob_matches_reference(X_missing, covariance_type):
    params = random_params(N_FEATURES, N_COMPONENTS, covariance_type, seed=22)
    got = estimate_weighted_log_prob(X_missing, GaussianParams.from_covariances(*params, covariance_type))
    expected = reference.weighted_log_prob(X_missing, *params, covariance_type)
    np.testing.assert_allclose(got, expected, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_score_samples_and_predict_proba_match_reference(X_missing, covariance_type):
    gm = _fit_quietly(
        GaussianMixture(N_COMPONENTS, covariance_type=covariance_type, max_iter=3, random_state=0), X_missing
    )
    args = (gm.weights_, gm.means_, gm.covariances_, covariance_type)
    np.testing.assert_allclose(gm.score_samples(X_missing), reference.marginal_log_density(X_missing, *args), rtol=1e-9)
    lp = reference.weighted_log_prob(X_missing, *args)
    proba = np.exp(lp - logsumexp(lp, axis=1, keepdims=True))
    np.testing.assert_allclose(gm.predict_proba(X_missing), proba, rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------------------ one EM step


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_chunk_statistics_match_reference(X_missing, covariance_type, weighted):
    params = random_params(N_FEATURES, N_COMPONENTS, covariance_type, seed=23)
    sw = np.random.default_rng(24).uniform(0.0, 3.0, N_ROWS) if weighted else None
    stats = chunk_statistics(
        X_missing, GaussianParams.from_covariances(*params, covariance_type), sample_weight=sw
    )
    centred = reference.sufficient_statistics(X_missing, *params, covariance_type, sample_weight=sw,
                                              center=stats.center)
    raw = reference.sufficient_statistics(X_missing, *params, covariance_type, sample_weight=sw)
    diag = covariance_type in ("diag", "spherical")
    take = (lambda s2: np.diagonal(s2, axis1=1, axis2=2)) if diag else (lambda s2: s2)
    np.testing.assert_allclose(stats.center, params[1], rtol=0, atol=0)
    np.testing.assert_allclose(stats.N, centred["N"], rtol=1e-9)
    assert_allclose_scaled(stats.S1, centred["S1"], rtol=1e-9)
    assert_allclose_scaled(stats.S2, take(centred["S2"]), rtol=1e-9)
    raw1, raw2 = stats.raw_moments()
    assert_allclose_scaled(raw1, raw["S1"], rtol=1e-9)
    assert_allclose_scaled(raw2, take(raw["S2"]), rtol=1e-9)
    np.testing.assert_allclose(stats.loglik, centred["loglik"], rtol=1e-10)
    np.testing.assert_allclose(stats.n_rows, centred["n_rows"], rtol=1e-12)
    assert stats.n_empty == 0
    np.testing.assert_array_equal(stats.feature_counts, centred["feature_counts"])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_m_step_matches_reference_em_step(X_missing, covariance_type):
    params = random_params(N_FEATURES, N_COMPONENTS, covariance_type, seed=25)
    stats = chunk_statistics(X_missing, GaussianParams.from_covariances(*params, covariance_type))
    new = m_step(stats, reg_covar=1e-6, covariance_type=covariance_type)
    w, mu, cov, ll = reference.em_step(X_missing, *params, covariance_type, reg_covar=1e-6)
    np.testing.assert_allclose(new.weights, w, rtol=1e-8)
    assert_allclose_scaled(new.means, mu, rtol=1e-8)
    assert_allclose_scaled(new.covariances, cov, rtol=1e-8)
    np.testing.assert_allclose(stats.loglik / stats.n_rows, ll, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(("n_iter", "seed"), [(1, 26), (2, 27)])
def test_fit_iterations_match_reference_em_steps(X_missing, covariance_type, n_iter, seed):
    params = random_params(N_FEATURES, N_COMPONENTS, covariance_type, seed=seed)
    gm = GaussianMixture(
        N_COMPONENTS, covariance_type=covariance_type, max_iter=n_iter, tol=0.0,
        **init_kwargs(*params, covariance_type),
    )
    _fit_quietly(gm, X_missing)
    w, mu, cov = params
    lls = []
    for _ in range(n_iter):
        w, mu, cov, ll = reference.em_step(X_missing, w, mu, cov, covariance_type, reg_covar=gm.reg_covar)
        lls.append(ll)
    assert gm.n_iter_ == n_iter
    np.testing.assert_allclose(gm.lower_bounds_, lls, rtol=1e-10)
    np.testing.assert_allclose(gm.weights_, w, rtol=1e-8)
    assert_allclose_scaled(gm.means_, mu, rtol=1e-8)
    assert_allclose_scaled(gm.covariances_, cov, rtol=1e-8)
    # sklearn's convention: lower_bound_ is the mean log-likelihood of the E-step that
    # started the last iteration.
    np.testing.assert_allclose(gm.lower_bound_, lls[-1], rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_large_offset_keeps_precision(X_missing, covariance_type):
    """|mu| >> sigma: docs/math.md asks for centred statistics. Raw second moments would lose
    about (1e6)^2 * eps ~ 1e-4 of a unit variance; the centred reference keeps ~1e-10."""
    offset = 1e6
    w0, mu0, cov0 = random_params(N_FEATURES, N_COMPONENTS, covariance_type, seed=33)
    X = X_missing + offset
    gm = GaussianMixture(
        N_COMPONENTS, covariance_type=covariance_type, max_iter=1, tol=0.0,
        **init_kwargs(w0, mu0 + offset, cov0, covariance_type),
    )
    _fit_quietly(gm, X)
    w, mu, cov, ll = reference.em_step(X, w0, mu0 + offset, cov0, covariance_type, reg_covar=1e-6)
    np.testing.assert_allclose(gm.weights_, w, rtol=1e-7)
    np.testing.assert_allclose(gm.means_, mu, rtol=1e-12)
    assert_allclose_scaled(gm.covariances_, cov, rtol=1e-7)
    np.testing.assert_allclose(gm.lower_bound_, ll, rtol=1e-8)


# ------------------------------------------------------------------------ monotone EM


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_never_decreases_with_missing_values(covariance_type):
    X, *_ = make_mixture(400, 5, 3, seed=28, separation=1.5)
    X = add_missing(X, 0.2, seed=29)
    gm = GaussianMixture(3, covariance_type=covariance_type, max_iter=40, tol=0.0, random_state=1)
    _fit_quietly(gm, X)
    lb = np.asarray(gm.lower_bounds_)
    assert lb.shape == (40,)
    assert np.all(np.isfinite(lb))
    drops = np.diff(lb)
    allowed = -1e-10 * np.abs(lb[:-1])
    assert np.all(drops >= allowed), \
        f"lower bound decreased: {drops[drops < allowed]} at {np.flatnonzero(drops < allowed)}"
    assert lb[-1] > lb[0]


# ------------------------------------------------------------------------ recovery


def test_parameters_recovered_with_20_percent_missing():
    rng = np.random.default_rng(30)
    d, K, n = 5, 3, 20_000
    true_w = np.array([0.5, 0.3, 0.2])
    true_mu = np.array([[0.0] * 5, [6.0, 6.0, 0.0, 0.0, 0.0], [0.0, 0.0, -6.0, 6.0, 3.0]])
    true_cov = random_covariances(rng, K, d)
    X, _ = sample_mixture(rng, n, true_w, true_mu, true_cov)
    X = add_missing(X, 0.2, seed=31)
    assert 0.19 < np.isnan(X).mean() < 0.21

    gm = GaussianMixture(K, covariance_type="full", random_state=0, max_iter=200, tol=1e-6).fit(X)
    assert gm.converged_
    cost = ((gm.means_[:, None, :] - true_mu[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    order = rows[np.argsort(cols)]  # fitted component matched to each true one
    # Standard error of a mean entry is about sigma / sqrt(0.8 n w_k) <= 0.04 here.
    np.testing.assert_allclose(gm.means_[order], true_mu, atol=0.1)
    np.testing.assert_allclose(gm.weights_[order], true_w, atol=0.02)
    # Standard error of a covariance entry is about sigma^2 sqrt(2 / (0.8 n w_k)) <= 0.07.
    np.testing.assert_allclose(gm.covariances_[order], true_cov, atol=0.25)
    assert gm.n_empty_rows_ == 0


# ------------------------------------------------------------------------ empty rows


@pytest.fixture(scope="module")
def X_with_empty_rows(X_missing):
    X = X_missing.copy()
    empty = np.array([0, 7, 8, 150, N_ROWS - 1])
    X[empty] = np.nan
    return X, empty


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_empty_rows_are_skipped_and_counted(X_with_empty_rows, covariance_type):
    X, empty = X_with_empty_rows
    keep = np.setdiff1d(np.arange(N_ROWS), empty)
    init = init_kwargs(*random_params(N_FEATURES, N_COMPONENTS, covariance_type, seed=32), covariance_type)
    kw = dict(covariance_type=covariance_type, max_iter=10, tol=0.0, **init)
    a = _fit_quietly(GaussianMixture(N_COMPONENTS, **kw), X)
    b = _fit_quietly(GaussianMixture(N_COMPONENTS, **kw), X[keep])
    assert a.n_empty_rows_ == len(empty)
    assert b.n_empty_rows_ == 0
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        assert_allclose_scaled(getattr(a, name), getattr(b, name), rtol=1e-10, err_msg=name)

    labels = a.predict(X)
    np.testing.assert_array_equal(labels[empty], -1)
    np.testing.assert_array_equal(labels[keep], b.predict(X[keep]))
    scores = a.score_samples(X)
    assert np.isnan(scores[empty]).all()
    np.testing.assert_allclose(scores[keep], b.score_samples(X[keep]), rtol=1e-10)
    proba = a.predict_proba(X)
    assert np.isnan(proba[empty]).all()
    np.testing.assert_allclose(proba[keep], b.predict_proba(X[keep]), rtol=1e-9, atol=1e-12)
    # score() is the mean log-likelihood of the rows that carry information.
    np.testing.assert_allclose(a.score(X), np.mean(scores[keep]), rtol=1e-10)
