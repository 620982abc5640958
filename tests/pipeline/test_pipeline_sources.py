"""Sources: what is read equals what zarr, pyarrow and anndata wrote, lazily, in known row chunks.

One shared round-trip base (:class:`SourceRoundTrip`) is inherited per format, as
xarray's backend tests do.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from pipeline.sources import FEATURE_DIM, SAMPLE_DIM, ParquetSource, ZarrSource, make_source, open_source

from pipeline_testing import (
    STORED_ROWS,
    AnnDataCase,
    ParquetDirectoryCase,
    ParquetFileCase,
    ParquetGlobCase,
    SourceCase,
    XarrayZarrCase,
    ZarrArrayCase,
    ZarrGroupCase,
    make_matrix,
)


class SourceRoundTrip:
    """Tests every format must pass; subclasses set ``case``."""

    case: SourceCase

    @pytest.fixture
    def m(self):
        return make_matrix(seed=1, zeros=self.case.zeros)

    def test_values_ids_and_names_survive(self, tmp_path, m):
        data = self.case.write(tmp_path, m).open()
        assert data.dims == (SAMPLE_DIM, FEATURE_DIM)
        assert isinstance(data.data, da.Array)
        expected = self.case.expected(m)
        assert data.dtype == np.float64
        assert np.isnan(expected).any()  # the test data do hold missing values
        np.testing.assert_array_equal(data.values, expected)  # NaN equal NaN here
        if self.case.has_ids:
            np.testing.assert_array_equal(data[SAMPLE_DIM].values.astype(str), m.ids)
        if self.case.has_names:
            names = m.names[list(ParquetGlobCase.subset)] if isinstance(self.case, ParquetGlobCase) else m.names
            np.testing.assert_array_equal(data[FEATURE_DIM].values.astype(str), names)
        else:
            assert FEATURE_DIM not in data.coords

    def test_row_chunks_by_rows_are_known_and_regular(self, tmp_path, m):
        data = self.case.write(tmp_path, m, chunk_rows=100).open()
        rows, cols = data.data.chunks
        assert rows == (100, 100, 100, 100, 80)
        assert cols == (data.shape[1],)
        if self.case.has_ids:
            assert data[SAMPLE_DIM].data.chunks == (rows,)

    def test_row_chunks_by_bytes(self, tmp_path, m):
        d = self.case.expected(m).shape[1]
        data = self.case.write(tmp_path, m, chunk_bytes=2 * STORED_ROWS * d * 8).open()
        assert data.data.chunks[0][0] == self.case.byte_chunk_rows
        assert set(data.data.chunks[0][:-1]) <= {self.case.byte_chunk_rows}

    def test_open_reads_no_data(self, tmp_path, m):
        """Rewrite the file after opening: computing must see the new values."""
        source = self.case.write(tmp_path, m, chunk_rows=64)
        data = source.open()
        changed = type(m)(np.where(m.X == 0, 0.0, m.X + 100.0), m.ids, m.names)  # same sparsity
        self.case.write(tmp_path, changed)
        np.testing.assert_array_equal(data.values, self.case.expected(changed))

    def test_identity(self, tmp_path, m):
        source = self.case.write(tmp_path, m)
        identity = source.identity()
        assert identity["kind"] == source.kind
        assert identity["path"] == source.path
        assert identity["shape"] == list(self.case.expected(m).shape)
        assert identity["mtime"]

    def test_open_source_factory(self, tmp_path, m):
        source = self.case.write(tmp_path, m)
        options = {k: v for k, v in vars(source).items() if k not in ("path", "storage_options")}
        data = open_source(source.kind, source.path, **options)
        np.testing.assert_array_equal(data.values, self.case.expected(m))


class TestZarrV3(SourceRoundTrip):
    case = ZarrArrayCase(3)


class TestZarrV2(SourceRoundTrip):
    case = ZarrArrayCase(2)


class TestZarrFsspecURL(SourceRoundTrip):
    case = ZarrArrayCase(3, url=True)


class TestZarrNestedGroup(SourceRoundTrip):
    case = ZarrGroupCase()


class TestXarrayZarrVariable(SourceRoundTrip):
    case = XarrayZarrCase()


class TestParquetFile(SourceRoundTrip):
    case = ParquetFileCase()


class TestParquetDirectory(SourceRoundTrip):
    case = ParquetDirectoryCase()


class TestParquetGlob(SourceRoundTrip):
    case = ParquetGlobCase()


class TestAnnDataH5adX(SourceRoundTrip):
    case = AnnDataCase("h5ad", "X")


class TestAnnDataH5adObsm(SourceRoundTrip):
    case = AnnDataCase("h5ad", "obsm")


class TestAnnDataH5adLayer(SourceRoundTrip):
    case = AnnDataCase("h5ad", "layer")


class TestAnnDataH5adSparseX(SourceRoundTrip):
    case = AnnDataCase("h5ad", "X", sparse=True)


class TestAnnDataZarrV3X(SourceRoundTrip):
    case = AnnDataCase("zarr", "X", zarr_format=3)


class TestAnnDataZarrV2Obsm(SourceRoundTrip):
    case = AnnDataCase("zarr", "obsm", zarr_format=2)


class TestAnnDataZarrSparseLayer(SourceRoundTrip):
    case = AnnDataCase("zarr", "layer", zarr_format=3, sparse=True)


# ------------------------------------------------------------------- format specifics


def test_sparse_x_is_densified_chunk_by_chunk(tmp_path):
    m = make_matrix(seed=2, zeros=True)
    data = AnnDataCase("h5ad", "X", sparse=True).write(tmp_path, m, chunk_rows=100).open()
    block = data.data.blocks[1].compute()
    assert isinstance(block, np.ndarray) and block.shape == (100, m.X.shape[1])
    np.testing.assert_array_equal(block, m.X[100:200])


def test_parquet_nulls_in_integer_and_float32_columns(tmp_path):
    path = tmp_path / "ints.parquet"
    table = pa.table({
        "a": pa.array([1, None, 3, 4], type=pa.int64()),
        "b": pa.array([0.5, 1.5, None, 2.5], type=pa.float32()),
    })
    pq.write_table(table, path)
    data = ParquetSource(path).open()
    assert data.dtype == np.float64  # an integer column makes the matrix float64
    np.testing.assert_array_equal(data.values, [[1, 0.5], [np.nan, 1.5], [3, np.nan], [4, 2.5]])
    only_b = ParquetSource(path, columns=["b"]).open()
    assert only_b.dtype == np.float32
    assert only_b.data.compute().dtype == np.float32


def test_parquet_default_columns_skip_text_and_id(tmp_path):
    m = make_matrix(seed=3)
    data = ParquetFileCase().write(tmp_path, m).open()
    assert list(data[FEATURE_DIM].values) == list(m.names)  # "note" (text) and "cell_id" left out


def test_parquet_chunks_cross_row_group_and_file_boundaries(tmp_path):
    m = make_matrix(seed=4)
    source = ParquetDirectoryCase().write(tmp_path, m, chunk_rows=97)  # 45-row groups, files of 150/200/130
    data = source.open()
    assert data.data.chunks[0] == (97,) * 4 + (92,)
    for i, block in enumerate(data.data.to_delayed().ravel()):
        np.testing.assert_array_equal(block.compute(), m.X[97 * i: 97 * (i + 1)])


def test_zarr_float32_stays_float32_and_integers_become_float64(tmp_path):
    group = zarr.open_group(str(tmp_path / "t.zarr"), mode="w")
    group.create_array("f", data=np.ones((10, 2), dtype=np.float32))
    group.create_array("i", data=np.arange(20, dtype=np.int32).reshape(10, 2))
    assert ZarrSource(tmp_path / "t.zarr", "f").open().dtype == np.float32
    ints = ZarrSource(tmp_path / "t.zarr", "i").open()
    assert ints.dtype == np.float64
    np.testing.assert_array_equal(ints.values, np.arange(20).reshape(10, 2))


def test_infer_kind_from_path(tmp_path):
    m = make_matrix(seed=5)
    for sub in ("a", "b", "c", "d"):
        (tmp_path / sub).mkdir()
    h5ad = AnnDataCase("h5ad", "X").write(tmp_path / "a", m)
    adz = AnnDataCase("zarr", "X").write(tmp_path / "b", m)
    plain = ZarrArrayCase(3).write(tmp_path / "c", m)
    parquet = ParquetFileCase().write(tmp_path / "d", m)
    assert make_source(None, h5ad.path).kind == "anndata"
    assert make_source(None, adz.path).kind == "anndata"
    assert make_source(None, plain.path, array="X").kind == "zarr"
    assert make_source(None, parquet.path).kind == "parquet"


def test_parquet_through_an_fsspec_url():
    import fsspec

    m = make_matrix(seed=6)
    fs = fsspec.filesystem("memory")
    table = pa.table({"cell_id": m.ids, **{str(n): m.X[:, j] for j, n in enumerate(m.names)}})
    for i, rows in enumerate((slice(0, 200), slice(200, None))):
        with fs.open(f"/bench-pipeline-test/part-{i}.parquet", "wb") as handle:
            pq.write_table(table.slice(rows.start, (rows.stop or len(m.ids)) - rows.start), handle,
                           row_group_size=50)
    try:
        source = ParquetSource("memory://bench-pipeline-test", id_column="cell_id", chunk_rows=128)
        data = source.open()
        np.testing.assert_array_equal(data.values, m.X)
        np.testing.assert_array_equal(data["sample"].values.astype(str), m.ids)
        assert source.identity()["path"] == "memory://bench-pipeline-test"
    finally:
        fs.rm("/bench-pipeline-test", recursive=True)
