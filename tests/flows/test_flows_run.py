"""The flows, end to end, against Prefect's real temporary server (no mocks).

Every example job that needs no cluster runs here on small data (through the CLI or the
flow function), and the outputs, the saved model and the Prefect artifacts are checked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from flows.cli import app
from flows.fit import fit_flow
from flows.predict import predict_flow
from pipeline import Preprocessor, load_model, save_model
from pipeline.output_set import OutputSet

from flows_testing import (
    CONFIGS,
    checkpoint_iteration,
    read_predictions,
    small_data,
    wait_for,
    write_h5ad,
    write_job,
    write_parquet,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(300),
              pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """The examples' environment variables pointed at a fresh directory."""
    for name, sub in (("GMM_STREAM_DATA", "data"), ("GMM_STREAM_OUTPUT", "out"), ("GMM_STREAM_DEMO_DIR", "demo")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    return tmp_path


def artifact_keys(flow_run_id=None) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        flt = None if flow_run_id is None else ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        return {a.key for a in client.read_artifacts(artifact_filter=flt) if a.key}


def last_flow_run(name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=1)
    return runs[0]


SMALL_DEMO = ["source.synthetic.n_samples=3000", "source.chunk_rows=1000"]


def test_demo_job_through_the_cli(env):
    result = CliRunner().invoke(app, ["run", str(CONFIGS / "demo.yaml"), *sum((["--set", s] for s in SMALL_DEMO), [])])
    assert result.exit_code == 0, result.output
    out = env / "demo"
    # without a terminal: one progress line per finished fit (no live bar redrawn into the log) ...
    assert result.stderr.count("K=4 full: converged after") == 1 and "EM iterations" not in result.stderr
    # ... and the summary as whole "key: value" lines, paths never cut by a box
    assert "gmm-stream fit: demo" in result.stdout and "  BIC / AIC / ICL: " in result.stdout
    assert f"  model saved: {out / 'model'}\n" in result.stdout
    # outputs: data generated on first run, model + preprocessing, predictions, report
    assert (out / "data" / "blobs.zarr").is_dir()
    model = load_model(out / "model")
    assert model.n_components == 4 and np.all(np.diff(model.weights_) <= 0)  # canonical order
    assert {"model.json", "arrays.npz", "preprocessing.json", "training.json", "job.json"} <= set(
        os.listdir(out / "model"))
    pred = pd.read_parquet(out / "predictions.parquet")
    assert len(pred) == 3000 and set(pred["label"]) == {0, 1, 2, 3}
    report = out / "report"
    assert {"summary.md", "components.csv", "lower_bound.csv", "report.json", "lower_bound.png",
            "clusters_pc.png"} <= set(os.listdir(report))
    assert not (out / "checkpoint").exists()  # removed once the model is saved
    run = last_flow_run("gmm-stream-fit")
    assert run.state.is_completed()
    assert artifact_keys(run.id) == {"demo-fit-summary", "demo-fit-components", "demo-fit-lower-bound"}


def test_demo_command_generates_the_data_and_runs_the_demo_job(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--output", str(tmp_path / "d"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "generated the demo data" in result.stderr and "read the report" in result.stdout
    assert load_model(tmp_path / "d" / "model").n_components == 4
    assert len(pd.read_parquet(tmp_path / "d" / "predictions.parquet")) == 20_000
    assert "GMM_STREAM_DEMO_DIR" not in os.environ  # restored
    again = CliRunner().invoke(app, ["demo", "--output", str(tmp_path / "d"), "--no-progress"])
    assert again.exit_code == 0 and "generated" not in again.stderr  # data generated on first run only


def test_predict_job_flags_anomalies_at_the_training_quantile(env):
    fit_flow(str(CONFIGS / "demo.yaml"), SMALL_DEMO)
    summary = predict_flow(str(CONFIGS / "predict.yaml"), ["source.chunk_rows=1000", "predict.anomaly_quantile=0.05"])
    out = env / "demo" / "scored"
    flags = pd.read_parquet(out / "anomalies.parquet")
    assert len(flags) == 3000 and flags["anomaly"].dtype == bool
    assert summary["anomalies"] == int(flags["anomaly"].sum())
    assert flags["anomaly"].mean() == pytest.approx(0.05, abs=0.01)  # same data as training
    threshold = flags.loc[flags["anomaly"], "logdens"].max()
    assert threshold < flags.loc[~flags["anomaly"], "logdens"].min()
    pred = pd.read_parquet(out / "predictions.parquet")
    training = pd.read_parquet(env / "demo" / "predictions.parquet")
    np.testing.assert_array_equal(pred["label"], training["label"])  # saved model + preprocessing re-applied
    assert "Anomalies" in (out / "report" / "summary.md").read_text()


def test_parquet_job(env):
    data = small_data(n=2000, d=4, k=3, seed=5)
    write_parquet(env / "data" / "measurements.parquet", np.abs(data.X), data.ids)
    summary = fit_flow(str(CONFIGS / "parquet.yaml"), ["model.n_components=3", "source.chunk_bytes=32KiB"])
    out = env / "out" / "parquet"
    pred = read_predictions(out / "predictions.parquet")
    assert len(pred) == 2000 and list(pred.index[:2]) == ["s000000", "s000001"]
    assert {"label", "proba_0", "proba_1", "proba_2", "logdens"} <= set(pred.columns)
    np.testing.assert_allclose(pred[["proba_0", "proba_1", "proba_2"]].sum(axis=1), 1.0, rtol=1e-5)
    import xarray as xr

    zarr_out = xr.open_zarr(out / "predictions.zarr", consolidated=False)
    np.testing.assert_array_equal(zarr_out["label"].values, pd.read_parquet(out / "predictions.parquet")["label"])
    assert summary["n_components"] == 3
    # overwrite: false refuses a second run before touching anything
    result = CliRunner().invoke(app, ["run", str(CONFIGS / "parquet.yaml"), "--set", "model.n_components=3"])
    assert result.exit_code == 1 and "outputs exist already" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_single_cell_job(env):
    data = small_data(n=1500, d=12, k=3, seed=6)  # an X_pca with more PCs than the job keeps (10)
    write_h5ad(env / "data" / "pbmc.h5ad", data.X, data.ids)
    fit_flow(str(CONFIGS / "singlecell.yaml"), ["model.n_components=3", "source.chunk_rows=500"])
    result = ad.read_h5ad(env / "out" / "pbmc" / "pbmc_gmm.h5ad")
    assert result.obs["gmm"].dtype == "category" and len(result.obs["gmm"].cat.categories) == 3
    assert result.obsm["gmm_proba"].shape == (1500, 3)
    model = load_model(env / "out" / "pbmc" / "model")
    np.testing.assert_allclose(result.uns["gmm"]["params"]["means"], model.means_, rtol=1e-12)
    assert result.uns["gmm"]["provenance"]["input"]["selection"]["obsm"] == "X_pca"
    # the labels are those of the saved model on the saved preprocessing of X_pca (10 PCs)
    pre = Preprocessor.load(env / "out" / "pbmc" / "model")
    assert model.n_features_in_ == 10
    np.testing.assert_array_equal(result.obs["gmm"].astype(int).to_numpy(),
                                  model.predict(pre.transform(xr.DataArray(data.X, dims=("sample", "feature")))))


def test_select_job(env):
    overrides = ["selection.n_components=[2,3,4,5]", "selection.covariance_types=[full,spherical]", *SMALL_DEMO]
    result = CliRunner().invoke(app, ["run", str(CONFIGS / "select.yaml"), *sum((["--set", s] for s in overrides), [])])
    assert result.exit_code == 0, result.output
    out = env / "out" / "select"
    table = pd.read_csv(out / "report" / "selection.csv")
    assert len(table) == 8 and table["bic"].is_monotonic_increasing  # sorted, best first
    best = table.iloc[0]
    model = load_model(out / "model")
    assert (model.n_components, model.covariance_type) == (best["n_components"], best["covariance_type"])
    assert (best["n_components"], best["covariance_type"]) == (4, "full")  # the data have 4 clusters
    assert np.all(table["icl"] >= table["bic"])
    # the saved model is the relabelled one, and the scores saved with it are its own
    assert np.all(np.diff(model.weights_) <= 0)
    labels = pd.read_parquet(out / "predictions.parquet")["label"].to_numpy()
    training = json.loads((out / "model" / "training.json").read_text())
    assert training["sizes"] == np.bincount(labels[labels >= 0], minlength=model.n_components).tolist()
    assert (out / "report" / "criterion.png").stat().st_size > 0
    run = last_flow_run("gmm-stream-select")
    assert "select-demo-select-criteria" in artifact_keys(run.id)
    assert "best" in result.stdout and "K=4 full by BIC" in result.stdout


def test_failures_are_one_line_and_debug_shows_the_traceback(env):
    args = ["run", str(CONFIGS / "parquet.yaml")]  # no data written: the source is missing
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "does not match" not in result.stderr
    assert "measurements.parquet" in result.stderr and "Traceback" not in result.output
    debug = CliRunner().invoke(app, [*args, "--debug"])
    assert debug.exit_code == 1 and "Traceback" in debug.stderr


# --------------------------------------------------------------------- label continuity


def test_label_continuity_on_shuffled_data(tmp_path):
    data = small_data(n=2400, d=3, k=3, seed=7)
    write_parquet(tmp_path / "a.parquet", data.X, data.ids)
    order = np.random.default_rng(0).permutation(len(data.ids))
    write_parquet(tmp_path / "b.parquet", data.X[order], data.ids[order])
    job = {"name": "continuity", "flow": "fit",
           "source": {"format": "parquet", "path": str(tmp_path / "a.parquet"), "selection": {"id_column": "sample_id"},
                      "chunk_rows": 600},
           "preprocessing": ["standardize"],
           "model": {"n_components": 3, "random_state": 0, "tol": 1e-6},
           "output": {"directory": str(tmp_path / "day1"), "sinks": [{"format": "parquet", "path": "pred.parquet"}]},
           "checkpoint": {"enabled": False}}
    path = write_job(tmp_path / "job.yaml", job)
    fit_flow(str(path))
    day1 = read_predictions(tmp_path / "day1" / "pred.parquet")["label"]

    # a reference whose components are NOT in canonical order: the matching must follow it
    perm = [2, 0, 1]  # reference component j = day-1 component perm[j]
    reference = load_model(tmp_path / "day1" / "model").permuted(perm)
    save_model(reference, tmp_path / "reference")
    expected = pd.Series(np.argsort(perm)[day1.to_numpy()], index=day1.index)

    shuffled = ["source.path=" + str(tmp_path / "b.parquet"), "output.directory=" + str(tmp_path / "day2"),
                "labels.reference=" + str(tmp_path / "reference")]
    summary = fit_flow(str(path), shuffled)
    day2 = read_predictions(tmp_path / "day2" / "pred.parquet")["label"]
    pd.testing.assert_series_equal(day2, expected, check_names=False)
    report = json.loads((tmp_path / "day2" / "report" / "report.json").read_text())
    assert report["matching"]["reference"] == str(tmp_path / "reference")
    assert report["matching"]["distance"] == "bhattacharyya"
    assert [p["reference_label"] for p in report["matching"]["pairs"]] == [0, 1, 2]
    assert 0 <= summary["matching_cost"] < 0.01  # same data, same model: (almost) identical components

    # nightly mode: the previous model in place is the reference
    previous = ["source.path=" + str(tmp_path / "b.parquet"), "labels.reference=previous", "output.overwrite=true"]
    fit_flow(str(path), previous)
    again = read_predictions(tmp_path / "day1" / "pred.parquet")["label"]
    pd.testing.assert_series_equal(again, day1)
    report = json.loads((tmp_path / "day1" / "report" / "report.json").read_text())
    assert report["matching"]["distance"] == "overlap"  # the previous run's predictions share the ids
    assert report["matching"]["total_cost"] == 1.0  # every shared row kept its label


# ------------------------------------------------------------------------ crash, resume


CRASH_SCRIPT = """
import sys, time
from flows.fit import fit_flow
from flows.progress import listening
with listening(lambda event: time.sleep(0.25)):   # a slow listener: time to kill mid-fit
    fit_flow(sys.argv[1])
"""


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, prefect_api):
    data = small_data(n=4000, d=3, k=3, seed=8)
    data.X[:, :] += np.random.default_rng(1).normal(0, 3.0, data.X.shape)  # overlapping: slow EM
    write_parquet(tmp_path / "data.parquet", data.X, data.ids)
    job = {"name": "resume", "flow": "fit",
           "source": {"format": "parquet", "path": str(tmp_path / "data.parquet"),
                      "selection": {"id_column": "sample_id"}, "chunk_rows": 1000},
           "preprocessing": ["standardize", {"name": "pca", "n_components": 2}],
           "model": {"n_components": 3, "covariance_type": "full", "tol": 0.0, "max_iter": 25, "random_state": 3},
           "output": {"directory": str(tmp_path / "crashed"), "sinks": [{"format": "parquet", "path": "p.parquet"}]},
           "checkpoint": {"every": 1}}
    crashed = write_job(tmp_path / "crashed.yaml", job)
    runs = tmp_path / "crashed" / "runs"
    log = tmp_path / "crash.log"

    def iteration() -> int:  # the EM checkpoint lives in the unpublished run directory
        return max([checkpoint_iteration(c) for c in runs.glob("*/checkpoint/k3-full")] + [0])

    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(crashed)], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PREFECT_API_URL": prefect_api},
                                start_new_session=True)
    try:
        wait_for(lambda: iteration() >= 3, 120, "a checkpoint at iteration 3", 0.02, proc, log)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    killed_at = iteration()
    assert 3 <= killed_at < 25 and not (tmp_path / "crashed" / "model").exists()

    resumed = fit_flow(str(crashed))  # no overwrite needed: it is this job's own unfinished run
    assert resumed["resumed_from"] == killed_at and resumed["n_iter"] == 25

    job["output"]["directory"] = str(tmp_path / "straight")
    straight = fit_flow(str(write_job(tmp_path / "straight.yaml", job)))
    assert straight["resumed_from"] is None
    a, b = load_model(tmp_path / "crashed" / "model"), load_model(tmp_path / "straight" / "model")
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, err_msg=name)
    report = json.loads((tmp_path / "crashed" / "report" / "report.json").read_text())
    assert report["resumed_from"] == killed_at


def test_an_unfinished_run_of_another_job_is_discarded(tmp_path, caplog):
    data = small_data(n=1200, d=2, k=2, seed=9)
    write_parquet(tmp_path / "data.parquet", data.X, data.ids)
    job = {"source": {"format": "parquet", "path": str(tmp_path / "data.parquet"),
                      "selection": {"id_column": "sample_id"}},
           "model": {"n_components": 2, "max_iter": 5, "tol": 0.0},
           "output": {"directory": str(tmp_path / "out"), "overwrite": True}}
    path = write_job(tmp_path / "job.yaml", job)
    outputs = OutputSet(tmp_path / "out", ["model"])
    with outputs.lock():
        stale = outputs.begin("another job", overwrite=False)
    ckpt = stale.checkpoint_dir / "k2-full"
    ckpt.mkdir(parents=True)
    (ckpt / "fingerprint.json").write_text('{"fingerprint": "another job"}')
    with caplog.at_level("INFO", logger="pipeline.output_set"):
        summary = fit_flow(str(path))
    assert summary["resumed_from"] is None and summary["n_iter"] == 5
    assert not stale.directory.exists()
    assert any("abandoned run" in r.getMessage() for r in caplog.records)
