"""Benchmark of a whole fit job: passes over the input, wall time by stage, peak memory.

What runs
---------
One ``flow: fit`` job, end to end, through the real Prefect flow (``flows.fit.fit_flow``)
against Prefect's temporary server: a Zarr store in (written with zarr's own API, one
uncompressed array ``X``), standardize + PCA preprocessing, a full-covariance Gaussian
mixture, and two sinks out (Zarr and Parquet). The same job runs on the threaded scheduler
(``compute: {kind: threads}``) and on a ``distributed.LocalCluster``
(``compute: {kind: local_cluster, n_workers: 2, threads_per_worker: 1, processes: true}``);
with ``--repeats N`` the runs are interleaved (threads, cluster, threads, cluster, ...).
The input is written once and reused; every run writes into a fresh output directory,
which is checked (both sinks hold every row) and deleted unless ``--keep``.

What is measured
----------------
* Passes over the input: every ``zarr.storage.LocalStore.get`` of a chunk key of ``X`` in
  the input store is counted (as ``tests/flows/test_passes.py`` does). On threads the flow
  process reads, and is counted there; on the LocalCluster the workers read, and are
  counted by this file loaded as a worker preload (``distributed.worker.preload``), which
  writes its counts when the worker closes; reads by the flow process are counted too (they
  should be none). Printed: total reads / number of chunks, and the most and fewest reads of
  one chunk, beside the EM's ``n_iter``; the project's claim is ``passes <= n_iter + 3``
  (preprocessing, the initial sample, one per EM iteration, the pass that writes the sinks).
* Wall time by stage: each Prefect task run's ``start_time`` / ``end_time``, read from the
  API after the run (``read_task_runs``); "outside tasks" is the flow run's duration minus
  its tasks' (the flow body: preflight, starting and stopping the cluster, the report's
  summaries).
* Memory: the flow process's peak RSS (the kernel's ``VmHWM``; the flow runs in a fresh
  process) and its RSS after imports; each worker's peak (its own ``VmHWM``, written by the
  preload at close) and the peak of the workers' summed RSS (sampled every 20 ms with
  psutil among the flow process's children). Also the bytes read and written (``rchar`` /
  ``wchar`` of ``/proc/<pid>/io``: files, sockets and pipes together) by the flow process
  and by the workers; Linux adds a reaped child's counters to its parent's, so the workers'
  own (read by each at its close) are taken out of the flow process's.
* The share of the run during which some task on the machine waited for a CPU (Linux PSI):
  on a shared machine, numbers taken under high pressure are not the code's speed.

Like ``bench_em.py``, this process unsets ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE``
(together, in its own environment only, before NumPy loads) so that OpenBLAS picks the
kernels a user's machine would; the header shows the kernel (threadpoolctl).

Run
---
    python benchmarks/bench_job.py --quick          # 10^6 rows, ~1-2 minutes on 2 cores
    python benchmarks/bench_job.py                  # 10^7 rows, once per scheduler, ~5-10 minutes
    python benchmarks/bench_job.py --rows 3000000 --repeats 3

The exit code is 0 whatever the numbers: this is a report, not a test.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import code_version, cpu_stall_seconds, print_table, spread, true_parameters
from _common import status_mib as _status_mib

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
SEED = 20271
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

ROWS, QUICK_ROWS = 10_000_000, 1_000_000
CHUNK_ROWS, QUICK_CHUNK_ROWS = 250_000, 125_000
N_FEATURES = 8
TRUE_COMPONENTS = 5

ARRAY = "X"
STAGES = ("load-job", "prepare-source", "start-run", "fit-preprocessing", "fit-model", "label-components",
          "write-predictions", "save-model", "publish-report", "publish-run")
SCHEDULERS = {
    "threads": {"kind": "threads"},
    "local_cluster": {"kind": "local_cluster", "n_workers": 2, "threads_per_worker": 1, "processes": True},
}

#: packages whose presence in a worker's ``sys.modules`` at its close is reported
NOTABLE_MODULES = ("numpy", "scipy", "sklearn", "pandas", "pyarrow", "xarray", "zarr", "anndata", "h5py",
                   "matplotlib", "prefect", "gmm_stream", "pipeline", "flows")

# environment of the flow process and its workers (the worker preload reads them)
ENV_STORE = "BENCH_JOB_STORE"
ENV_COUNTS = "BENCH_JOB_COUNTS_DIR"


# ------------------------------------------------------------------ counting chunk reads


class ChunkReads:
    """Counts ``LocalStore.get`` of each chunk key of one array of one local Zarr store."""

    def __init__(self, store: str, array: str) -> None:
        import zarr.storage

        self.counts: collections.Counter[str] = collections.Counter()
        self.first_read: float | None = None  # time.time() of the first counted read
        self._lock = threading.Lock()
        pattern = re.compile(rf"^{re.escape(array)}/c/")
        root = os.path.realpath(store)
        original = zarr.storage.LocalStore.get

        async def get(store_self, key, prototype=None, byte_range=None):
            if pattern.match(key) and os.path.realpath(str(store_self.root)) == root:
                with self._lock:
                    self.counts[key] += 1
                    if self.first_read is None:
                        self.first_read = time.time()
            return await original(store_self, key, prototype, byte_range)

        zarr.storage.LocalStore.get = get

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


# ------------------------------------------------- worker preload (distributed.worker.preload)

_worker_reads: ChunkReads | None = None
_worker_start_rss: float | None = None
_worker_dumped = False


def dask_setup(worker) -> None:
    """Run by each Dask worker that loads this file as a preload: count its chunk reads."""
    global _worker_reads, _worker_start_rss
    if os.environ.get(ENV_STORE) and os.environ.get(ENV_COUNTS):
        _worker_start_rss = _status_mib("VmRSS")
        _worker_reads = ChunkReads(os.environ[ENV_STORE], ARRAY)
        atexit.register(_dump_worker, str(getattr(worker, "name", "")))


def dask_teardown(worker) -> None:
    """Run when the worker closes: write its chunk reads and its peak RSS."""
    _dump_worker(str(getattr(worker, "name", "")))


def _dump_worker(name: str) -> None:
    global _worker_dumped
    if _worker_reads is None or _worker_dumped:
        return
    _worker_dumped = True
    path = Path(os.environ[ENV_COUNTS]) / f"worker-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "name": name, "counts": _worker_reads.snapshot(),
                               "first_read": _worker_reads.first_read, "start_rss_mib": _worker_start_rss,
                               "peak_rss_mib": _status_mib("VmHWM"), "io": io_counters(),
                               "imported": [m for m in NOTABLE_MODULES if m in sys.modules]}))
    tmp.replace(path)


# --------------------------------------------------------------------------------- input


def write_input(path: Path, n: int, d: int, chunk_rows: int, dtype: str) -> None:
    """An uncompressed Zarr v3 array ``X`` (n, d), written chunk by chunk with zarr's API."""
    import numpy as np
    import zarr

    weights, means, covariances = true_parameters(d, TRUE_COMPONENTS, SEED)
    chol = np.linalg.cholesky(covariances)
    group = zarr.open_group(str(path), mode="w-")
    X = group.create_array(ARRAY, shape=(n, d), chunks=(chunk_rows, d), dtype=dtype, compressors=None)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        rng = np.random.default_rng([SEED, start])
        labels = rng.choice(TRUE_COMPONENTS, size=stop - start, p=weights)
        z = rng.standard_normal((stop - start, d))
        block = np.empty((stop - start, d))
        for j in range(TRUE_COMPONENTS):
            rows = labels == j
            block[rows] = means[j] + z[rows] @ chol[j].T
        X[start:stop] = block.astype(dtype)


def job_document(args: argparse.Namespace, store: Path, out: Path, compute: dict) -> dict:
    return {
        "flow": "fit",
        "name": "bench-job",
        "source": {"format": "zarr", "path": str(store), "selection": {"array": ARRAY},
                   "chunk_rows": args.chunk_rows},
        "preprocessing": ["standardize", {"name": "pca", "n_components": args.pca}],
        "model": {"n_components": args.components, "covariance_type": "full", "max_iter": args.max_iter,
                  "tol": args.tol},
        "output": {"directory": str(out),
                   "sinks": [{"format": "zarr", "path": "predictions.zarr"},
                             {"format": "parquet", "path": "predictions.parquet"}]},
        "compute": compute,
    }


# ----------------------------------------------------------------- the flow process (child)


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}


def thread_io() -> dict[str, int]:
    """``/proc/thread-self/io`` of the calling thread (zeros where unreadable)."""
    try:
        with open("/proc/thread-self/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f)}
    except OSError:
        return collections.defaultdict(int)


class Sampler:
    """RSS of this process and of each of its descendants, every ``interval`` seconds.

    The descendants are listed every ``rescan`` seconds (listing scans all of ``/proc``);
    the reads of ``/proc`` this thread makes are kept in ``io`` so that they can be taken
    out of the process's ``rchar``.
    """

    def __init__(self, interval: float = 0.02, rescan: float = 0.5) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.own_peak = 0
        self.child_peaks: dict[int, int] = {}
        self.child_names: dict[int, str] = {}
        self.sum_peaks: list[tuple[set[int], int]] = []  # (pids, summed RSS) at the highest instants
        self._samples: list[tuple[frozenset[int], int]] = []
        self._interval, self._rescan = interval, rescan
        self.io = {"rchar": 0, "wchar": 0}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        io0 = thread_io()
        try:
            self._sample()
        finally:
            io1 = thread_io()
            self.io = {k: io1[k] - io0[k] for k in ("rchar", "wchar")}

    def _sample(self) -> None:
        psutil = self._psutil
        children: list = []
        listed = 0.0
        while not self._done.is_set():
            self.own_peak = max(self.own_peak, self._me.memory_info().rss)
            if time.monotonic() - listed > self._rescan:
                known = {c.pid: c for c in children}
                children = [known.get(c.pid, c) for c in self._me.children(recursive=True)]
                listed = time.monotonic()
            rss = {}
            for child in children:
                try:
                    if child.pid not in self.child_names:
                        self.child_names[child.pid] = " ".join(child.cmdline())[:200]
                    rss[child.pid] = child.memory_info().rss
                except psutil.Error:
                    continue
            for pid, value in rss.items():
                self.child_peaks[pid] = max(self.child_peaks.get(pid, 0), value)
            if rss:
                self._samples.append((frozenset(rss), sum(rss.values())))
                if len(self._samples) > 4096:  # keep the largest only
                    self._samples = sorted(self._samples, key=lambda s: -s[1])[:64]
            time.sleep(self._interval)

    def peak_sum(self, pids: set[int]) -> int | None:
        """Peak of the summed RSS of ``pids`` (sampled; only instants where they all showed)."""
        values = [total for seen, total in self._samples if pids <= seen]
        return max(values) if values else None


def flow_process(spec: dict) -> dict:
    """Run the job once in this (fresh) process and measure it; return a JSON-able dict."""
    import dask
    import distributed  # noqa: F401 - imported before the baseline, as the flow imports it
    import psutil  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import zarr  # noqa: F401

    from flows.fit import fit_flow

    counts_dir = Path(spec["counts_dir"])
    counts_dir.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_STORE] = spec["store"]
    os.environ[ENV_COUNTS] = str(counts_dir)
    if spec["scheduler"] != "threads":
        dask.config.set({"distributed.worker.preload": [str(Path(__file__).resolve())]})
    reads = ChunkReads(spec["store"], ARRAY)  # this process's reads
    baseline = _status_mib("VmRSS")
    io0, stall0 = io_counters(), cpu_stall_seconds()
    with Sampler() as sampler:
        t0 = time.perf_counter()
        state = fit_flow(spec["job"], return_state=True)
        wall = time.perf_counter() - t0
    io1, stall1 = io_counters(), cpu_stall_seconds()
    result = {
        "flow_run_id": str(state.state_details.flow_run_id),
        "state": state.type.value,
        "wall_s": wall,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": _status_mib("VmHWM"),
        "sampled_peak_rss_mib": sampler.own_peak / MIB,
        # without the sampler's reads of /proc; still with the I/O of reaped children (workers), see below
        "rchar": io1["rchar"] - io0["rchar"] - sampler.io["rchar"],
        "wchar": io1["wchar"] - io0["wchar"] - sampler.io["wchar"],
        "sampler_rchar": sampler.io["rchar"],
        "flow_first_read": reads.first_read,
        "pressure": None if stall0 is None else (stall1 - stall0) / wall,
        "flow_counts": reads.snapshot(),
    }
    try:
        result["summary"] = state.result()
    except BaseException as exc:  # report the failure; the parent prints it
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    workers = [json.loads(p.read_text()) for p in sorted(counts_dir.glob("worker-*.json"))]
    for w in workers:
        w["sampled_peak_rss_mib"] = sampler.child_peaks.get(w["pid"], 0) / MIB or None
    result["workers"] = workers
    # Linux adds a reaped child's I/O counters to its parent's /proc/<pid>/io: take the
    # workers' own (read by each at its close, a little before it exits) out of the flow's.
    for key in ("rchar", "wchar"):
        result[f"workers_{key}"] = sum(w.get("io", {}).get(key, 0) for w in workers)
        result[key] = max(result[key] - result[f"workers_{key}"], 0)
    worker_pids = {w["pid"] for w in workers}
    peak_sum = sampler.peak_sum(worker_pids) if worker_pids else None
    result["workers_sum_peak_mib"] = None if peak_sum is None else peak_sum / MIB
    result["children"] = {str(pid): {"cmd": sampler.child_names.get(pid, ""), "peak_mib": v / MIB}
                          for pid, v in sampler.child_peaks.items() if pid not in worker_pids}
    return result


# ---------------------------------------------------------------------------- the parent


def stage_times(flow_run_id: str, timeout: float = 60.0) -> dict:
    """Seconds of each task run of the flow run and of the flow run itself, from the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:  # task-run states reach the server as events: wait until every one has ended
            flow_run = client.read_flow_run(flow_run_id)
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            ended = flow_run.end_time is not None and runs and all(
                r.start_time is not None and r.end_time is not None for r in runs)
            if ended or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    stages: dict[str, float] = {}
    starts: dict[str, float] = {}
    for r in runs:
        if r.start_time is None or r.end_time is None:
            continue
        name = next((s for s in STAGES if r.name == s or r.name.startswith(s + "-")), r.name)
        stages[name] = stages.get(name, 0.0) + (r.end_time - r.start_time).total_seconds()
        starts[name] = min(starts.get(name, float("inf")), r.start_time.timestamp())
    flow_s = None
    if flow_run.start_time is not None and flow_run.end_time is not None:
        flow_s = (flow_run.end_time - flow_run.start_time).total_seconds()
    return {"stages": stages, "starts": starts, "flow_s": flow_s, "complete": bool(ended)}


def check_outputs(out: Path, n: int) -> str:
    """Rows in each sink (both must hold every row)."""
    import pyarrow.dataset as ds
    import zarr

    try:
        z = zarr.open_group(str(out / "predictions.zarr"), mode="r")
        zarr_rows = z["label" if "label" in z else "labels"].shape[0]
        parquet_rows = ds.dataset(out / "predictions.parquet", format="parquet").count_rows()
    except Exception as exc:  # report, do not lose the run's numbers
        return f"UNREADABLE ({type(exc).__name__}: {exc})"
    ok = zarr_rows == n and parquet_rows == n
    return f"{'ok' if ok else 'INCOMPLETE'} (zarr {zarr_rows}, parquet {parquet_rows} rows)"


def run_once(args, scheduler: str, index: int, store: Path, n_chunks: int, env: dict) -> dict:
    """One job in a fresh flow process; passes, stage times, memory."""
    import yaml

    tag = f"{scheduler}-{index + 1}"
    out = args.workdir / f"out-{tag}"
    job = args.workdir / f"job-{tag}.yaml"
    job.write_text(yaml.safe_dump(job_document(args, store, out, SCHEDULERS[scheduler]), sort_keys=False))
    spec = {"job": str(job), "store": str(store), "scheduler": scheduler,
            "counts_dir": str(args.workdir / f"counts-{tag}")}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    (args.workdir / f"log-{tag}.txt").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("{"):
        return {"tag": tag, "error": f"flow process exit {done.returncode}:\n{done.stderr[-3000:]}"}
    res = json.loads(lines[-1])
    res["tag"], res["scheduler"] = tag, scheduler
    if "error" in res:
        return res
    res["timing"] = stage_times(res["flow_run_id"])
    counts = collections.Counter(res["flow_counts"])
    for w in res.get("workers", []):
        counts.update(w["counts"])
    res["counted_in"] = "flow process" if scheduler == "threads" else \
        f"{len(res.get('workers', []))} worker processes (+ flow process: {sum(res['flow_counts'].values())} reads)"
    per_chunk = [counts.get(k, 0) for k in chunk_keys(n_chunks)]
    res["passes"] = {"mean": sum(counts.values()) / n_chunks, "max": max(per_chunk), "min": min(per_chunk),
                     "chunks_read": sum(1 for c in per_chunk if c), "n_chunks": n_chunks,
                     "other_keys": sorted(set(counts) - set(chunk_keys(n_chunks)))}
    begun = res["timing"]["starts"].get("fit-preprocessing")
    firsts = [w.get("first_read") for w in res.get("workers", [])] + [res["flow_first_read"]]
    res["first_read_after_s"] = None if begun is None else sorted(f - begun for f in firsts if f is not None)
    res["outputs"] = check_outputs(out, args.rows)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return res


def chunk_keys(n_chunks: int) -> list[str]:
    return [f"{ARRAY}/c/{i}/0" for i in range(n_chunks)]


def describe_run(res: dict) -> str:
    if "error" in res:
        return f"[{res['tag']}] FAILED: {res['error']}"
    s, p, t = res["summary"], res["passes"], res["timing"]
    pressure = "-" if res["pressure"] is None else f"{res['pressure']:.0%}"
    return (f"[{res['tag']}] flow {t['flow_s']:.1f} s (process wall {res['wall_s']:.1f} s), n_iter {s['n_iter']} "
            f"(converged {s['converged']}), passes mean {p['mean']:.2f} max {p['max']}, flow peak RSS "
            f"{res['peak_rss_mib']:.0f} MiB, outputs {res['outputs']}, CPU pressure {pressure}")


# ---------------------------------------------------------------------------- output


def print_header(args, unset: dict[str, str]) -> None:
    from importlib.metadata import version

    import numpy  # noqa: F401 - loads OpenBLAS for threadpool_info
    from threadpoolctl import threadpool_info

    print("gmm-stream fit-job benchmark")
    print(f"command   : {shlex.join([sys.executable] + sys.argv)}")
    print(f"date      : {datetime.datetime.now().isoformat(timespec='seconds')}")
    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    print(f"machine   : {platform.node()}, {cpu}, cpu_count={os.cpu_count()}, "
          f"affinity={len(os.sched_getaffinity(0))}, memory "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    was = ", ".join(f"{k}={v}" for k, v in unset.items()) or "neither was set"
    print(f"openblas  : {' and '.join(OPENBLAS_VARS)} unset in this process and its children ({was})")
    for info in threadpool_info():
        print(f"threadpool: {info['internal_api']} {info.get('version')} {info.get('architecture')} "
              f"threads={info['num_threads']} ({os.path.basename(info['filepath'])})")
    libs = ["numpy", "dask", "distributed", "zarr", "xarray", "pyarrow", "prefect", "gmm-stream"]
    print("versions  : " + ", ".join(f"{lib} {version(lib)}" for lib in libs))
    print(f"python    : {platform.python_version()}")
    print(f"code      : {ROOT} ({code_version(ROOT)})")
    n_chunks = -(-args.rows // args.chunk_rows)
    size = args.rows * N_FEATURES * (4 if args.dtype == "float32" else 8) / MIB
    print(f"data      : {args.rows} rows x {N_FEATURES} features {args.dtype} = {size:.0f} MiB, uncompressed Zarr v3, "
          f"{n_chunks} chunks of {args.chunk_rows} rows (the source's Dask chunks are the same); "
          f"generated from a {TRUE_COMPONENTS}-component full-covariance mixture")
    print(f"job       : standardize + PCA({args.pca}) -> GaussianMixture(K={args.components}, full, "
          f"max_iter={args.max_iter}, tol={args.tol:g}, init kmeans, n_init 1) -> sinks Zarr + Parquet; "
          "job defaults otherwise (checkpoints every iteration, report with plots and artifacts)")
    print("schedulers: " + "; ".join(f"{s}: {SCHEDULERS[s]}" for s in args.scheduler_list))
    print(f"repeats   : {args.repeats} per scheduler, interleaved"
          + (" (one run each: numbers are single measurements)" if args.repeats == 1 else
             " (median [min-max])"))
    print(f"workdir   : {args.workdir} (fresh)")
    sys.stdout.flush()


def print_results(args, results: dict[str, list[dict]]) -> None:
    ok = {s: [r for r in runs if "error" not in r] for s, runs in results.items()}
    cols = [s for s in args.scheduler_list if ok[s]]

    rows = []
    for s in cols:
        for r in ok[s]:
            p, n_iter = r["passes"], r["summary"]["n_iter"]
            bound = n_iter + 3
            rows.append([r["tag"], f"{n_iter} ({'yes' if r['summary']['converged'] else 'no'})",
                         f"{p['mean']:.2f}", p["max"], p["min"], f"{p['chunks_read']}/{p['n_chunks']}", bound,
                         "yes" if p["max"] <= bound and p["mean"] <= bound else "NO", r["counted_in"]])
    print_table("Passes over the input (chunk reads of X / chunks); claim: passes <= n_iter + 3",
                ["run", "n_iter (converged)", "reads/chunks", "max/chunk", "min/chunk", "chunks read",
                 "n_iter+3", "holds", "counted in"], rows)

    rows = []
    for stage in STAGES + ("(outside tasks)", "flow run total", "flow process wall"):
        row = [stage]
        for s in cols:
            values = []
            for r in ok[s]:
                t = r["timing"]
                if stage == "(outside tasks)":
                    values.append(None if t["flow_s"] is None else t["flow_s"] - sum(t["stages"].values()))
                elif stage == "flow run total":
                    values.append(t["flow_s"])
                elif stage == "flow process wall":
                    values.append(r["wall_s"])
                else:
                    values.append(t["stages"].get(stage))
            row.append(spread(values))
            total = [r["timing"]["flow_s"] for r in ok[s]]
            share = [v / f for v, f in zip(values, total) if v is not None and f]
            row.append("-" if stage in ("flow run total", "flow process wall") else spread(
                [100 * x for x in share], "{:.0f}%"))
        rows.append(row)
    other = sorted({k for s in cols for r in ok[s] for k in r["timing"]["stages"]} - set(STAGES))
    for stage in other:
        rows.append([stage] + [c for s in cols for c in (spread([r["timing"]["stages"].get(stage) for r in ok[s]]),
                                                          "")])
    headers = ["stage (Prefect task)"]
    for s in cols:
        headers += [f"{s} s", "share"]
    print_table("Wall time by stage: Prefect task runs' start_time..end_time (s); share of the flow run", headers,
                rows)
    per_iter = [spread([r["timing"]["stages"].get("fit-model", 0) / max(r["summary"]["n_iter"], 1)
                        for r in ok[s]], "{:.2f}") for s in cols]
    print("fit-model / n_iter (s, includes the initialisation): "
          + ", ".join(f"{s} {v}" for s, v in zip(cols, per_iter)))
    incomplete = [r["tag"] for s in cols for r in ok[s] if not r["timing"]["complete"]]
    if incomplete:
        print(f"NOTE: the API had not recorded the end of every task run of {incomplete} within 60 s")

    rows = []
    for s in cols:
        runs = ok[s]
        workers = [w for r in runs for w in r.get("workers", [])]
        rows.append([
            s,
            spread([r["baseline_rss_mib"] for r in runs], "{:.0f}"),
            spread([r["peak_rss_mib"] for r in runs], "{:.0f}"),
            spread([r["peak_rss_mib"] - r["baseline_rss_mib"] for r in runs], "{:.0f}"),
            "N/A (no workers)" if s == "threads" else (
                (" / ".join(f"{w['peak_rss_mib']:.0f}" for w in workers) or "missing") if len(runs) == 1
                else spread([w["peak_rss_mib"] for w in workers], "{:.0f}")),
            "N/A" if s == "threads" else spread([r.get("workers_sum_peak_mib") for r in runs], "{:.0f}"),
            spread([r["rchar"] / MIB for r in runs], "{:.0f}"),
            spread([r["wchar"] / MIB for r in runs], "{:.0f}"),
            "N/A" if s == "threads" else spread([r.get("workers_rchar", 0) / MIB for r in runs], "{:.0f}"),
            "N/A" if s == "threads" else spread([r.get("workers_wchar", 0) / MIB for r in runs], "{:.0f}"),
        ])
    print_table("Memory and traffic (MiB). Flow process: VmHWM of a fresh process, 'after imports' = RSS just "
                "before the flow; workers: each one's VmHWM; sum = sampled peak of their summed RSS; "
                "rchar/wchar: /proc/<pid>/io (files, sockets, pipes) during the flow, the workers' taken out "
                "of the flow process's",
                ["scheduler", "flow after imports", "flow peak", "flow peak - imports", "worker peaks",
                 "workers sum peak", "flow rchar", "flow wchar", "workers rchar", "workers wchar"], rows)

    for s in cols:
        for r in ok[s]:
            extra = {pid: c for pid, c in r.get("children", {}).items() if c["peak_mib"] >= 50}
            pressure = "-" if r["pressure"] is None else f"{r['pressure']:.0%}"
            first = " / ".join(f"{x:.1f}" for x in r.get("first_read_after_s") or []) or "-"
            line = (f"  {r['tag']}: CPU pressure {pressure}; first chunk read {first} s after fit-preprocessing "
                    f"began (per reading process); outputs {r['outputs']}")
            if r.get("workers"):
                line += "; worker RSS at start " + " / ".join(
                    f"{w['start_rss_mib']:.0f}" for w in r["workers"] if w.get("start_rss_mib")) + " MiB"
                line += "; imported by the workers: " + ", ".join(
                    sorted({m for w in r["workers"] for m in w.get("imported", [])}, key=NOTABLE_MODULES.index))
            if r["passes"]["other_keys"]:
                line += f"; reads of other keys of X: {r['passes']['other_keys'][:5]}"
            if extra:
                line += "; other children: " + ", ".join(
                    f"{c['cmd'][:60]!r} peak {c['peak_mib']:.0f} MiB" for c in extra.values())
            print(line)
    for s in args.scheduler_list:
        for r in results[s]:
            if "error" in r:
                print(f"\n[{r['tag']}] failed:\n{r['error']}")
    sys.stdout.flush()


# -------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=None, help=f"rows of the input (default {ROWS}; --quick {QUICK_ROWS})")
    p.add_argument("--chunk-rows", type=int, default=None,
                   help=f"rows per chunk (default {CHUNK_ROWS}; --quick {QUICK_CHUNK_ROWS})")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--components", type=int, default=5, help="K of the fitted mixture")
    p.add_argument("--pca", type=int, default=4, help="PCA components kept")
    p.add_argument("--max-iter", type=int, default=20)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=1, help="runs per scheduler (interleaved); medians reported")
    p.add_argument("--schedulers", default=",".join(SCHEDULERS), help=f"comma-separated among {list(SCHEDULERS)}")
    p.add_argument("--workdir", default="/tmp/bench-job", help="created fresh (deleted first)")
    p.add_argument("--keep", action="store_true", help="keep every run's outputs (default: only the input and logs)")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_ROWS} rows, chunks of {QUICK_CHUNK_ROWS}")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    args.rows = args.rows or (QUICK_ROWS if args.quick else ROWS)
    args.chunk_rows = args.chunk_rows or (QUICK_CHUNK_ROWS if args.quick else CHUNK_ROWS)
    args.scheduler_list = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    unknown = set(args.scheduler_list) - set(SCHEDULERS)
    if unknown:
        p.error(f"unknown scheduler(s) {sorted(unknown)}; choose among {list(SCHEDULERS)}")
    if min(args.rows, args.chunk_rows, args.repeats) < 1:
        p.error("--rows, --chunk-rows and --repeats must be >= 1")
    args.workdir = Path(args.workdir).resolve()
    if args.workdir in (Path("/"), Path.home(), ROOT) or ROOT.is_relative_to(args.workdir):
        p.error(f"--workdir {args.workdir} is deleted first: give a directory of its own")
    return args


def main(argv=None) -> int:
    unset = {v: os.environ.pop(v) for v in OPENBLAS_VARS if v in os.environ}  # before NumPy loads
    args = parse_args(argv)
    if args.child:
        print(json.dumps(flow_process(json.loads(args.child)), default=str))
        return 0

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    prefect_home = Path(tempfile.mkdtemp(prefix="prefect-home-", dir=args.workdir))
    os.environ.update({
        "PREFECT_HOME": str(prefect_home),  # before Prefect is imported (as tests/flows/conftest.py)
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    })
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("PREFECT_PROFILES_PATH", None)
    print_header(args, unset)

    store = args.workdir / "input.zarr"
    t0 = time.perf_counter()
    write_input(store, args.rows, N_FEATURES, args.chunk_rows, args.dtype)
    n_chunks = -(-args.rows // args.chunk_rows)
    print(f"input     : written with zarr in {time.perf_counter() - t0:.1f} s to {store}")
    sys.stdout.flush()

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    results: dict[str, list[dict]] = {s: [] for s in args.scheduler_list}
    t_all = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
               "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        print(f"prefect   : temporary server at {PREFECT_API_URL.value()} (PREFECT_HOME {prefect_home})\n")
        for i in range(args.repeats):
            for s in args.scheduler_list:
                res = run_once(args, s, i, store, n_chunks, env)
                results[s].append(res)
                print(describe_run(res).splitlines()[0])
                sys.stdout.flush()
    print_results(args, results)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s (runs), load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; logs of each run in {args.workdir}/log-*.txt")
    shutil.rmtree(prefect_home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
