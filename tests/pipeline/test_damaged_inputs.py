"""Damaged data are an error, never a value.

Real files written by zarr (v2 and v3 formats, compressed or not, sharded), pyarrow and
anndata are damaged for real -- a chunk file deleted or truncated, bytes overwritten in a
Parquet page header, a file with a string column added to a directory, an ``.h5ad`` cut
in half -- and the sources must raise an error that names the file (and the chunk or
row group), never return fill values or garbage. Undamaged inputs still read exactly
what was written, and no input file is modified by opening or reading it.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path

import anndata as ad
import dask.array as da
import h5py
import numcodecs
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from zarr.codecs import BloscCodec

from gmm_stream.exceptions import GMMStreamError
from pipeline.exceptions import (
    DamagedInputError,
    MissingChunkError,
    SchemaMismatchError,
    SelectionError,
    SourceDtypeError,
    SourceFormatError,
)
from pipeline.sources import AnnDataSource, ParquetSource, ZarrSource, make_source, open_source

from pipeline_testing import STORED_ROWS, AnnDataCase, ParquetDirectoryCase, XarrayZarrCase, ZarrArrayCase, make_matrix

N_ROWS, N_FEATURES = 200, 3


@pytest.fixture
def X():
    return np.random.default_rng(42).standard_normal((N_ROWS, N_FEATURES))


def digest(path: Path | str) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (or of the file itself), by relative path."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path) if p != path else p.name): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


def truncate(path: Path | str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------- Zarr

#: name -> (zarr_format, extra create_array arguments); every store has 32-row chunks,
#: the sharded one 64-row shards of 32-row chunks. Blosc-lz4 without shuffle stores these
#: random chunks uncompressed ("memcpyed"), and its decoder then reads a truncated chunk as
#: garbage without an error (anndata's Zarr v2 default can do the same): the sources check
#: the frame length.
ZARR_LAYOUTS = {
    "v3-zstd": (3, {}),
    "v3-blosc": (3, {"compressors": BloscCodec()}),
    "v3-blosc-lz4": (3, {"compressors": BloscCodec(cname="lz4", shuffle="noshuffle")}),
    "v3-uncompressed": (3, {"compressors": None}),
    "v3-sharded": (3, {"shards": (2 * STORED_ROWS, N_FEATURES)}),
    "v2-blosc": (2, {}),
    "v2-blosc-lz4": (2, {"compressors": numcodecs.Blosc(cname="lz4", shuffle=numcodecs.Blosc.NOSHUFFLE)}),
    "v2-uncompressed": (2, {"compressors": None}),
    "v2-nested-keys": (2, {"chunk_key_encoding": {"name": "v2", "separator": "/"}}),
}


def write_zarr(path: Path, X: np.ndarray, layout: str) -> zarr.Array:
    zarr_format, options = ZARR_LAYOUTS[layout]
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    array = group.create_array("X", shape=X.shape, dtype="f8", chunks=(STORED_ROWS, X.shape[1]), **options)
    array[...] = X
    return array


def chunk_file(store: Path, array: zarr.Array, coords: tuple[int, ...]) -> Path:
    """The file of chunk (or shard) ``coords``, named with the array's own chunk-key encoding."""
    return store / array.path / array.metadata.encode_chunk_key(coords)


@pytest.fixture(params=list(ZARR_LAYOUTS))
def zarr_store(request, tmp_path, X):
    path = tmp_path / f"{request.param}.zarr"
    array = write_zarr(path, X, request.param)
    return path, array, request.param


def stored_rows(layout: str) -> int:
    return 2 * STORED_ROWS if layout == "v3-sharded" else STORED_ROWS


def test_damage_errors_are_format_errors_and_os_errors():
    for cls in (DamagedInputError, MissingChunkError):
        assert issubclass(cls, SourceFormatError) and issubclass(cls, ValueError)
        assert issubclass(cls, OSError) and issubclass(cls, GMMStreamError)
    assert issubclass(MissingChunkError, DamagedInputError)
    assert issubclass(SchemaMismatchError, SourceDtypeError) and issubclass(SchemaMismatchError, TypeError)
    assert str(DamagedInputError("a message")) == "a message"  # OSError's errno form is not used


def test_damage_errors_survive_the_trip_from_a_dask_worker():
    """Dask distributed sends a task's error back through tblib; the type must survive."""
    pickling_support = pytest.importorskip("tblib.pickling_support")
    for cls in (DamagedInputError, MissingChunkError, SchemaMismatchError):
        try:
            raise cls("chunk (1, 0) of 'X'") from RuntimeError("Zstd decompression error")
        except cls as err:
            pickling_support.install(err, err.__cause__)
            back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls and str(back) == "chunk (1, 0) of 'X'"
        assert isinstance(back.__cause__, RuntimeError)


def test_zarr_undamaged_store_reads_identically(zarr_store, X):
    path, array, layout = zarr_store
    before = digest(path)
    data = ZarrSource(path, "X", chunk_rows=50).open()
    np.testing.assert_array_equal(data.values, X)
    np.testing.assert_array_equal(data.values, zarr.open_array(str(path), path="X", mode="r")[...])
    reference = da.from_zarr(zarr.open_array(str(path), path="X", mode="r"), chunks=(50, N_FEATURES))
    assert data.data.chunks == reference.chunks  # chunking unchanged by the checked reader
    by_bytes = ZarrSource(path, "X", chunk_bytes=3 * STORED_ROWS * N_FEATURES * 8).open()
    assert by_bytes.data.chunks[0][0] % array.chunks[0] == 0
    np.testing.assert_array_equal(by_bytes.values, X)
    assert digest(path) == before


def test_zarr_missing_chunk_raises_at_open(zarr_store, X):
    path, array, layout = zarr_store
    gone = chunk_file(path, array, (1, 0))
    gone.unlink()
    before = digest(path)
    with pytest.raises(MissingChunkError) as info:
        ZarrSource(path, "X").open()
    message = str(info.value)
    rows = stored_rows(layout)
    assert str(path) in message and "'X'" in message
    assert "(1, 0)" in message and f"rows {rows}-{2 * rows - 1}" in message
    assert str(gone) in message  # the missing file, in the array's own key encoding
    assert "allow_missing_chunks=True" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, OSError)
    assert digest(path) == before


def test_zarr_allow_missing_chunks_reads_the_fill_value(zarr_store, X):
    path, array, layout = zarr_store
    chunk_file(path, array, (1, 0)).unlink()
    rows = stored_rows(layout)
    data = ZarrSource(path, "X", allow_missing_chunks=True).open()
    values = data.values
    np.testing.assert_array_equal(values[rows:2 * rows], np.full((rows, N_FEATURES), array.fill_value))
    np.testing.assert_array_equal(np.delete(values, np.s_[rows:2 * rows], axis=0),
                                  np.delete(X, np.s_[rows:2 * rows], axis=0))
    through_factory = open_source("zarr", path, array="X", allow_missing_chunks=True)
    np.testing.assert_array_equal(through_factory.values, values)
    assert make_source("zarr", path, array="X", allow_missing_chunks=True).selection()["allow_missing_chunks"]
    with pytest.raises(MissingChunkError):
        open_source("zarr", path, array="X")


def test_zarr_truncated_chunk_raises_at_compute(zarr_store):
    path, array, layout = zarr_store
    damaged = chunk_file(path, array, (1, 0))
    truncate(damaged)
    before = digest(path)
    data = ZarrSource(path, "X", chunk_rows=100).open()  # opening reads no chunk: no error yet
    rows = stored_rows(layout)
    with pytest.raises(DamagedInputError) as info:
        data.data.compute()
    message = str(info.value)
    assert str(path) in message and "'X'" in message
    assert "(1, 0)" in message and f"rows {rows}-{2 * rows - 1}" in message and str(damaged) in message
    assert "re-create or restore the file" in message
    assert not isinstance(info.value, MissingChunkError)
    assert isinstance(info.value, OSError) and isinstance(info.value.__cause__, Exception)
    by_chunk = ZarrSource(path, "X", chunk_rows=rows).open().data
    np.testing.assert_array_equal(by_chunk.blocks[2].compute(), array[2 * rows:3 * rows])  # others still read
    with pytest.raises(DamagedInputError, match=rf"\(1, 0\) \(rows {rows}-{2 * rows - 1}"):
        by_chunk.blocks[1].compute()
    assert digest(path) == before


@pytest.mark.parametrize("layout", ["v2-blosc-lz4", "v3-blosc-lz4"])
def test_zarr_truncated_blosc_frame_is_caught_where_zarr_reads_garbage(tmp_path, X, layout):
    path = tmp_path / "lz4.zarr"
    array = write_zarr(path, X, layout)
    truncate(chunk_file(path, array, (1, 0)))
    silently_wrong = zarr.open_array(str(path), path="X", mode="r")[32:64]  # zarr alone: no error
    assert not np.array_equal(silently_wrong, X[32:64])
    with pytest.raises(DamagedInputError, match=r"chunk \(1, 0\) \(rows 32-63.*Blosc header records 784"):
        _ = ZarrSource(path, "X").open().values


def test_zarr_chunk_deleted_after_open_raises_at_read(tmp_path, X):
    path = tmp_path / "later.zarr"
    array = write_zarr(path, X, "v3-zstd")
    data = ZarrSource(path, "X", chunk_rows=STORED_ROWS).open()
    chunk_file(path, array, (3, 0)).unlink()
    np.testing.assert_array_equal(data.data.blocks[2].compute(), X[64:96])
    with pytest.raises(MissingChunkError, match=r"chunk \(3, 0\) \(rows 96-127.*allow_missing_chunks=True"):
        data.data.blocks[3].compute()


def test_zarr_store_with_expensive_listing_is_checked_as_chunks_are_read(tmp_path, X, monkeypatch):
    """Remote stores are not listed at open; the read of a missing chunk raises instead."""
    import pipeline.sources.zarr_source as zarr_source

    path = tmp_path / "remote-like.zarr"
    array = write_zarr(path, X, "v2-blosc")
    chunk_file(path, array, (4, 0)).unlink()
    monkeypatch.setattr(zarr_source, "cheap_listing", lambda store: False)
    data = ZarrSource(f"file://{path}", "X", chunk_rows=64).open()  # no listing: opens
    np.testing.assert_array_equal(data.data.blocks[0].compute(), X[:64])
    with pytest.raises(MissingChunkError) as info:
        _ = data.values
    assert f"file://{path}/X/4.0" in str(info.value) and "rows 128-159" in str(info.value)
    allowed = ZarrSource(f"file://{path}", "X", allow_missing_chunks=True).open().values
    assert (allowed[128:160] == 0).all()


def test_zarr_sample_ids_and_feature_names_are_checked(tmp_path):
    m = make_matrix(seed=11)
    source = ZarrArrayCase(3).write(tmp_path, m)
    store = Path(source.path)
    cell = zarr.open_array(str(store), path="cell", mode="r")
    chunk_file(store, cell, (2,)).unlink()
    with pytest.raises(MissingChunkError, match=r"sample-id array 'cell'.*\(2,\) \(rows 64-95"):
        source.open()
    data = ZarrSource(store, "X", allow_missing_chunks=True).open()
    np.testing.assert_array_equal(data.values, m.X)
    gene = zarr.open_array(str(store), path="gene", mode="r")
    truncate(chunk_file(store, gene, (0,)))
    with pytest.raises(DamagedInputError, match=r"feature-name array 'gene'.*chunk \(0,\)"):
        ZarrSource(store, "X", allow_missing_chunks=True).open()  # names are read at open


def test_zarr_truncated_sample_id_chunk_raises_at_compute(tmp_path):
    m = make_matrix(seed=12)
    source = ZarrArrayCase(2).write(tmp_path, m)
    cell = zarr.open_array(source.path, path="cell", mode="r")
    truncate(chunk_file(Path(source.path), cell, (5,)))
    data = source.open()
    np.testing.assert_array_equal(data.values, m.X)
    with pytest.raises(DamagedInputError, match=r"sample-id array 'cell'.*chunk \(5,\) \(rows 160-191"):
        _ = data["sample"].values


def test_xarray_variable_missing_and_damaged_chunks(tmp_path):
    m = make_matrix(seed=13)
    source = XarrayZarrCase().write(tmp_path, m)
    store = Path(source.path)
    expression = zarr.open_array(str(store), path="expression", mode="r")
    np.testing.assert_array_equal(source.open().values, m.X)
    truncate(chunk_file(store, expression, (2, 0)))
    data = source.open()
    with pytest.raises(DamagedInputError, match=r"variable 'expression'.*chunk \(2, 0\) \(rows 64-95"):
        _ = data.values
    chunk_file(store, expression, (2, 0)).unlink()
    with pytest.raises(MissingChunkError, match=r"variable 'expression'.*chunk \(2, 0\)"):
        source.open()
    values = ZarrSource(store, variable="expression", allow_missing_chunks=True).open().values
    assert np.isnan(values[64:96]).all()  # xarray's decoding: the fill value is masked as NaN
    np.testing.assert_array_equal(values[96:], m.X[96:])


# ---------------------------------------------------------------------------- Parquet


def _parquet_table(X: np.ndarray, first: int = 0) -> pa.Table:
    columns = {"cell_id": pa.array([f"cell{i:04d}" for i in range(first, first + len(X))])}
    columns.update({f"f{j}": pa.array(X[:, j]) for j in range(X.shape[1])})
    return pa.table(columns)


def test_parquet_garbled_page_names_file_and_row_group(tmp_path, X):
    path = tmp_path / "data.parquet"
    pq.write_table(_parquet_table(X), path, row_group_size=STORED_ROWS, use_dictionary=False)
    column = pq.ParquetFile(path).metadata.row_group(2).column(2)  # f1 in row group 2
    raw = bytearray(path.read_bytes())
    offset = column.data_page_offset
    raw[offset:offset + 16] = b"\xff" * 16  # the page header: thrift cannot decode it
    path.write_bytes(bytes(raw))
    before = digest(path)
    data = ParquetSource(path, id_column="cell_id", chunk_rows=2 * STORED_ROWS).open()
    np.testing.assert_array_equal(data.data.blocks[0].compute(), X[:64])
    with pytest.raises(DamagedInputError) as info:
        data.data.compute()
    message = str(info.value)
    assert str(path) in message and "row group 2" in message and "rows 64-95" in message
    assert "re-create or restore the file" in message
    assert isinstance(info.value, OSError) and isinstance(info.value.__cause__, OSError)
    unaffected = ParquetSource(path, columns=["f0", "f2"]).open()  # the damaged column is not read
    np.testing.assert_array_equal(unaffected.values, X[:, [0, 2]])
    assert digest(path) == before


def _parquet_directory(directory: Path, X: np.ndarray) -> Path:
    directory.mkdir()
    for i, (a, b) in enumerate([(0, 70), (70, 150), (150, N_ROWS)]):
        pq.write_table(_parquet_table(X[a:b], a), directory / f"part-{i}.parquet", row_group_size=25)
    return directory


def test_parquet_string_column_in_one_file_is_refused_at_open(tmp_path, X):
    directory = _parquet_directory(tmp_path / "dataset", X)
    odd = directory / "part-3.parquet"
    pq.write_table(pa.table({"cell_id": ["x"], "f0": [1.0], "f1": ["oops"], "f2": [2.0]}), odd)
    before = digest(directory)
    for columns in (None, ["f0", "f1"]):
        with pytest.raises(SchemaMismatchError) as info:
            ParquetSource(directory, columns=columns, id_column="cell_id").open()
        message = str(info.value)
        assert str(odd) in message and "'f1'" in message and "string" in message and "double" in message
        assert isinstance(info.value, TypeError)
    np.testing.assert_array_equal(ParquetSource(directory, columns=["f0", "f2"]).open().values[:N_ROWS],
                                  X[:, [0, 2]])
    assert digest(directory) == before


def test_parquet_id_column_of_another_kind_is_refused(tmp_path, X):
    directory = _parquet_directory(tmp_path / "dataset", X)
    pq.write_table(pa.table({"cell_id": [7], "f0": [1.0], "f1": [1.0], "f2": [2.0]}), directory / "part-3.parquet")
    with pytest.raises(SchemaMismatchError, match=r"id column 'cell_id'.*part-3.parquet.*int64.*string"):
        ParquetSource(directory, id_column="cell_id").open()


def test_parquet_column_missing_from_a_later_file_with_default_columns(tmp_path, X):
    directory = _parquet_directory(tmp_path / "dataset", X)
    pq.write_table(pa.table({"f0": [1.0], "f1": [1.0]}), directory / "part-3.parquet")
    with pytest.raises(SelectionError, match=r"\['f2'\].*part-3.parquet"):
        ParquetSource(directory).open()


def test_parquet_numeric_types_may_differ_between_files(tmp_path, X):
    """int64 in one file, float32 in another: read (cast per file), also across a chunk boundary."""
    directory = tmp_path / "mixed"
    directory.mkdir()
    ints = np.round(X[:100] * 10)
    pq.write_table(pa.table({"a": pa.array(ints[:, 0].astype(np.int64)), "b": pa.array(X[:100, 1])}),
                   directory / "part-0.parquet")
    pq.write_table(pa.table({"a": pa.array(X[100:, 0].astype(np.float32)), "b": pa.array(X[100:, 1])}),
                   directory / "part-1.parquet")
    data = ParquetSource(directory, chunk_rows=64).open()  # chunk 1 spans both files
    assert data.dtype == np.float64
    expected = np.column_stack([np.concatenate([ints[:, 0], X[100:, 0].astype(np.float32)]), X[:, 1]])
    np.testing.assert_array_equal(data.values, expected)


def test_parquet_truncated_file_in_directory_raises_at_open(tmp_path, X):
    directory = _parquet_directory(tmp_path / "dataset", X)
    truncate(directory / "part-1.parquet")
    before = digest(directory)
    with pytest.raises(DamagedInputError) as info:
        ParquetSource(directory).open()
    assert str(directory / "part-1.parquet") in str(info.value)
    assert "not a readable Parquet file" in str(info.value) and "re-create or restore the file" in str(info.value)
    assert digest(directory) == before


def test_parquet_non_parquet_file_in_directory_raises_at_open(tmp_path, X):
    directory = _parquet_directory(tmp_path / "dataset", X)
    (directory / "notes.txt").write_text("not parquet")
    with pytest.raises(SourceFormatError, match=r"notes.txt.*not a readable Parquet file"):
        ParquetSource(directory).open()


def test_parquet_undamaged_directory_reads_identically(tmp_path):
    m = make_matrix(seed=14)
    source = ParquetDirectoryCase().write(tmp_path, m, chunk_rows=97)
    before = digest(source.path)
    data = source.open()
    np.testing.assert_array_equal(data.values, m.X)
    np.testing.assert_array_equal(data["sample"].values.astype(str), m.ids)
    assert digest(source.path) == before


# ---------------------------------------------------------------------------- AnnData


def _adata(X: np.ndarray) -> ad.AnnData:
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"cell{i:04d}" for i in range(len(X))]),
                       var=pd.DataFrame(index=[f"gene{j}" for j in range(X.shape[1])]))
    adata.obsm["X_pca"] = X[:, :2] * 2
    return adata


def test_truncated_h5ad_names_the_file(tmp_path, X):
    path = tmp_path / "cells.h5ad"
    _adata(X).write_h5ad(path)
    np.testing.assert_array_equal(AnnDataSource(path).open().values, X)
    truncate(path)
    before = digest(path)
    for selection in ({}, {"obsm": "X_pca"}):
        with pytest.raises(DamagedInputError) as info:
            AnnDataSource(path, **selection).open()
        message = str(info.value)
        assert str(path) in message and "truncated" in message and "re-create or restore the file" in message
        assert isinstance(info.value, OSError)
    assert digest(path) == before


def test_h5ad_damaged_compressed_chunk_names_file_and_rows(tmp_path):
    X = np.random.default_rng(5).standard_normal((2000, 5))
    path = tmp_path / "gzip.h5ad"
    _adata(X).write_h5ad(path, compression="gzip")
    with h5py.File(path, "r") as f:
        step = f["X"].chunks[0]
        info = f["X"].id.get_chunk_info(2)  # the third stored chunk
        first_row = info.chunk_offset[0]
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + 10: info.byte_offset + 60] = b"\x00" * 50
    path.write_bytes(bytes(raw))
    before = digest(path)
    data = AnnDataSource(path, chunk_rows=1000).open()
    with pytest.raises(DamagedInputError) as err:
        _ = data.values
    message = str(err.value)
    assert str(path) in message and "'X'" in message
    assert f"rows {first_row}-{first_row + step - 1}" in message
    assert digest(path) == before


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_anndata_zarr_missing_and_truncated_chunks(tmp_path, X, zarr_format):
    path = tmp_path / "cells.zarr"
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=zarr_format):
        warnings.simplefilter("ignore")
        _adata(X).write_zarr(path, chunks=(STORED_ROWS, N_FEATURES))
    np.testing.assert_array_equal(AnnDataSource(path).open().values, X)
    array = zarr.open_array(str(path), path="X", mode="r")
    truncate(chunk_file(path, array, (2, 0)))
    data = AnnDataSource(path, chunk_rows=100).open()
    with pytest.raises(DamagedInputError, match=r"'X'.*chunk \(2, 0\) \(rows 64-95") as info:
        data.data.compute()
    assert str(path) in str(info.value)
    chunk_file(path, array, (2, 0)).unlink()
    before = digest(path)
    with pytest.raises(MissingChunkError, match=r"'X'.*chunk \(2, 0\) \(rows 64-95.*allow_missing_chunks=True"):
        AnnDataSource(path).open()
    values = AnnDataSource(path, allow_missing_chunks=True).open().values
    assert (values[64:96] == 0).all()
    np.testing.assert_array_equal(values[96:], X[96:])
    assert digest(path) == before


def test_anndata_zarr_sparse_matrix_is_checked(tmp_path):
    m = make_matrix(seed=15, zeros=True)
    source = AnnDataCase("zarr", "layer", zarr_format=3, sparse=True).write(tmp_path, m)
    store = Path(source.path)
    data_array = zarr.open_array(str(store), path="layers/counts/data", mode="r")  # one chunk
    truncate(chunk_file(store, data_array, (0,)))
    with pytest.raises(DamagedInputError, match=r"'layers/counts'.*rows \d+-\d+ cannot be read"):
        _ = AnnDataSource(store, layer="counts", chunk_rows=100).open().values
    chunk_file(store, data_array, (0,)).unlink()
    with pytest.raises(MissingChunkError, match=r"layers/counts.*\(data\).*chunk \(0,\)"):
        source.open()


def test_anndata_zarr_obs_index_is_checked(tmp_path, X):
    path = tmp_path / "cells.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _adata(X).write_zarr(path, chunks=(STORED_ROWS, N_FEATURES))
    index = zarr.open_array(str(path), path="obs/_index", mode="r")
    chunk_file(path, index, (0,)).unlink()
    with pytest.raises(MissingChunkError, match=r"obs index 'obs/_index'.*chunk \(0,\)"):
        AnnDataSource(path, obsm="X_pca").open()


def test_chunks_left_unwritten_because_they_equal_the_fill_value(tmp_path):
    """zarr and anndata skip all-fill chunks by default: such a store needs allow_missing_chunks=True."""
    X = np.ones((100, 2))
    X[32:64] = 0.0  # one whole stored chunk of zeros: never written
    path = tmp_path / "zeros.zarr"
    zarr.open_group(str(path), mode="w").create_array("X", data=X, chunks=(32, 2))
    with pytest.raises(MissingChunkError, match=r"chunk \(1, 0\).*never written on purpose.*allow_missing_chunks"):
        ZarrSource(path, "X").open()
    np.testing.assert_array_equal(ZarrSource(path, "X", allow_missing_chunks=True).open().values, X)
