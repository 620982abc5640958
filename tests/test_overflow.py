"""Finite data whose statistics overflow to inf (values near 1e300) get a NumericalOverflowError
naming the step, the quantity and the feature, not ``array must not contain infs or NaNs``."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gmm_stream import GaussianMixture
from gmm_stream.exceptions import GMMStreamError, InvalidInputError, NumericalOverflowError
from pipeline.exceptions import PreprocessingError
from pipeline.preprocess import Preprocessor

from gmm_testing import COVARIANCE_TYPES

pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # numpy's own overflow warnings
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),  # k-means on identical huge rows
]

NAMES = ["x1", "x2", "x3"]
VALUES_UP_TO = r"values up to 1\.\d+e\+300"


@pytest.fixture(scope="module")
def huge():
    """(400, 3): two ordinary features and 'x3' around 1e300."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((400, 3))
    X[:, 2] = 1e300 * (1.0 + 0.1 * rng.standard_normal(400))
    return X


def as_input(X, kind):
    if kind == "dask":
        return da.from_array(X, chunks=(100, -1))
    if kind == "dataarray":
        return xr.DataArray(X, dims=("sample", "feature"), coords={"feature": NAMES})
    return X


def check_error(info, step):
    err = info.value
    assert isinstance(err, GMMStreamError) and isinstance(err, ArithmeticError) and isinstance(err, ValueError)
    assert err.step == step


# ------------------------------------------------------------------------------------ EM


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_second_moments_overflow_in_the_initialisation(huge, kind, covariance_type):
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=0)
    with pytest.raises(NumericalOverflowError, match=r"^EM: the second moments of feature\(s\) \[2\] overflowed to "
                       rf"inf in the initialisation \(feature {VALUES_UP_TO}\); scale the input data "
                       r"\(e\.g\. divide by 1e300\)$") as info:
        gm.fit(as_input(huge, kind))
    check_error(info, "EM")
    assert info.value.features == [2]


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_em_overflow_names_the_features(huge, kind):
    X = pd.DataFrame(huge, columns=NAMES) if kind == "numpy" else as_input(huge, "dataarray").chunk({"sample": 100})
    with pytest.raises(NumericalOverflowError, match=r"EM: the second moments of feature\(s\) \['x3'\]"):
        GaussianMixture(2, random_state=0).fit(X)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_em_overflow_in_an_iteration(huge, kind, covariance_type):
    # tiny precisions keep the E-step finite; the second moments (1e600) are not
    precisions = {"full": np.stack([np.eye(3) * 1e-300] * 2), "tied": np.eye(3) * 1e-300}[covariance_type]
    gm = GaussianMixture(2, covariance_type=covariance_type, means_init=huge[:2], weights_init=[0.5, 0.5],
                         precisions_init=precisions)
    with pytest.raises(NumericalOverflowError, match=r"EM: the second moments of feature\(s\) \[2\] overflowed to "
                       rf"inf in iteration 1 \(feature {VALUES_UP_TO}\)") as info:
        gm.fit(as_input(huge, kind))
    check_error(info, "EM")


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_em_float32_overflow_suggests_float64(kind):
    X = (np.random.default_rng(9).standard_normal((300, 2)) * 1e20).astype(np.float32)
    with pytest.raises(NumericalOverflowError, match=r"EM: .* overflowed to inf in .*or pass float64 data"):
        GaussianMixture(2, random_state=0).fit(as_input(X, kind))


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_scoring_rows_far_beyond_the_model_is_an_overflow(huge, kind):
    gm = GaussianMixture(2, random_state=0).fit(huge[:, :2])
    X = np.column_stack([huge[:, :1], huge[:, 2:]])
    with pytest.raises(NumericalOverflowError,
                       match=rf"E-step: the log-density of \d+ row\(s\) overflowed \({VALUES_UP_TO}\)"):
        np.asarray(gm.predict(as_input(X, kind)))


def test_infinite_input_is_still_reported_as_infinity(huge):
    X = huge[:, :2].copy()
    X[5, 1] = np.inf
    with pytest.raises(InvalidInputError, match="infinity"):
        GaussianMixture(2, random_state=0).fit(da.from_array(X, chunks=(100, -1)))


# ------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("kind", ["numpy", "dask", "dataarray"])
def test_standardize_sum_of_squares_overflows(huge, kind):
    feature = "'x3'" if kind == "dataarray" else "2"
    with pytest.raises(NumericalOverflowError, match=rf"^standardize: the sum of squares of feature {feature} "
                       rf"overflowed to inf \({VALUES_UP_TO}\); rescale the data \(e\.g\. divide by 1e300\) "
                       r"or add the log1p step before standardize$") as info:
        Preprocessor(["standardize"]).fit(as_input(huge, kind))
    check_error(info, "standardize")
    assert info.value.features == [2]


def test_standardize_sum_overflows(huge):
    X = huge.copy()
    X[:, 2] = 1e307  # the sum of 400 of them is beyond 1.8e308
    X[::2, 1] = 1e307
    with pytest.raises(NumericalOverflowError, match=r"standardize: the sum of features 1, 2 overflowed to inf"):
        Preprocessor(["standardize"]).fit(as_input(X, "dask"))


@pytest.mark.parametrize("kind", ["numpy", "dask", "dataarray"])
@pytest.mark.parametrize("n_oversamples", [10, 0])  # exact, then randomised
def test_pca_cross_products_overflow(huge, kind, n_oversamples):
    feature = "'x3'" if kind == "dataarray" else "2"
    pca = {"name": "pca", "n_components": 1, "n_oversamples": n_oversamples}
    with pytest.raises(NumericalOverflowError, match=rf"^pca: the cross-products of feature {feature} overflowed to "
                       rf"inf \({VALUES_UP_TO}\); rescale the data .* or add standardize") as info:
        Preprocessor([pca]).fit(as_input(huge, kind))
    check_error(info, "pca")


@pytest.mark.parametrize("steps", [["standardize"], [{"name": "pca", "n_components": 2}]])
def test_infinite_input_is_still_reported_as_infinite_values(huge, steps):
    X = huge[:, :2].copy()
    X[7, 1] = -np.inf
    with pytest.raises(PreprocessingError, match=r"features \[1\] hold infinite values"):
        Preprocessor(steps).fit(as_input(X, "dask"))


@pytest.mark.parametrize("kind", ["numpy", "dask", "dataarray"])
def test_standardize_transform_overflows(huge, kind):
    def named(X):
        return xr.DataArray(X, dims=("sample", "feature"), coords={"feature": NAMES[:2]})

    pre = Preprocessor(["standardize"]).fit(named(huge[:, :2] * [1.0, 1e-10]))  # scale of x2 ~1e-10
    X = huge[:, :2] * [1.0, 1e300]
    if kind == "dataarray":
        X = named(X)
    with pytest.raises(NumericalOverflowError, match=r"standardize \(transform\): the standardised values of "
                       r"feature 'x2' overflowed to inf \(values up to \d\.\d+e\+300"):
        out = pre.transform(as_input(X, kind) if kind == "dask" else X)
        np.asarray(out)


def test_pca_transform_overflows_in_float32():
    rng = np.random.default_rng(10)
    pre = Preprocessor([{"name": "pca", "n_components": 1}]).fit(rng.standard_normal((100, 4)))
    # finite float32 values whose projection on PC1 is 3e38 * sum(|loadings|) > 3.4e38
    X = np.tile(np.sign(pre.steps[0].components_[0]) * 3e38, (10, 1)).astype(np.float32)
    with pytest.raises(NumericalOverflowError, match=r"pca \(transform\): the projections on PC1 overflowed to inf "
                       r".*or pass float64 data"):
        pre.transform(da.from_array(X, chunks=(5, -1))).compute()


def test_transform_of_ordinary_data_is_unchanged(huge):
    X = huge[:, :2].copy()
    X[::3, 0] = np.nan
    pre = Preprocessor(["standardize", {"name": "pca", "n_components": 1}]).fit(X)
    out = pre.transform(np.vstack([X, np.full((4, 2), np.nan)]))
    assert np.isfinite(out).all()
