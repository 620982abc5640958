"""The update flow end to end, against Prefect's real temporary server (no mocks).

A directory of Parquet files (written by pyarrow) is fitted by a first ``update`` run, then
files are added or removed and the next run refreshes the published model. The refreshed
model is checked against computations made here: the standardisation from pandas' own
moments, a plain-Python ``GaussianMixture.refresh`` from the first run's saved model, a
full refit on all the rows, and an E-step over all the rows for the partition record.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.exceptions import ConfigError
from flows.update import update_flow
from gmm_stream import GaussianMixture
from pipeline.model_directory import read_model_directory
from pipeline.partitions import PARTITIONS_FILE

from flows_testing import read_predictions, small_data, write_job, write_parquet

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(300),
              pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              # the saved models were fitted on named features; the checks here pass NumPy arrays
              pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning")]

ROWS_PER_FILE = 3000
FEATURES = ["x0", "x1", "x2"]
TOL = 1e-6


def _data():
    """12 000 rows of one well separated 3-component mixture in 3-D, 3 % of the values missing."""
    return small_data(n=4 * ROWS_PER_FILE, d=3, k=3, seed=11, missing=0.03)


def _write_file(directory: Path, data, i: int) -> Path:
    rows = slice(i * ROWS_PER_FILE, (i + 1) * ROWS_PER_FILE)
    return write_parquet(directory / f"part-{i}.parquet", data.X[rows], data.ids[rows])


def _job(tmp: Path, name: str = "refresh") -> Path:
    return write_job(tmp / f"{name}.yaml", {
        "name": name,
        "flow": "update",
        "source": {"format": "parquet", "path": str(tmp / "data"),
                   "selection": {"columns": FEATURES, "id_column": "sample_id"}, "chunk_rows": 1000},
        "preprocessing": ["standardize"],
        "model": {"n_components": 3, "covariance_type": "full", "tol": TOL, "max_iter": 300, "random_state": 0},
        "output": {"directory": str(tmp / "out"), "sinks": [{"format": "parquet", "path": "predictions.parquet"}]},
        "report": {"plots": False},
    })


def _copy(src: Path, dst: Path) -> Path:
    """A copy of a published entry (the output set replaces it at the next run)."""
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return dst


def _digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory`` (symbolic links followed), by relative path."""
    root = directory.resolve()
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _standardized(data, n_files: int, fitted_on: int) -> np.ndarray:
    """The first ``n_files`` files' rows, standardised with the NaN-aware moments (ddof=0) of the
    first ``fitted_on`` files' rows, computed here."""
    X = data.X[: n_files * ROWS_PER_FILE]
    ref = data.X[: fitted_on * ROWS_PER_FILE]
    return (X - np.nanmean(ref, axis=0)) / np.nanstd(ref, axis=0)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, prefect_api):
    """First run on 3 files (a fit from scratch); a 4th file; second run (a refresh)."""
    tmp = tmp_path_factory.mktemp("update")
    data = _data()
    files = [_write_file(tmp / "data", data, i) for i in range(3)]
    job = _job(tmp)
    first = update_flow(job_path=str(job), overrides=[])
    out = tmp / "out"
    first_model = _copy(out / "model", tmp / "first-model")
    first_predictions = _copy(out / "predictions.parquet", tmp / "first-predictions.parquet")
    files.append(_write_file(tmp / "data", data, 3))
    second = update_flow(job_path=str(job), overrides=[])
    return {"tmp": tmp, "data": data, "files": files, "job": job, "first": first, "second": second,
            "first_model": first_model, "first_predictions": first_predictions, "out": out}


def test_first_run_fits_from_scratch_and_records_every_file(two_runs):
    first, saved = two_runs["first"], read_model_directory(two_runs["first_model"])
    assert "refresh" not in first  # a fit, not a refresh
    assert first["rows"] == 3 * ROWS_PER_FILE
    assert (two_runs["first_model"] / PARTITIONS_FILE).is_file()
    keys = [str(f) for f in two_runs["files"][:3]]
    assert list(saved.partitions) == keys and saved.model.partitions_.keys == keys
    for key, identity in saved.partitions.items():
        assert identity["rows"] == ROWS_PER_FILE and identity["size"] == os.path.getsize(key)
    # the preprocessing is the standardisation of these rows (pandas-free NumPy moments)
    Z = np.asarray(saved.preprocessor.transform(two_runs["data"].X[: 3 * ROWS_PER_FILE]))
    np.testing.assert_allclose(Z, _standardized(two_runs["data"], 3, 3), rtol=1e-12, atol=1e-12)


def test_a_new_file_is_refreshed_into_the_model(two_runs):
    second, out, data = two_runs["second"], two_runs["out"], two_runs["data"]
    new_file = str(two_runs["files"][3])
    assert second["refresh"] == {"new": [new_file], "changed": [], "stale": [], "removed": [], "unchanged": 3,
                                 "rows_read": ROWS_PER_FILE}
    assert second["flow"] == "update" and second["rows"] == 4 * ROWS_PER_FILE
    saved = read_model_directory(out / "model")
    keys = [str(f) for f in two_runs["files"]]
    assert saved.model.partitions_.keys == keys and list(saved.partitions) == keys
    assert saved.partitions[new_file]["rows"] == ROWS_PER_FILE
    # every row predicted, each once
    after = read_predictions(out / "predictions.parquet")
    assert after.index.is_unique and list(after.index) == sorted(data.ids)
    # labels carry on: the rows of the first three files keep theirs
    before = read_predictions(two_runs["first_predictions"])
    assert len(before) == 3 * ROWS_PER_FILE
    kept = (after.loc[before.index, "label"].to_numpy() == before["label"].to_numpy()).mean()
    assert kept > 0.95, kept
    # the record is the statistics of every row under the saved parameters: its total weights are
    # the responsibilities of one E-step over all the rows, computed here
    Z = _standardized(data, 4, 3)
    record = saved.model.partitions_
    np.testing.assert_allclose(record.total().N, saved.model.predict_proba(Z).sum(axis=0), rtol=1e-9)
    assert record.refreshes == 1 and set(record.visits.values()) == {1}
    # as good as a full refit of all the rows (same standardisation)
    full = GaussianMixture(3, covariance_type="full", tol=TOL, max_iter=300, random_state=0).fit(Z)
    assert full.converged_
    assert abs(saved.model.score(Z) - full.score(Z)) < 1e-3, (saved.model.score(Z), full.score(Z))
    # the predictions are the saved model's
    np.testing.assert_array_equal(after["label"].to_numpy(), saved.model.predict(Z)[np.argsort(data.ids)])


def test_refreshed_model_equals_a_refresh_in_plain_python(two_runs):
    published = read_model_directory(two_runs["first_model"])
    settings = published.settings["model"]
    model = published.model.set_params(tol=settings["tol"], max_iter=settings["max_iter"],
                                       reg_covar=settings["reg_covar"])
    Z = _standardized(two_runs["data"], 4, 3)
    model.refresh(Z, {str(two_runs["files"][3]): (3 * ROWS_PER_FILE, 4 * ROWS_PER_FILE)})
    assert model.converged_
    saved = read_model_directory(two_runs["out"] / "model").model
    np.testing.assert_allclose(saved.weights_, model.weights_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(saved.means_, model.means_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(saved.covariances_, model.covariances_, rtol=1e-8, atol=1e-10)
    # and the refresh moved the model: the comparison is not of the first run's model with itself
    first = read_model_directory(two_runs["first_model"]).model  # (refresh changed ``model`` in place)
    assert np.abs(saved.means_ - first.means_).max() > 1e-4


@pytest.mark.parametrize(("override", "key"), [
    ("model.n_components=4", "model.n_components"),
    ("preprocessing=[]", "preprocessing"),
    ("source.selection.columns=[x0, x1]", "source.selection"),
    ("model.covariance_type=diag", "model.covariance_type"),
])
def test_changed_fixed_setting_is_refused_and_output_kept(tmp_path, override, key):
    data = _data()
    for i in range(3):
        _write_file(tmp_path / "data", data, i)
    job = _job(tmp_path)
    update_flow(job_path=str(job), overrides=[])
    out = tmp_path / "out"
    published, before = os.readlink(out / "current"), _digests(out / "current")
    runs = sorted(os.listdir(out / "runs"))
    _write_file(tmp_path / "data", data, 3)  # there is something to refresh
    with pytest.raises(ConfigError) as err:
        update_flow(job_path=str(job), overrides=[override])
    assert [k for k, _ in err.value.problems] == [key]
    text = str(err.value)
    assert text.startswith(f"{job}: {key}: is ") and "published model was fitted with" in text
    assert "refit from scratch" in text
    assert os.readlink(out / "current") == published and _digests(out / "current") == before
    assert sorted(os.listdir(out / "runs")) == runs


def test_a_removed_file_leaves_the_record_through_the_cli(tmp_path):
    data = _data()
    files = [_write_file(tmp_path / "data", data, i) for i in range(3)]
    job = _job(tmp_path)
    update_flow(job_path=str(job), overrides=[])
    first = read_model_directory(tmp_path / "out" / "model").model
    os.remove(files[1])
    result = CliRunner().invoke(app, ["update", str(job), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "  refresh: 0 new, 0 changed, 0 stalest, 1 removed partition(s), 0 rows read by EM\n" in result.stdout
    saved = read_model_directory(tmp_path / "out" / "model")
    kept = [str(files[0]), str(files[2])]
    assert saved.model.partitions_.keys == kept and list(saved.partitions) == kept
    predictions = read_predictions(tmp_path / "out" / "predictions.parquet")
    expected = np.concatenate([data.ids[:ROWS_PER_FILE], data.ids[2 * ROWS_PER_FILE:3 * ROWS_PER_FILE]])
    assert list(predictions.index) == sorted(expected)
    # one M-step from the statistics left: the weights are the kept files' share of each component
    # under the first model (its responsibilities, computed here)
    Z = _standardized(data, 3, 3)
    rows = np.r_[0:ROWS_PER_FILE, 2 * ROWS_PER_FILE:3 * ROWS_PER_FILE]
    resp = first.predict_proba(Z[rows])
    np.testing.assert_allclose(saved.model.weights_, resp.sum(axis=0) / len(rows), rtol=1e-8)


def test_a_rewritten_file_is_read_again_with_the_stalest_other(tmp_path):
    data = _data()
    files = [_write_file(tmp_path / "data", data, i) for i in range(3)]
    job = _job(tmp_path)
    update_flow(job_path=str(job), overrides=[])
    first = _copy(tmp_path / "out" / "model", tmp_path / "first-model")
    # the first file now holds 2000 other rows (new ids, same mixture)
    rows = slice(3 * ROWS_PER_FILE, 3 * ROWS_PER_FILE + 2000)
    write_parquet(files[0], data.X[rows], data.ids[rows])
    summary = update_flow(job_path=str(job), overrides=["update.stale_partitions=1"])
    # the record's partitions were all visited under the first model: the stalest is the first in key order
    assert summary["refresh"] == {"new": [], "changed": [str(files[0])], "stale": [str(files[1])], "removed": [],
                                  "unchanged": 1, "rows_read": 2000 + ROWS_PER_FILE}
    saved = read_model_directory(tmp_path / "out" / "model")
    assert saved.partitions[str(files[0])]["rows"] == 2000
    assert saved.model.partitions_.keys == [str(f) for f in files]
    predictions = read_predictions(tmp_path / "out" / "predictions.parquet")
    assert list(predictions.index) == sorted([*data.ids[rows], *data.ids[ROWS_PER_FILE:3 * ROWS_PER_FILE]])
    # the same refresh in plain Python, on the rows as they are now (standardised as at the first run)
    ref = data.X[:3 * ROWS_PER_FILE]
    X = np.concatenate([data.X[rows], data.X[ROWS_PER_FILE:3 * ROWS_PER_FILE]])
    Z = (X - np.nanmean(ref, axis=0)) / np.nanstd(ref, axis=0)
    model = read_model_directory(first).model.set_params(tol=TOL, max_iter=300)
    model.refresh(Z, {str(files[0]): (0, 2000), str(files[1]): (2000, 2000 + ROWS_PER_FILE)})
    np.testing.assert_allclose(saved.model.weights_, model.weights_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(saved.model.means_, model.means_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(saved.model.covariances_, model.covariances_, rtol=1e-8, atol=1e-10)
    # the old rows of the first file are gone from the statistics: the record holds 8000 rows
    assert saved.model.partitions_.n_rows == pytest.approx(2000 + 2 * ROWS_PER_FILE, abs=1e-6)


def test_a_predict_job_is_refused(tmp_path):
    data = _data()
    _write_file(tmp_path / "data", data, 0)
    job = write_job(tmp_path / "predict.yaml", {
        "name": "scoring", "flow": "predict",
        "source": {"format": "parquet", "path": str(tmp_path / "data"),
                   "selection": {"columns": FEATURES, "id_column": "sample_id"}},
        "predict": {"model": str(tmp_path / "model")},
        "output": {"directory": str(tmp_path / "out"), "sinks": [{"format": "parquet", "path": "p.parquet"}]},
    })
    with pytest.raises(ConfigError) as err:
        update_flow(job_path=str(job), overrides=[])
    assert err.value.problems[0][0] == "flow" and "'predict'" in str(err.value)
    assert str(err.value).startswith(f"{job}: flow: is 'predict'")
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["update", str(job)])
    assert result.exit_code != 0 and "flow: is 'predict'" in result.output


def test_a_published_model_without_record_is_refitted_from_scratch(tmp_path):
    """A model published without partitions (too large a record, or an older gmm-stream) is
    refitted by update, replacing the published set although output.overwrite is false."""
    data = _data()
    for i in range(2):
        _write_file(tmp_path / "data", data, i)
    job = _job(tmp_path)
    update_flow(job_path=str(job), overrides=[])
    (tmp_path / "out" / "model" / PARTITIONS_FILE).unlink()  # the published model keeps no record
    before = os.path.realpath(tmp_path / "out" / "current")
    summary = update_flow(job_path=str(job), overrides=[])
    assert "refresh" not in summary and summary["rows"] == 2 * ROWS_PER_FILE
    assert os.path.realpath(tmp_path / "out" / "current") != before
    assert (tmp_path / "out" / "model" / PARTITIONS_FILE).is_file()
