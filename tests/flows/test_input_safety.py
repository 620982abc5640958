"""The input is untouchable, whatever path leads to it (symlinks, ``..``, globs, directories).

Each case builds real input files (zarr, pyarrow, anndata), a job or an API call whose
output would land on the input, and checks that it is refused before anything is
written, and that the input's bytes are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest
import zarr

from flows.config import load_job
from flows.preflight import preflight
from gmm_stream import GaussianMixture
from pipeline import ParquetSink, Preprocessor, ZarrSink, make_provenance, open_source, predict_results, save_model
from pipeline.exceptions import InputOverlapError
from pipeline.output_set import OutputSet

from flows_testing import BIN, small_data, write_job, write_parquet


def tree_digest(path: Path) -> str:
    """SHA-256 over every file's relative path and bytes (following no link)."""
    digest = hashlib.sha256()
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*"))
    for p in paths:
        digest.update(str(p.relative_to(path.parent)).encode())
        if p.is_symlink():
            digest.update(os.readlink(p).encode())
        elif p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def zarr_input(tmp_path) -> Path:
    X = small_data(n=400).X
    path = tmp_path / "data" / "in.zarr"
    zarr.create_array(str(path), data=X, chunks=(100, X.shape[1]))
    return path


def _job(tmp_path: Path, source: dict, output: dict, **extra) -> Path:
    job = {"name": "safety", "flow": "fit", "source": source, "model": {"n_components": 2},
           "output": {"overwrite": True, **output}, **extra}
    return write_job(tmp_path / "job.yaml", job)


def _refused(job_path: Path, match: str) -> None:
    with pytest.raises(InputOverlapError, match=match):
        preflight(load_job(job_path))


def test_a_symlinked_input_with_a_sink_at_its_real_path_is_refused(tmp_path, zarr_input):
    link = tmp_path / "link.zarr"
    link.symlink_to(zarr_input)
    before = tree_digest(zarr_input)
    job = _job(tmp_path, {"format": "zarr", "path": str(link)},
               {"directory": str(zarr_input.parent), "sinks": [{"format": "zarr", "path": "in.zarr"}]})
    _refused(job, "overlaps the input .*in.zarr")
    assert tree_digest(zarr_input) == before


def test_an_output_directory_inside_the_input_store_is_refused_before_anything_is_written(tmp_path, zarr_input):
    before = tree_digest(zarr_input)
    for directory in (zarr_input, zarr_input / "results", tmp_path / "data" / "x" / ".." / "in.zarr"):
        job = _job(tmp_path, {"format": "zarr", "path": str(zarr_input)},
                   {"directory": str(directory), "sinks": [{"format": "parquet", "path": "p.parquet"}]})
        _refused(job, "is or lies inside the input")
    assert tree_digest(zarr_input) == before


def test_a_glob_input_protects_every_file_it_matches(tmp_path):
    d = small_data(n=300)
    X, ids = d.X, d.ids
    pq_dir = tmp_path / "pq"
    for i, name in enumerate(["a", "b"]):
        write_parquet(pq_dir / f"{name}.parquet", X[i * 150:(i + 1) * 150], ids[i * 150:(i + 1) * 150])
    before = tree_digest(pq_dir)
    job = _job(tmp_path,
               {"format": "parquet", "path": str(pq_dir / "*.parquet"), "selection": {"id_column": "sample_id"}},
               {"directory": str(pq_dir), "sinks": [{"format": "parquet", "path": "a.parquet"}]})
    _refused(job, r"overlaps the input .*a\.parquet")
    assert tree_digest(pq_dir) == before


def test_a_file_behind_a_symlink_inside_a_directory_input_is_protected(tmp_path):
    d = small_data(n=300)
    X, ids = d.X, d.ids
    elsewhere = write_parquet(tmp_path / "elsewhere" / "real.parquet", X, ids)
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "part.parquet").symlink_to(elsewhere)
    before = tree_digest(elsewhere)
    job = _job(tmp_path, {"format": "parquet", "path": str(dataset), "selection": {"id_column": "sample_id"}},
               {"directory": str(elsewhere.parent), "sinks": [{"format": "parquet", "path": "real.parquet"}]})
    _refused(job, "overlaps the input .*real.parquet")
    assert tree_digest(elsewhere) == before


def test_a_predict_job_never_writes_over_its_model(tmp_path, zarr_input):
    """A predict job in the fit job's output directory would replace the run that holds its model."""
    fit_outputs = OutputSet(tmp_path / "out", ["model"])
    with fit_outputs.lock():
        run = fit_outputs.begin("fit-job", overwrite=False)
        gm = GaussianMixture(2, random_state=0).fit(small_data(n=200).X)
        save_model(gm, run.path(tmp_path / "out" / "model"))
        fit_outputs.publish(run)
    model_dir = tmp_path / "out" / "model"
    before = tree_digest(model_dir.resolve())
    job = {"name": "p", "flow": "predict", "source": {"format": "zarr", "path": str(zarr_input)},
           "predict": {"model": str(model_dir)},
           "output": {"directory": str(model_dir.parent), "overwrite": True,
                      "sinks": [{"format": "parquet", "path": "pred.parquet"}]}}
    with pytest.raises(InputOverlapError, match="predict.model"):
        preflight(load_job(write_job(tmp_path / "p.yaml", job)))
    assert tree_digest(model_dir.resolve()) == before


def test_the_python_api_resolves_dotdot_and_symlinks(tmp_path, zarr_input):
    (tmp_path / "data" / "sub").mkdir()
    X = open_source("zarr", zarr_input)  # opening registers the input
    before = tree_digest(zarr_input)
    gm = GaussianMixture(2, random_state=0).fit(X)
    results = predict_results(gm, X)
    provenance = make_provenance({}, {"path": str(zarr_input)})
    link = tmp_path / "alias.zarr"
    link.symlink_to(zarr_input)
    for path in (tmp_path / "data" / "sub" / ".." / "in.zarr", link, zarr_input / "labels"):
        with pytest.raises(InputOverlapError, match="input is never modified"):
            ZarrSink(path, overwrite=True).write(results, provenance=provenance)
        with pytest.raises(InputOverlapError):
            ParquetSink(path, overwrite=True).write(results, provenance={})  # no provenance: the registry
        with pytest.raises(InputOverlapError):
            save_model(gm, path, overwrite=True)
        with pytest.raises(InputOverlapError):
            Preprocessor(["standardize"]).fit(X).save(path, overwrite=True)
    assert tree_digest(zarr_input) == before


def test_the_cli_refuses_before_starting_prefect(tmp_path, zarr_input):
    job = _job(tmp_path, {"format": "zarr", "path": str(zarr_input)},
               {"directory": str(zarr_input), "sinks": [{"format": "parquet", "path": "p.parquet"}]})
    before = tree_digest(zarr_input)
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "gmm-stream"), "run", str(job), "--no-progress"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")})
    assert proc.returncode == 1, proc.stderr
    assert "is or lies inside the input" in proc.stderr and "Prefect" not in proc.stderr
    assert time.monotonic() - started < 15  # no server start (10-20 s), no data read
    assert tree_digest(zarr_input) == before

