"""Kill a publishing run at every file operation in turn (driven by ``test_output_set.py``).

Usage: ``python kill_driver.py WORKDIR``. The libraries are imported once; every run,
kill and check happens in a child made with ``os.fork()`` (so no thread of one run
reaches another). A child is killed with SIGKILL by an audit hook at its N-th
namespace operation (mkdir, rename, replace, symlink, remove, rmdir, rmtree). For every
N of an uninterrupted run, one JSON line: the exit status of the killed run, the tag of
the published set after the kill (``A`` old, ``B`` new, or what was wrong), the tag
after a re-run, and the leftovers the re-run did not clean.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pyarrow.parquet as pq

from gmm_stream import GaussianMixture
from pipeline import ParquetSink, ZarrSink, load_model, predict_results, save_model
from pipeline.atomic import atomic_output
from pipeline.output_set import OutputSet

ENTRIES = ["model", "report", "predictions.parquet", "predictions.zarr"]
EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.symlink", "os.remove", "os.rmdir", "shutil.rmtree"}


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-3, 1, (150, 2)), rng.normal(3, 1, (150, 2))])


def scenario(out: Path, tag: str, kill_at: int | None, count_file: Path | None = None) -> None:
    """One run that publishes a model, a report and two sinks, all stamped with ``tag``."""
    count = [0]

    def hook(event: str, args: tuple) -> None:
        if event in EVENTS:
            count[0] += 1
            if kill_at is not None and count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    X = _data()
    means = [[-3, -3], [3, 3]] if tag == "A" else [[3, 3], [-3, -3]]
    gm = GaussianMixture(2, random_state=0, means_init=means).fit(X)
    outputs = OutputSet(out, ENTRIES)
    with outputs.lock("kill-test"):
        run = outputs.begin(f"job-{tag}", overwrite=True, job_name="kill-test")
        save_model(gm, run.path(out / "model"), overwrite=True)
        results = predict_results(gm, da.from_array(X, chunks=300))
        for sink in (ParquetSink(run.path(out / "predictions.parquet")), ZarrSink(run.path(out / "predictions.zarr"))):
            if not sink.path.exists():
                sink.write(results, provenance={"tag": tag})
        with atomic_output(run.path(out / "report"), overwrite=True) as tmp:
            tmp.mkdir()
            (tmp / "summary.json").write_text(json.dumps({"tag": tag}))
        outputs.publish(run)
    if count_file is not None:
        count_file.write_text(str(count[0]))


def tag_of_set(out: Path) -> str:
    """The tag of the published set, or a description of what is wrong with it."""
    try:
        model_tag = "A" if load_model(out / "model").means_[0][0] < 0 else "B"
        files = sorted((out / "predictions.parquet").glob("*.parquet"))
        parquet_tag = json.loads(pq.read_schema(files[0]).metadata[b"gmm_stream"])["provenance"]["tag"]
        n_rows = sum(pq.read_metadata(f).num_rows for f in files)
        zarr_attrs = json.loads((out / "predictions.zarr" / "zarr.json").read_text())["attributes"]
        report_tag = json.loads((out / "report" / "summary.json").read_text())["tag"]
    except Exception as err:  # noqa: BLE001 - reported to the test
        return f"unreadable: {type(err).__name__}: {err}"
    tags = {model_tag, parquet_tag, zarr_attrs["provenance"]["tag"], report_tag}
    if len(tags) != 1 or n_rows != 300:
        return f"mixed: model {model_tag}, parquet {parquet_tag}, zarr {zarr_attrs['provenance']['tag']}, " \
               f"report {report_tag}, rows {n_rows}"
    return tags.pop()


def leftovers(out: Path) -> list[str]:
    found = [p.name for p in out.rglob("*") if any(t in p.name for t in (".tmp-", ".old-", ".trash-", ".new-"))]
    runs = [p.name for p in (out / "runs").iterdir()]
    return found + (runs if len(runs) != 1 else [])


def in_child(fn, *args) -> tuple[int, str]:
    """Run ``fn(*args)`` in a forked child; its exit status and what it printed to a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            text = fn(*args)
            os.write(write, json.dumps(text).encode())
        except BaseException as err:  # noqa: BLE001
            os.write(write, json.dumps(f"error: {type(err).__name__}: {err}").encode())
            code = 1
        os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return code, json.loads(b"".join(chunks) or b"null")


def main(work: Path) -> None:
    pristine, counted = work / "pristine", work / "counted"
    in_child(scenario, pristine, "A", None)
    shutil.copytree(pristine, counted, symlinks=True)
    in_child(scenario, counted, "B", None, work / "n_ops")
    n_ops = int((work / "n_ops").read_text())
    print(json.dumps({"pristine": in_child(tag_of_set, pristine)[1], "uninterrupted": in_child(tag_of_set, counted)[1],
                      "n_ops": n_ops}), flush=True)
    for kill_at in range(1, n_ops + 1):
        out = work / f"kill-{kill_at}"
        shutil.copytree(pristine, out, symlinks=True)
        code, _ = in_child(scenario, out, "B", kill_at)
        after_kill = in_child(tag_of_set, out)[1]
        rerun_code, rerun = in_child(scenario, out, "B", None)
        print(json.dumps({"kill_at": kill_at, "exit": code, "after_kill": after_kill,
                          "after_rerun": in_child(tag_of_set, out)[1] if rerun_code == 0 else rerun,
                          "leftovers": leftovers(out)}), flush=True)
        shutil.rmtree(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
