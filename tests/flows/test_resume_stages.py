"""Resume means resume: a run killed at any stage is finished by the next run of the same job.

A fit job runs in a child process with an audit hook that SIGKILLs it just before the
rename that would complete one stage's output (the model, the first sink, the second
sink, the report). The same job is then run again without ``overwrite``: it recognises
its own unfinished run, keeps what was complete, and ends with the outputs of an
uninterrupted run. A different job on the same directory is refused.
(A kill during EM is tested in ``test_flows_run.py``; kills at every file operation of
the publishing step in ``tests/pipeline/test_output_set.py``.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from flows.fit import fit_flow
from pipeline import load_model
from pipeline.exceptions import OutputExistsError

from flows_testing import small_data, write_job, write_parquet

KILLER = """
import os, signal, sys
target = sys.argv[2]
def hook(event, args):
    if event == "os.rename" and os.path.basename(str(args[1])) == target and "/runs/" in str(args[1]):
        os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
from flows.fit import fit_flow
fit_flow(sys.argv[1])
"""


def _job(tmp_path: Path, directory: str, **model) -> dict:
    data = small_data(n=2000, d=3, k=3, seed=4)
    if not (tmp_path / "data.parquet").exists():
        write_parquet(tmp_path / "data.parquet", data.X, data.ids)
    return {"name": "stages", "flow": "fit",
            "source": {"format": "parquet", "path": str(tmp_path / "data.parquet"),
                       "selection": {"id_column": "sample_id"}, "chunk_rows": 500},
            "preprocessing": ["standardize"],
            "model": {"n_components": 3, "tol": 1e-6, "random_state": 0, **model},
            "output": {"directory": str(tmp_path / directory),
                       "sinks": [{"format": "parquet", "path": "p.parquet"}, {"format": "zarr", "path": "p.zarr"}]},
            "report": {"plots": False}}


@pytest.mark.parametrize("stage", ["model", "p.parquet", "p.zarr", "report"])
def test_a_run_killed_at_a_stage_is_finished_by_the_next_run(tmp_path, prefect_api, stage):
    job = _job(tmp_path, "out")
    path = write_job(tmp_path / "job.yaml", job)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(path), stage], capture_output=True, text=True,
                          env={**os.environ, "PREFECT_API_URL": prefect_api}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    out = tmp_path / "out"
    assert not (out / "current").exists() and not (out / "model").exists()  # nothing published, nothing half
    (unfinished,) = (out / "runs").iterdir()

    summary = fit_flow(str(path))  # the same job, no overwrite: resumes its own run
    assert (out / "current").resolve() == unfinished
    assert [p.name for p in (out / "runs").iterdir()] == [unfinished.name]
    assert not any(".tmp-" in p.name or ".old-" in p.name for p in out.rglob("*"))
    assert summary["n_iter"] >= 1

    straight = write_job(tmp_path / "straight.yaml", _job(tmp_path, "straight"))
    fit_flow(str(straight))
    a, b = load_model(out / "model"), load_model(tmp_path / "straight" / "model")
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "p.parquet"),
                                  pd.read_parquet(tmp_path / "straight" / "p.parquet"))
    np.testing.assert_array_equal(zarr.open_group(str(out / "p.zarr"), mode="r")["label"][:],
                                  zarr.open_group(str(tmp_path / "straight" / "p.zarr"), mode="r")["label"][:])

    other = write_job(tmp_path / "other.yaml", _job(tmp_path, "out", n_components=2))
    with pytest.raises(OutputExistsError, match="outputs exist already"):
        fit_flow(str(other))  # another job on the same directory still needs overwrite
