"""A full disk fails once, names the path, and leaves the previous output set intact.

The output directory is a real tmpfs mounted with a size that holds one published set
but not a second run beside it (where mounting is not permitted, ENOSPC is injected
into the writes under the output directory by an audit hook instead).
"""

from __future__ import annotations

import errno
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.fit import fit_flow
from pipeline import load_model
from pipeline.exceptions import DiskFullError

from flows_testing import small_data, write_job, write_parquet


def _mount_tmpfs(path: Path, size_kib: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)],
                          capture_output=True)
    return proc.returncode == 0


def _used_kib(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) // 1024 + 1


@pytest.fixture
def small_disk(tmp_path, request):
    """(directory, mounted): a directory on a tmpfs of the size the test asks for."""
    mounted: list[Path] = []

    def make(size_kib: int) -> tuple[Path, bool]:
        path = tmp_path / "small-disk"
        ok = _mount_tmpfs(path, size_kib)
        if ok:
            mounted.append(path)
        return path, ok

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _job(tmp_path: Path, directory: Path, n: int) -> Path:
    data = small_data(n=n, d=3, k=3, seed=2)
    write_parquet(tmp_path / f"data{n}.parquet", data.X, data.ids)
    job = {"name": "full", "flow": "fit",
           "source": {"format": "parquet", "path": str(tmp_path / f"data{n}.parquet"),
                      "selection": {"id_column": "sample_id"}, "chunk_rows": 2000},
           "model": {"n_components": 3, "random_state": 0},
           "output": {"directory": str(directory), "overwrite": True,
                      "sinks": [{"format": "parquet", "path": "p.parquet", "compression": "none"}]},
           "report": {"plots": False}}
    return write_job(tmp_path / f"job{n}.yaml", job)


def _inject_enospc(directory: Path):
    """Fallback where tmpfs cannot be mounted: writes of new files under ``directory`` fail with ENOSPC."""
    prefix = str(directory) + "/runs/"
    state = {"on": False}

    def hook(event, args):
        if state["on"] and event == "open" and str(args[0]).startswith(prefix) and args[1] and "w" in str(args[1]):
            raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    sys.addaudithook(hook)
    return state


def test_disk_full_fails_once_naming_the_path_and_keeps_the_previous_set(tmp_path, prefect_api, small_disk, caplog):
    probe = tmp_path / "probe"
    fit_flow(str(_job(tmp_path, probe, 3000)))
    one_set = _used_kib(probe / "runs")
    directory, mounted = small_disk(int(one_set * 1.6) + 64)  # one set fits; a second, larger one beside it does not
    first = _job(tmp_path, directory, 3000)
    fit_flow(str(first))
    before = load_model(directory / "model")
    predictions = pd.read_parquet(directory / "p.parquet")
    state = None if mounted else _inject_enospc(directory)
    if state is not None:
        state["on"] = True
    bigger = _job(tmp_path, directory, 12000)
    try:
        with caplog.at_level(logging.INFO), pytest.raises(DiskFullError) as info:
            fit_flow(str(bigger))
    finally:
        if state is not None:
            state["on"] = False
    message = str(info.value)
    assert "no space left on the device while writing" in message and str(directory) in message
    assert "previous output is intact" in message
    assert not any("Retry" in r.getMessage() for r in caplog.records), "a full disk was retried as transient"
    after = load_model(directory / "model")  # the published set is the previous one, whole
    np.testing.assert_array_equal(after.means_, before.means_)
    pd.testing.assert_frame_equal(pd.read_parquet(directory / "p.parquet"), predictions)
    assert len(predictions) == 3000
