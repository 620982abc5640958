"""Bad files and bad selections raise errors that name the file and the problem."""

from __future__ import annotations

import inspect
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import zarr

from gmm_stream.exceptions import GMMStreamError
from pipeline.exceptions import (
    ChunkSizeError,
    SelectionError,
    SourceDtypeError,
    SourceFormatError,
    SourceNotFoundError,
    SourceShapeError,
    SparseMatrixError,
)
from pipeline.sources import SOURCES, AnnDataSource, ParquetSource, ZarrSource, make_source

from pipeline_testing import AnnDataCase, ParquetDirectoryCase, make_matrix


def test_every_error_is_a_gmm_stream_error_and_the_builtin():
    assert issubclass(SourceNotFoundError, FileNotFoundError)
    assert issubclass(SelectionError, KeyError) and issubclass(SelectionError, ValueError)
    assert issubclass(SourceDtypeError, TypeError) and issubclass(SparseMatrixError, TypeError)
    assert issubclass(SourceShapeError, ValueError) and issubclass(SourceFormatError, ValueError)
    for cls in (SourceNotFoundError, SelectionError, SourceDtypeError, SourceShapeError, SourceFormatError):
        assert issubclass(cls, GMMStreamError)


# ------------------------------------------------------------------------ missing files


@pytest.mark.parametrize(
    ("kind", "name"),
    [("zarr", "nothing.zarr"), ("parquet", "nothing.parquet"), ("parquet", "nothing/*.parquet"),
     ("anndata", "nothing.h5ad"), ("anndata", "nothing.zarr")],
)
def test_missing_file(tmp_path, kind, name):
    path = tmp_path / name
    with pytest.raises(FileNotFoundError, match="nothing") as info:
        make_source(kind, path).open()
    assert isinstance(info.value, SourceNotFoundError)
    assert str(tmp_path) in str(info.value)


def test_empty_parquet_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceNotFoundError, match="matches no file"):
        ParquetSource(tmp_path / "empty").open()


# ------------------------------------------------------------------------------- Zarr


@pytest.fixture
def zarr_store(tmp_path):
    path = tmp_path / "bad.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("good", data=np.zeros((6, 2)))
    group.create_array("flat", data=np.zeros(6))
    group.create_array("cube", data=np.zeros((6, 2, 2)))
    text = group.create_array("text", shape=(6, 2), dtype=str)
    text[...] = np.full((6, 2), "a")
    group.require_group("sub")
    return path


def test_zarr_missing_array_lists_what_is_there(zarr_store):
    with pytest.raises(KeyError, match="nope") as info:
        ZarrSource(zarr_store, "nope").open()
    message = str(info.value)
    assert str(zarr_store) in message and "good" in message


def test_zarr_group_is_not_an_array(zarr_store):
    with pytest.raises(SelectionError, match="is a group"):
        ZarrSource(zarr_store).open()
    with pytest.raises(SelectionError, match="is a group"):
        ZarrSource(zarr_store, "sub").open()


@pytest.mark.parametrize("name", ["flat", "cube"])
def test_zarr_not_2d(zarr_store, name):
    with pytest.raises(SourceShapeError, match=f"'{name}'.*2-D") as info:
        ZarrSource(zarr_store, name).open()
    assert str(zarr_store) in str(info.value)


def test_zarr_not_numeric(zarr_store):
    with pytest.raises(TypeError, match="not numeric") as info:
        ZarrSource(zarr_store, "text").open()
    assert isinstance(info.value, SourceDtypeError) and str(zarr_store) in str(info.value)


def test_zarr_bad_coordinate_names(zarr_store):
    with pytest.raises(SelectionError, match="sample_ids='missing'"):
        ZarrSource(zarr_store, "good", sample_ids="missing").open()
    with pytest.raises(SelectionError, match="feature_names='flat'.*length 2"):
        ZarrSource(zarr_store, "good", feature_names="flat").open()


def test_zarr_missing_variable(tmp_path):
    import xarray as xr

    path = tmp_path / "ds.zarr"
    xr.Dataset({"a": (("x", "y"), np.zeros((3, 2)))}).to_zarr(path, zarr_format=3, consolidated=False)
    with pytest.raises(SelectionError, match="variable 'b'.*holds") as info:
        ZarrSource(path, variable="b").open()
    assert str(path) in str(info.value)
    with pytest.raises(SelectionError, match="not both"):
        ZarrSource(path, "a", variable="a")


def test_not_a_zarr_store(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(SelectionError, match="no Zarr array or group at 'X'") as info:
        ZarrSource(tmp_path / "plain", "X").open()
    assert str(tmp_path / "plain") in str(info.value)


# ---------------------------------------------------------------------------- Parquet


@pytest.fixture
def parquet_file(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": [3, 4], "name": ["x", "y"]}), path)
    return path


def test_parquet_missing_column_names_file_and_column(parquet_file):
    with pytest.raises(KeyError, match="'zz'") as info:
        ParquetSource(parquet_file, columns=["a", "zz"]).open()
    assert str(parquet_file) in str(info.value) and "'name'" in str(info.value)


def test_parquet_missing_id_column(parquet_file):
    with pytest.raises(SelectionError, match="'cell'"):
        ParquetSource(parquet_file, id_column="cell").open()


def test_parquet_text_column(parquet_file):
    with pytest.raises(SourceDtypeError, match="'name'.*not numeric") as info:
        ParquetSource(parquet_file, columns=["a", "name"]).open()
    assert str(parquet_file) in str(info.value)


def test_parquet_no_numeric_column(tmp_path):
    path = tmp_path / "text.parquet"
    pq.write_table(pa.table({"name": ["x", "y"]}), path)
    with pytest.raises(SourceDtypeError, match="no numeric column"):
        ParquetSource(path).open()


def test_parquet_column_missing_in_one_file_of_many(tmp_path):
    m = make_matrix(seed=7)
    source = ParquetDirectoryCase().write(tmp_path, m)
    pq.write_table(pa.table({"gene0": [1.0]}), f"{source.path}/part-9.parquet")
    with pytest.raises(SelectionError, match="part-9.parquet"):
        source.open()


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("hello")
    with pytest.raises(SourceFormatError, match="fake.parquet.*not a readable Parquet"):
        ParquetSource(path).open()


# ---------------------------------------------------------------------------- AnnData


@pytest.fixture
def h5ad(tmp_path):
    adata = ad.AnnData(X=np.zeros((5, 3)), obs=pd.DataFrame(index=list("abcde")))
    adata.obsm["frame"] = pd.DataFrame({"u": np.arange(5.0)}, index=adata.obs_names)
    adata.layers["csc"] = sp.csc_matrix(np.eye(5, 3))
    path = tmp_path / "t.h5ad"
    adata.write_h5ad(path)
    return path


def test_anndata_missing_obsm_and_layer(h5ad):
    with pytest.raises(SelectionError, match="obsm/X_pca.*frame") as info:
        AnnDataSource(h5ad, obsm="X_pca").open()
    assert str(h5ad) in str(info.value)
    with pytest.raises(SelectionError, match="layers/raw.*csc"):
        AnnDataSource(h5ad, layer="raw").open()
    with pytest.raises(SelectionError, match="not both"):
        AnnDataSource(h5ad, layer="a", obsm="b")


def test_anndata_dataframe_obsm(h5ad):
    with pytest.raises(SourceDtypeError, match="dataframe"):
        AnnDataSource(h5ad, obsm="frame").open()


def test_anndata_csc_is_refused(h5ad):
    with pytest.raises(SparseMatrixError, match="CSC.*X_pca"):
        AnnDataSource(h5ad, layer="csc").open()


def test_anndata_sparse_refused_on_request(tmp_path):
    m = make_matrix(seed=8, zeros=True)
    source = AnnDataCase("h5ad", "X", sparse=True).write(tmp_path, m)
    with pytest.raises(TypeError, match=r"obsm='X_pca'") as info:
        AnnDataSource(source.path, sparse="raise").open()
    assert isinstance(info.value, SparseMatrixError) and source.path in str(info.value)


def test_not_an_anndata(tmp_path):
    path = tmp_path / "text.h5ad"
    path.write_text("hello")
    with pytest.raises(SourceFormatError, match="text.h5ad"):
        AnnDataSource(path).open()
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w").create_array("X", data=np.zeros((2, 2)))
    with pytest.raises(SourceFormatError, match="not an AnnData store"):
        AnnDataSource(plain).open()


# ---------------------------------------------------------------------------- options


def test_chunk_sizes_must_be_positive(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0]}), path)
    with pytest.raises(ChunkSizeError, match="chunk_rows must be positive, got 0"):
        ParquetSource(path, chunk_rows=0).open()
    with pytest.raises(ChunkSizeError, match="chunk_bytes"):
        ParquetSource(path, chunk_bytes="0B").open()


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_each_source_declares_its_own_options(kind):
    """The options model names exactly what the constructor takes beyond the base's arguments,
    with the same defaults."""
    cls = SOURCES[kind]
    own = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
           if name not in ("self", "path", "chunk_rows", "chunk_bytes", "storage_options")}
    fields = cls.options_model.model_fields
    assert set(fields) == set(own)
    assert {name: f.default for name, f in fields.items()} == own


@pytest.mark.parametrize("build, key, words", [
    (lambda p: ZarrSource(p, "a", variable="b"), "variable", "give either array or variable, not both"),
    (lambda p: AnnDataSource(p, layer="a", obsm="b"), "obsm", "give either layer or obsm, not both"),
    (lambda p: AnnDataSource(p, sparse="dense"), "sparse", "'densify' or 'raise', got 'dense'"),
    (lambda p: ParquetSource(p, columns=["a", "b", "a"]), "columns", "columns are listed twice: ['a']"),
    (lambda p: ParquetSource(p, columns=["a"], id_column="a"), "id_column", "'a' is also a feature column"),
    (lambda p: ParquetSource(p, columns=[]), "columns", "at least 1 item"),
    (lambda p: ZarrSource(p, ""), "array", "at least 1 character"),
])
def test_options_breaking_a_rule_are_refused_by_the_constructor(tmp_path, build, key, words):
    with pytest.raises(SelectionError) as info:
        build(tmp_path / "data")
    assert f"source {str(tmp_path / 'data')!r}: {key}: " in str(info.value)
    assert words in str(info.value)


def test_unknown_kind_and_unknown_suffix(tmp_path):
    with pytest.raises(SourceFormatError, match="unknown source kind 'csv'"):
        make_source("csv", tmp_path / "x.csv")
    with pytest.raises(SourceFormatError, match="cannot tell the format"):
        make_source(None, tmp_path / "x.csv")


def test_no_warning_leaks_from_opening(tmp_path):
    m = make_matrix(seed=9)
    source = AnnDataCase("zarr", "X").write(tmp_path, m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source.open()
