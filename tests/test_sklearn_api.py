"""GaussianMixture is a well-behaved scikit-learn estimator, and saves without pickle."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from packaging.version import Version
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import gmm_stream
from gmm_stream import GaussianMixture
from gmm_stream.exceptions import ModelFormatError
from pipeline import OutputExistsError, load_model, save_model

from gmm_testing import COVARIANCE_TYPES, add_missing, make_mixture


# Every check passes, check_sample_weight_equivalence_on_dense_data included: the seeded
# initialisation is a function of the weighted rows (gmm_stream/_init.py), so integer
# weights and repeated rows give the same start and the same fit. The other covariance
# types, and the array-API checks of an estimator that supports them, are in
# test_sklearn_conformance.py.
@parametrize_with_checks(
    [GaussianMixture(), GaussianMixture(covariance_type="diag", n_components=2)],
    # run only with SCIPY_ARRAY_API=1: as scikit-learn's, init_params='kmeans' is refused
    # under array_api_dispatch (scikit-learn runs this check with 'random_from_data')
    expected_failed_checks=lambda est: {"check_array_api_input": "init_params='kmeans' under array_api_dispatch"},
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def X():
    X, *_ = make_mixture(300, 3, 3, seed=70, separation=3.0, shift=50.0)
    return X


def test_pipeline_standard_scaler(X):
    pipe = make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0)).fit(X)
    Xs = StandardScaler().fit_transform(X)
    gm = GaussianMixture(3, random_state=0).fit(Xs)
    np.testing.assert_array_equal(pipe.predict(X), gm.predict(Xs))
    np.testing.assert_allclose(pipe.score_samples(X), gm.score_samples(Xs), rtol=1e-10)


def test_get_set_params_and_clone():
    gm = GaussianMixture(4, covariance_type="tied", reg_covar=1e-4, random_state=3)
    params = gm.get_params()
    assert params["n_components"] == 4 and params["covariance_type"] == "tied"
    assert params["reg_covar"] == 1e-4 and params["random_state"] == 3
    gm.set_params(n_components=2, tol=1e-5)
    assert gm.n_components == 2 and gm.tol == 1e-5
    c = clone(gm)
    assert c is not gm and c.get_params() == gm.get_params()
    assert not hasattr(c, "means_")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=5 on purpose
def test_fit_predict_equals_fit_then_predict(X):
    a = GaussianMixture(3, random_state=0, max_iter=5).fit_predict(X)
    b = GaussianMixture(3, random_state=0, max_iter=5).fit(X).predict(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample(X, covariance_type):
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    Xs, ys = gm.sample(20_000)
    assert Xs.shape == (20_000, 3) and ys.shape == (20_000,)
    counts = np.bincount(ys, minlength=3) / 20_000
    np.testing.assert_allclose(counts, gm.weights_, atol=0.02)  # ~5 standard errors
    for k in range(3):
        np.testing.assert_allclose(Xs[ys == k].mean(axis=0), gm.means_[k], atol=0.15)


# ------------------------------------------------------------------------ save / load

ATTRIBUTES = (
    "weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
    "converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_", "n_empty_rows_",
)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_save_load_round_trip(tmp_path, X, covariance_type):
    Xm = add_missing(X, 0.1, seed=71)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0, reg_covar=1e-5).fit(Xm)
    path = tmp_path / "m"
    save_model(gm, path)
    loaded = load_model(path)
    assert isinstance(loaded, GaussianMixture)
    assert loaded.get_params() == gm.get_params()
    for name in ATTRIBUTES:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(gm, name), err_msg=name)
    np.testing.assert_array_equal(loaded.predict(Xm), gm.predict(Xm))
    np.testing.assert_array_equal(loaded.predict_proba(Xm), gm.predict_proba(Xm))
    np.testing.assert_array_equal(loaded.score_samples(Xm), gm.score_samples(Xm))

    # No pickle anywhere: JSON metadata and an npz that loads with allow_pickle=False.
    files = sorted(p.name for p in path.iterdir())
    assert files == ["arrays.npz", "model.json"], files
    json.loads((path / "model.json").read_text())
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        for key in npz.files:
            assert npz[key].dtype != object
    with zipfile.ZipFile(path / "arrays.npz") as zf:
        for name in zf.namelist():
            assert b"\x80\x04\x95" not in zf.read(name)[:64], name  # no pickle protocol 4 header


def test_save_load_keeps_feature_names(tmp_path, X):
    import pandas as pd

    df = pd.DataFrame(X, columns=["a", "b", "c"])
    gm = GaussianMixture(2, random_state=0).fit(df)
    save_model(gm, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_array_equal(loaded.predict(df), gm.predict(df))


def test_save_refuses_to_overwrite(tmp_path, X):
    gm = GaussianMixture(2, random_state=0).fit(X)
    save_model(gm, tmp_path / "m")
    before = (tmp_path / "m" / "arrays.npz").read_bytes()
    other = GaussianMixture(3, random_state=1).fit(X)
    with pytest.raises(OutputExistsError, match=r"exists; pass overwrite=True") as info:
        save_model(other, tmp_path / "m")
    assert isinstance(info.value, FileExistsError)  # the builtin a caller would catch
    assert (tmp_path / "m" / "arrays.npz").read_bytes() == before
    save_model(other, tmp_path / "m", overwrite=True)
    assert load_model(tmp_path / "m").n_components == 3


def test_save_unfitted_model_fails(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        save_model(GaussianMixture(2), tmp_path / "m")


def test_load_model_rejects_bad_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="missing is not a gmm-stream model directory: it does not exist"):
        load_model(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.json").write_text("{}")
    with pytest.raises(ModelFormatError):
        load_model(bad)


def test_version_has_one_source_the_installed_distribution_reports():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "version" not in declared and "version" in declared["dynamic"]  # read from gmm_stream/_version.py
    assert gmm_stream.__version__ == importlib.metadata.version("gmm-stream")
    assert str(Version(gmm_stream.__version__)) == gmm_stream.__version__  # parses, already normalised

