"""Sinks: results read back equal what was written; writes are atomic and never clobber.

One shared base (:class:`SinkRoundTrip`) is inherited per output format.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import warnings
from datetime import datetime
from pathlib import Path

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr
import zarr
from pydantic_core import PydanticUndefined

import gmm_stream
from pipeline.exceptions import InputOverlapError, OutputExistsError, SinkError
from pipeline.provenance import ENCODING_TYPE, ENCODING_VERSION, make_provenance
from pipeline.results import Results
from pipeline.sinks import METADATA_KEY, SINKS, AnnDataSink, ParquetSink, Sink, ZarrSink, make_sink

N, K, CHUNK = 300, 3, 64
SETTINGS = {"n_components": K, "steps": ["standardize"], "seed": 0}


def make_results(seed: int = 0, ids: bool = True, fail_at_chunk: int | None = None) -> Results:
    """Random results with one row of no observed value (label -1, NaN proba and logdens)."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(K), size=N).astype(np.float32)
    labels = proba.argmax(axis=1)
    logdens = rng.normal(-3, 1, N)
    labels[5], proba[5], logdens[5] = -1, np.nan, np.nan
    lazy_labels = da.from_array(labels, chunks=CHUNK)
    if fail_at_chunk is not None:
        def boom(block, block_info=None):
            if block_info[0]["chunk-location"][0] == fail_at_chunk:
                raise RuntimeError("simulated crash mid-write")
            return block
        lazy_labels = lazy_labels.map_blocks(boom, dtype=labels.dtype)
    sample_ids = np.asarray([f"cell{i:04d}" for i in range(N)]) if ids else None
    return Results(lazy_labels, da.from_array(proba, chunks=(CHUNK, K)), da.from_array(logdens, chunks=CHUNK),
                   None if sample_ids is None else da.from_array(sample_ids, chunks=CHUNK))


def as_str(values) -> np.ndarray:
    return np.asarray([str(v) for v in np.asarray(values).tolist()])


def computed(results: Results) -> dict[str, np.ndarray]:
    return {"labels": results.labels.compute(), "proba": results.proba.compute(),
            "logdens": results.logdens.compute(),
            "ids": None if results.sample_ids is None else results.sample_ids.compute()}


def make_input_anndata(directory: Path, store: str = "h5ad") -> Path:
    ids = [f"cell{i:04d}" for i in range(N)]
    adata = ad.AnnData(X=np.random.default_rng(1).standard_normal((N, 4)),
                       obs=pd.DataFrame({"batch": pd.Categorical(["a", "b"] * (N // 2))}, index=ids))
    adata.obsm["X_pca"] = adata.X[:, :2].copy()
    adata.uns["keep"] = {"me": 1}
    if store == "h5ad":
        path = directory / "input.h5ad"
        adata.write_h5ad(path)
    else:
        path = directory / "input.zarr"
        with warnings.catch_warnings(), ad.settings.override(zarr_write_format=3):
            warnings.simplefilter("ignore")
            adata.write_zarr(path)
    return path


def tree_digest(path: Path) -> str:
    """SHA-256 over every file (name and bytes) under ``path`` (or of the file itself)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def hidden_siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


class SinkRoundTrip:
    """Tests every sink must pass; subclasses define ``output``, ``make`` and ``read``."""

    output = "results"
    keeps_ids = True

    @pytest.fixture
    def input_path(self, tmp_path):
        return make_input_anndata(tmp_path)

    @pytest.fixture
    def provenance(self, input_path):
        return make_provenance(SETTINGS, {"kind": "anndata", "path": str(input_path), "shape": [N, 4]})

    def make(self, path: Path, input_path: Path, overwrite: bool = False) -> Sink:
        raise NotImplementedError

    def read(self, path: Path) -> tuple[dict[str, np.ndarray], dict]:
        """(ids, labels, proba, logdens) and the stamp of a written output."""
        raise NotImplementedError

    def write(self, tmp_path, input_path, provenance, results, overwrite=False) -> Path:
        sink = self.make(tmp_path / self.output, input_path, overwrite=overwrite)
        return sink.write(results, provenance=provenance, settings=SETTINGS)

    def assert_equal(self, got, expected):
        np.testing.assert_array_equal(got["labels"], expected["labels"])
        assert np.issubdtype(got["labels"].dtype, np.integer)
        assert got["proba"].dtype == np.float32
        np.testing.assert_array_equal(got["proba"], expected["proba"])
        np.testing.assert_array_equal(got["logdens"], expected["logdens"])
        if expected["ids"] is not None and self.keeps_ids:
            np.testing.assert_array_equal(as_str(got["ids"]), expected["ids"])

    def test_round_trip(self, tmp_path, input_path, provenance):
        results = make_results()
        path = self.write(tmp_path, input_path, provenance, results)
        got, _ = self.read(path)
        self.assert_equal(got, computed(results))
        assert got["labels"][5] == -1 and np.isnan(got["proba"][5]).all() and np.isnan(got["logdens"][5])

    def test_stamp(self, tmp_path, input_path, provenance):
        path = self.write(tmp_path, input_path, provenance, make_results())
        _, stamp = self.read(path)
        assert stamp["encoding-type"] == ENCODING_TYPE and stamp["encoding-version"] == ENCODING_VERSION
        prov = stamp["provenance"]
        assert prov["gmm_stream_version"] == gmm_stream.__version__
        assert prov["config_sha256"] == provenance["config_sha256"]
        assert prov["input_sha256"] == provenance["input_sha256"]
        assert datetime.fromisoformat(prov["created"]).utcoffset().total_seconds() == 0
        assert int(stamp["settings"]["n_components"]) == K

    def test_existing_output_is_not_overwritten(self, tmp_path, input_path, provenance):
        path = self.write(tmp_path, input_path, provenance, make_results(seed=0))
        before = tree_digest(path)
        with pytest.raises(FileExistsError, match="overwrite=True") as info:
            self.write(tmp_path, input_path, provenance, make_results(seed=1))
        assert isinstance(info.value, OutputExistsError)
        assert tree_digest(path) == before
        assert hidden_siblings(path) == []

    def test_overwrite_replaces(self, tmp_path, input_path, provenance):
        self.write(tmp_path, input_path, provenance, make_results(seed=0))
        new = make_results(seed=1)
        path = self.write(tmp_path, input_path, provenance, new, overwrite=True)
        self.assert_equal(self.read(path)[0], computed(new))
        assert hidden_siblings(path) == []

    def test_interrupted_write_leaves_nothing(self, tmp_path, input_path, provenance):
        with pytest.raises(RuntimeError, match="simulated crash"):
            self.write(tmp_path, input_path, provenance, make_results(fail_at_chunk=2))
        target = tmp_path / self.output
        assert not target.exists()
        assert hidden_siblings(target) == []

    def test_interrupted_overwrite_keeps_the_previous_output(self, tmp_path, input_path, provenance):
        old = make_results(seed=0)
        path = self.write(tmp_path, input_path, provenance, old)
        before = tree_digest(path)
        with pytest.raises(RuntimeError, match="simulated crash"):
            self.write(tmp_path, input_path, provenance, make_results(seed=1, fail_at_chunk=3), overwrite=True)
        assert tree_digest(path) == before
        self.assert_equal(self.read(path)[0], computed(old))
        assert hidden_siblings(path) == []

    def test_output_over_the_input_is_refused(self, tmp_path, input_path, provenance):
        sink = self.make(input_path, input_path, overwrite=True)
        before = tree_digest(input_path)
        with pytest.raises(InputOverlapError, match="input is never modified"):
            sink.write(make_results(), provenance=provenance)
        assert tree_digest(input_path) == before


class TestZarrSink(SinkRoundTrip):
    output = "results.zarr"

    def make(self, path, input_path, overwrite=False):
        return ZarrSink(path, overwrite=overwrite)

    def read(self, path):
        ds = xr.open_zarr(path)  # consolidated metadata: no "not consolidated" warning
        got = {"ids": ds["sample"].values, "labels": ds["label"].values, "proba": ds["proba"].values,
               "logdens": ds["logdens"].values}
        return got, dict(zarr.open_group(str(path), mode="r").attrs)

    def test_written_chunk_by_chunk(self, tmp_path, input_path, provenance):
        path = self.write(tmp_path, input_path, provenance, make_results())
        group = zarr.open_group(str(path), mode="r")
        assert group["proba"].chunks == (CHUNK, K)
        assert group["label"].chunks == (CHUNK,)

    def test_row_numbers_when_no_ids(self, tmp_path, input_path, provenance):
        path = self.write(tmp_path, input_path, provenance, make_results(ids=False))
        np.testing.assert_array_equal(self.read(path)[0]["ids"], np.arange(N))


class TestZarrV2Sink(TestZarrSink):
    def make(self, path, input_path, overwrite=False):
        return ZarrSink(path, overwrite=overwrite, zarr_format=2)


class TestParquetSink(SinkRoundTrip):
    output = "results.parquet"

    def make(self, path, input_path, overwrite=False):
        return ParquetSink(path, overwrite=overwrite, id_column="cell")

    def read(self, path):
        df = pd.read_parquet(path)
        proba = df[[f"proba_{k}" for k in range(K)]].to_numpy()
        got = {"ids": df["cell"].to_numpy(), "labels": df["label"].to_numpy(), "proba": proba,
               "logdens": df["logdens"].to_numpy()}
        first = sorted(path.glob("part-*.parquet"))[0]
        return got, json.loads(pq.read_schema(first).metadata[METADATA_KEY])

    def test_written_chunk_by_chunk(self, tmp_path, input_path, provenance):
        path = self.write(tmp_path, input_path, provenance, make_results())
        assert len(list(path.glob("part-*.parquet"))) == -(-N // CHUNK)


class TestAnnDataH5adSink(SinkRoundTrip):
    output = "results.h5ad"
    store = "h5ad"
    key = "gmm"

    @pytest.fixture
    def input_path(self, tmp_path):
        return make_input_anndata(tmp_path, self.store)

    def make(self, path, input_path, overwrite=False):
        return AnnDataSink(path, input_path, key_added=self.key, overwrite=overwrite)

    def _read_adata(self, path):
        return ad.read_h5ad(path) if self.store == "h5ad" else ad.read_zarr(path)

    def read(self, path):
        adata = self._read_adata(path)
        labels = adata.obs[self.key]
        assert isinstance(labels.dtype, pd.CategoricalDtype)
        assert list(labels.cat.categories) == [str(k) for k in range(K)]
        got = {"ids": adata.obs_names.to_numpy(), "labels": labels.cat.codes.to_numpy(),
               "proba": adata.obsm[f"{self.key}_proba"], "logdens": adata.obs[f"{self.key}_logdens"].to_numpy()}
        uns = adata.uns[self.key]
        stamp = {"encoding-type": uns["encoding_type"], "encoding-version": uns["encoding_version"],
                 "provenance": uns["provenance"], "settings": uns["settings"]}
        return got, stamp

    def test_copy_keeps_the_input_and_the_input_is_unchanged(self, tmp_path, input_path, provenance):
        before = tree_digest(input_path)
        params = {"weights": np.full(K, 1 / K), "means": np.zeros((K, 4)), "covariance_type": "full"}
        sink = self.make(tmp_path / self.output, input_path)
        path = sink.write(make_results(), provenance=provenance, settings=SETTINGS, params=params)
        assert tree_digest(input_path) == before
        original, out = self._read_adata(input_path), self._read_adata(path)
        np.testing.assert_array_equal(out.X, original.X)
        np.testing.assert_array_equal(out.obsm["X_pca"], original.obsm["X_pca"])
        assert list(out.obs.columns) == ["batch", self.key, f"{self.key}_logdens"]
        assert out.uns["keep"] == {"me": 1}
        np.testing.assert_array_equal(out.uns[self.key]["params"]["means"], params["means"])
        assert out.uns[self.key]["params"]["covariance_type"] == "full"

    def test_writing_the_same_key_again_replaces_it(self, tmp_path, input_path, provenance):
        first = self.make(tmp_path / self.output, input_path).write(make_results(seed=0), provenance=provenance)
        second_path = tmp_path / ("again" + Path(self.output).suffix)
        new = make_results(seed=1)
        self.make(second_path, first).write(new, provenance=provenance)
        assert list(self._read_adata(second_path).obs.columns) == ["batch", self.key, f"{self.key}_logdens"]
        self.assert_equal(self.read(second_path)[0], computed(new))

    def test_rows_must_match_the_input(self, tmp_path, input_path, provenance):
        sink = self.make(tmp_path / self.output, input_path)
        shuffled = make_results()
        ids = shuffled.sample_ids.compute()[::-1]
        bad_ids = Results(shuffled.labels, shuffled.proba, shuffled.logdens, ids)
        with pytest.raises(SinkError, match="differ from the obs_names"):
            sink.write(bad_ids, provenance=provenance)
        short = Results(np.zeros(10, int), np.full((10, K), 1 / K), np.zeros(10))
        with pytest.raises(SinkError, match="10 rows but AnnData"):
            sink.write(short, provenance=provenance)
        assert not (tmp_path / self.output).exists()


class TestAnnDataZarrSink(TestAnnDataH5adSink):
    output = "results.zarr"
    store = "zarr"
    key = "clusters"


# ------------------------------------------------------------------- other checks


def test_make_sink_and_results_validation(tmp_path):
    assert isinstance(make_sink("parquet", tmp_path / "x"), ParquetSink)
    with pytest.raises(SinkError, match="unknown sink kind 'csv'"):
        make_sink("csv", tmp_path / "x")
    with pytest.raises(SinkError, match="disagree on the number of rows"):
        Results(np.zeros(3, int), np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(SinkError, match="key_added"):
        AnnDataSink(tmp_path / "o.h5ad", tmp_path / "i.h5ad", key_added="a/b")


@pytest.mark.parametrize("kind", sorted(SINKS))
def test_each_sink_declares_its_own_options(kind):
    """The options model names exactly what the constructor takes beyond path and overwrite,
    with the same defaults."""
    cls = SINKS[kind]
    own = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
           if name not in ("self", "path", "overwrite")}
    fields = cls.options_model.model_fields
    assert set(fields) == set(own)
    assert {name: f.default if f.default is not PydanticUndefined else inspect.Parameter.empty
            for name, f in fields.items()} == own


@pytest.mark.parametrize("kind, options, key, words", [
    ("zarr", {"zarr_format": 4}, "zarr_format", "2 or 3, got 4"),
    ("parquet", {"compression": "lzo"}, "compression", "'brotli' or 'none', got 'lzo'"),
    ("parquet", {"id_column": ""}, "id_column", "at least 1 character"),
    ("anndata", {"input_path": "in.h5ad", "key_added": "a/b"}, "key_added", "got 'a/b'"),
])
def test_sink_options_breaking_a_rule_are_refused_by_the_constructor(tmp_path, kind, options, key, words):
    with pytest.raises(SinkError) as info:
        make_sink(kind, tmp_path / "out", **options)
    assert f"{kind} sink {str(tmp_path / 'out')!r}: {key}: " in str(info.value) and words in str(info.value)


def test_nothing_is_computed_before_write(tmp_path):
    """The sink computes chunks itself: a lazy failure surfaces only in ``write``."""
    results = make_results(fail_at_chunk=0)  # building Results must not compute anything
    aligned = results.aligned()
    assert isinstance(aligned.labels, da.Array)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ZarrSink(tmp_path / "r.zarr").write(results, provenance={"input": {}})
    assert os.listdir(tmp_path) == []
