"""Helpers of the flow tests: small data in every source format, job files, processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from flows.config import SyntheticConfig
from flows.demo import make_synthetic

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
BIN = Path(sys.executable).parent


def small_data(n: int = 3000, d: int = 3, k: int = 3, seed: int = 0, missing: float = 0.0):
    """A small, well separated Gaussian mixture sample (flows.demo's generator)."""
    return make_synthetic(SyntheticConfig(n_samples=n, n_features=d, n_components=k, seed=seed,
                                          missing_fraction=missing, separation=8.0))


def write_parquet(path: Path, X: np.ndarray, ids: np.ndarray, row_group: int = 1000) -> Path:
    columns = {"sample_id": pa.array([str(i) for i in ids])}
    for j in range(X.shape[1]):
        columns[f"x{j}"] = pa.array(X[:, j], type=pa.float64())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group)
    return path


def write_h5ad(path: Path, X: np.ndarray, ids: np.ndarray) -> Path:
    adata = ad.AnnData(X=np.zeros((X.shape[0], 2), dtype=np.float32), obs=pd.DataFrame(index=[str(i) for i in ids]))
    adata.obsm["X_pca"] = X
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    return path


def write_job(path: Path, job: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).set_index("sample_id").sort_index()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str] | None = None, log: Path | None = None, cwd: Path | None = None):
    """Start a process in its own process group (so that stop() ends it and its children)."""
    # the child has its own copy of the log's descriptor: this process closes its one at once
    with open(log, "wb") if log is not None else contextlib.nullcontext(subprocess.DEVNULL) as out:
        return subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=cwd)


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2, proc=None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"{what}: the process exited with {proc.returncode}\n{tail}")
        time.sleep(interval)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def checkpoint_iteration(directory: Path) -> int:
    """The EM iteration of the checkpoint in ``directory/state`` (0 if none yet)."""
    try:
        return int(json.loads((directory / "state" / "state.json").read_text())["n_iter"])
    except (OSError, ValueError, KeyError):
        return 0
