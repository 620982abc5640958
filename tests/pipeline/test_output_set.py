"""An output set is replaced whole: kills at every file operation, leftovers, the lock.

The kill test (``kill_driver.py``) runs the scenario the flows run (lock, begin, model,
two sinks, report, publish) on real files written by zarr and pyarrow, killing it with
SIGKILL at every namespace operation of an uninterrupted run in turn.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gmm_stream import GaussianMixture
from pipeline import load_model, save_model
from pipeline.atomic import recover
from pipeline.exceptions import OutputExistsError, OutputLayoutError, OutputLockedError
from pipeline.output_set import OutputSet

DRIVER = Path(__file__).with_name("kill_driver.py")


@pytest.mark.slow
def test_a_kill_at_any_file_operation_leaves_the_old_set_or_the_new_one(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no BLAS threads across fork()
    proc = subprocess.run([sys.executable, str(DRIVER), str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records[0]["pristine"] == "A" and records[0]["uninterrupted"] == "B"
    n_ops = records[0]["n_ops"]
    kills = records[1:]
    assert n_ops > 10 and [r["kill_at"] for r in kills] == list(range(1, n_ops + 1))
    for r in kills:
        assert r["exit"] == -signal.SIGKILL, r  # the kill happened at that operation
        assert r["after_kill"] in ("A", "B"), r  # a whole, loadable old or new set: never a mix
        assert r["after_rerun"] == "B" and r["leftovers"] == [], r  # the next run finishes and cleans up
    published = [r["after_kill"] for r in kills]
    assert "A" in published and "B" in published  # kills landed before and after the switch
    assert published == sorted(published)  # one switch: old until it, new after it


def publish_a_run(outputs: OutputSet, fingerprint: str, overwrite: bool = False):
    """One whole run of the job ``fingerprint`` that publishes an empty ``model`` directory."""
    with outputs.lock():
        run = outputs.begin(fingerprint, overwrite=overwrite)
        (run.directory / "model").mkdir()
        outputs.publish(run)
    return run


def test_an_interrupted_run_is_resumed_and_another_job_refused(tmp_path):
    out = tmp_path / "out"
    outputs = OutputSet(out, ["model"])
    with outputs.lock():
        first = outputs.begin("job-1", overwrite=False)
        (first.directory / "model").mkdir()
    # killed before publishing: the same job resumes in the same run directory
    with outputs.lock():
        again = outputs.begin("job-1", overwrite=False)
        assert again.resumed and again.directory == first.directory
        outputs.publish(again)
    assert (out / "model").resolve() == first.directory / "model"
    with outputs.lock(), pytest.raises(OutputExistsError, match="outputs exist already"):
        outputs.begin("job-2", overwrite=False)
    # an unfinished run of another job is discarded, never resumed
    with outputs.lock():
        other = outputs.begin("job-2", overwrite=True)
    with outputs.lock():
        third = outputs.begin("job-3", overwrite=True)
        assert not third.resumed and not other.directory.exists() and first.directory.exists()


def test_a_stable_name_taken_by_another_program_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "model" / "precious.txt").write_text("keep me")
    outputs = OutputSet(out, ["model"])
    with outputs.lock(), pytest.raises(OutputLayoutError, match="was not published by gmm-stream"):
        outputs.begin("job", overwrite=True)
    assert (out / "model" / "precious.txt").read_text() == "keep me"


def test_leftovers_of_other_kinds_are_never_touched(tmp_path):
    out = tmp_path / "out"
    outputs = OutputSet(out, ["model"])
    publish_a_run(outputs, "job")
    mine = [out / "notes.txt", out / "runs" / "my-folder", out / ".model.tmp-abc"]  # not ours: no pid/random
    mine[0].write_text("x")
    mine[1].mkdir()
    mine[2].write_text("y")
    publish_a_run(outputs, "job-2", overwrite=True)
    assert all(p.exists() for p in mine)


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-3, 1, (150, 2)), rng.normal(3, 1, (150, 2))])


def test_recover_restores_a_directory_lost_between_two_renames(tmp_path):
    """The two-rename fallback (file systems without RENAME_EXCHANGE): a kill between them."""
    target = tmp_path / "model"
    gm = GaussianMixture(2, random_state=0).fit(_data())
    save_model(gm, target)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    backup = tmp_path / f".model.old-{int(dead.stdout)}-0123456789ab"
    os.rename(target, backup)  # the state a kill between the two renames leaves
    np.testing.assert_array_equal(load_model(target).means_, gm.means_)  # a reader puts it back
    assert target.is_dir() and not backup.exists()
    os.rename(target, backup)
    recover(target)  # so does the next writer of the same target
    assert target.is_dir() and not backup.exists()


LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from pipeline.output_set import OutputSet
    with OutputSet(sys.argv[1], ["model"]).lock("nightly"):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_one_run_per_output_directory_and_a_crashed_holder_does_not_block(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with (pytest.raises(OutputLockedError, match=rf"pid {holder.pid} on .*started .*job 'nightly'"),
              OutputSet(out, ["model"]).lock("second")):
            pass
        assert time.monotonic() - started < 2
    finally:
        holder.kill()
        holder.wait()
    with OutputSet(out, ["model"]).lock("after the crash"):  # the OS released the dead holder's lock
        assert json.loads((out / ".gmm-stream.lock").read_text())["job"] == "after the crash"
