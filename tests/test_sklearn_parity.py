"""On complete data gmm_stream gives scikit-learn's numbers (docs/math.md, "M-step").

Both estimators start from the same weights_init / means_init / precisions_init
(scikit-learn's shapes for precisions_init) and run the same iterations.
Tolerance: rtol 1e-6, with atol = 1e-6 * max|array| (see ``assert_allclose_scaled``):
the two implementations round differently (centred statistics, other summation order),
and 20 EM iterations on a 30-feature covariance amplify the difference well beyond
machine epsilon but far below 1e-6.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.preprocessing import StandardScaler

from gmm_stream import GaussianMixture

from gmm_testing import COVARIANCE_TYPES, assert_allclose_scaled, kmeans_init, make_mixture

RTOL = 1e-6
FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_", "lower_bounds_")


def _synthetic():
    X, *_ = make_mixture(400, 4, 3, seed=50, separation=2.0)
    return X, 3


DATASETS = {
    "synthetic": _synthetic,
    "iris": lambda: (load_iris().data, 3),
    "wine_standardised": lambda: (StandardScaler().fit_transform(load_wine().data), 3),
    "breast_cancer_standardised": lambda: (StandardScaler().fit_transform(load_breast_cancer().data), 2),
}


@pytest.fixture(scope="module", params=sorted(DATASETS))
def dataset(request):
    return DATASETS[request.param]()


def _pair(X, n_components, covariance_type, **kw):
    init = kmeans_init(X, n_components, covariance_type)
    kw = dict(covariance_type=covariance_type, **init, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # ConvergenceWarning when tol=0
        sk = SkGaussianMixture(n_components, **kw).fit(X)
        gm = GaussianMixture(n_components, **kw).fit(X)
    return sk, gm


def _assert_same_model(gm, sk, X, Xin=None):
    """Fitted attributes and every X-dependent method agree with scikit-learn."""
    Xin = X if Xin is None else Xin
    for name in FITTED:
        assert_allclose_scaled(getattr(gm, name), getattr(sk, name), rtol=RTOL, err_msg=name)
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=RTOL)
    assert gm.n_iter_ == sk.n_iter_
    assert gm.converged_ == sk.converged_

    def value(a):
        return a.compute() if isinstance(a, da.Array) else np.asarray(a)

    assert_allclose_scaled(value(gm.predict_proba(Xin)), sk.predict_proba(X), rtol=RTOL)
    assert_allclose_scaled(value(gm.score_samples(Xin)), sk.score_samples(X), rtol=RTOL)
    np.testing.assert_array_equal(value(gm.predict(Xin)), sk.predict(X))
    np.testing.assert_allclose(gm.score(Xin), sk.score(X), rtol=RTOL)
    np.testing.assert_allclose(gm.bic(Xin), sk.bic(X), rtol=RTOL)
    np.testing.assert_allclose(gm.aic(Xin), sk.aic(X), rtol=RTOL)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fixed_iterations_match_sklearn(dataset, covariance_type):
    X, K = dataset
    sk, gm = _pair(X, K, covariance_type, tol=0.0, max_iter=20)
    assert sk.n_iter_ == 20
    _assert_same_model(gm, sk, X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_convergence_matches_sklearn(dataset, covariance_type):
    """Default tol: both stop at the same iteration, converged."""
    X, K = dataset
    sk, gm = _pair(X, K, covariance_type, max_iter=100)
    assert sk.converged_
    _assert_same_model(gm, sk, X)


@pytest.mark.parametrize("chunks", [(150,), (40,), (17,), ((60, 1, 89),)])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_dask_input_matches_sklearn(covariance_type, chunks):
    X, K = load_iris().data, 3
    Xd = da.from_array(X, chunks=(chunks[0], X.shape[1]))
    init = kmeans_init(X, K, covariance_type)
    kw = dict(covariance_type=covariance_type, tol=0.0, max_iter=20, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        sk = SkGaussianMixture(K, **kw).fit(X)
        gm = GaussianMixture(K, **kw).fit(Xd)
    _assert_same_model(gm, sk, X, Xin=Xd)
