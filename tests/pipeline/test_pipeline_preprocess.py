"""Preprocessing fitted out of core equals the same steps in memory (NumPy / scikit-learn).

Tolerances: standardisation statistics and transforms agree with StandardScaler to
1e-12 (relative) -- only the summation order differs; exact PCA (``n_components +
n_oversamples >= n_features``) agrees with scikit-learn's full-SVD PCA to 1e-9 on
components and 1e-10 (relative) on explained variances; randomised PCA on a decaying
spectrum to 1e-8. A saved and reloaded preprocessing gives bit-identical transforms.
"""

from __future__ import annotations

import json
import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA as SkPCA
from sklearn.preprocessing import StandardScaler

from pipeline import preprocess
from pipeline.exceptions import (
    ConstantFeatureWarning,
    OutputExistsError,
    PreprocessingError,
    PreprocessingFormatError,
    PreprocessingNotFoundError,
)
from pipeline.preprocess import PCA, Preprocessor, Standardize, column_moments
from pipeline.sources import ParquetSource

from pipeline_testing import ParquetFileCase, make_matrix

RTOL = 1e-12


def chunked(X: np.ndarray, rows: int = 37) -> da.Array:
    return da.from_array(X, chunks=(rows, -1))


@pytest.fixture
def X():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((600, 6)) * [1.0, 5.0, 0.1, 2.0, 30.0, 1.0] + [0, 100, -3, 0, 1e4, 7]
    X[rng.random(X.shape) < 0.05] = np.nan
    return X


def decaying(n=800, d=40, seed=12):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * (0.7 ** np.arange(d)) * 10 + rng.standard_normal(d)


# --------------------------------------------------------------------------- moments


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 50), seed=st.integers(0, 2**16))
def test_column_moments_equal_numpy_for_any_chunking(rows, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((60, 3)) * 10 + 5
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:, 2] = np.nan  # a feature with no observed value
    count, mean, var = column_moments(chunked(X, rows))
    np.testing.assert_array_equal(count, (~np.isnan(X)).sum(axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of the all-NaN column
        np.testing.assert_allclose(mean, np.nanmean(X, axis=0), rtol=1e-12)
        np.testing.assert_allclose(var, np.nanvar(X, axis=0), rtol=1e-11)


# --------------------------------------------------------------------------- standardize


def test_standardize_equals_standard_scaler_with_nan(X):
    pre = Preprocessor(["standardize"]).fit(chunked(X))
    ref = StandardScaler().fit(X)  # ignores NaN in fit, keeps them in transform
    step = pre.steps[0]
    np.testing.assert_allclose(step.mean_, ref.mean_, rtol=RTOL)
    np.testing.assert_allclose(step.scale_, ref.scale_, rtol=RTOL)
    np.testing.assert_array_equal(step.n_samples_seen_, ref.n_samples_seen_)
    out = pre.transform(chunked(X)).compute()
    np.testing.assert_allclose(out, ref.transform(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(X))


def test_log1p_then_standardize_equals_numpy(X):
    positive = np.abs(X)
    pre = Preprocessor(["log1p", "standardize"]).fit(chunked(positive))
    ref = StandardScaler().fit(np.log1p(positive))
    np.testing.assert_allclose(pre.transform(positive), ref.transform(np.log1p(positive)), rtol=1e-10, atol=1e-12)


def test_log1p_refuses_values_at_or_below_minus_one(X):
    pre = Preprocessor(["log1p"]).fit(chunked(X))
    with pytest.raises(PreprocessingError, match="log1p needs values > -1"):
        pre.transform(chunked(X)).compute()


def test_constant_feature_warns_and_keeps_scale_one(X):
    X = X.copy()
    X[:, 2] = 4.2
    with pytest.warns(ConstantFeatureWarning, match=r"features \[2\] are constant"):
        pre = Preprocessor(["standardize"]).fit(chunked(X))
    ref = StandardScaler().fit(X)
    assert pre.steps[0].scale_[2] == 1.0 == ref.scale_[2]
    out = pre.transform(chunked(X)).compute()
    np.testing.assert_allclose(out[:, 2], 0.0, atol=1e-12)
    assert np.isfinite(out[~np.isnan(X)]).all()


def test_all_nan_feature_warns(X):
    X = X.copy()
    X[:, 0] = np.nan
    with pytest.warns(ConstantFeatureWarning, match="no observed value"):
        pre = Preprocessor(["standardize"]).fit(chunked(X))
    assert pre.steps[0].mean_[0] == 0.0 and pre.steps[0].scale_[0] == 1.0


def test_float32_stays_float32(X):
    X32 = np.nan_to_num(X).astype(np.float32)
    pre = Preprocessor(["standardize"]).fit(chunked(X32))
    out = pre.transform(chunked(X32))
    assert out.dtype == np.float32 and out.compute().dtype == np.float32


# --------------------------------------------------------------------------- PCA


def test_exact_pca_equals_sklearn():
    A = decaying(d=8)
    pre = Preprocessor([{"name": "pca", "n_components": 3}]).fit(chunked(A))  # 3 + 10 >= 8: exact
    ref = SkPCA(3, svd_solver="full").fit(A)
    step = pre.steps[0]
    np.testing.assert_allclose(step.components_, ref.components_, atol=1e-9)
    np.testing.assert_allclose(step.explained_variance_, ref.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(step.singular_values_, ref.singular_values_, rtol=1e-10)
    np.testing.assert_allclose(pre.transform(A), ref.transform(A), atol=1e-8)


def test_randomised_pca_equals_sklearn_on_a_decaying_spectrum():
    A = decaying(d=40)
    pre = Preprocessor([{"name": "pca", "n_components": 5, "n_power_iter": 4}]).fit(chunked(A, 101))
    ref = SkPCA(5, svd_solver="full").fit(A)
    np.testing.assert_allclose(pre.steps[0].components_, ref.components_, atol=1e-8)
    np.testing.assert_allclose(pre.steps[0].explained_variance_, ref.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(pre.transform(A), ref.transform(A), atol=1e-7)


def test_standardize_then_pca_equals_scaler_then_sklearn_pca(X):
    complete = np.nan_to_num(X, nan=1.0)
    pre = Preprocessor(["standardize", {"name": "pca", "n_components": 2}]).fit(chunked(complete))
    scaled = StandardScaler().fit_transform(complete)
    ref = SkPCA(2, svd_solver="full").fit(scaled)
    np.testing.assert_allclose(pre.transform(chunked(complete)).compute(), ref.transform(scaled), atol=1e-8)


def test_pca_nan_rule_is_mean_imputation(X):
    """NaN entries take their feature's mean: equal to sklearn PCA on mean-imputed data."""
    pre = Preprocessor([{"name": "pca", "n_components": 3}]).fit(chunked(X))
    imputed = np.where(np.isnan(X), np.nanmean(X, axis=0), X)
    ref = SkPCA(3, svd_solver="full").fit(imputed)
    np.testing.assert_allclose(pre.steps[0].components_, ref.components_, atol=1e-9)
    out = pre.transform(chunked(X)).compute()
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, ref.transform(imputed), atol=1e-7)


def test_pca_too_many_components():
    with pytest.raises(PreprocessingError, match="n_components=9 exceeds"):
        Preprocessor([{"name": "pca", "n_components": 9}]).fit(chunked(decaying(d=8)))


# --------------------------------------------------------------------------- in core == out of core


def test_chunking_does_not_change_the_fit(X):
    steps = ["standardize", {"name": "pca", "n_components": 3}]
    one = Preprocessor(steps).fit(X)  # NumPy in: one chunk
    many = Preprocessor(steps).fit(chunked(X, 13))
    np.testing.assert_allclose(many.steps[0].mean_, one.steps[0].mean_, rtol=RTOL)
    np.testing.assert_allclose(many.steps[1].components_, one.steps[1].components_, atol=1e-10)


def test_dataarray_keeps_ids_and_names_pca_features(tmp_path):
    m = make_matrix(seed=13)
    data = ParquetFileCase().write(tmp_path, m, chunk_rows=100).open()
    pre = Preprocessor(["standardize"]).fit(data)
    assert pre.feature_names_in_ == list(m.names)
    out = pre.transform(data)
    assert out.dims == data.dims and out.data.chunks == data.data.chunks
    np.testing.assert_array_equal(out["sample"].values.astype(str), m.ids)
    np.testing.assert_array_equal(out["feature"].values, m.names)
    pca = Preprocessor(["standardize", {"name": "pca", "n_components": 2}]).fit(data).transform(data)
    assert list(pca["feature"].values) == ["PC1", "PC2"]
    assert isinstance(pca["sample"].data, da.Array)  # the ids stay lazy


def test_transform_checks_features(X):
    pre = Preprocessor(["standardize"]).fit(X)
    with pytest.raises(PreprocessingError, match="X has 5 features, but the preprocessing is expecting 6"):
        pre.transform(X[:, :5])
    named = xr.DataArray(X, dims=("sample", "feature"), coords={"feature": list("abcdef")})
    pre = Preprocessor(["standardize"]).fit(named)
    with pytest.raises(PreprocessingError, match="feature names of X differ"):
        pre.transform(named.assign_coords(feature=list("abcdfe")))


# --------------------------------------------------------------------------- save / load


def test_saved_preprocessing_gives_the_same_transform_on_new_data(tmp_path, X):
    pre = Preprocessor(["log1p", "standardize", {"name": "pca", "n_components": 3}]).fit(np.abs(X))
    pre.save(tmp_path / "model")
    header = json.loads((tmp_path / "model" / "preprocessing.json").read_text())
    assert [s["name"] for s in header["steps"]] == ["log1p", "standardize", "pca"]
    loaded = Preprocessor.load(tmp_path / "model")
    new = np.abs(np.random.default_rng(14).standard_normal((50, 6))) * 3
    np.testing.assert_array_equal(loaded.transform(new), pre.transform(new))
    for a, b in zip(loaded.steps, pre.steps, strict=True):
        for key, value in b.get_arrays().items():
            np.testing.assert_array_equal(a.get_arrays()[key], value)


def test_save_does_not_overwrite_unless_asked(tmp_path, X):
    pre = Preprocessor(["standardize"]).fit(X)
    pre.save(tmp_path)
    with pytest.raises(OutputExistsError, match="preprocessing.json exists"):
        pre.save(tmp_path)
    pre.save(tmp_path, overwrite=True)


class Killed(Exception):
    """Stands for the process dying at that point."""


@pytest.mark.parametrize("crash_at", ["arrays", "json"])
def test_a_crash_while_replacing_a_saved_preprocessing_leaves_the_old_pair(tmp_path, X, monkeypatch, crash_at):
    old = Preprocessor(["standardize"]).fit(X)
    old.save(tmp_path)
    new = Preprocessor(["standardize"]).fit(X * 2.0 + 1.0)
    write = preprocess._replace_file

    def dies(target, data):
        if (target.name == preprocess.JSON_NAME) == (crash_at == "json"):
            raise Killed(target)
        write(target, data)

    monkeypatch.setattr(preprocess, "_replace_file", dies)
    with pytest.raises(Killed):
        new.save(tmp_path, overwrite=True)
    monkeypatch.undo()
    loaded = Preprocessor.load(tmp_path)  # the old pair, whole
    np.testing.assert_array_equal(loaded.steps[0].get_arrays()["mean"], old.steps[0].get_arrays()["mean"])
    np.testing.assert_array_equal(loaded.transform(X), old.transform(X))

    new.save(tmp_path, overwrite=True)  # the next save switches, and removes the arrays nothing names
    header = json.loads((tmp_path / "preprocessing.json").read_text())
    assert sorted(p.name for p in tmp_path.glob("preprocessing*.npz")) == [header["arrays_file"]]
    np.testing.assert_array_equal(Preprocessor.load(tmp_path).transform(X), new.transform(X))


def test_a_preprocessing_saved_by_an_earlier_version_loads_and_is_replaced_whole(tmp_path, X):
    pre = Preprocessor(["standardize", {"name": "pca", "n_components": 2}]).fit(X)
    pre.save(tmp_path)
    header = json.loads((tmp_path / "preprocessing.json").read_text())
    (tmp_path / header.pop("arrays_file")).rename(tmp_path / "preprocessing.npz")  # format version 1's layout
    del header["arrays_sha256"]
    (tmp_path / "preprocessing.json").write_text(json.dumps(dict(header, format_version=1)))
    np.testing.assert_array_equal(Preprocessor.load(tmp_path).transform(X), pre.transform(X))

    pre.save(tmp_path, overwrite=True)
    assert not (tmp_path / "preprocessing.npz").exists()
    assert json.loads((tmp_path / "preprocessing.json").read_text())["format_version"] == 2
    np.testing.assert_array_equal(Preprocessor.load(tmp_path).transform(X), pre.transform(X))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved preprocessing") as info:
        Preprocessor.load(tmp_path / "missing")
    assert isinstance(info.value, PreprocessingNotFoundError)
    (tmp_path / "preprocessing.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(PreprocessingFormatError, match="format 'other'"):
        Preprocessor.load(tmp_path)


def test_steps_are_checked():
    with pytest.raises(PreprocessingError, match="order"):
        Preprocessor(["standardize", "log1p"])
    with pytest.raises(PreprocessingError, match="order"):
        Preprocessor(["standardize", "standardize"])
    with pytest.raises(PreprocessingError, match="unknown preprocessing step 'scale'"):
        Preprocessor(["scale"])
    with pytest.raises(PreprocessingError, match="n_components must be >= 1"):
        PCA(0)
    with pytest.raises(PreprocessingError, match="not fitted"):
        Preprocessor([Standardize()]).transform(np.zeros((2, 2)))


def test_fit_on_a_parquet_source_equals_numpy(tmp_path):
    m = make_matrix(seed=15)
    data = ParquetSource(ParquetFileCase().write(tmp_path, m).path, chunk_rows=64).open()
    pre = Preprocessor(["standardize"]).fit(data)
    ref = StandardScaler().fit(m.X)
    np.testing.assert_allclose(pre.steps[0].mean_, ref.mean_, rtol=RTOL)
    np.testing.assert_allclose(pre.steps[0].scale_, ref.scale_, rtol=RTOL)
