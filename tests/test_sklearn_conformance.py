"""scikit-learn's own test suite for GaussianMixture, run on gmm_stream.GaussianMixture.

The installed module ``sklearn.mixture.tests.test_gaussian_mixture`` is imported (never
copied): each of its test functions is re-exported here, wrapped so that the name it tests,
the module attribute ``GaussianMixture``, is ours while it runs. The wrappers keep the
functions' own ``pytest.mark.parametrize`` marks and fixtures; the two fixtures that live
in scikit-learn's conftest, ``global_dtype`` and ``global_random_seed``, are re-created
below with the same environment variables:

* ``SKLEARN_RUN_FLOAT32_TESTS=1`` also runs the float32 cases of ``global_dtype``;
* ``SKLEARN_TESTS_GLOBAL_RANDOM_SEED`` (``42`` by default, ``all``, ``N`` or ``A-B``);
* the array-API cases need ``SCIPY_ARRAY_API=1`` (set before SciPy is imported) and
  ``array-api-strict``; they skip otherwise, as they do in scikit-learn.

Run it as::

    python -m pytest tests/test_sklearn_conformance.py
    SKLEARN_RUN_FLOAT32_TESTS=1 SCIPY_ARRAY_API=1 python -m pytest tests/test_sklearn_conformance.py

Checked against scikit-learn 1.9 (see the pin in pyproject.toml). The only tests not run
are those that test scikit-learn's private functions rather than the estimator; they are
listed, with the reason, in ``EXCLUDED`` and reported as skipped.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.utils.estimator_checks import check_sample_weight_equivalence_on_dense_data, parametrize_with_checks

import gmm_stream
from gmm_stream import GaussianMixture, chunk_statistics
from gmm_stream.exceptions import (
    IllConditionedCovarianceError,
    InvalidInputError,
    InvalidParameterError,
    OverParameterizedWarning,
)
from gmm_stream.mixture import MAX_PARAMETERS_PER_ROW

sk_tests = pytest.importorskip("sklearn.mixture.tests.test_gaussian_mixture")

_PRIVATE = "tests a private function of scikit-learn, not the estimator"

#: scikit-learn tests that are not run on our class: name -> reason (the only such list)
EXCLUDED = {
    "test_suffstat_sk_full": f"{_PRIVATE} (_estimate_gaussian_covariances_full, _compute_precision_cholesky)",
    "test_suffstat_sk_tied": f"{_PRIVATE} (_estimate_gaussian_covariances_tied, _compute_precision_cholesky)",
    "test_suffstat_sk_diag": f"{_PRIVATE} (_estimate_gaussian_covariances_diag, _compute_precision_cholesky)",
    "test_gaussian_suffstat_sk_spherical": (
        f"{_PRIVATE} (_estimate_gaussian_covariances_spherical, _compute_precision_cholesky)"
    ),
    "test_compute_log_det_cholesky": f"{_PRIVATE} (_compute_log_det_cholesky)",
    "test_gaussian_mixture_log_probabilities": f"{_PRIVATE} (_estimate_log_gaussian_prob)",
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": (
        f"{_PRIVATE}: counts the calls of sklearn.mixture._gaussian_mixture._estimate_gaussian_parameters, "
        "which our M-step never calls"
    ),
}


# ------------------------------------------------------- scikit-learn's conftest fixtures

_RUN_FLOAT32 = os.environ.get("SKLEARN_RUN_FLOAT32_TESTS", "0") == "1"


@pytest.fixture(
    params=[
        pytest.param(np.float32, marks=pytest.mark.skipif(
            not _RUN_FLOAT32, reason="Set SKLEARN_RUN_FLOAT32_TESTS=1 to run float32 dtype tests")),
        np.float64,
    ]
)
def global_dtype(request):
    return request.param


def _random_seeds() -> list[int]:
    value = os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED")
    if value is None:
        return [42]
    if value == "all":
        return list(range(100))
    if "-" in value:
        start, stop = map(int, value.split("-"))
        return list(range(start, stop + 1))
    return [int(value)]


@pytest.fixture(params=_random_seeds())
def global_random_seed(request):
    return request.param


# ---------------------------------------------------------------------- the wrapped tests


def _on_our_class(test):
    """``test`` with ``sk_tests.GaussianMixture`` replaced by ours while it runs.

    ``functools.wraps`` copies ``pytestmark`` (the parametrizations) and sets
    ``__wrapped__``, from which pytest reads the fixtures the test asks for.
    """

    @functools.wraps(test)
    def run(*args, **kwargs):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sk_tests, "GaussianMixture", gmm_stream.GaussianMixture)
            return test(*args, **kwargs)

    run.__module__ = __name__
    run.pytestmark = [_collection_args(mark) for mark in getattr(test, "pytestmark", [])]
    return run


def _collection_args(mark):
    """The mark with iterator arguments (a generator of parametrize values) made tuples:
    a generator can be read once only, and pytest deprecates them."""
    args = tuple(tuple(a) if isinstance(a, Iterator) else a for a in mark.args)
    return getattr(pytest.mark, mark.name)(*args, **mark.kwargs).mark


def _excluded(test, reason):
    return pytest.mark.skip(reason=f"excluded: {reason}")(_on_our_class(test))


SKLEARN_TESTS = sorted(
    name for name in vars(sk_tests) if name.startswith("test_") and callable(getattr(sk_tests, name))
)

for _name in SKLEARN_TESTS:
    _test = getattr(sk_tests, _name)
    globals()[_name] = _excluded(_test, EXCLUDED[_name]) if _name in EXCLUDED else _on_our_class(_test)
del _name, _test


def test_excluded_tests_exist():
    """The exclusion list names only tests that scikit-learn still has."""
    assert sorted(set(EXCLUDED) - set(SKLEARN_TESTS)) == []


def test_substitution_reaches_sklearn_module():
    """While a wrapped test runs, scikit-learn's module sees our class (and only then)."""
    seen = []
    probe = _on_our_class(lambda: seen.append(sk_tests.GaussianMixture))
    probe()
    assert seen == [gmm_stream.GaussianMixture]
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    assert sk_tests.GaussianMixture is SkGaussianMixture


# ===================================================================================
# Our own tests of the behaviours scikit-learn's suite needed, against scikit-learn's
# numbers where there are any (fixed seeds; tolerances stated per test).
# ===================================================================================

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")
FITTED = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


def _two_blobs(seed=0, n=150):
    rng = np.random.RandomState(seed)
    return np.vstack([rng.randn(n, 2), rng.randn(n, 2) @ [[1.0, 0.3], [0.0, 0.6]] + [4.0, 3.0]])


def _explicit_init(covariance_type):
    precisions = {"full": np.stack([np.eye(2)] * 2), "tied": np.eye(2), "diag": np.ones((2, 2)),
                  "spherical": np.ones(2)}
    return dict(weights_init=[0.5, 0.5], means_init=[[0.0, 0.0], [3.0, 3.0]],
                precisions_init=precisions[covariance_type])


def _quiet_fit(model, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, **kw)


# --------------------------------------------------------------------------- warm start


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_warm_start_continues_like_sklearn(covariance_type):
    """Each warm call (max_iter=1) continues from the last parameters *and* lower bound: the
    sequence of lower bounds, convergence flags and parameters is scikit-learn's (rtol 1e-9),
    and both converge at the same call."""
    X = _two_blobs()
    runs = []
    for cls in (SkGaussianMixture, GaussianMixture):
        gm = cls(2, covariance_type=covariance_type, warm_start=True, max_iter=1, tol=1e-3,
                 **_explicit_init(covariance_type))
        calls = []
        for _ in range(50):
            _quiet_fit(gm, X)
            calls.append((gm.lower_bound_, gm.converged_, gm.n_iter_, gm.means_.copy()))
            if gm.converged_:
                break
        runs.append(calls)
    sk, ours = runs
    assert ours[-1][1] and len(ours) == len(sk) >= 2
    for (lb_sk, conv_sk, it_sk, m_sk), (lb, conv, it, m) in zip(sk, ours):
        np.testing.assert_allclose(lb, lb_sk, rtol=1e-9)
        assert (conv, it) == (conv_sk, it_sk)
        np.testing.assert_allclose(m, m_sk, rtol=1e-9)


def test_warm_start_with_max_iter_1_converges_on_second_call_when_tol_is_loose():
    """scikit-learn converges on the 2nd call with max_iter=1 once the change is below tol."""
    X = _two_blobs()
    for cls in (SkGaussianMixture, GaussianMixture):
        gm = cls(2, warm_start=True, max_iter=1, tol=10.0, **_explicit_init("full"))
        _quiet_fit(gm, X)
        assert not gm.converged_  # the first call compares with -inf
        _quiet_fit(gm, X)
        assert gm.converged_ and gm.n_iter_ == 1


# ----------------------------------------------------------------------------- float32


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_input_gives_float32_results_like_sklearn(covariance_type):
    """float32 in, float32 fitted attributes, score_samples and predict_proba out; the values
    are scikit-learn's float32 fit from the same (float32) start (rtol 1e-4, its float32
    tolerance). Ours are float32 whatever the dtype of the ``*_init`` arrays; scikit-learn's
    follow them, which is why the start is float32 here."""
    X = _two_blobs().astype(np.float32)
    init = {k: np.asarray(v, dtype=np.float32) for k, v in _explicit_init(covariance_type).items()}
    kw = dict(covariance_type=covariance_type, tol=1e-6, **init)
    sk = _quiet_fit(SkGaussianMixture(2, **kw), X)
    gm = _quiet_fit(GaussianMixture(2, **kw), X)
    for name in FITTED:
        assert getattr(gm, name).dtype == np.float32, name
        np.testing.assert_allclose(getattr(gm, name), getattr(sk, name), rtol=1e-4, atol=1e-5, err_msg=name)
    for method in ("score_samples", "predict_proba"):
        out = getattr(gm, method)(X)
        assert out.dtype == np.float32 == getattr(sk, method)(X).dtype, method
        np.testing.assert_allclose(out, getattr(sk, method)(X), rtol=1e-4, atol=1e-5, err_msg=method)
    assert gm.score_samples(X.astype(np.float64)).dtype == np.float64  # float32 model, float64 data
    lazy = gm.score_samples(da.from_array(X, chunks=(100, 2)))
    assert lazy.dtype == np.float32 and lazy.compute().dtype == np.float32


def test_float32_statistics_accumulate_in_float64():
    X = _two_blobs().astype(np.float32)
    gm = _quiet_fit(GaussianMixture(2, max_iter=1, **_explicit_init("full")), X)
    stats = chunk_statistics(X, gm.params_)
    assert stats.N.dtype == stats.S1.dtype == stats.S2.dtype == np.float64
    assert isinstance(stats.loglik, float)


def _digits_embedding(n_features=20, norm=1e5):
    """A real float32 embedding: PCA of scikit-learn's digits, moved to a large norm."""
    Z = PCA(n_features, random_state=0).fit_transform(load_digits().data)
    direction = np.random.default_rng(0).standard_normal(n_features)
    return (Z + norm * direction / np.linalg.norm(direction)).astype(np.float32)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_fit_is_monotone_and_matches_float64(covariance_type):
    """On a large-norm float32 embedding (|x| = 1e6, σ ≈ 1-10) the float32 fit's lower bound
    never decreases by more than 1e-7 relative (rounding noise), and stays within 1e-6
    relative of the float64 fit of the same values from the same start, iteration by
    iteration. (Centring float32 rows on a rounded shift used to offset them by up to an ulp
    of their norm: 1e-4 relative differences and decreases of the bound.)"""
    X32 = _digits_embedding(norm=1e6)
    X64 = X32.astype(np.float64)
    start = GaussianMixture(6, covariance_type=covariance_type, max_iter=0, random_state=0)
    _quiet_fit(start, X64)
    init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    kw = dict(covariance_type=covariance_type, tol=0.0, max_iter=30, **init)
    lb64 = _quiet_fit(GaussianMixture(6, **kw), X64).lower_bounds_
    lb32 = _quiet_fit(GaussianMixture(6, **kw), X32).lower_bounds_
    assert np.all(np.diff(lb32) >= -1e-7 * np.abs(lb32[1:]))
    np.testing.assert_allclose(lb32, lb64, rtol=1e-6)


# ---------------------------------------------------------------- a singleton, reg_covar=0


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_singleton_component_without_regularisation_fits_like_sklearn(covariance_type):
    """scikit-learn's issue 18216: components that shrink to one row, with reg_covar=0. Its
    update leaves them a variance of about 10·eps·μ²/N (from the 10·eps added to N_k) where
    the centred scatter is 0; so do we. Resolvable variances agree to rtol 1e-7, the
    singletons' ones (rounding-level in scikit-learn's formula) to 50 %."""
    rnd = np.random.RandomState(0)
    X = rnd.uniform(size=(30, 3))
    means = rnd.uniform(size=(6, 3))
    means[:2] = X[[3, 17]]  # two components sit on a row and get nothing else
    precisions = np.array([1e6, 1e6, 500.0, 200.0, 15.0, 85.0])
    if covariance_type == "diag":
        precisions = np.repeat(precisions[:, None], 3, axis=1)
    kw = dict(covariance_type=covariance_type, reg_covar=0, means_init=means, weights_init=np.full(6, 1 / 6),
              precisions_init=precisions, max_iter=1)
    sk = _quiet_fit(SkGaussianMixture(6, **kw), X)
    gm = _quiet_fit(GaussianMixture(6, **kw), X)
    tiny = sk.covariances_ < 1e-12
    assert tiny.any() and np.all(gm.covariances_ > 0)
    np.testing.assert_allclose(gm.covariances_[~tiny], sk.covariances_[~tiny], rtol=1e-7)
    np.testing.assert_allclose(gm.covariances_[tiny], sk.covariances_[tiny], rtol=0.5)
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-9)


def test_collapsed_data_without_regularisation_still_fails():
    """The floor is scikit-learn's, not a regularisation: a component at the origin with no
    spread keeps a zero variance and is refused, as scikit-learn refuses it."""
    X = np.vstack([np.ones((5, 3)), np.zeros((5, 3))])
    for covariance_type in COVARIANCE_TYPES:
        with pytest.raises(IllConditionedCovarianceError, match="ill-defined empirical covariance"):
            _quiet_fit(GaussianMixture(10, covariance_type=covariance_type, reg_covar=0, random_state=0), X)


# ------------------------------------------------------------------- precisions_cholesky_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_cholesky_is_sklearns_factor_after_max_iter_0(covariance_type):
    """From precisions_init, scikit-learn stores the upper-triangular U with P = U Uᵀ.

    (scikit-learn 1.9's own ``fit`` with max_iter=0 and precisions_init fails on the missing
    ``covariances_``, so its factor is taken from its ``_initialize``, which ``fit`` calls.)"""
    X = _two_blobs()
    rng = np.random.default_rng(5)
    A = rng.standard_normal((2, 2, 2))
    full = A @ A.transpose(0, 2, 1) + np.eye(2)
    precisions = {"full": full, "tied": full[0], "diag": np.array([[1.0, 2.0], [3.0, 0.5]]),
                  "spherical": np.array([2.0, 0.3])}
    kw = dict(covariance_type=covariance_type, max_iter=0, weights_init=np.array([0.4, 0.6]),
              means_init=np.array([[0.0, 0.0], [4.0, 3.0]]), precisions_init=precisions[covariance_type])
    sk = SkGaussianMixture(2, **kw)
    sk._initialize(X, None)
    gm = GaussianMixture(2, **kw).fit(X)
    assert gm.n_iter_ == 0
    np.testing.assert_allclose(gm.precisions_cholesky_, sk.precisions_cholesky_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gm.precisions_, precisions[covariance_type], rtol=1e-12)
    np.testing.assert_allclose(gm.score_samples(X), sk.score_samples(X), rtol=1e-12)


# ----------------------------------------------------------------------- parameter checks


def _sklearn_error(cls, X, **params):
    try:
        cls(**params).fit(X)
    except Exception as exc:  # noqa: BLE001 - we compare whatever scikit-learn raises
        return exc
    return None


BAD_PARAMETERS = {
    "non-symmetric precisions_init": dict(precisions_init=np.array([[[2.0, 0.5], [0.0, 2.0]]] * 2)),
    "weights_init sum off by 1e-7": dict(weights_init=[0.5, 0.5 + 1e-7]),
    "weights_init out of range": dict(weights_init=[1.5, -0.5]),
    "means_init shape": dict(means_init=np.zeros((3, 2))),
    "n_components type": dict(n_components="2"),
    "n_components range": dict(n_components=0),
    "covariance_type": dict(covariance_type="banded"),
    "tol type": dict(tol="small"),
    "warm_start type": dict(warm_start="yes"),
    "init_params": dict(init_params="best"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMETERS))
def test_bad_parameters_are_refused_like_sklearn(case):
    """Refused where scikit-learn refuses, with its message (ours may add which parameter)."""
    X = _two_blobs()
    params = {"n_components": 2, **BAD_PARAMETERS[case]}
    expected = _sklearn_error(SkGaussianMixture, X, **params)
    assert isinstance(expected, ValueError)
    with pytest.raises(InvalidParameterError) as info:
        GaussianMixture(**params).fit(X)
    assert _same_sets(str(expected)) in _same_sets(str(info.value))
    if isinstance(expected, TypeError):  # scikit-learn's InvalidParameterError: both
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def _same_sets(message: str) -> str:
    """The message with the items of each ``{...}`` sorted (a set's order is arbitrary)."""
    return re.sub(r"\{([^{}]*)\}", lambda m: "{" + ", ".join(sorted(m.group(1).split(", "))) + "}", message)


def test_parameter_type_errors_are_type_errors():
    with pytest.raises(TypeError, match="The 'n_components' parameter of GaussianMixture must be"):
        GaussianMixture(n_components=2.5).fit(_two_blobs())


def test_weights_init_within_sklearn_tolerance_is_accepted():
    X = _two_blobs()
    for cls in (SkGaussianMixture, GaussianMixture):
        _quiet_fit(cls(2, weights_init=[0.5, 0.5 + 5e-9], max_iter=1), X)


def test_one_row_is_refused_like_sklearn():
    X = np.array([[1.0, 2.0]])
    expected = _sklearn_error(SkGaussianMixture, X)
    with pytest.raises(InvalidInputError, match=re.escape(str(expected))):
        GaussianMixture().fit(X)
    with pytest.raises(InvalidInputError, match=re.escape(str(expected))):
        GaussianMixture().fit(da.from_array(X))
    GaussianMixture().fit(np.array([[1.0, 2.0], [2.0, 1.0]]))  # two rows are enough


@pytest.mark.parametrize("verbose", [True, 1, 2])
def test_verbose_prints_what_sklearn_prints(verbose):
    """The same lines on stdout (times masked), for bool and int verbosity."""
    X = _two_blobs()
    outputs = []
    for cls in (SkGaussianMixture, GaussianMixture):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            _quiet_fit(cls(2, verbose=verbose, verbose_interval=2, n_init=2, tol=1e-6, **_explicit_init("full")), X)
        outputs.append(re.sub(r"time lapse [0-9.]+s", "time lapse Ts", buf.getvalue()))
    assert outputs[0] == outputs[1]
    assert outputs[1].startswith("Initialization 0\n") and "Initialization converged." in outputs[1]


# ----------------------------------------------------------------------------- array API


def test_unconvertible_array_is_refused_with_a_clear_error():
    class Opaque:  # claims an array namespace but can be copied nowhere
        shape, ndim, dtype = (4, 2), 2, np.dtype(np.float64)

        def __array_namespace__(self, api_version=None):
            raise RuntimeError("no namespace here")

        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("cannot leave its device")

    with pytest.raises(InvalidInputError, match="NumPy, Dask or xarray"):
        GaussianMixture().fit(Opaque())


ARRAY_API_SCRIPT = textwrap.dedent('''
    import numpy as np, sklearn, array_api_strict as xp
    from sklearn.utils._array_api import get_namespace, device
    from gmm_stream import GaussianMixture
    from gmm_stream.exceptions import InvalidInputError

    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(100, 3), rng.randn(100, 3) + 5]).astype("float32")
    dev = xp.Device("device1")  # array-api-strict's device that NumPy cannot read directly
    X_xp = xp.asarray(X, device=dev)
    kw = dict(init_params="random_from_data", random_state=0)
    for ct in ["full", "tied", "diag", "spherical"]:
        ref = GaussianMixture(2, covariance_type=ct, **kw).fit(X)
        with sklearn.config_context(array_api_dispatch=True):
            gm = GaussianMixture(2, covariance_type=ct, **kw).fit(X_xp)
            for name in ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]:
                a = getattr(gm, name)
                assert get_namespace(a)[0] is xp and device(a) == dev, name
                assert np.array_equal(np.from_dlpack(xp.asarray(a, device=xp.Device("CPU_DEVICE"))),
                                      getattr(ref, name)), name
            for method in ["predict", "predict_proba", "score_samples"]:
                out = getattr(gm, method)(X_xp)
                assert get_namespace(out)[0] is xp and device(out) == dev, method
            assert isinstance(gm.score(X_xp), float) and abs(gm.score(X_xp) - ref.score(X)) < 1e-6
            Xs, ys = gm.sample(5)
            assert get_namespace(Xs)[0] is xp and Xs.dtype == xp.float64 and ys.dtype == xp.int64
            try:
                GaussianMixture(2).fit(X_xp)
            except NotImplementedError as exc:  # scikit-learn's rule under dispatch
                assert "array_api_dispatch" in str(exc)
            else:
                raise AssertionError("kmeans init under array_api_dispatch was not refused")
    print("ok")
''')


def test_array_api_strict_input_works_under_dispatch():
    """array_api_dispatch needs SCIPY_ARRAY_API=1 before SciPy is imported: a fresh interpreter."""
    pytest.importorskip("array_api_strict")
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    done = subprocess.run([sys.executable, "-c", ARRAY_API_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


# ------------------------------------------------------- sample weights in the initialisation

def _expected_failed_checks(estimator):
    """Under array_api_dispatch only 'random' and 'random_from_data' initialise, as in
    scikit-learn, which runs this check with init_params='random_from_data' (done here too)."""
    if estimator.init_params in ("random", "random_from_data"):
        return {}
    return {"check_array_api_input": "init_params='kmeans' is refused under array_api_dispatch, as by scikit-learn"}


@parametrize_with_checks(
    [GaussianMixture(covariance_type=ct, n_components=2) for ct in ("full", "tied", "spherical")]
    + [GaussianMixture(n_components=2, init_params="random_from_data", max_iter=5, n_init=2)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks_every_covariance_type(estimator, check):
    """check_estimator with n_components=2 for the covariance types test_sklearn_api.py does
    not run ('diag' is there), sample-weight equivalence included; and, for the array-API
    checks (with SCIPY_ARRAY_API=1), an estimator that declares array-API support."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverParameterizedWarning)  # the checks' data are tiny
        check(estimator)


@pytest.mark.parametrize("init_params", INIT_PARAMS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_weight_equivalence_for_every_init(covariance_type, init_params):
    """scikit-learn's check for every init_params: its data (15 rows, 30 features)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_sample_weight_equivalence_on_dense_data(
            "GaussianMixture", GaussianMixture(3, covariance_type=covariance_type, init_params=init_params)
        )


@pytest.mark.parametrize(
    "covariance_type, init_params",
    [(ct, ip) for ct in COVARIANCE_TYPES for ip in INIT_PARAMS
     if not (ct == "tied" and ip in ("k-means++", "random_from_data"))],
)
def test_seeded_start_of_distinct_unweighted_rows_is_sklearns(covariance_type, init_params):
    """The weight-aware initialisation leaves distinct, unweighted rows as they are: the
    start (max_iter=0) is scikit-learn's for the same random_state (rtol 1e-10).

    Not compared: the 'tied' covariance of 'k-means++' and 'random_from_data', whose
    responsibilities are one-hot on K rows only. scikit-learn's tied update uses Xᵀ X of
    *all* rows there (a huge start covariance), ours the scatter of the K responsible rows
    (reg_covar·I); a difference older than this module, in the start only."""
    X = _two_blobs(seed=3)
    kw = dict(covariance_type=covariance_type, init_params=init_params, random_state=11, max_iter=0)
    sk = SkGaussianMixture(2, **kw).fit(X)
    gm = GaussianMixture(2, **kw).fit(X)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(gm, name), getattr(sk, name), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("init_params", INIT_PARAMS)
def test_integer_weights_equal_repeated_shuffled_rows(init_params):
    """Larger data with missing values: weighted rows in one order and the repeated rows in
    another give the same fit (rtol 1e-7) from the seeded initialisation."""
    rng = np.random.default_rng(7)
    X = np.vstack([rng.standard_normal((60, 3)), rng.standard_normal((60, 3)) + 4])
    X[rng.random(X.shape) < 0.1] = np.nan
    w = rng.integers(0, 4, size=X.shape[0])
    repeated = rng.permutation(np.repeat(X, w, axis=0))
    kw = dict(covariance_type="full", init_params=init_params, random_state=3, tol=1e-8, max_iter=200)
    a = _quiet_fit(GaussianMixture(2, **kw), X, sample_weight=w)
    b = _quiet_fit(GaussianMixture(2, **kw), repeated)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-7, atol=1e-9, err_msg=name)


# --------------------------------------------------------------------- over-parameterised


def test_over_parameterised_fit_warns_with_the_numbers():
    """4 full components in 5 features: 4·15 + 4·5 + 3 = 83 parameters for 200 rows."""
    X = np.random.default_rng(0).standard_normal((200, 5))
    with pytest.warns(OverParameterizedWarning, match=r"83 free parameters .*200 usable rows") as record:
        _quiet_fit_but(OverParameterizedWarning, GaussianMixture(4, random_state=0), X)
    message = str(record[0].message)
    assert "fewer components" in message and "covariance_type" in message and "fewer features" in message
    assert MAX_PARAMETERS_PER_ROW * 200 < 83


def test_over_parameterised_warning_counts_usable_rows_and_dask_input():
    X = np.random.default_rng(0).standard_normal((300, 2))
    X[:260] = np.nan  # 40 usable rows: 1 full component in 2 features has 5 parameters > 40/10
    with pytest.warns(OverParameterizedWarning, match="5 free parameters .* 40 usable rows"):
        _quiet_fit_but(OverParameterizedWarning, GaussianMixture(1), da.from_array(X, chunks=(100, 2)))


def test_well_determined_fit_does_not_warn():
    X = np.random.default_rng(0).standard_normal((1000, 5))  # 'diag', 3 components: 32 parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverParameterizedWarning)
        _quiet_fit_but(OverParameterizedWarning, GaussianMixture(3, covariance_type="diag", random_state=0), X)


def _quiet_fit_but(category, model, X):
    """Fit with every warning ignored except ``category`` (left to the caller's filters)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return model.fit(X)


# the wrapped scikit-learn tests keep their names: none of ours may shadow one
assert all(getattr(globals()[name], "__wrapped__", None) is getattr(sk_tests, name) for name in SKLEARN_TESTS)


@pytest.mark.skipif(os.environ.get("SKLEARN_RUN_FLOAT32_TESTS") == "1", reason="already the float32 run")
def test_the_module_passes_in_scikit_learns_float32_and_array_api_modes():
    """The same module with SKLEARN_RUN_FLOAT32_TESTS=1 and SCIPY_ARRAY_API=1 (read before SciPy loads)."""
    env = {**os.environ, "SKLEARN_RUN_FLOAT32_TESTS": "1", "SCIPY_ARRAY_API": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          capture_output=True, text=True, env=env, timeout=900)
    last = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"\b\d+ passed", last) and not re.search(r"\b\d+ failed", last), last
