"""Benchmark of the EM engine: time per EM iteration and peak memory, gmm-stream vs scikit-learn.

What is measured
----------------
Every fit starts from the same ``weights_init`` / ``means_init`` / ``precisions_init`` (the
generating parameters of a synthetic Gaussian mixture, perturbed), with ``tol=0`` and
``max_iter=--iters``, so both libraries run exactly ``--iters`` EM iterations (checked on
``n_iter_``). Covariances are 'full'. Two per-iteration times are reported:

* ``s/it`` - the EM loop only (first E-step to last M-step), divided by the iterations. The
  loop is timed by wrapping scikit-learn's ``_e_step`` / ``_m_step`` and gmm-stream's ``_em``
  on the instance. This is the fair number: scikit-learn's ``fit`` also computes
  parameters from initial responsibilities over the whole data (even when every ``*_init`` is
  given) and runs one extra E-step after the loop, i.e. about one more iteration of work.
* ``fit/n_iter_`` - wall time of ``fit`` divided by ``n_iter_`` (what a user sees).

The targets are judged on ``s/it``. Each number is the median of ``--repeats`` fits.

Every measurement runs in a fresh process (``multiprocessing`` spawn), which generates its
own data (seeded, identical across processes) so that the peak memory of each library is its
own. Peak RSS is the kernel's high-water mark ``VmHWM`` reset (``/proc/self/clear_refs``)
after the data are built, i.e. the peak *during the fits*, data included; the RSS before the
fits (imports + data) is shown next to it. ``ru_maxrss`` is not used: after fork+exec a child
inherits its parent's peak in it.

Threads: scikit-learn runs with NumPy's BLAS threads untouched; gmm-stream runs on Dask's
threaded scheduler (one Dask thread per core, one BLAS thread each, which it sets itself).

Sections (``--parts``)
----------------------
sklearn      complete data, float64 and float32, gmm-stream on a Dask array
             (``da.from_array(X, chunks=(131072, d))``) and on the plain NumPy array
missing      gmm-stream with 10 % of the values missing (MCAR) vs its own complete-data time
distributed  data in a Zarr store read by the workers: threaded scheduler vs
             ``LocalCluster(n_workers=2, threads_per_worker=1)``
outofcore    a Zarr store twice the memory the process may use (``RLIMIT_DATA``), fitted by
             a process that cannot hold it (``.compute()`` of it must fail)

Run
---
    python benchmarks/bench_em.py                      # everything (10-25 minutes on 2 cores)
    python benchmarks/bench_em.py --quick              # smoke run (n=20000, 1 repeat)
    python benchmarks/bench_em.py --parts sklearn --shapes 50x20 --repeats 1

The exit code is 0 even when a target is missed: this is a report, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from importlib.metadata import version

import dask
import dask.array as da
import numpy as np
import zarr
from _common import cpu_stall_seconds, in_child, print_table, true_parameters
from _common import status_mib as _status_mib
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_info

from gmm_stream import GaussianMixture
from gmm_stream.exceptions import ConvergenceWarning as GsConvergenceWarning

#: rows generated per seeded block (the data do not depend on how they are stored)
BLOCK_ROWS = 65536
#: rows per chunk of the Dask arrays and Zarr stores
CHUNK_ROWS = 131072
MISSING_FRACTION = 0.10
SEED = 20261
MIB = 2**20

#: complete data, float64: minimum speed-up over scikit-learn, by (d, K)
SPEEDUP_F64 = {(10, 5): 5.0, (10, 20): 5.0, (50, 20): 3.0}
#: float32 input: minimum speed-up over scikit-learn's float64, by (d, K)
SPEEDUP_F32 = {(50, 20): 7.0}
F32_LOWER_BOUND_RTOL = 1e-5
F32_MEANS_TOL = 1e-3  # in units of the data's standard deviation
#: 10 % missing: maximum slowdown over our own complete-data time, by d
MISSING_SLOWDOWN = {50: 2.5}
DISTRIBUTED_SLOWDOWN = 1.3
OOC_SHAPE = (50, 5)  # (d, K) of the out-of-core fit
OOC_STORE_FACTOR = 2.0  # store size / memory limit


# ---------------------------------------------------------------------------------- data


def initial_parameters(d: int, k: int) -> dict:
    """The same start for both libraries: the truth, perturbed."""
    weights, means, covariances = true_parameters(d, k, SEED)
    rng = np.random.default_rng([SEED, d, k, 1])
    return {
        "weights_init": 0.5 * weights + 0.5 / k,
        "means_init": means + 0.5 * rng.standard_normal(means.shape),
        "precisions_init": np.linalg.inv(1.5 * covariances + 0.1 * np.eye(d)),
    }


def mixture_std(d: int, k: int) -> np.ndarray:
    """Standard deviation of each feature under the generating mixture."""
    weights, means, covariances = true_parameters(d, k, SEED)
    second = weights @ (np.diagonal(covariances, axis1=1, axis2=2) + means**2)
    return np.sqrt(second - (weights @ means) ** 2)


def data_rows(start: int, stop: int, d: int, k: int, missing: float) -> np.ndarray:
    """Rows ``start:stop`` (``start`` a multiple of BLOCK_ROWS) of the synthetic data, float64."""
    weights, means, covariances = true_parameters(d, k, SEED)
    chol = np.linalg.cholesky(covariances)
    out = np.empty((stop - start, d))
    for b0 in range(start, stop, BLOCK_ROWS):
        b1 = min(b0 + BLOCK_ROWS, stop)
        rng = np.random.default_rng([SEED, d, k, 2, b0])
        labels = rng.choice(k, size=b1 - b0, p=weights)
        z = rng.standard_normal((b1 - b0, d))
        block = out[b0 - start : b1 - start]
        for j in range(k):
            rows = labels == j
            block[rows] = means[j] + z[rows] @ chol[j].T
        if missing:
            block[rng.random(block.shape) < missing] = np.nan
    return out


def make_data(n: int, d: int, k: int, dtype, missing: float = 0.0) -> np.ndarray:
    """The whole data set in memory, built block by block (peak ≈ the array itself)."""
    X = np.empty((n, d), dtype=dtype)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        X[start:stop] = data_rows(start, stop, d, k, missing)
    return X


def write_zarr(path: str, n: int, d: int, k: int, chunk_rows: int = CHUNK_ROWS) -> None:
    """The same data in an uncompressed Zarr v3 store, one chunk in memory at a time."""
    z = zarr.create_array(store=path, shape=(n, d), chunks=(chunk_rows, d), dtype="f8",
                          compressors=None, overwrite=True)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        z[start:stop] = data_rows(start, stop, d, k, 0.0)


# -------------------------------------------------------------------------------- memory


def rss_mib() -> float:
    value = _status_mib("VmRSS")
    return value if value is not None else float("nan")


def peak_rss_mib() -> float:
    """Peak resident memory of this process (since the last ``reset_peak_rss``)."""
    value = _status_mib("VmHWM")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------- timing a fit


def _fit_sklearn(X, k: int, init: dict, iters: int) -> dict:
    gm = SkGaussianMixture(k, covariance_type="full", tol=0.0, max_iter=iters,
                           init_params="random_from_data", random_state=0, **init)
    marks = {}
    e_step, m_step = gm._e_step, gm._m_step

    def timed_e_step(*args, **kwargs):
        marks.setdefault("start", time.perf_counter())
        return e_step(*args, **kwargs)

    def timed_m_step(*args, **kwargs):
        result = m_step(*args, **kwargs)
        marks["end"] = time.perf_counter()
        return result

    gm._e_step, gm._m_step = timed_e_step, timed_m_step
    t0 = time.perf_counter()
    gm.fit(X)
    fit_s = time.perf_counter() - t0
    return {"loop_s": marks["end"] - marks["start"], "fit_s": fit_s, "n_iter": gm.n_iter_,
            "lower_bound": float(gm.lower_bound_), "means": gm.means_}


def _fit_gmm_stream(X, k: int, init: dict, iters: int) -> dict:
    # plain batch EM from the same start as scikit-learn's (no EM on a sample first)
    gm = GaussianMixture(k, covariance_type="full", tol=0.0, max_iter=iters, sample_first=False, **init)
    marks = {}
    em = gm._em

    def timed_em(*args, **kwargs):
        t0 = time.perf_counter()
        result = em(*args, **kwargs)
        marks["loop"] = time.perf_counter() - t0
        return result

    gm._em = timed_em
    t0 = time.perf_counter()
    gm.fit(X)
    fit_s = time.perf_counter() - t0
    return {"loop_s": marks["loop"], "fit_s": fit_s, "n_iter": gm.n_iter_,
            "lower_bound": float(gm.lower_bound_), "means": gm.means_}


FITTERS = {"sklearn": _fit_sklearn, "gmm-stream": _fit_gmm_stream}


def repeat_fits(lib: str, X, k: int, iters: int, repeats: int) -> dict:
    """Fit ``repeats`` times; medians of the per-iteration times, peak RSS during the fits."""
    init = initial_parameters(X.shape[1], k)
    before = rss_mib()
    reset_peak_rss()
    runs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        warnings.simplefilter("ignore", GsConvergenceWarning)
        for _ in range(repeats):
            stall0, t0 = cpu_stall_seconds(), time.perf_counter()
            runs.append(FITTERS[lib](X, k, init, iters))
            if stall0 is not None:
                runs[-1]["pressure"] = (cpu_stall_seconds() - stall0) / (time.perf_counter() - t0)
    return {
        "s_per_iter": statistics.median(r["loop_s"] / iters for r in runs),
        "fit_per_iter": statistics.median(r["fit_s"] / r["n_iter"] for r in runs),
        "all_s_per_iter": [r["loop_s"] / iters for r in runs],
        "pressure": [r.get("pressure") for r in runs],
        "n_iter_ok": all(r["n_iter"] == iters for r in runs),
        "lower_bound": runs[-1]["lower_bound"],
        "means": runs[-1]["means"],
        "rss_before": before,
        "peak": peak_rss_mib(),
    }


# ------------------------------------------------------------- jobs (run in a child)


def job_in_memory(lib: str, n: int, d: int, k: int, dtype: str, source: str, missing: float,
                  iters: int, repeats: int) -> dict:
    """One library on in-memory data (NumPy, or a Dask array over it)."""
    X = make_data(n, d, k, np.dtype(dtype), missing)
    if source == "dask":
        X = da.from_array(X, chunks=(CHUNK_ROWS, d))
    return repeat_fits(lib, X, k, iters, repeats)


def job_zarr_threads(path: str, k: int, iters: int, repeats: int) -> dict:
    """gmm-stream on a Zarr-backed Dask array, threaded scheduler."""
    with dask.config.set(scheduler="threads"):
        return repeat_fits("gmm-stream", da.from_zarr(path), k, iters, repeats)


def job_zarr_distributed(path: str, k: int, iters: int, repeats: int) -> dict:
    """gmm-stream on a Zarr-backed Dask array under a LocalCluster of 2 workers × 1 thread.

    The workers open the store themselves: the graph holds the Zarr array (a path) and the
    parameters, never data. They import gmm-stream before the timed fits (a one-time cost,
    reported as part of the start-up).
    """
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(exec, "import gmm_stream")
        startup = time.perf_counter() - t0
        result = repeat_fits("gmm-stream", da.from_zarr(path), k, iters, repeats)
        result["startup_s"] = startup
        result["worker_peaks"] = sorted(client.run(peak_rss_mib).values())
    return result


def _limit_memory(limit_mib: int) -> str:
    """Cap this process's private writable memory (heap, anonymous mmaps) at ``limit_mib``."""
    limit = int(limit_mib * MIB)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return f"RLIMIT_DATA={limit_mib} MiB (VmData now {_status_mib('VmData'):.0f} MiB)"


def job_ooc_load_all(path: str, limit_mib: int) -> dict:
    """Show that the limit bites: materialising the whole store must fail."""
    how = _limit_memory(limit_mib)
    try:
        X = da.from_zarr(path).compute()
    except MemoryError as exc:
        return {"limit": how, "outcome": f"MemoryError ({str(exc)[:70]})", "bites": True}
    return {"limit": how, "outcome": f"loaded {X.nbytes / MIB:.0f} MiB: the limit does NOT bite",
            "bites": False}


def job_ooc_fit(path: str, n_rows: int, limit_mib: int, k: int, iters: int) -> dict:
    """gmm-stream on the first ``n_rows`` rows of the store, under the memory limit."""
    how = _limit_memory(limit_mib)
    X = da.from_zarr(path)[:n_rows]
    result = repeat_fits("gmm-stream", X, k, iters, 1)
    result["limit"] = how
    return result


# ------------------------------------------------------------------------ child runner


# ---------------------------------------------------------------------------- output


def fmt_s(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_mib(x) -> str:
    return "-" if x is None else f"{x:.0f}"


def fmt_ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def verdict(ok: bool | None, *results: dict) -> str:
    if any("error" in r for r in results):
        return "ERROR"
    return "-" if ok is None else ("PASS" if ok else "MISS")


def print_details(results: dict) -> None:
    """Every repeat's s/it and the CPU pressure during it (share of the time some task on the
    machine waited for a CPU: the other users' load), then any failure in full."""
    print("details: s/it of each repeat [CPU pressure during it]")
    for name, res in results.items():
        if "error" in res or "all_s_per_iter" not in res:
            continue
        runs = " ".join(
            f"{t:.3f}" + ("" if p is None else f"[{p:.0%}]")
            for t, p in zip(res["all_s_per_iter"], res["pressure"])
        )
        print(f"  {name}: {runs}")
    for name, res in results.items():
        if "error" in res:
            print(f"\n[{name}] failed:\n{res['error']}")
    sys.stdout.flush()


def print_header(args) -> None:
    print("gmm-stream EM benchmark")
    print(f"command   : {shlex.join([sys.executable] + sys.argv)}")
    print(f"date      : {datetime.datetime.now().isoformat(timespec='seconds')}")
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    print(f"machine   : {platform.node()}, {cpu}, nproc={len(os.sched_getaffinity(0))}, "
          f"memory {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for info in threadpool_info():
        print(f"threadpool: {info['internal_api']} {info.get('version')} {info.get('architecture')} "
              f"threads={info['num_threads']} ({os.path.basename(info['filepath'])})")
    libs = ["numpy", "scipy", "scikit-learn", "dask", "distributed", "zarr", "gmm-stream"]
    print("versions  : " + ", ".join(f"{lib} {version(lib)}" for lib in libs))
    print(f"python    : {platform.python_version()}")
    print(f"settings  : n={args.n}, shapes={args.shapes}, iters={args.iters}, repeats={args.repeats} "
          f"(medians), covariance_type='full', chunks={CHUNK_ROWS} rows")
    sys.stdout.flush()


# ---------------------------------------------------------------------------- sections


def section_sklearn(args) -> None:
    rows, accuracy, results = [], [], {}
    for d, k in args.shape_list:
        configs = {
            "sklearn": ("sklearn", "float64", "numpy"),
            "gs64-dask": ("gmm-stream", "float64", "dask"),
            "gs64-numpy": ("gmm-stream", "float64", "numpy"),
            "gs32-dask": ("gmm-stream", "float32", "dask"),
            "gs32-numpy": ("gmm-stream", "float32", "numpy"),
        }
        res = {}
        for name, (lib, dtype, source) in configs.items():
            res[name] = in_child(job_in_memory, lib, args.n, d, k, dtype, source, 0.0, args.iters, args.repeats)
            results[f"{d}x{k} {name}"] = res[name]
        sk = res["sklearn"]
        for name in ("gs64-dask", "gs64-numpy", "gs32-dask", "gs32-numpy"):
            gs = res[name]
            dtype, source = configs[name][1:]
            target = (SPEEDUP_F64 if dtype == "float64" else SPEEDUP_F32).get((d, k)) if source == "dask" else None
            ok = ratio = ratio_fit = None
            if "error" not in sk and "error" not in gs:
                ratio = sk["s_per_iter"] / gs["s_per_iter"]
                ratio_fit = sk["fit_per_iter"] / gs["fit_per_iter"]
                ok = None if target is None else ratio >= target
                if not (sk["n_iter_ok"] and gs["n_iter_ok"]):
                    ok = False
            rows.append([
                f"({args.n}, {d}, {k})", dtype, source,
                fmt_s(sk.get("s_per_iter")), fmt_s(gs.get("s_per_iter")), fmt_ratio(ratio),
                fmt_s(sk.get("fit_per_iter")), fmt_s(gs.get("fit_per_iter")), fmt_ratio(ratio_fit),
                f"{fmt_mib(sk.get('peak'))} ({fmt_mib(sk.get('rss_before'))})",
                f"{fmt_mib(gs.get('peak'))} ({fmt_mib(gs.get('rss_before'))})",
                "-" if target is None else f">={target:g}x", verdict(ok, sk, gs),
            ])
        accuracy.append(float32_accuracy(d, k, res))
    print_table(
        f"Complete data, full covariance: scikit-learn (float64, NumPy) vs gmm-stream "
        f"[n_iter_ == {args.iters} checked]",
        ["shape (n,d,K)", "dtype", "gmm input", "sk s/it", "gmm s/it", "ratio",
         "sk fit/n_iter_", "gmm fit/n_iter_", "ratio", "sk peak MiB (before)", "gmm peak MiB (before)",
         "target", "verdict"],
        rows,
    )
    print_table(
        "Agreement (Dask input): float64 lower bound vs scikit-learn's; float32 vs our float64 fit",
        ["shape (d,K)", "|dLB|/|LB| f64 vs sk", "|dLB|/|LB| f32 vs f64", "max|dmeans|/std f32",
         f"target LB <= {F32_LOWER_BOUND_RTOL:g}", f"target means <= {F32_MEANS_TOL:g}"],
        accuracy,
    )
    print_details(results)


def float32_accuracy(d: int, k: int, res: dict) -> list:
    sk, g64, g32 = res["sklearn"], res["gs64-dask"], res["gs32-dask"]
    if any("error" in r for r in (sk, g64, g32)):
        return [f"({d}, {k})", "-", "-", "-", "-", "-"]
    rel = lambda a, b: abs(a - b) / abs(b)  # noqa: E731
    lb64_sk = rel(g64["lower_bound"], sk["lower_bound"])
    lb32 = rel(g32["lower_bound"], g64["lower_bound"])
    dmeans = float(np.max(np.abs(g32["means"] - g64["means"]) / mixture_std(d, k)))
    return [f"({d}, {k})", f"{lb64_sk:.1e}", f"{lb32:.1e}", f"{dmeans:.1e}",
            verdict(lb32 <= F32_LOWER_BOUND_RTOL), verdict(dmeans <= F32_MEANS_TOL)]


def section_missing(args) -> None:
    rows, results = [], {}
    for d, k in args.shape_list:
        complete = in_child(job_in_memory, "gmm-stream", args.n, d, k, "float64", "dask", 0.0,
                            args.iters, args.repeats)
        missing = in_child(job_in_memory, "gmm-stream", args.n, d, k, "float64", "dask", MISSING_FRACTION,
                           args.iters, args.repeats)
        results[f"{d}x{k} complete"], results[f"{d}x{k} missing"] = complete, missing
        target = MISSING_SLOWDOWN.get(d)
        ratio = ok = None
        if "error" not in complete and "error" not in missing:
            ratio = missing["s_per_iter"] / complete["s_per_iter"]
            ok = None if target is None else (ratio <= target and missing["n_iter_ok"])
        rows.append([
            f"({args.n}, {d}, {k})", fmt_s(complete.get("s_per_iter")), fmt_s(missing.get("s_per_iter")),
            fmt_ratio(ratio), f"{fmt_mib(complete.get('peak'))} ({fmt_mib(complete.get('rss_before'))})",
            f"{fmt_mib(missing.get('peak'))} ({fmt_mib(missing.get('rss_before'))})",
            "-" if target is None else f"<={target:g}x", verdict(ok, complete, missing),
        ])
    print_table(
        f"{MISSING_FRACTION:.0%} of values missing (MCAR), gmm-stream float64, Dask input "
        "(scikit-learn cannot fit NaN)",
        ["shape (n,d,K)", "complete s/it", "missing s/it", "missing/complete",
         "peak MiB complete (before)", "peak MiB missing (before)", "target", "verdict"],
        rows,
    )
    print_details(results)


def section_distributed(args) -> None:
    rows, results = [], {}
    for d, k in args.shape_list:
        tmp = tempfile.mkdtemp(prefix="bench_em_zarr_")
        try:
            path = os.path.join(tmp, "X.zarr")
            t0 = time.perf_counter()
            write_zarr(path, args.n, d, k)
            written = time.perf_counter() - t0
            threads = in_child(job_zarr_threads, path, k, args.iters, args.repeats)
            dist = in_child(job_zarr_distributed, path, k, args.iters, args.repeats)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        results[f"{d}x{k} threads"], results[f"{d}x{k} distributed"] = threads, dist
        ratio = ok = None
        if "error" not in threads and "error" not in dist:
            ratio = dist["s_per_iter"] / threads["s_per_iter"]
            ok = ratio <= DISTRIBUTED_SLOWDOWN and dist["n_iter_ok"] and threads["n_iter_ok"]
        size = args.n * d * 8 / MIB
        rows.append([
            f"({args.n}, {d}, {k})", f"{size:.0f} MiB, {written:.1f} s", fmt_s(threads.get("s_per_iter")),
            fmt_s(dist.get("s_per_iter")), fmt_ratio(ratio), fmt_s(dist.get("startup_s")),
            fmt_mib(threads.get("peak")), fmt_mib(dist.get("peak")),
            " / ".join(fmt_mib(p) for p in dist.get("worker_peaks", [])) or "-",
            f"<={DISTRIBUTED_SLOWDOWN:g}x", verdict(ok, threads, dist),
        ])
    print_table(
        "Zarr-backed Dask array (uncompressed, read by the workers): threaded scheduler vs "
        "LocalCluster(2 workers x 1 thread)",
        ["shape (n,d,K)", "store, write time", "threads s/it", "distributed s/it", "dist/threads",
         "cluster start s", "threads peak MiB", "client peak MiB", "worker peaks MiB", "target", "verdict"],
        rows,
    )
    print_details(results)


def section_outofcore(args) -> None:
    d, k = OOC_SHAPE
    limit = args.memory_limit_mib
    n = int(OOC_STORE_FACTOR * limit * MIB / (d * 8))
    iters = min(args.iters, 1 if args.quick else 3)
    tmp = tempfile.mkdtemp(prefix="bench_em_ooc_")
    try:
        path = os.path.join(tmp, "X.zarr")
        t0 = time.perf_counter()
        write_zarr(path, n, d, k)
        written = time.perf_counter() - t0
        load = in_child(job_ooc_load_all, path, limit)
        quarter = (n // 4 // CHUNK_ROWS) * CHUNK_ROWS or n
        fits = {rows: in_child(job_ooc_fit, path, rows, limit, k, iters) for rows in (quarter, n)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = n * d * 8 / MIB
    chunk = CHUNK_ROWS * d * 8 / MIB
    print(f"\nOut of core: Zarr store ({n}, {d}) float64 = {size:.0f} MiB "
          f"({size / limit:.1f}x the limit), chunks of {CHUNK_ROWS} rows = {chunk:.0f} MiB, "
          f"written in {written:.1f} s; full covariance, K={k}, {iters} iterations; "
          f"temp store deleted.")
    print(f"  load the whole array (.compute()) under the limit: "
          f"{load.get('outcome', load.get('error'))}  [{load.get('limit', '')}]")
    rows = []
    for n_rows, res in fits.items():
        ok = None if "error" in res else (res["n_iter_ok"] and res["peak"] < limit and load.get("bites", False))
        rows.append([
            f"({n_rows}, {d}, {k})", f"{n_rows * d * 8 / MIB:.0f}", str(limit),
            fmt_mib(res.get("rss_before")), fmt_mib(res.get("peak")), fmt_s(res.get("s_per_iter")),
            "completes, peak < limit, load fails", verdict(ok, res),
        ])
    print_table(
        f"Out-of-core fits under RLIMIT_DATA = {limit} MiB (peak RSS during the fit; "
        "'before' = imports only)",
        ["rows (n,d,K)", "data MiB", "limit MiB", "before MiB", "peak MiB", "s/it", "target", "verdict"],
        rows,
    )
    if not load.get("bites", False):
        print("  NOTE: the limit did not stop .compute(); the fits above do not prove out-of-core behaviour.")
    print_details({f"fit {r}": v for r, v in fits.items()} | {"load all": load})


SECTIONS = {
    "sklearn": section_sklearn,
    "missing": section_missing,
    "distributed": section_distributed,
    "outofcore": section_outofcore,
}


# -------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="rows of the in-memory data sets")
    p.add_argument("--shapes", default="10x5,10x20,50x20", help="comma-separated dxK")
    p.add_argument("--iters", type=int, default=5, help="EM iterations per fit (tol=0)")
    p.add_argument("--repeats", type=int, default=3, help="fits per measurement; medians are reported")
    p.add_argument("--parts", default=",".join(SECTIONS),
                   help=f"comma-separated sections among {', '.join(SECTIONS)}")
    p.add_argument("--memory-limit-mib", type=int, default=1024,
                   help="memory limit of the out-of-core fit; the store is twice as large")
    p.add_argument("--quick", action="store_true", help="smoke run: n=20000, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeats = 20_000, 1
    args.shape_list = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    args.part_list = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = set(args.part_list) - set(SECTIONS)
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}; choose among {list(SECTIONS)}")
    if args.iters < 1 or args.repeats < 1:
        p.error("--iters and --repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    print_header(args)
    t0 = time.perf_counter()
    for part in args.part_list:
        t = time.perf_counter()
        SECTIONS[part](args)
        print(f"[{part}: {time.perf_counter() - t:.0f} s, load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}]")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
