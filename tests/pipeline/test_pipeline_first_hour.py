"""What a new user meets in the first hour with the data layer.

- the old-format ``.h5ad`` files users bring (scanpy's ``pbmc68k_reduced.h5ad``: ``obs`` and
  ``obsm`` are HDF5 compound datasets) open in :class:`AnnDataSource` as ``anndata.read_h5ad``
  reads them, and the AnnData sink writes its results next to them;
- the default column selection of :class:`ParquetSource` says which features it took and
  warns about integer columns (a ``truth`` column silently used as a feature);
- the Zarr sink's output opens with ``xarray.open_zarr(path)`` without a warning (v2 and v3),
  with the Parquet sink's names (``label``, ``proba``, ``logdens``) and int64 labels in both.

The legacy file is written with h5py in the layout of the real one (checked against
scanpy's ``10x_pbmc68k_reduced.h5ad``: no root attributes, compound ``obs``/``var``/``obsm``/
``varm`` with fixed-length ASCII names, a chunked dense ``X``, an h5sparse ``raw.X`` group,
``uns`` groups without encoding metadata, categories in ``uns['<col>_categories']``); when
scanpy is installed, its file is tested too.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import anndata as ad
import dask.array as da
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import xarray as xr
import zarr

from gmm_stream import GaussianMixture
from pipeline import (
    AnnDataSink,
    AnnDataSource,
    ParquetSink,
    ParquetSource,
    ZarrSink,
    make_provenance,
    model_params,
    predict_results,
)
from pipeline.exceptions import SelectionError, SinkError
from pipeline.results import Results
from pipeline.sources.parquet_source import IntegerColumnWarning

N_CELLS, N_GENES, N_PCS = 300, 12, 6
H5_ROWS = 44  # the HDF5 row chunk of the real file's X and obsm


# --------------------------------------------------------------------- old-format .h5ad


def _ascii(length: int) -> np.dtype:
    return h5py.string_dtype("ascii", length)


def write_legacy_h5ad(path: Path, *, sparse_x: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """An .h5ad as anndata < 0.7 wrote it (the layout of scanpy's pbmc68k_reduced.h5ad).

    Returns the arrays written, to compare with what is read back.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_CELLS, N_GENES)).astype(np.float32)
    if sparse_x:
        X[rng.random(X.shape) < 0.7] = 0.0
    pca = rng.standard_normal((N_CELLS, N_PCS)).astype(np.float32)
    umap = rng.standard_normal((N_CELLS, 2))
    cells = np.asarray([f"AAAC{i:06d}-1" for i in range(N_CELLS)])
    genes = np.asarray([f"GENE{j}" for j in range(N_GENES)])
    bulk = rng.integers(0, 3, N_CELLS).astype(np.int8)
    with h5py.File(path, "w") as f:  # no root attributes: anndata < 0.7 wrote none
        if sparse_x:
            csr = sp.csr_matrix(X)
            group = f.create_group("X")
            group.attrs["h5sparse_format"] = "csr"
            group.attrs["h5sparse_shape"] = np.asarray(X.shape)
            group["data"], group["indices"], group["indptr"] = csr.data, csr.indices, csr.indptr
        else:
            f.create_dataset("X", data=X, chunks=(H5_ROWS, 6))
        obs = np.empty(N_CELLS, dtype=[("index", _ascii(16)), ("bulk_labels", "i1"), ("n_genes", "<i8"),
                                        ("percent_mito", "<f4")])
        obs["index"] = np.char.encode(cells, "ascii")
        obs["bulk_labels"] = bulk
        obs["n_genes"] = rng.integers(500, 2000, N_CELLS)
        obs["percent_mito"] = rng.random(N_CELLS)
        f.create_dataset("obs", data=obs, chunks=(175,))
        var = np.empty(N_GENES, dtype=[("index", _ascii(13)), ("n_counts", "<f4")])
        var["index"] = np.char.encode(genes, "ascii")
        var["n_counts"] = rng.random(N_GENES)
        f.create_dataset("var", data=var)
        obsm = np.empty(N_CELLS, dtype=[("X_pca", "<f4", (N_PCS,)), ("X_umap", "<f8", (2,))])
        obsm["X_pca"], obsm["X_umap"] = pca, umap
        f.create_dataset("obsm", data=obsm, chunks=(H5_ROWS,))
        varm = np.empty(N_GENES, dtype=[("PCs", "<f8", (N_PCS,))])
        varm["PCs"] = rng.standard_normal((N_GENES, N_PCS))
        f.create_dataset("varm", data=varm)
        raw = sp.csr_matrix(np.abs(X))
        group = f.create_group("raw.X")
        group.attrs["h5sparse_format"] = "csr"
        group.attrs["h5sparse_shape"] = np.asarray(raw.shape)
        group["data"], group["indices"], group["indptr"] = raw.data, raw.indices, raw.indptr
        raw_var = np.empty(N_GENES, dtype=[("index", _ascii(13))])
        raw_var["index"] = var["index"]
        f.create_dataset("raw.var", data=raw_var)
        uns = f.create_group("uns")
        uns["bulk_labels_categories"] = np.asarray([b"CD14+ Monocyte", b"CD19+ B", b"CD56+ NK"])
        uns["bulk_labels_colors"] = np.asarray([b"#1f77b4", b"#ff7f0e", b"#279e68"])
        uns.create_group("pca")["variance"] = rng.random(N_PCS).astype(np.float32)
        uns.create_group("louvain").create_group("params")["resolution"] = np.asarray([1])
    return {"X": X, "X_pca": pca, "X_umap": umap, "cells": cells, "genes": genes, "bulk": bulk}


def read_h5ad_quietly(path: Path, **kwargs: object) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OldFormatWarning, "Moving element from .uns" ...
        return ad.read_h5ad(path, **kwargs)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def legacy_h5ad(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "pbmc_legacy.h5ad"
    return path, write_legacy_h5ad(path)


def test_the_legacy_file_has_the_old_layout_and_anndata_reads_it(legacy_h5ad):
    path, written = legacy_h5ad
    with h5py.File(path, "r") as f:
        assert dict(f.attrs) == {}
        assert isinstance(f["obs"], h5py.Dataset) and f["obs"].dtype.names[0] == "index"
        assert isinstance(f["obsm"], h5py.Dataset) and f["obsm"].dtype.names == ("X_pca", "X_umap")
    adata = read_h5ad_quietly(path)
    assert adata.shape == (N_CELLS, N_GENES)
    np.testing.assert_array_equal(adata.obs_names.to_numpy(), written["cells"])
    np.testing.assert_array_equal(adata.var_names.to_numpy(), written["genes"])
    np.testing.assert_array_equal(adata.obsm["X_pca"], written["X_pca"])
    assert list(adata.obs["bulk_labels"].cat.categories) == ["CD14+ Monocyte", "CD19+ B", "CD56+ NK"]


@pytest.mark.parametrize(("selection", "key"), [({}, "X"), ({"obsm": "X_pca"}, "X_pca"),
                                                ({"obsm": "X_umap"}, "X_umap")])
@pytest.mark.parametrize("chunk_rows", [None, 100])
def test_source_reads_a_legacy_h5ad_like_anndata(legacy_h5ad, selection, key, chunk_rows):
    path, written = legacy_h5ad
    adata = read_h5ad_quietly(path)
    expected = adata.X if key == "X" else adata.obsm[key]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the lazy reader needs no anndata legacy warnings
        X = AnnDataSource(path, chunk_rows=chunk_rows, **selection).open()
        values = X.values
        ids = X["sample"].values
    assert isinstance(X.data, da.Array) and X.dims == ("sample", "feature")
    assert X.dtype == expected.dtype  # float32 stays float32 (X, X_pca), float64 (X_umap)
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(values, written[key])
    np.testing.assert_array_equal(ids, adata.obs_names.to_numpy())
    assert all(isinstance(v, str) for v in ids)
    if chunk_rows is None:  # one chunk for such a small file, rounded to the stored HDF5 chunk
        assert X.data.chunks[0] == (N_CELLS,)
    else:
        assert X.data.chunks[0] == (100, 100, 100)
    if key == "X":
        np.testing.assert_array_equal(X["feature"].values, adata.var_names.to_numpy())
    else:
        assert "feature" not in X.coords


def test_source_reads_a_legacy_h5sparse_x_densified_by_chunks(tmp_path):
    path = tmp_path / "sparse_legacy.h5ad"
    written = write_legacy_h5ad(path, sparse_x=True)
    adata = read_h5ad_quietly(path)
    assert sp.issparse(adata.X)
    X = AnnDataSource(path, chunk_rows=128).open()
    np.testing.assert_array_equal(X.values, adata.X.toarray())
    np.testing.assert_array_equal(X.values, written["X"])
    np.testing.assert_array_equal(X["sample"].values, adata.obs_names.to_numpy())


def test_a_missing_obsm_key_of_a_legacy_file_lists_its_fields(legacy_h5ad):
    path, _ = legacy_h5ad
    with pytest.raises(SelectionError, match=r"obsm/X_tsne.*\['X_pca', 'X_umap'\]"):
        AnnDataSource(path, obsm="X_tsne").open()


def test_a_legacy_layout_the_lazy_reader_does_not_know_is_read_by_anndata(tmp_path):
    """obs as a group of plain datasets without '_index' (no encoding metadata anywhere):
    anndata reads it (obs_names 0..n-1); the source falls back to anndata.read_h5ad(backed='r')."""
    path = tmp_path / "odd.h5ad"
    rng = np.random.default_rng(3)
    X, pca = rng.standard_normal((50, 3)).astype(np.float32), rng.standard_normal((50, 2))
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, chunks=(10, 3))
        obs = f.create_group("obs")
        obs["cell"], obs["n"] = np.asarray([f"c{i}".encode() for i in range(50)]), np.arange(50)
        f.create_group("var")["index"] = np.asarray([b"a", b"b", b"c"])
        f.create_group("obsm")["X_pca"] = pca
    adata = read_h5ad_quietly(path)
    for selection, expected in (({}, adata.X), ({"obsm": "X_pca"}, adata.obsm["X_pca"])):
        X_ = AnnDataSource(path, chunk_rows=20, **selection).open()
        assert X_.data.chunks[0] == (20, 20, 10)
        np.testing.assert_array_equal(X_.values, expected)
        np.testing.assert_array_equal(X_["sample"].values, adata.obs_names.to_numpy())
    with pytest.raises(SelectionError, match="X_umap"):
        AnnDataSource(path, obsm="X_umap").open()


def test_scanpy_pbmc68k_reduced_opens_like_anndata_reads_it():
    scanpy = pytest.importorskip("scanpy")
    path = Path(scanpy.__file__).parent / "datasets" / "10x_pbmc68k_reduced.h5ad"
    adata = read_h5ad_quietly(path)
    for selection, expected in (({}, adata.X), ({"obsm": "X_pca"}, adata.obsm["X_pca"]),
                                ({"obsm": "X_umap"}, adata.obsm["X_umap"])):
        X = AnnDataSource(path, **selection).open()
        np.testing.assert_array_equal(X.values, expected)
        np.testing.assert_array_equal(X["sample"].values, adata.obs_names.to_numpy())


def _fit_and_write_anndata(input_path: Path, output: Path, key: str = "gmm"):
    source = AnnDataSource(input_path, obsm="X_pca", chunk_rows=128)
    X = source.open()
    gm = GaussianMixture(n_components=3, random_state=0, max_iter=20).fit(X)
    results = predict_results(gm, X)
    settings = {"n_components": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # anndata's legacy warnings are expected and kept quiet
        AnnDataSink(output, input_path=input_path, key_added=key).write(
            results, provenance=make_provenance(settings, source.identity()), settings=settings,
            params=model_params(gm))
    return gm, X.values


def test_anndata_sink_writes_results_next_to_a_legacy_input(legacy_h5ad, tmp_path):
    path, written = legacy_h5ad
    before = file_digest(path)
    out = tmp_path / "pbmc_gmm.h5ad"
    gm, Z = _fit_and_write_anndata(path, out)
    assert file_digest(path) == before  # the input is never modified

    with h5py.File(out, "r") as f:  # written by anndata in the current format
        assert f.attrs["encoding-type"] == "anndata" and isinstance(f["obs"], h5py.Group)
    result = ad.read_h5ad(out)
    labels = result.obs["gmm"]
    assert isinstance(labels.dtype, pd.CategoricalDtype) and list(labels.cat.categories) == ["0", "1", "2"]
    np.testing.assert_array_equal(labels.cat.codes.to_numpy(), gm.predict(Z))
    np.testing.assert_allclose(result.obsm["gmm_proba"], gm.predict_proba(Z), rtol=1e-6, atol=1e-7)
    assert result.obsm["gmm_proba"].dtype == np.float32
    # float32 input: score_samples is float32 (as scikit-learn's), the sink's float64 log-density
    # comes from the same float32 products: equal to float32 precision
    np.testing.assert_allclose(result.obs["gmm_logdens"], gm.score_samples(Z), rtol=1e-6)
    assert result.uns["gmm"]["encoding_type"] == "gmm_stream_result"
    np.testing.assert_allclose(result.uns["gmm"]["params"]["means"], gm.means_, rtol=1e-15)
    assert result.uns["gmm"]["provenance"]["input"]["selection"]["obsm"] == "X_pca"
    # everything the input had is still there, as anndata reads it
    legacy = read_h5ad_quietly(path)
    np.testing.assert_array_equal(result.obs_names.to_numpy(), written["cells"])
    np.testing.assert_array_equal(result.X, legacy.X)
    np.testing.assert_array_equal(result.obsm["X_pca"], legacy.obsm["X_pca"])
    np.testing.assert_array_equal(result.obsm["X_umap"], legacy.obsm["X_umap"])
    pd.testing.assert_series_equal(result.obs["bulk_labels"], legacy.obs["bulk_labels"])
    assert list(result.obs.columns)[-2:] == ["gmm", "gmm_logdens"]
    assert result.raw is not None and result.raw.shape == (N_CELLS, N_GENES)
    # and the output is an ordinary input for the next run
    again = AnnDataSource(out, obsm="gmm_proba").open()
    np.testing.assert_array_equal(again.values, result.obsm["gmm_proba"])


def test_anndata_sink_refuses_results_of_other_cells_for_a_legacy_input(legacy_h5ad, tmp_path):
    path, _ = legacy_h5ad
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(2), N_CELLS).astype(np.float32)
    ids = np.asarray([f"other{i}" for i in range(N_CELLS)])
    results = Results(proba.argmax(1), proba, rng.normal(size=N_CELLS), ids)
    out = tmp_path / "out.h5ad"
    with pytest.raises(SinkError, match="obs_names"):
        AnnDataSink(out, input_path=path).write(results, provenance=make_provenance({}, {"path": str(path)}))
    assert not out.exists()


def test_anndata_sink_still_copies_a_modern_input_byte_for_byte(tmp_path):
    """Modern inputs keep the out-of-core path: X is never loaded, the copy keeps its bytes."""
    adata = ad.AnnData(X=np.random.default_rng(2).standard_normal((N_CELLS, 4)),
                       obs=pd.DataFrame(index=[f"c{i}" for i in range(N_CELLS)]))
    adata.obsm["X_pca"] = adata.X[:, :3].copy()
    path = tmp_path / "modern.h5ad"
    adata.write_h5ad(path)
    with h5py.File(path, "r") as f:
        x_bytes = f["X"].id.get_offset()
    out = tmp_path / "modern_gmm.h5ad"
    _fit_and_write_anndata(path, out)
    with h5py.File(out, "r") as f:
        assert f["X"].id.get_offset() == x_bytes  # the same dataset at the same place: a copy
    assert "gmm" in ad.read_h5ad(out).obs


# -------------------------------------------------------------- Parquet default columns


def _parquet_with_truth(path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 200
    table = pa.table({
        "cell_id": pa.array([f"c{i}" for i in range(n)]),
        "x0": pa.array(rng.standard_normal(n)),
        "x1": pa.array(rng.standard_normal(n).astype(np.float32)),
        "truth": pa.array(rng.integers(0, 3, n), type=pa.int64()),
        "note": pa.array(["x"] * n),
    })
    pq.write_table(table, path, row_group_size=64)


def test_default_parquet_columns_are_logged_and_integer_ones_warned_about(tmp_path, caplog):
    path = tmp_path / "cells.parquet"
    _parquet_with_truth(path)
    with (caplog.at_level(logging.INFO, logger="pipeline.sources.parquet_source"),
          pytest.warns(IntegerColumnWarning) as record):
        X = ParquetSource(path, id_column="cell_id").open()
    assert list(X["feature"].values) == ["x0", "x1", "truth"]  # still the documented default
    message = str(record[0].message)
    assert "['truth']" in message and "columns=['x0', 'x1']" in message, message
    assert issubclass(IntegerColumnWarning, UserWarning)
    assert record[0].filename == __file__  # points at the caller's open()
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("['x0', 'x1', 'truth']" in m for m in logged), logged


def test_explicit_parquet_columns_are_used_silently(tmp_path):
    path = tmp_path / "cells.parquet"
    _parquet_with_truth(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for columns in (["x0", "x1"], ["x0", "truth"]):  # choosing an integer column is deliberate
            X = ParquetSource(path, columns=columns, id_column="cell_id").open()
            assert list(X["feature"].values) == columns


def test_default_parquet_columns_without_integers_do_not_warn(tmp_path, caplog):
    path = tmp_path / "floats.parquet"
    pq.write_table(pa.table({"a": pa.array([1.0, 2.0]), "b": pa.array([3.0, 4.0])}), path)
    with caplog.at_level(logging.INFO, logger="pipeline.sources.parquet_source"), warnings.catch_warnings():
        warnings.simplefilter("error")
        X = ParquetSource(path).open()
    assert list(X["feature"].values) == ["a", "b"]
    assert any("['a', 'b']" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ Zarr and Parquet sinks


def _fitted_results(n: int = 500):
    """Results of a real fit, with a row of no observed value (label -1) and labels 0, 1, 2."""
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(c, 0.5, (n // 3 + 1, 2)) for c in (-4, 0, 4)])[:n]
    X[7] = np.nan
    data = xr.DataArray(da.from_array(X, chunks=128), dims=("sample", "feature"),
                        coords={"sample": ("sample", da.from_array(np.asarray([f"s{i}" for i in range(n)]),
                                                                   chunks=128))})
    gm = GaussianMixture(n_components=3, random_state=0).fit(X)
    return gm, X, predict_results(gm, data)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_sink_output_opens_with_xarray_without_a_warning(tmp_path, zarr_format):
    gm, X, results = _fitted_results()
    path = tmp_path / "predictions.zarr"
    provenance = make_provenance({}, {"path": "x"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither writing nor opening warns
        ZarrSink(path, zarr_format=zarr_format).write(results, provenance=provenance)
        ds = xr.open_zarr(path)
        zarr.open_group(str(path), mode="r")
        labels = ds["label"].values
        proba = ds["proba"].values
    assert set(ds.data_vars) == {"label", "proba", "logdens"}
    assert ds["proba"].dims == ("sample", "component") and ds["label"].dims == ("sample",)
    assert labels.dtype == np.int64  # no fill value turned into a NaN mask
    expected = gm.predict(X)
    assert expected[7] == -1 and {0, 1, 2} <= set(expected.tolist())
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_allclose(proba[~np.isnan(X).all(1)], gm.predict_proba(X)[~np.isnan(X).all(1)], atol=1e-6)
    assert (proba == 0).any()  # exact zeros stay zeros
    assert ds.attrs["encoding-type"] == "gmm_stream_result"
    consolidated = ".zmetadata" if zarr_format == 2 else "zarr.json"
    assert (path / consolidated).exists()
    if zarr_format == 3:
        assert "consolidated_metadata" in (path / "zarr.json").read_text()


def test_zarr_and_parquet_sinks_use_the_same_names_and_int64_labels(tmp_path):
    _gm, _X, results = _fitted_results()
    provenance = make_provenance({}, {"path": "x"})
    ZarrSink(tmp_path / "p.zarr").write(results, provenance=provenance)
    ParquetSink(tmp_path / "p.parquet", id_column="sample").write(results, provenance=provenance)
    ds = xr.open_zarr(tmp_path / "p.zarr")
    schema = pq.read_schema(next((tmp_path / "p.parquet").glob("part-*.parquet")))
    assert schema.field("label").type == pa.int64()
    frame = pd.read_parquet(tmp_path / "p.parquet")
    assert frame["label"].dtype == np.int64
    K = results.n_components
    assert list(frame.columns) == ["sample", "label"] + [f"proba_{k}" for k in range(K)] + ["logdens"]
    assert set(ds.data_vars) | {"sample"} == {"sample", "label", "proba", "logdens"}
    np.testing.assert_array_equal(frame["label"].to_numpy(), ds["label"].values)
    np.testing.assert_array_equal(frame[[f"proba_{k}" for k in range(K)]].to_numpy(), ds["proba"].values)
    np.testing.assert_array_equal(frame["sample"].to_numpy(), ds["sample"].values)


def test_results_keep_labels_integer_from_any_input():
    ints = Results(np.asarray([0, 2, -1], dtype=np.int32), np.zeros((3, 3)), np.zeros(3))
    assert ints.labels.dtype == np.int64
    floats = Results(np.asarray([0.0, 2.0, np.nan]), np.zeros((3, 3)), np.zeros(3))
    assert floats.labels.dtype == np.int64
    np.testing.assert_array_equal(floats.labels.compute(), [0, 2, -1])  # NaN: no observed value
    with pytest.raises(SinkError, match="whole numbers"):
        Results(np.asarray([0.5, 1.0, 2.0]), np.zeros((3, 3)), np.zeros(3)).labels.compute()
    with pytest.raises(SinkError, match="integers"):
        Results(np.asarray(["a", "b", "c"]), np.zeros((3, 3)), np.zeros(3))
