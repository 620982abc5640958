"""Saved models, checkpoints and preprocessings are checked on load.

Each test saves a real object, damages one file the way a crafted or corrupted directory
would (JSON edits, arrays rewritten with ``np.savez``, symbolic links, directories and
FIFOs in place of files) and asserts a ``ModelFormatError`` (``PreprocessingFormatError``
for a preprocessing) whose message names the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from gmm_stream import GaussianMixture, _state
from gmm_stream.exceptions import GMMStreamError, ModelFormatError
from pipeline import load_model, load_state, model_files, save_model, save_state
from pipeline.exceptions import PreprocessingFormatError, PreprocessingNotFoundError
from pipeline.preprocess import PCA, STEPS, Preprocessor, Standardize

from gmm_testing import COVARIANCE_TYPES, make_mixture

K, D = 3, 2


@pytest.fixture(scope="module")
def X():
    X, *_ = make_mixture(300, D, K, seed=21, separation=3.0)
    return X


@pytest.fixture(scope="module")
def fitted(X):
    return {ct: GaussianMixture(K, covariance_type=ct, random_state=0).fit(X) for ct in COVARIANCE_TYPES}


@pytest.fixture(params=COVARIANCE_TYPES)
def model_dir(request, fitted, tmp_path):
    path = tmp_path / "model"
    save_model(fitted[request.param], path)
    return path


@pytest.fixture
def full_model_dir(fitted, tmp_path):
    path = tmp_path / "model"
    save_model(fitted["full"], path)
    return path


def edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def rewrite_npz(path: Path, **changes) -> None:
    """Rewrite the archive with some arrays replaced (``None`` removes one)."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def npz_arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def refused(load, path, *fragments, error=ModelFormatError) -> str:
    """``load(path)`` raises ``error`` whose message holds every fragment; returns the message."""
    with pytest.raises(error) as info:
        load(path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def covariance_type_of(path: Path) -> str:
    return json.loads((path / "model.json").read_text())["params"]["covariance_type"]


# ------------------------------------------------------------------------- good models


def test_round_trip_of_every_covariance_type(model_dir, fitted, X):
    model = load_model(model_dir)
    reference = fitted[model.covariance_type]
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(model, name), getattr(reference, name))
    np.testing.assert_array_equal(model.predict(X), reference.predict(X))


def test_model_directory_may_be_reached_through_a_symbolic_link(full_model_dir, tmp_path, X, fitted):
    link = tmp_path / "current"
    link.symlink_to(full_model_dir, target_is_directory=True)
    np.testing.assert_array_equal(load_model(link).predict(X), fitted["full"].predict(X))


def test_unfitted_start_with_scikit_learn_initial_weights_still_loads(tmp_path, X):
    # k-means++ initial weights sum to K/n, as in scikit-learn; max_iter=0 keeps them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(K, init_params="k-means++", max_iter=0, random_state=0).fit(X)
    save_model(gm, tmp_path / "m")
    np.testing.assert_array_equal(load_model(tmp_path / "m").weights_, gm.weights_)


def test_the_parameter_checks_cover_every_estimator_parameter():
    assert set(_state.ESTIMATOR_PARAMS) == set(GaussianMixture().get_params())


def test_errors_are_value_errors_of_gmm_stream(full_model_dir):
    (full_model_dir / "model.json").write_text("{}")
    with pytest.raises(ValueError) as info:
        load_model(full_model_dir)
    assert isinstance(info.value, GMMStreamError) and isinstance(info.value, ModelFormatError)


# ------------------------------------------------------------------------- model.json


@pytest.mark.parametrize("key", ["n_iter", "lower_bounds", "params"])
def test_missing_key(full_model_dir, key):
    edit_json(full_model_dir / "model.json", lambda m: m.pop(key))
    refused(load_model, full_model_dir, "model.json", f"missing key(s) ['{key}']")


@pytest.mark.parametrize("field, value, expected", [
    ("n_components", "3", "params.n_components must be an integer, got string '3'"),
    ("n_components", 0, "params.n_components must be >= 1"),
    ("n_components", True, "params.n_components must be an integer, got boolean true"),
    ("covariance_type", "banded", "params.covariance_type must be one of"),
    ("reg_covar", -1.0, "params.reg_covar must be >= 0.0"),
    ("tol", None, "params.tol must be a number, got null"),
    ("warm_start", "no", "params.warm_start must be true or false"),
    ("means_init", [[1.0, 2.0]], "params.means_init has shape (1, 2), expected (3, 2)"),
    ("means_init", [[1.0, "a"]] * 3, "params.means_init must be a rectangular (nested) array of numbers"),
    ("random_state", -1, "params.random_state must be >= 0"),
])
def test_parameter_of_the_wrong_type_or_range(full_model_dir, field, value, expected):
    edit_json(full_model_dir / "model.json", lambda m: m["params"].update({field: value}))
    refused(load_model, full_model_dir, "model.json", expected)


@pytest.mark.parametrize("field, value, expected", [
    ("converged", "yes", "converged must be true or false"),
    ("n_features_in", 3.0, "n_features_in must be an integer, got number 3.0"),
    ("lower_bounds", ["-1.5"], "lower_bounds[0] must be a number"),
    ("lower_bound", float("nan"), "lower_bound must be a finite number, got nan"),
    ("feature_names_in", ["a", "b", "c"], "feature_names_in has 3 names, expected n_features_in = 2"),
    ("created", "yesterday", "created must be an ISO 8601 date and time"),
    ("estimator", "KMeans", "estimator must be one of ['GaussianMixture']"),
])
def test_value_of_the_wrong_type(full_model_dir, field, value, expected):
    edit_json(full_model_dir / "model.json", lambda m: m.update({field: value}))
    refused(load_model, full_model_dir, "model.json", expected)


def test_deep_nesting(full_model_dir):
    text = (full_model_dir / "model.json").read_text()
    deep = "[" * 10_000 + "]" * 10_000
    (full_model_dir / "model.json").write_text(text.replace('"means_init": null', f'"means_init": {deep}'))
    refused(load_model, full_model_dir, "model.json", "nested more than 32 levels deep")


def test_huge_file_is_refused_before_parsing(full_model_dir):
    with open(full_model_dir / "model.json", "a") as fh:
        fh.write(" " * (model_files.MAX_JSON_BYTES + 1))
    refused(load_model, full_model_dir, "model.json", "bytes", "at most", "not parsed")


def test_duplicate_key(full_model_dir):
    text = (full_model_dir / "model.json").read_text()
    (full_model_dir / "model.json").write_text(text.replace('"n_iter":', '"n_iter": 1, "n_iter":', 1))
    refused(load_model, full_model_dir, "model.json", "has the key 'n_iter' twice")


@pytest.mark.parametrize("text, expected", [("{not json", "is not valid JSON"), ("[1, 2]", "must hold a JSON object"),
                                            ("\udcff".encode("utf-8", "surrogateescape"), "is not UTF-8")])
def test_not_a_json_object(full_model_dir, text, expected):
    path = full_model_dir / "model.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(load_model, full_model_dir, "model.json", expected)


# ------------------------------------------------------------------------- arrays.npz


def test_wrong_shape_names_the_dimensions(model_dir):
    means = npz_arrays(model_dir / "arrays.npz")["means"]
    rewrite_npz(model_dir / "arrays.npz", means=means[:2])
    refused(load_model, model_dir, "model/arrays.npz: means has shape (2, 2), expected (3, 2) "
                                   "(n_components=3, n_features=2)")


def test_wrong_covariance_shape_names_the_covariance_type(model_dir):
    ct = covariance_type_of(model_dir)
    rewrite_npz(model_dir / "arrays.npz", covariances=np.ones((K, D, D + 1)))
    refused(load_model, model_dir, "arrays.npz: covariances has shape (3, 2, 3)", f"covariance_type={ct!r}")


def test_integer_dtype(model_dir):
    rewrite_npz(model_dir / "arrays.npz", weights=np.array([1, 0, 0]))
    refused(load_model, model_dir, "arrays.npz: weights has dtype int64, expected float32 or float64")


def test_object_dtype_is_never_unpickled(model_dir):
    arrays = npz_arrays(model_dir / "arrays.npz")
    arrays["means"] = arrays["means"].astype(object)
    np.savez(model_dir / "arrays.npz", **arrays)  # np.savez pickles object arrays
    refused(load_model, model_dir, "arrays.npz: means has dtype object")


def test_float32_arrays_are_accepted(model_dir, X):
    reference = load_model(model_dir)
    rewrite_npz(model_dir / "arrays.npz", means=reference.means_.astype(np.float32))
    assert load_model(model_dir).means_.dtype == np.float64


@pytest.mark.parametrize("name", ["weights", "means", "covariances", "precisions_cholesky"])
def test_nan(model_dir, name):
    a = npz_arrays(model_dir / "arrays.npz")[name].copy()
    a.flat[0] = np.nan
    rewrite_npz(model_dir / "arrays.npz", **{name: a})
    refused(load_model, model_dir, f"arrays.npz: {name} contains NaN")


def test_infinity(model_dir):
    a = npz_arrays(model_dir / "arrays.npz")["means"].copy()
    a[1, 1] = -np.inf
    rewrite_npz(model_dir / "arrays.npz", means=a)
    refused(load_model, model_dir, "arrays.npz: means contains an infinite value")


def test_weights_not_summing_to_one(model_dir):
    w = npz_arrays(model_dir / "arrays.npz")["weights"]
    rewrite_npz(model_dir / "arrays.npz", weights=w * 1.01)
    refused(load_model, model_dir, "arrays.npz: weights sum to", "expected 1")


def test_negative_weight(model_dir):
    rewrite_npz(model_dir / "arrays.npz", weights=np.array([1.2, -0.2, 0.0]))
    refused(load_model, model_dir, "arrays.npz: weights has value(s) < 0 at [1]")


@pytest.mark.parametrize("ct", ["full", "tied"])
def test_non_symmetric_covariance(fitted, tmp_path, ct):
    model_dir = tmp_path / "model"
    save_model(fitted[ct], model_dir)
    cov = npz_arrays(model_dir / "arrays.npz")["covariances"].copy()
    (cov[0] if ct == "full" else cov)[0, 1] += 0.5
    rewrite_npz(model_dir / "arrays.npz", covariances=cov)
    field = "covariances[0]" if ct == "full" else "covariances"
    refused(load_model, model_dir, f"arrays.npz: {field} is not symmetric")


def test_covariance_not_positive_definite(model_dir):
    ct = covariance_type_of(model_dir)
    cov = npz_arrays(model_dir / "arrays.npz")["covariances"].copy()
    if ct == "full":
        cov[1] = [[1.0, 2.0], [2.0, 1.0]]
        expected = "covariances[1] is not positive definite"
    elif ct == "tied":
        cov = np.array([[1.0, 2.0], [2.0, 1.0]])
        expected = "covariances is not positive definite"
    else:
        cov.flat[0] = -1.0
        expected = "covariances has value(s) <= 0"
    rewrite_npz(model_dir / "arrays.npz", covariances=cov)
    refused(load_model, model_dir, f"arrays.npz: {expected}")


def test_precisions_cholesky_inconsistent_with_the_covariances(model_dir):
    chol = npz_arrays(model_dir / "arrays.npz")["precisions_cholesky"]
    rewrite_npz(model_dir / "arrays.npz", precisions_cholesky=chol * 2.0)
    refused(load_model, model_dir, "arrays.npz: precisions_cholesky", "does not match the covariances")


def test_precisions_cholesky_not_triangular(tmp_path, fitted):
    save_model(fitted["tied"], tmp_path / "model")
    chol = npz_arrays(tmp_path / "model" / "arrays.npz")["precisions_cholesky"].copy()
    chol[1, 0] = chol[0, 1] = 0.1
    rewrite_npz(tmp_path / "model" / "arrays.npz", precisions_cholesky=chol)
    refused(load_model, tmp_path / "model", "arrays.npz: precisions_cholesky is not triangular")


def test_missing_and_unknown_arrays(full_model_dir):
    rewrite_npz(full_model_dir / "arrays.npz", covariances=None, extra=np.zeros(3))
    refused(load_model, full_model_dir, "arrays.npz", "unknown array(s) ['extra']", "no array(s) ['covariances']")


def test_not_an_npz(full_model_dir):
    (full_model_dir / "arrays.npz").write_bytes(b"\x93NUMPY not really")
    refused(load_model, full_model_dir, "arrays.npz is not an .npz archive")


def test_damaged_npz(full_model_dir):
    data = (full_model_dir / "arrays.npz").read_bytes()
    (full_model_dir / "arrays.npz").write_bytes(data[: len(data) // 2])
    refused(load_model, full_model_dir, "arrays.npz")


# ----------------------------------------------------------------------- regular files only


def test_symlinked_arrays_are_refused(full_model_dir, tmp_path):
    real = tmp_path / "elsewhere.npz"
    os.replace(full_model_dir / "arrays.npz", real)
    (full_model_dir / "arrays.npz").symlink_to(real)
    refused(load_model, full_model_dir,
            "model/arrays.npz is a symbolic link; a model directory holds regular files only")


def test_symlinked_json_is_refused(full_model_dir, tmp_path):
    real = tmp_path / "elsewhere.json"
    os.replace(full_model_dir / "model.json", real)
    (full_model_dir / "model.json").symlink_to(real)
    refused(load_model, full_model_dir, "model/model.json is a symbolic link")


def test_json_that_is_a_directory(full_model_dir):
    (full_model_dir / "model.json").unlink()
    (full_model_dir / "model.json").mkdir()
    refused(load_model, full_model_dir, "model/model.json is a directory, not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_without_blocking(full_model_dir):
    (full_model_dir / "arrays.npz").unlink()
    os.mkfifo(full_model_dir / "arrays.npz")
    refused(load_model, full_model_dir, "model/arrays.npz is a FIFO (named pipe), not a regular file")


def test_missing_file(full_model_dir):
    (full_model_dir / "arrays.npz").unlink()
    refused(load_model, full_model_dir, "is not a gmm-stream model directory: arrays.npz is missing")


def test_missing_directory(tmp_path):
    refused(load_model, tmp_path / "nowhere", "nowhere is not a gmm-stream model directory: it does not exist")


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def saved_states(X, tmp_path_factory):
    """Checkpoints written by the callback after iteration 2 of the first and of the second
    initialisation (the latter has a best), and the states as they were then."""
    root, saved = tmp_path_factory.mktemp("states"), []

    def callback(state):
        if state.n_iter == 2:
            save_state(state, root / f"init{state.init}")
            saved.append((root / f"init{state.init}", state.init, list(state.lower_bounds), state.params.means.copy(),
                          state.stats.S2.copy(), state.best is None))

    gm = GaussianMixture(K, n_init=2, max_iter=5, tol=0.0, random_state=1, init_params="random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X, callback=callback)
    return saved


@pytest.fixture
def state_dir(saved_states, tmp_path):
    shutil.copytree(saved_states[1][0], tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_checkpoint_round_trip(saved_states):
    for path, init, lower_bounds, means, s2, no_best in saved_states:
        loaded = load_state(path)
        assert (loaded.init, loaded.n_iter, loaded.lower_bounds) == (init, 2, lower_bounds)
        np.testing.assert_array_equal(loaded.params.means, means)
        np.testing.assert_array_equal(loaded.stats.S2, s2)
        assert (loaded.best is None) == no_best


def test_checkpoint_wrong_shape(state_dir):
    means = npz_arrays(state_dir / "state.npz")["best_means"]
    rewrite_npz(state_dir / "state.npz", best_means=means[:, :1])
    refused(load_state, state_dir, "ckpt/state.npz: best_means has shape (3, 1), expected (3, 2)")


def test_checkpoint_nan_statistics(state_dir):
    s2 = npz_arrays(state_dir / "state.npz")["stats_S2"].copy()
    s2[0, 0, 0] = np.nan
    rewrite_npz(state_dir / "state.npz", stats_S2=s2)
    refused(load_state, state_dir, "state.npz: stats_S2 contains NaN")


def test_checkpoint_statistics_all_or_none(state_dir):
    rewrite_npz(state_dir / "state.npz", stats_N=None)
    refused(load_state, state_dir, "state.npz", "no array(s) ['stats_N']")


def test_checkpoint_non_pd_covariance(state_dir):
    cov = npz_arrays(state_dir / "state.npz")["params_covariances"].copy()
    cov[2] = -np.eye(D)
    rewrite_npz(state_dir / "state.npz", params_covariances=cov)
    refused(load_state, state_dir, "state.npz: params_covariances[2] is not positive definite")


def test_checkpoint_symlink(state_dir, tmp_path):
    real = tmp_path / "elsewhere.npz"
    os.replace(state_dir / "state.npz", real)
    (state_dir / "state.npz").symlink_to(real)
    refused(load_state, state_dir, "ckpt/state.npz is a symbolic link; a checkpoint directory holds regular files only")


# --------------------------------------------------------------------------- preprocessing


@pytest.fixture
def pre_dir(tmp_path, X):
    data = np.abs(np.random.default_rng(3).standard_normal((200, 4))) * [1, 2, 3, 4]
    pre = Preprocessor(["log1p", "standardize", {"name": "pca", "n_components": 2}]).fit(data)
    pre.save(tmp_path / "model")
    return tmp_path / "model"


def pre_refused(path, *fragments) -> str:
    return refused(Preprocessor.load, path, *fragments, error=PreprocessingFormatError)


def pre_npz(pre_dir: Path) -> Path:
    """The arrays file that ``preprocessing.json`` names."""
    return pre_dir / json.loads((pre_dir / "preprocessing.json").read_text())["arrays_file"]


def record_digest(pre_dir: Path) -> None:
    """Record the arrays file's present SHA-256 in ``preprocessing.json``, as a crafted directory would."""
    digest = hashlib.sha256(pre_npz(pre_dir).read_bytes()).hexdigest()
    edit_json(pre_dir / "preprocessing.json", lambda h: h.update(arrays_sha256=digest))


def rewrite_pre_npz(pre_dir: Path, **changes) -> str:
    """Rewrite the arrays of a preprocessing (recording their digest); returns ``model/<arrays file>``."""
    rewrite_npz(pre_npz(pre_dir), **changes)
    record_digest(pre_dir)
    return f"model/{pre_npz(pre_dir).name}"


def test_preprocessing_round_trip(pre_dir):
    data = np.abs(np.random.default_rng(4).standard_normal((20, 4)))
    loaded = Preprocessor.load(pre_dir)
    assert loaded.get_config()[2] == {"name": "pca", "n_components": 2, "n_oversamples": 10, "n_power_iter": 4,
                                      "random_state": 0}
    assert loaded.transform(data).shape == (20, 2)


def test_preprocessing_layout_covers_every_fitted_array():
    steps = [STEPS["log1p"](), Standardize(), PCA(2)]
    from pipeline.preprocess import _saved_layout

    assert {k.split(".", 1)[1] for k in _saved_layout(steps, 4)} == {
        f"{s.name}.{a}" for s in steps for a in s._fitted_arrays
    }


def test_preprocessing_deep_nesting(pre_dir):
    (pre_dir / "preprocessing.json").write_text('{"format": ' + "[" * 10_000 + "]" * 10_000 + "}")
    pre_refused(pre_dir, "preprocessing.json", "nested more than 32 levels deep")


def test_preprocessing_zero_scale(pre_dir):
    scale = npz_arrays(pre_npz(pre_dir))["1.standardize.scale"].copy()
    scale[3] = 0.0
    name = rewrite_pre_npz(pre_dir, **{"1.standardize.scale": scale})
    pre_refused(pre_dir, f"{name}: 1.standardize.scale has value(s) <= 0 at [3]")


def test_preprocessing_wrong_shape(pre_dir):
    name = rewrite_pre_npz(pre_dir, **{"2.pca.components": np.eye(3, 4)})
    pre_refused(pre_dir, f"{name}: 2.pca.components has shape (3, 4), expected (2, 4) "
                         "(n_features_in=4, pca n_components=2)")


def test_preprocessing_nan(pre_dir):
    mean = npz_arrays(pre_npz(pre_dir))["1.standardize.mean"].copy()
    mean[0] = np.nan
    name = rewrite_pre_npz(pre_dir, **{"1.standardize.mean": mean})
    pre_refused(pre_dir, f"{name}: 1.standardize.mean contains NaN")


def test_preprocessing_axes_not_orthonormal(pre_dir):
    components = npz_arrays(pre_npz(pre_dir))["2.pca.components"]
    name = rewrite_pre_npz(pre_dir, **{"2.pca.components": components * 2})
    pre_refused(pre_dir, f"{name}: 2.pca.components are not orthonormal")


def test_preprocessing_object_array(pre_dir):
    arrays = npz_arrays(pre_npz(pre_dir))
    arrays["1.standardize.var"] = arrays["1.standardize.var"].astype(object)
    np.savez(pre_npz(pre_dir), **arrays)
    record_digest(pre_dir)
    pre_refused(pre_dir, f"{pre_npz(pre_dir).name}: 1.standardize.var has dtype object")


def test_preprocessing_unknown_array(pre_dir):
    name = rewrite_pre_npz(pre_dir, **{"3.whiten.scale": np.ones(2)})
    pre_refused(pre_dir, name, "unknown array(s) ['3.whiten.scale']")


def test_preprocessing_arrays_of_another_save_are_refused(pre_dir):
    """Arrays that are not the ones ``preprocessing.json`` was written with: damaged or swapped."""
    arrays = pre_npz(pre_dir)
    rewrite_npz(arrays, **{"1.standardize.mean": npz_arrays(arrays)["1.standardize.mean"] + 1.0})
    pre_refused(pre_dir, f"model/{arrays.name} is not the file preprocessing.json was written with: its SHA-256 is",
                "damaged or replaced", "save it again")


def test_preprocessing_arrays_file_must_lie_beside_the_json(pre_dir):
    edit_json(pre_dir / "preprocessing.json", lambda h: h.update(arrays_file="../model.npz"))
    pre_refused(pre_dir, "preprocessing.json: arrays_file must be a file name like "
                         "'preprocessing-0123456789abcdef.npz', got '../model.npz'")


def test_preprocessing_symlink(pre_dir, tmp_path):
    real, arrays = tmp_path / "elsewhere.npz", pre_npz(pre_dir)
    os.replace(arrays, real)
    arrays.symlink_to(real)
    pre_refused(pre_dir, f"model/{arrays.name} is a symbolic link")


def test_preprocessing_json_is_a_directory(pre_dir):
    (pre_dir / "preprocessing.json").unlink()
    (pre_dir / "preprocessing.json").mkdir()
    pre_refused(pre_dir, "model/preprocessing.json is a directory, not a regular file")


def test_preprocessing_missing_npz(pre_dir):
    arrays = pre_npz(pre_dir)
    arrays.unlink()
    pre_refused(pre_dir, f"{arrays.name} is missing")


def test_preprocessing_not_found_is_still_a_file_not_found_error(tmp_path):
    with pytest.raises(PreprocessingNotFoundError):
        Preprocessor.load(tmp_path)


def test_a_model_fitted_with_verbose_true_round_trips(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(200, 2))
    gm = GaussianMixture(2, random_state=0, verbose=True).fit(X)
    save_model(gm, tmp_path / "m")
    assert load_model(tmp_path / "m").verbose is True


# ------------------------------------------------------ damaged JSON of each saved kind

#: (file, edit, fragments the error must name) for each kind of saved directory.
JSON_DAMAGE = {
    "model": {
        "unknown_parameter": ("model.json", lambda m: m["params"].update(n_clusters=3),
            ("model/model.json", "params has unknown key(s) ['n_clusters']")),
        "unknown_top_level_key": ("model.json", lambda m: m.update(pickle="gASV"),
            ("model.json", "unknown key(s) ['pickle']")),
        "string_format_version": ("model.json", lambda m: m.update(format_version="1"),
            ("model.json", "format_version must be an integer, got string '1'")),
        "newer_format_version_says_upgrade": ("model.json", lambda m: m.update(format_version=2),
            ("model.json", "format_version", "written by a newer gmm-stream", "upgrade")),
        "other_format": ("model.json", lambda m: m.update(format="sklearn-pickle"),
            ("model.json", "format 'sklearn-pickle'")),
        "missing_parameter": ("model.json", lambda m: m["params"].pop("covariance_type"),
            ("model.json", "params has missing key(s) ['covariance_type']")),
        "history_inconsistent_with_n_iter": ("model.json", lambda m: m.update(n_iter=m["n_iter"] + 1),
            ("model.json", "lower_bounds has", "one per iteration")),
        "nesting_deeper_than_the_limit_but_parseable": (
            "model.json", lambda m: m["params"].update(means_init=json.loads("[" * 40 + "]" * 40)),
            ("model.json", "nested more than 32 levels deep")),
    },
    "checkpoint": {
        "unknown_key": ("state.json", lambda m: m["best"].update(params="inline"),
            ("ckpt/state.json", "best has unknown key(s) ['params']")),
        "string_format_version": ("state.json", lambda m: m.update(format_version="1"),
            ("state.json", "format_version must be an integer")),
        "history_inconsistent": ("state.json", lambda m: m.update(n_iter=7),
            ("state.json", "lower_bounds has 2 values, expected one per iteration (n_iter = 7)")),
    },
    "preprocessing": {
        "unknown_step_parameter": ("preprocessing.json", lambda h: h["steps"][2].update(whiten=True),
            ("model/preprocessing.json", "steps[2] has unknown key(s) ['whiten']")),
        "missing_step_parameter": ("preprocessing.json", lambda h: h["steps"][2].pop("n_components"),
            ("preprocessing.json", "steps[2] has missing key(s) ['n_components']")),
        "unknown_step": ("preprocessing.json", lambda h: h["steps"][0].update(name="sqrt"),
            ("preprocessing.json", "steps[0].name must be one of")),
        "steps_out_of_order": ("preprocessing.json", lambda h: h["steps"].reverse(),
            ("preprocessing.json", "steps are not a valid preprocessing", "order")),
        "pca_wider_than_the_features": ("preprocessing.json", lambda h: h["steps"][2].update(n_components=9),
            ("preprocessing.json", "steps[2].n_components is 9, more than n_features_in = 4")),
        "string_format_version": ("preprocessing.json", lambda h: h.update(format_version="1"),
            ("preprocessing.json", "format_version must be an integer")),
        "newer_format_version": ("preprocessing.json", lambda h: h.update(format_version=5),
            ("preprocessing.json", "written by a newer gmm-stream", "upgrade")),
        "feature_names_of_the_wrong_length": ("preprocessing.json", lambda h: h.update(feature_names_in=["a"]),
            ("preprocessing.json", "feature_names_in has 1 names, expected n_features_in = 4")),
    },
}
LOADERS = {"model": ("full_model_dir", load_model, ModelFormatError),
           "checkpoint": ("state_dir", load_state, ModelFormatError),
           "preprocessing": ("pre_dir", Preprocessor.load, PreprocessingFormatError)}


@pytest.mark.parametrize(("kind", "case"), [(k, c) for k, cases in JSON_DAMAGE.items() for c in cases])
def test_damaged_json_is_refused_naming_the_file_and_field(request, kind, case):
    fixture, load, error = LOADERS[kind]
    directory = request.getfixturevalue(fixture)
    file, edit, fragments = JSON_DAMAGE[kind][case]
    edit_json(directory / file, edit)
    refused(load, directory, *fragments, error=error)
