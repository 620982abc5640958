"""Against real services on 127.0.0.1: a `prefect server` serving deployments, and a Dask cluster.

Everything started here runs in its own process group and is stopped at the end of the
test, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from flows.selection import select_flow
from pipeline import Preprocessor, load_model

from flows_testing import (
    BIN,
    CONFIGS,
    REPO,
    free_port,
    http_ok,
    small_data,
    start,
    stop,
    wait_for,
    write_job,
    write_parquet,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")]


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120", PREFECT_UI_ENABLED="false", **extra)
    return env


def _small_fit_job(tmp_path: Path, name: str) -> Path:
    data = small_data(n=1500, d=3, k=3, seed=11)
    write_parquet(tmp_path / f"{name}.parquet", data.X, data.ids)
    return write_job(tmp_path / f"{name}.yaml", {
        "name": name, "flow": "fit",
        "source": {"format": "parquet", "path": str(tmp_path / f"{name}.parquet"),
                   "selection": {"id_column": "sample_id"}, "chunk_rows": 500},
        "preprocessing": ["standardize"],
        "model": {"n_components": 3, "random_state": 0},
        "output": {"directory": str(tmp_path / f"{name}-out"),
                   "sinks": [{"format": "parquet", "path": "predictions.parquet"}], "overwrite": True},
    })


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on 127.0.0.1 with its own PREFECT_HOME; yields its API URL."""
    port = free_port()
    home = tmp_path_factory.mktemp("prefect-server")
    log = home / "server.log"
    proc = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 env=_clean_env(home / "home"), log=log)
    try:
        url = f"http://127.0.0.1:{port}/api"
        wait_for(lambda: http_ok(url + "/health"), 150, "prefect server /api/health", 0.5, proc, log)
        yield url
    finally:
        stop(proc)


def _deployment(url: str, name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def _run_deployment(url: str, name: str, **kwargs):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        return run_deployment(name, **kwargs)


def _flow_run(url: str, flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def test_served_deployment_runs_on_a_real_prefect_server(tmp_path, prefect_server):
    job = _small_fit_job(tmp_path, "served")
    log = tmp_path / "serve.log"
    server_env = {"PREFECT_API_URL": prefect_server}
    serve = start([str(BIN / "gmm-stream"), "serve", str(job), "--cron", "0 2 * * *", "--name", "nightly",
                   "--set", "model.max_iter=50"],
                  env=_clean_env(tmp_path / "serve-home", **server_env), log=log, cwd=tmp_path)
    try:
        deployment = wait_for(lambda: _deployment(prefect_server, "gmm-stream-fit/nightly"), 90,
                              "the served deployment", 0.5, serve, log)
        assert deployment.schedules[0].schedule.cron == "0 2 * * *"
        assert deployment.parameters["job_path"] == str(job) and deployment.parameters["overrides"] == [
            "model.max_iter=50"]
        run = _run_deployment(prefect_server, "gmm-stream-fit/nightly", timeout=180)
        assert run.state.is_completed(), (run.state, log.read_text()[-3000:])
    finally:
        stop(serve)
    out = tmp_path / "served-out"
    assert len(pd.read_parquet(out / "predictions.parquet")) == 1500
    assert load_model(out / "model").n_components == 3
    assert (out / "report" / "summary.md").exists()


def test_prefect_yaml_deploys_and_a_process_worker_runs_it(tmp_path, prefect_server):
    env = _clean_env(tmp_path / "deploy-home", PREFECT_API_URL=prefect_server, PWD=str(REPO))
    log = tmp_path / "deploy.log"
    proc = start([str(BIN / "prefect"), "work-pool", "create", "gmm-stream", "--type", "process"], env=env, log=log)
    assert proc.wait(120) == 0, log.read_text()
    proc = start([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env=env, log=log, cwd=REPO)
    assert proc.wait(180) == 0, log.read_text()[-3000:]
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for entry in spec["deployments"]:
        flow_name = {"fit.py": "gmm-stream-fit", "selection.py": "gmm-stream-select",
                     "predict.py": "gmm-stream-predict"}[Path(entry["entrypoint"].split(":")[0]).name]
        deployment = _deployment(prefect_server, f"{flow_name}/{entry['name']}")
        assert deployment is not None and deployment.entrypoint == entry["entrypoint"]
        assert deployment.work_pool_name == "gmm-stream"
        assert all(not s.active for s in deployment.schedules)  # inactive until turned on

    job = _small_fit_job(tmp_path, "deployed")
    run = _run_deployment(prefect_server, "gmm-stream-fit/demo", parameters={"job_path": str(job)}, timeout=0)
    worker_log = tmp_path / "worker.log"
    worker = start([str(BIN / "prefect"), "worker", "start", "--pool", "gmm-stream", "--run-once"],
                   env=env, log=worker_log, cwd=tmp_path)
    try:
        assert worker.wait(240) == 0, worker_log.read_text()[-3000:]
    finally:
        stop(worker)
    state = _flow_run(prefect_server, run.id).state
    assert state.is_completed(), (state, worker_log.read_text()[-3000:])
    assert len(pd.read_parquet(tmp_path / "deployed-out" / "predictions.parquet")) == 1500


@pytest.fixture
def dask_cluster(tmp_path):
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1; yields the scheduler address."""
    scheduler_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                            "--scheduler-file", str(scheduler_file)], log=tmp_path / "scheduler.log"))
        wait_for(scheduler_file.exists, 60, "the Dask scheduler", 0.2, procs[0], tmp_path / "scheduler.log")
        for i in range(2):
            procs.append(start([str(BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file),
                                "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--memory-limit", "1GiB",
                                "--name", f"w{i}"], log=tmp_path / f"worker{i}.log"))
        address = json.loads(scheduler_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            stop(proc)


def test_cluster_job_on_a_real_dask_scheduler_equals_the_threaded_run(tmp_path, dask_cluster, prefect_api,
                                                                       monkeypatch):
    data = small_data(n=3000, d=3, k=3, seed=12)
    write_parquet(tmp_path / "data" / "measurements.parquet", data.X, data.ids, row_group=500)
    monkeypatch.setenv("GMM_STREAM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("GMM_STREAM_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dask_cluster)
    grid = ["selection.n_components=[2,3,4]", "source.chunk_rows=500", "labels.reference=null"]
    summary = select_flow(str(CONFIGS / "cluster.yaml"), grid)
    report = json.loads((tmp_path / "out" / "nightly" / "report" / "report.json").read_text())
    assert report["compute"] == f"scheduler {dask_cluster} (2 workers)"
    assert summary["best"] == "K=3 full" and summary["criterion"] == "icl"
    from distributed import Client

    with Client(dask_cluster) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == 2 and all(n > 0 for n in executed.values())  # both workers did the work

    clustered = load_model(tmp_path / "out" / "nightly" / "model")
    shutil.rmtree(tmp_path / "out")
    select_flow(str(CONFIGS / "cluster.yaml"), [*grid, "compute={kind: threads}"])
    threaded = load_model(tmp_path / "out" / "nightly" / "model")
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(clustered, name), getattr(threaded, name), rtol=1e-9, err_msg=name)


def test_on_a_cluster_the_workers_write_the_predictions(tmp_path, dask_cluster, prefect_api):
    """Two sinks of 2 million rows are written by the workers: the flow process's memory stays
    flat and its traffic (all its reads and writes, sockets included) is a small fraction of
    the results."""
    import zarr

    n, d, k, chunk = 2_000_000, 4, 3, 125_000
    data = small_data(n=n, d=d, k=k, seed=21)
    store = tmp_path / "cells.zarr"
    root = zarr.open_group(str(store), mode="w-")
    root.create_array("X", shape=(n, d), chunks=(chunk, d), dtype="float64")[:] = data.X
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", {
        "flow": "fit",
        "source": {"format": "zarr", "path": str(store), "selection": {"array": "X"}, "chunk_rows": chunk},
        "preprocessing": ["standardize"],
        "model": {"n_components": k, "max_iter": 15, "init_max_samples": 5000},
        "output": {"directory": str(out), "sinks": [{"format": "zarr", "path": "predictions.zarr"},
                                                   {"format": "parquet", "path": "predictions.parquet"}]},
        "compute": {"kind": "scheduler", "address": dask_cluster},
        "report": {"plots": False, "artifacts": False},
    })
    driver = Path(__file__).with_name("cluster_write_driver.py")
    done = subprocess.run([sys.executable, str(driver), str(job)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PREFECT_API_URL": prefect_api})
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    per_sink = n * (8 + 8 + 4 * k + 8)  # ids (row numbers), label, proba, logdens
    print(f"flow process: peak RSS +{measured['rss_increase'] / 2**20:.1f} MiB, read {measured['rchar'] / 2**20:.1f}"
          f" MiB, wrote {measured['wchar'] / 2**20:.1f} MiB; results {2 * per_sink / 2**20:.0f} MiB in two sinks")
    # gathering one sink's results would take all of it
    assert measured["rss_increase"] < 0.5 * per_sink, json.dumps(measured["timeline"])
    assert measured["rchar"] + measured["wchar"] < 0.1 * 2 * per_sink
    from distributed import Client

    with Client(dask_cluster) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert all(count > 0 for count in executed.values())
    z = xr.open_zarr(out / "predictions.zarr")
    parquet = pd.read_parquet(out / "predictions.parquet", columns=["label"])
    assert z.sizes["sample"] == n and len(parquet) == n
    np.testing.assert_array_equal(z["label"].values, parquet["label"].to_numpy())
    model = load_model(out / "model")
    pre = Preprocessor.load(out / "model")
    rows = slice(1_000_000, 1_002_000)
    np.testing.assert_array_equal(z["label"].values[rows], model.predict(pre.transform(data.X[rows])))
