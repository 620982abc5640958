"""Bad input gives an error that names the problem; good input of every kind is accepted."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from gmm_stream import COVARIANCE_TYPES, INIT_PARAMS, GaussianMixture, check_initial_parameters
from gmm_stream.exceptions import InvalidInputError, InvalidParameterError

from gmm_testing import init_kwargs, make_mixture, random_params

# Short fits (max_iter=2..10) on purpose; their ConvergenceWarning is not under test here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def X():
    X, *_ = make_mixture(200, 3, 2, seed=60, separation=3.0)
    return X


# ------------------------------------------------------------------------ bad data


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinity_in_numpy_input(X, value):
    Xb = X.copy()
    Xb[17, 1] = value
    with pytest.raises(InvalidInputError, match=r"(?i)inf"):
        GaussianMixture(2, random_state=0).fit(Xb)


def test_infinity_in_dask_input(X):
    Xb = X.copy()
    Xb[150, 2] = np.inf  # in the last chunk
    with pytest.raises(InvalidInputError, match=r"(?i)inf"):
        GaussianMixture(2, random_state=0).fit(da.from_array(Xb, chunks=(50, 3)))


def test_infinity_at_predict_time(X):
    gm = GaussianMixture(2, random_state=0).fit(X)
    Xb = X[:10].copy()
    Xb[3, 0] = np.inf
    with pytest.raises(InvalidInputError, match=r"(?i)inf"):
        gm.predict(Xb)


@pytest.mark.parametrize("shape", [(20,), (4, 5, 3)])
def test_wrong_number_of_dimensions(shape):
    with pytest.raises(InvalidInputError, match=r"(?i)2D|2-D|two-dimensional|dimension"):
        GaussianMixture(1).fit(np.zeros(shape))


@pytest.mark.parametrize(
    "data",
    [np.array([["a", "b"], ["c", "d"], ["e", "f"]]), np.array([[1.0, "x"], [2.0, 3.0], [4.0, 5.0]], dtype=object)],
    ids=["str", "object"],
)
def test_non_numeric_data(data):
    with pytest.raises(InvalidInputError, match=r"(?i)numeric|float|string|convert"):
        GaussianMixture(1).fit(data)


def test_more_components_than_usable_rows(X):
    Xb = X[:20].copy()
    Xb[:15] = np.nan  # 5 usable rows
    with pytest.raises(InvalidInputError, match=r"n_components=10 is larger than the number of usable rows") as info:
        GaussianMixture(10).fit(Xb)
    assert "10" in str(info.value) and "5" in str(info.value)


def test_more_components_than_rows(X):
    with pytest.raises(InvalidInputError, match=r"n_samples >= n_components but got n_components = 5, n_samples = 3"):
        GaussianMixture(5).fit(X[:3])


def test_column_entirely_missing(X):
    Xb = X.copy()
    Xb[:, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"(?i)(column|feature).*1|1.*(column|feature)"):
        GaussianMixture(2, random_state=0).fit(Xb)


def test_column_entirely_missing_dask(X):
    Xb = X.copy()
    Xb[:, 2] = np.nan
    with pytest.raises(InvalidInputError, match=r"(?i)(column|feature).*2|2.*(column|feature)"):
        GaussianMixture(2, random_state=0).fit(da.from_array(Xb, chunks=(64, 3)))


# ------------------------------------------------------------------------ bad initial parameters


BAD_INIT = {  # n_components = 2, n_features = 3
    "weights_init": {ct: np.full(3, 1 / 3) for ct in ("full", "tied", "diag", "spherical")},
    "means_init": {ct: np.zeros((2, 4)) for ct in ("full", "tied", "diag", "spherical")},
    "precisions_init": {
        "full": np.stack([np.eye(4)] * 2),
        "tied": np.eye(4),
        "diag": np.ones((2, 4)),
        "spherical": np.ones(3),
    },
}


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("which", sorted(BAD_INIT))
def test_mismatched_init_shapes(X, covariance_type, which):
    good = init_kwargs(*random_params(3, 2, covariance_type, seed=61), covariance_type)
    bad = {**good, which: BAD_INIT[which][covariance_type]}
    with pytest.raises(InvalidParameterError, match=which.removesuffix("_init")):
        GaussianMixture(2, covariance_type=covariance_type, **bad).fit(X)
    GaussianMixture(2, covariance_type=covariance_type, max_iter=2, **good).fit(X)  # the good ones work


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("which", sorted(BAD_INIT))
def test_the_public_checker_is_what_fit_applies(X, covariance_type, which):
    """check_initial_parameters refuses what fit refuses, with the same message. Without
    n_features (no data yet) it takes them from means_init: the arrays are still refused
    when they disagree, and with fit's message when means_init is not the odd one out."""
    good = init_kwargs(*random_params(3, 2, covariance_type, seed=61), covariance_type)
    bad = {**good, which: BAD_INIT[which][covariance_type]}
    with pytest.raises(InvalidParameterError) as by_fit:
        GaussianMixture(2, covariance_type=covariance_type, **bad).fit(X)
    with pytest.raises(InvalidParameterError) as by_checker:
        check_initial_parameters(covariance_type, 2, 3, **bad)
    assert str(by_checker.value) == str(by_fit.value)
    if which == "means_init" and covariance_type == "spherical":  # 4 features: nothing says otherwise
        assert check_initial_parameters(covariance_type, 2, None, **bad)["means"].shape == (2, 4)
        return
    with pytest.raises(InvalidParameterError) as without_features:
        check_initial_parameters(covariance_type, 2, None, **bad)
    if which == "means_init":  # 4 features, the precisions have 3
        assert "'" + covariance_type + " precision' should have the shape of" in str(without_features.value)
    else:
        assert str(without_features.value) == str(by_fit.value)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_the_checker_gives_the_checked_arrays(covariance_type):
    good = init_kwargs(*random_params(3, 2, covariance_type, seed=61), covariance_type)
    for n_features in (3, None):
        checked = check_initial_parameters(covariance_type, 2, n_features, **good)
        for key in ("weights", "means", "precisions"):
            np.testing.assert_array_equal(checked[key], good[f"{key}_init"])
            assert checked[key].dtype == np.float64


def test_the_checker_takes_the_features_from_precisions_without_means():
    with pytest.raises(InvalidParameterError, match=r"'full precision' should have the shape of \(2, 3, 3\), "
                                                    r"but got \(2, 2, 3\)"):
        check_initial_parameters("full", 2, None, precisions_init=np.ones((2, 2, 3)))
    with pytest.raises(InvalidParameterError, match="symmetric, positive-definite"):
        check_initial_parameters("tied", 2, None, precisions_init=[[1.0, 2.0], [2.0, 1.0]])
    assert check_initial_parameters("spherical", 2, None, precisions_init=[1.0, 2.0])["means"] is None


def test_the_public_choices_are_what_fit_accepts():
    constraints = GaussianMixture._parameter_constraints
    assert set(COVARIANCE_TYPES) == constraints["covariance_type"][0].options
    assert set(INIT_PARAMS) == constraints["init_params"][0].options
    assert COVARIANCE_TYPES[0] == GaussianMixture().covariance_type and INIT_PARAMS[0] == GaussianMixture().init_params


def test_predict_with_different_number_of_features(X):
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(InvalidInputError, match=r"4 features.*expecting 3|expecting 3.*4"):
        gm.predict(np.zeros((5, 4)))
    with pytest.raises(InvalidInputError, match=r"features"):
        gm.score_samples(da.zeros((5, 2), chunks=(5, 2)))


# ------------------------------------------------------------------------ accepted input


def test_xarray_input_sets_feature_names(X):
    names = ["alpha", "beta", "gamma"]
    Xa = xr.DataArray(X, dims=("cell", "gene"), coords={"gene": names})
    init = init_kwargs(*random_params(3, 2, "full", seed=62), "full")
    a = GaussianMixture(2, max_iter=5, tol=0.0, **init).fit(Xa)
    b = GaussianMixture(2, max_iter=5, tol=0.0, **init).fit(X)
    np.testing.assert_array_equal(a.feature_names_in_, np.array(names, dtype=object))
    assert not hasattr(b, "feature_names_in_")
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-12)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(a.predict(Xa)), b.predict(X))


def test_xarray_feature_names_checked_at_predict(X):
    names = ["alpha", "beta", "gamma"]
    Xa = xr.DataArray(X, dims=("cell", "gene"), coords={"gene": names})
    gm = GaussianMixture(2, random_state=0).fit(Xa)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same named input as in fit: no feature-name warning
        gm.predict(Xa)
        gm.score_samples(Xa)
    renamed = Xa.assign_coords(gene=["x", "y", "z"])
    with pytest.raises(InvalidInputError, match="feature names"):
        gm.predict(renamed)


def test_xarray_over_dask_input(X):
    Xa = xr.DataArray(da.from_array(X, chunks=(64, 3)), dims=("cell", "gene"), coords={"gene": list("abc")})
    init = init_kwargs(*random_params(3, 2, "diag", seed=63), "diag")
    a = GaussianMixture(2, covariance_type="diag", max_iter=5, tol=0.0, **init).fit(Xa)
    b = GaussianMixture(2, covariance_type="diag", max_iter=5, tol=0.0, **init).fit(X)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9)
    labels = a.predict(Xa)
    assert isinstance(getattr(labels, "data", labels), da.Array)  # lazy out
    np.testing.assert_array_equal(np.asarray(labels.compute() if hasattr(labels, "compute") else labels), b.predict(X))


def test_float32_input_accepted(X):
    init = init_kwargs(*random_params(3, 2, "full", seed=64), "full")
    a = GaussianMixture(2, max_iter=10, tol=0.0, **init).fit(X.astype(np.float32))
    b = GaussianMixture(2, max_iter=10, tol=0.0, **init).fit(X)
    assert np.isfinite(a.lower_bound_)
    # float32 data rounds X to ~6e-8 relative; 10 EM iterations keep that well under 1e-4.
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.score_samples(X.astype(np.float32)), b.score_samples(X), rtol=1e-4)
