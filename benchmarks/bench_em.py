"""Benchmark of the EM engine: time per EM iteration and peak memory, gmm-stream vs scikit-learn
(and mlpack, when installed).

What is measured
----------------
Every fit starts from the same ``weights_init`` / ``means_init`` / ``precisions_init`` (the
generating parameters of a synthetic Gaussian mixture, perturbed), with ``tol=0`` and
``max_iter=--iters``, so both libraries run exactly ``--iters`` EM iterations (checked on
``n_iter_``). Covariances are 'full', except in the peers section (all four types). Two
per-iteration times are reported:

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

Native BLAS kernels: this process unsets ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE``
(together, in its own environment, before NumPy loads; the fits' processes inherit it) so
that OpenBLAS picks the kernels of the machine; the header shows which were set and the
architecture OpenBLAS chose (``threadpool_info()``).

Sections (``--parts``)
----------------------
peers        scikit-learn, mlpack and gmm-stream side by side, all four covariance types
             (below); the default ``--shapes`` of this section are 10x5,10x20,32x16,50x20
             and its rows ``--peers-n`` (200 000)
sklearn      complete data, float64 and float32, gmm-stream on a Dask array
             (``da.from_array(X, chunks=(131072, d))``) and on the plain NumPy array
missing      gmm-stream with 10 % of the values missing (MCAR) vs its own complete-data time
distributed  data in a Zarr store read by the workers: threaded scheduler vs
             ``LocalCluster(n_workers=2, threads_per_worker=1)``
outofcore    a Zarr store twice the memory the process may use (``RLIMIT_DATA``), fitted by
             a process that cannot hold it (``.compute()`` of it must fail)

The peers section
-----------------
One fresh process per shape builds the data once (float64; a float32 copy; a float64 copy
with 10 % of the values NaN, MCAR, seeded), fits gmm-stream once untimed on its first 4096
rows for every covariance type and input (its compiled kernels load on first use), then,
for each of ``--repeats`` repeats, times every fit once, interleaved: the GEMM rates below,
then for each covariance type (full, tied, diag, spherical) scikit-learn, mlpack,
gmm-stream float64, float32 and float64 with NaN. Each number is the median [min-max] of
the repeats; each ratio is taken within a repeat (its fits run back to back), and its
median [min-max] is shown and judged.

* scikit-learn: ``sklearn.mixture.GaussianMixture`` on the float64 NumPy array, timed as above
  (``_e_step`` / ``_m_step``). Its start is gmm-stream's, ``precisions_init`` in the
  covariance type's shape: 'tied' the inverse of the ``weights_init``-weighted mean of the
  start's covariances, 'diag' the inverses of their diagonals, 'spherical' the inverse of
  each diagonal's mean. scikit-learn cannot fit NaN: the missing-value fits are compared
  with gmm-stream's own complete-data time.
* gmm-stream: ``GaussianMixture(sample_first=False, tol=0, max_iter=--iters)`` from that
  start on ``da.from_array(X, chunks=(n/4, d))`` (four equal chunks, so that both threads
  work to the end; 131 072-row chunks of 2*10^5 rows would leave one thread idle for a
  third of the time), threaded scheduler, timed on ``_em``.
* mlpack (not a dependency: ``pip install mlpack``; "mlpack: not installed" and no column
  when it does not import): ``mlpack.gmm_train`` on the same float64 array, 'full' and
  'diag' (``diagonal_covariance=True``; mlpack has no 'tied' or 'spherical'). ``gmm_train``
  cannot start from given parameters (it always runs k-means first; ``input_model`` is not
  used as a start), so its start is its own. Its EM loop is timed as the difference of two
  calls with the same seed (the same k-means, hence the same EM path) that differ only in
  ``max_iterations``: (time with ``max_iterations=m+1`` - time with ``max_iterations=1``) / m.
  'full' runs mlpack's own EM, which stops one short of ``max_iterations`` (1 runs no EM
  iteration), with ``tolerance=0`` and ``kmeans_max_iterations=5`` (in both calls; it
  cancels), and m = ``--iters``: the EM iterations its log reports (``verbose=True``, the
  C++ standard output captured) are checked to be 0 and m. 'diag' runs Armadillo's
  ``gmm_diag`` (``max_iterations`` EM iterations, stopping early only when the mean
  log-likelihood changes by less than machine epsilon; its own k-means, up to 1000
  iterations, in both calls): m = max(``--iters``, 20), so that the EM part stands out of
  the k-means' time; it logs nothing, so its iterations are not checked ("yes*"). Each
  mlpack EM iteration also computes the log-likelihood over all the data once more (its
  algorithm). mlpack brings its own OpenBLAS and OpenMP (listed in the notes): its OpenMP
  loops (Armadillo, k-means, ``gmm_diag``) keep their default threads (one per core); its
  OpenBLAS runs ``--mlpack-blas-threads`` threads (default 1; 0 leaves it at one per core):
  with both at two threads on this 2-core machine while another process used a core,
  'full' ran 8-14x slower than with one BLAS thread (2*10^4 rows, d = 50, K = 20: 5-7 s/it
  instead of 0.5 s/it).
* GEMM rate, in the same process, at NumPy's default BLAS threads (printed): ``A @ B`` for
  2000x2000 float64 and float32, and the kernel-shaped tall products ``X[i:i+4096] @ W``, W
  of shape (d, K*d), over all n rows; three timings of each per repeat. For 'full', the
  kernel's rate counts 4*n*K*d^2 flops per iteration (the Mahalanobis products of the
  E-step, the weighted scatter matrices of the M-step) and is shown as a share of the median
  square GEMM rate of its dtype.
* Peak RSS: the process's ``VmHWM`` once per shape (the data and every library together;
  the other sections measure each library's own).
* CPU pressure of each fit (details); the notes count the fits above 20 %. On a shared
  machine a multi-threaded BLAS (scikit-learn's two OpenBLAS threads) can lose far more
  than the core it lost: scikit-learn's 'spherical' at (2*10^4, 32, 16) took 0.013 s/it at
  1 % pressure and 0.87 s/it at 56 %.

Run
---
    python benchmarks/bench_em.py                      # everything (peers first; 25-40 minutes on 2 cores)
    python benchmarks/bench_em.py --parts peers        # peers alone, ~12 minutes on 2 cores
    python benchmarks/bench_em.py --parts peers --peers-n 20000 --shapes 10x5,50x20 --repeats 1 --iters 2
    python benchmarks/bench_em.py --quick              # smoke run (n=20000, 1 repeat)
    python benchmarks/bench_em.py --parts sklearn --shapes 50x20 --repeats 1

Measured at the defaults (2*10^5 rows, 5 iterations, 3 repeats) on this 2-core machine: the
peers section took 12 minutes (725 s: (50, 20) 401 s, (32, 16) 206, (10, 20) 88,
(10, 5) 30; most of it is scikit-learn's and mlpack's fits); longer under CPU pressure.

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
from importlib.metadata import PackageNotFoundError, version

from _common import cpu_stall_seconds, in_child, print_table, spread, true_parameters
from _common import status_mib as _status_mib

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: unset together, in this process's environment only, before NumPy loads (spawned children inherit it)
UNSET_OPENBLAS = {v: os.environ.pop(v) for v in OPENBLAS_VARS if v in os.environ}

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
import zarr  # noqa: E402
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning  # noqa: E402
from sklearn.mixture import GaussianMixture as SkGaussianMixture  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from gmm_stream import GaussianMixture  # noqa: E402
from gmm_stream.exceptions import ConvergenceWarning as GsConvergenceWarning  # noqa: E402
from gmm_stream.exceptions import OverParameterizedWarning  # noqa: E402

#: rows generated per seeded block (the data do not depend on how they are stored)
BLOCK_ROWS = 65536
#: rows per chunk of the Dask arrays and Zarr stores
CHUNK_ROWS = 131072
#: the peers section's Dask arrays: this many equal row chunks
PEERS_CHUNKS = 4
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
DISTRIBUTED_SLOWDOWN = 1.15
OOC_SHAPE = (50, 5)  # (d, K) of the out-of-core fit
OOC_STORE_FACTOR = 2.0  # store size / memory limit

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
DEFAULT_SHAPES = "10x5,10x20,50x20"
PEERS_SHAPES = "10x5,10x20,32x16,50x20"
#: the covariance types mlpack's gmm_train fits
MLPACK_TYPES = ("full", "diag")
#: k-means iterations before mlpack's full-covariance EM (in both timed calls; they cancel)
MLPACK_KMEANS_ITERS = 5
#: EM iterations at least of mlpack's 'diag' timed call: its k-means (up to 1000 iterations, in
#: both calls) costs many fast EM iterations, whose difference needs more of them to stand out
MLPACK_DIAG_MIN_ITERS = 20
#: peers: 'full', float64: minimum speed-up over scikit-learn, by (d, K)
PEERS_SPEEDUP_F64 = {(10, 5): 5.0, (10, 20): 5.0, (50, 20): 4.0}
#: peers: 'full', float32: minimum speed-up over scikit-learn's float64, by (d, K)
PEERS_SPEEDUP_F32 = {(50, 20): 8.0}
PEERS_F32_LOWER_BOUND_RTOL = 1e-6
#: peers: 'full', float64: minimum share of the square float64 GEMM rate, by d
PEERS_GEMM_SHARE = {50: 0.70}
#: peers: 10 % missing, every covariance type: maximum slowdown over our complete-data time, by d
PEERS_MISSING_SLOWDOWN = {32: 2.0, 50: 2.0}
#: peers: 'tied', 'diag', 'spherical': minimum speed-up over scikit-learn, by (d, K), where
#: the time per iteration is also at most 'full''s
PEERS_SIMPLE_SPEEDUP = {(50, 20): 3.0}
GEMM_SIZE = 2000  # square products
GEMM_ROWS = 4096  # rows of each tall product
GEMM_TIMINGS = 3  # timings of each product per repeat
#: rows of the untimed gmm-stream fits that load its compiled kernels before the repeats
WARMUP_ROWS = 4096
#: CPU pressure (share of a fit's time some task waited for a CPU) above which a fit is flagged
HIGH_PRESSURE = 0.2


# ---------------------------------------------------------------------------------- data


def initial_parameters(d: int, k: int, covariance_type: str = "full") -> dict:
    """The same start for both libraries: the truth, perturbed; ``precisions_init`` in the
    shape of ``covariance_type`` ('tied': the inverse of the weighted mean covariance, 'diag':
    the inverse diagonals, 'spherical': the inverse of each diagonal's mean)."""
    weights, means, covariances = true_parameters(d, k, SEED)
    rng = np.random.default_rng([SEED, d, k, 1])
    weights_init = 0.5 * weights + 0.5 / k
    covariances = 1.5 * covariances + 0.1 * np.eye(d)
    diagonals = np.diagonal(covariances, axis1=1, axis2=2)
    precisions = {
        "full": np.linalg.inv(covariances),
        "tied": np.linalg.inv(np.tensordot(weights_init, covariances, axes=1)),
        "diag": 1.0 / diagonals,
        "spherical": 1.0 / diagonals.mean(axis=1),
    }[covariance_type]
    return {
        "weights_init": weights_init,
        "means_init": means + 0.5 * rng.standard_normal(means.shape),
        "precisions_init": precisions,
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


def _fit_sklearn(X, k: int, init: dict, iters: int, covariance_type: str = "full") -> dict:
    gm = SkGaussianMixture(k, covariance_type=covariance_type, tol=0.0, max_iter=iters,
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


def _fit_gmm_stream(X, k: int, init: dict, iters: int, covariance_type: str = "full") -> dict:
    # plain batch EM from the same start as scikit-learn's (no EM on a sample first)
    gm = GaussianMixture(k, covariance_type=covariance_type, tol=0.0, max_iter=iters, sample_first=False, **init)
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


# ------------------------------------------------------------- peers (one child per shape)


def _import_mlpack():
    """The ``mlpack`` module, or None when it is not installed."""
    try:
        import mlpack
    except ImportError:
        return None
    return mlpack


def _timings(func, *args) -> list[float]:
    times = []
    for _ in range(GEMM_TIMINGS):
        t0 = time.perf_counter()
        func(*args)
        times.append(time.perf_counter() - t0)
    return times


def _tall_products(X: np.ndarray, w: np.ndarray) -> None:
    for start in range(0, X.shape[0], GEMM_ROWS):
        np.matmul(X[start : start + GEMM_ROWS], w)


def gemm_rates(data: dict[str, np.ndarray], k: int) -> dict[str, list[float]]:
    """GF/s of NumPy's BLAS at its default threads: a square ``GEMM_SIZE`` product and the
    kernel-shaped tall products ``X[i:i+GEMM_ROWS] @ W`` (W of shape (d, K*d)) over all rows."""
    rng = np.random.default_rng(SEED)
    rates = {}
    for name, X in data.items():
        n, d = X.shape
        a, b = (rng.standard_normal((GEMM_SIZE, GEMM_SIZE)).astype(X.dtype) for _ in range(2))
        w = rng.standard_normal((d, k * d)).astype(X.dtype)
        rates[f"square {name}"] = [2 * GEMM_SIZE**3 / s / 1e9 for s in _timings(np.matmul, a, b)]
        rates[f"tall {name}"] = [2 * n * d * k * d / s / 1e9 for s in _timings(_tall_products, X, w)]
    return rates


def numpy_blas_threads() -> int | None:
    return next((info["num_threads"] for info in threadpool_info()
                 if info["user_api"] == "blas" and "numpy" in info["filepath"]), None)


def _mlpack_call(mlpack, max_iterations: int, options: dict) -> tuple[float, int]:
    """Seconds of one ``gmm_train`` call, and the EM iterations its log reports (mlpack logs
    to the C++ standard output, file descriptor 1, captured here)."""
    with tempfile.TemporaryFile() as log:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            t0 = time.perf_counter()
            mlpack.gmm_train(max_iterations=max_iterations, **options)
            seconds = time.perf_counter() - t0
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        return seconds, log.read().decode(errors="replace").count("EMFit::Estimate(): iteration ")


def _fit_mlpack(mlpack, X: np.ndarray, k: int, iters: int, covariance_type: str, blas_threads: int) -> dict:
    """mlpack's EM loop, from its own start (k-means): (time with ``max_iterations=m+1`` - time
    with ``max_iterations=1``) / m over two seeded calls (same k-means, same EM path), m = ``iters``
    ('full'; at least ``MLPACK_DIAG_MIN_ITERS`` for 'diag'). ``loop_s`` is that for ``iters`` iterations."""
    options = {"gaussians": k, "input_": X, "seed": SEED, "verbose": True}
    if covariance_type == "diag":
        options["diagonal_covariance"] = True  # Armadillo's gmm_diag: its own k-means and tolerance
        em_iters = max(iters, MLPACK_DIAG_MIN_ITERS)
    else:
        options.update(tolerance=0.0, kmeans_max_iterations=MLPACK_KMEANS_ITERS)
        em_iters = iters
    limit = threadpool_limits(blas_threads, user_api="blas") if blas_threads else contextlib.nullcontext()
    with limit:
        fixed_s, logged_fixed = _mlpack_call(mlpack, 1, options)
        total_s, logged_total = _mlpack_call(mlpack, em_iters + 1, options)
    # mlpack's own EM logs its iterations (max_iterations=1 runs none); Armadillo's gmm_diag does not
    n_iter = None if covariance_type == "diag" else (iters if (logged_fixed, logged_total) == (0, iters) else -1)
    return {"loop_s": (total_s - fixed_s) * iters / em_iters, "fixed_s": fixed_s, "n_iter": n_iter}


def _timed_fit(fit, *args) -> dict:
    """``fit(*args)`` with the CPU pressure during it; a failure is recorded, not raised."""
    stall0, t0 = cpu_stall_seconds(), time.perf_counter()
    try:
        result = fit(*args)
    except Exception as exc:  # one library failing must not lose the others' numbers
        return {"error": f"{type(exc).__name__}: {exc}"}
    result.pop("means", None)
    if stall0 is not None:
        result["pressure"] = (cpu_stall_seconds() - stall0) / (time.perf_counter() - t0)
    return result


def job_peers(n: int, d: int, k: int, iters: int, repeats: int, mlpack_blas_threads: int) -> dict:
    """Every library and covariance type on one shape, interleaved repeats (see the docstring)."""
    X64 = make_data(n, d, k, np.float64)
    arrays = {"gmm f64": X64, "gmm f32": X64.astype(np.float32),
              "gmm NaN": make_data(n, d, k, np.float64, MISSING_FRACTION)}
    rows = -(-n // PEERS_CHUNKS)  # equal chunks: both threads busy to the end
    dask_arrays = {name: da.from_array(X, chunks=(rows, d)) for name, X in arrays.items()}
    mlpack = _import_mlpack()
    blas_threads = numpy_blas_threads()
    runs: dict[str, list[dict]] = {}
    gemm: dict[str, list[float]] = {}
    with warnings.catch_warnings(), dask.config.set(scheduler="threads"):
        for category in (SkConvergenceWarning, GsConvergenceWarning, OverParameterizedWarning):
            warnings.simplefilter("ignore", category)
        for cov in COVARIANCE_TYPES:  # untimed: compiled kernels load (or compile) on first use
            for X in arrays.values():
                _fit_gmm_stream(da.from_array(X[:WARMUP_ROWS], chunks=(CHUNK_ROWS, d)), k,
                                initial_parameters(d, k, cov), 1, cov)
        for _ in range(repeats):
            for name, rates in gemm_rates({"f64": X64, "f32": arrays["gmm f32"]}, k).items():
                gemm.setdefault(name, []).extend(rates)
            for cov in COVARIANCE_TYPES:
                init = initial_parameters(d, k, cov)
                fits = {"sklearn": (_fit_sklearn, X64, k, init, iters, cov)}
                if mlpack is not None and cov in MLPACK_TYPES:
                    fits["mlpack"] = (_fit_mlpack, mlpack, X64, k, iters, cov, mlpack_blas_threads)
                fits |= {name: (_fit_gmm_stream, X, k, init, iters, cov) for name, X in dask_arrays.items()}
                for name, (fit, *args) in fits.items():
                    runs.setdefault(f"{cov} {name}", []).append(_timed_fit(fit, *args))
    pools = None if mlpack is None else [
        " ".join(str(info[key]) for key in ("internal_api", "version", "threading_layer") if info.get(key))
        + f" threads={info['num_threads']} ({os.path.basename(info['filepath'])})"
        for info in threadpool_info() if "mlpack" in info["filepath"] or info["user_api"] == "openmp"
    ]
    return {"runs": runs, "gemm": gemm, "blas_threads": blas_threads, "mlpack_pools": pools,
            "data_mib": sum(X.nbytes for X in arrays.values()) / MIB, "peak": peak_rss_mib()}


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


def installed_version(lib: str) -> str | None:
    try:
        return version(lib)
    except PackageNotFoundError:
        return None


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
    was = ", ".join(f"{k}={v}" for k, v in UNSET_OPENBLAS.items()) or "neither was set"
    print(f"openblas  : {' and '.join(OPENBLAS_VARS)} unset in this process and its children ({was})")
    for info in threadpool_info():
        print(f"threadpool: {info['internal_api']} {info.get('version')} {info.get('architecture')} "
              f"threads={info['num_threads']} ({os.path.basename(info['filepath'])})")
    libs = ["numpy", "scipy", "scikit-learn", "dask", "distributed", "zarr", "gmm-stream", "mlpack"]
    print("versions  : " + ", ".join(f"{lib} {installed_version(lib) or 'not installed'}" for lib in libs))
    print(f"python    : {platform.python_version()}")
    print(f"settings  : iters={args.iters}, repeats={args.repeats}; "
          f"peers: n={args.peers_n} in {PEERS_CHUNKS} equal chunks, shapes={args.peer_shapes}, mlpack BLAS threads "
          f"{args.mlpack_blas_threads or 'default'}; other sections: n={args.n}, chunks={CHUNK_ROWS} rows, "
          f"shapes={args.shape_list}, covariance_type='full'")
    sys.stdout.flush()


# ------------------------------------------------------------------------- peers: reading


PEER_FITS = ("sklearn", "mlpack", "gmm f64", "gmm f32", "gmm NaN")


def _ratios(numerators: list, denominators: list) -> list[float]:
    """Ratios within each repeat (the fits of a repeat ran back to back)."""
    return [a / b for a, b in zip(numerators, denominators) if a is not None and b]


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _relative_gap(a: float | None, b: float | None) -> list[float]:
    return [] if a is None or b is None else [abs(a - b) / abs(b)]


class PeerShape:
    """The per-repeat numbers of one shape's child process, by covariance type and fit."""

    def __init__(self, n: int, d: int, k: int, iters: int, result: dict):
        self.n, self.d, self.k, self.iters, self.result = n, d, k, iters, result
        self.label = f"({n}, {d}, {k})"

    def runs(self, cov: str, fit: str) -> list[dict]:
        return self.result.get("runs", {}).get(f"{cov} {fit}", [])

    def s_it(self, cov: str, fit: str) -> list[float | None]:
        return [None if "error" in r else r["loop_s"] / self.iters for r in self.runs(cov, fit)]

    def ratio(self, cov: str, fit: str, reference: str, reference_cov: str | None = None) -> list[float]:
        """``fit``'s s/it over ``reference``'s (of ``reference_cov``, by default ``cov``), per repeat."""
        return _ratios(self.s_it(cov, fit), self.s_it(reference_cov or cov, reference))

    def lower_bound(self, cov: str, fit: str) -> float | None:
        return next((r["lower_bound"] for r in reversed(self.runs(cov, fit)) if "lower_bound" in r), None)

    def iterations(self, cov: str, fit: str) -> bool | None:
        """Every fit ran ``iters`` iterations; None when a fit cannot tell (mlpack's 'diag')."""
        counts = [r.get("n_iter") for r in self.runs(cov, fit) if "error" not in r]
        return None if not counts or None in counts else all(c == self.iters for c in counts)

    def iterations_ok(self, cov: str, *fits: str) -> bool:
        return all(self.iterations(cov, fit) is not False for fit in fits)

    def iterations_note(self, cov: str) -> str:
        checks = {fit: self.iterations(cov, fit) for fit in PEER_FITS if self.runs(cov, fit)}
        bad = [fit for fit, ok in checks.items() if ok is False]
        return "NO: " + ", ".join(bad) if bad else ("yes*" if None in checks.values() else "yes")

    def gemm(self, name: str) -> list[float]:
        return self.result.get("gemm", {}).get(name, [])

    def kernel_rates(self, fit: str) -> list[float]:
        """GF/s of the 'full' EM iterations, counting 4*n*K*d^2 flops each."""
        flops = 4 * self.n * self.k * self.d**2
        return [flops / s / 1e9 for s in self.s_it("full", fit) if s]

    def gemm_share(self, fit: str, dtype: str) -> list[float]:
        """The kernel's rate over the median square GEMM rate of ``dtype``."""
        square = _median(self.gemm(f"square {dtype}"))
        return [rate / square for rate in self.kernel_rates(fit)] if square else []


def _times_row(s: PeerShape, cov: str, fits: tuple[str, ...]) -> list:
    return [s.label, cov, *(spread(s.s_it(cov, fit), "{:.3g}") for fit in fits), s.iterations_note(cov)]


def _ratios_row(s: PeerShape, cov: str, with_mlpack: bool) -> list:
    return [
        s.label, cov,
        spread(s.ratio(cov, "sklearn", "gmm f64"), "{:.2f}"),
        spread(s.ratio(cov, "sklearn", "gmm f32"), "{:.2f}"),
        *([spread(s.ratio(cov, "mlpack", "gmm f64"), "{:.2f}")] if with_mlpack else []),
        spread(s.ratio(cov, "gmm NaN", "gmm f64"), "{:.2f}"),
        "-" if cov == "full" else spread(s.ratio(cov, "gmm f64", "gmm f64", "full"), "{:.2f}"),
        spread(_relative_gap(s.lower_bound(cov, "gmm f32"), s.lower_bound(cov, "gmm f64")), "{:.1e}"),
        spread(_relative_gap(s.lower_bound(cov, "gmm f64"), s.lower_bound(cov, "sklearn")), "{:.1e}"),
    ]


def _gemm_row(s: PeerShape) -> list:
    return [
        s.label, str(s.result.get("blas_threads", "?")),
        *(spread(s.gemm(f"{kind} {dtype}")) for kind in ("square", "tall") for dtype in ("f64", "f32")),
        spread(s.kernel_rates("gmm f64")), spread(s.gemm_share("gmm f64", "f64"), "{:.0%}"),
        spread(s.kernel_rates("gmm f32")), spread(s.gemm_share("gmm f32", "f32"), "{:.0%}"),
    ]


def _target_row(what: str, where: str, values: list[float], threshold: float, at_least: bool, fmt: str,
                iterations_ok: bool = True) -> list:
    """Judged on the median of ``values``; the margin is how far it is on the passing side."""
    bound = (">= " if at_least else "<= ") + fmt.format(threshold)
    value = _median(values)
    if value is None:
        return [what, where, "not measured", bound, "-", "-"]
    room = value / threshold if at_least else (threshold / value if value else math.inf)
    ok = (value >= threshold if at_least else value <= threshold) and iterations_ok
    return [what, where, fmt.format(value), bound, f"{room - 1:+.0%}" if room < 10 else ">10x",
            verdict(ok) + ("" if iterations_ok else " (n_iter_)")]


def _shapes_with_d(shapes: dict, d: int) -> list[tuple[str, PeerShape | None]]:
    return [(str(dk), s) for dk, s in shapes.items() if dk[0] == d] or [(f"d = {d}", None)]


def peer_targets(shapes: dict[tuple[int, int], PeerShape]) -> list[list]:
    """One row per target and shape (and covariance type where it applies)."""
    rows = []
    for dtype, targets in (("f64", PEERS_SPEEDUP_F64), ("f32", PEERS_SPEEDUP_F32)):
        for dk, target in targets.items():
            s = shapes.get(dk)
            rows.append(_target_row(f"full {dtype}: sklearn f64 s/it / ours", str(dk),
                                    s.ratio("full", "sklearn", f"gmm {dtype}") if s else [], target, True, "{:.2f}x",
                                    s is None or s.iterations_ok("full", "sklearn", f"gmm {dtype}")))
    for dk, s in shapes.items():
        rows.append(_target_row("full: |LB f32 - LB f64| / |LB f64|", str(dk),
                                _relative_gap(s.lower_bound("full", "gmm f32"), s.lower_bound("full", "gmm f64")),
                                PEERS_F32_LOWER_BOUND_RTOL, False, "{:.1e}"))
    for d, target in PEERS_GEMM_SHARE.items():
        for dk, s in _shapes_with_d(shapes, d):
            rows.append(_target_row("full f64: rate / square f64 GEMM rate", dk,
                                    s.gemm_share("gmm f64", "f64") if s else [], target, True, "{:.0%}"))
    for d, target in PEERS_MISSING_SLOWDOWN.items():
        for dk, s in _shapes_with_d(shapes, d):
            for cov in COVARIANCE_TYPES if s else ("each type",):
                rows.append(_target_row(f"{cov}: 10 % NaN s/it / complete", dk,
                                        s.ratio(cov, "gmm NaN", "gmm f64") if s else [], target, False, "{:.2f}x",
                                        s is None or s.iterations_ok(cov, "gmm NaN", "gmm f64")))
    for dk, target in PEERS_SIMPLE_SPEEDUP.items():
        s = shapes.get(dk)
        for cov in COVARIANCE_TYPES[1:]:
            ok = s is None or (s.iterations_ok(cov, "sklearn", "gmm f64") and s.iterations_ok("full", "gmm f64"))
            rows.append(_target_row(f"{cov} f64: sklearn s/it / ours", str(dk),
                                    s.ratio(cov, "sklearn", "gmm f64") if s else [], target, True, "{:.2f}x", ok))
            rows.append(_target_row(f"{cov} f64: s/it / full's", str(dk),
                                    s.ratio(cov, "gmm f64", "gmm f64", "full") if s else [], 1.0, False, "{:.2f}x", ok))
    return rows


def print_peer_details(shapes: dict[tuple[int, int], PeerShape]) -> None:
    """Every repeat's s/it and CPU pressure, then any failure in full."""
    details = {}
    for dk, s in shapes.items():
        if "error" in s.result:
            details[f"{dk}"] = s.result
        for key, runs in s.result.get("runs", {}).items():
            good = [r for r in runs if "error" not in r]
            details[f"{dk} {key}"] = {"all_s_per_iter": [r["loop_s"] / s.iters for r in good],
                                      "pressure": [r.get("pressure") for r in good]}
            for i, r in enumerate(runs):
                if "error" in r:
                    details[f"{dk} {key} repeat {i + 1}"] = r
    print_details(details)


def _mlpack_notes(shapes: dict[tuple[int, int], PeerShape], blas_threads: int) -> list[str]:
    pools = next((s.result["mlpack_pools"] for s in shapes.values() if s.result.get("mlpack_pools") is not None), [])
    fixed = ", ".join(
        f"{dk} {cov} {spread([r['fixed_s'] for r in s.runs(cov, 'mlpack') if 'fixed_s' in r], '{:.2f}')} s"
        for dk, s in shapes.items() for cov in MLPACK_TYPES if s.runs(cov, "mlpack")
    )
    threads = f"{blas_threads} thread(s)" if blas_threads else "its default threads"
    return [
        f"mlpack {installed_version('mlpack')}: gmm_train on the float64 array; s/it = (time with max_iterations="
        "m+1 - time with max_iterations=1) / m, two calls with the same seed (same k-means, same EM path); "
        "its start is its own k-means, not the others' start",
        f"  'full': its EM log checked for 0 and iters iterations; 'diag' (Armadillo's gmm_diag): m = "
        f"max(iters, {MLPACK_DIAG_MIN_ITERS}) (its k-means costs many of its iterations), not logged: "
        "yes* = not checked",
        f"  threads: its OpenBLAS at {threads} (--mlpack-blas-threads), its OpenMP at its default; "
        f"its pools: {'; '.join(pools) or '?'}",
        f"  the max_iterations=1 call (k-means, setup, first log-likelihood; subtracted): {fixed or '-'}",
    ]


def section_peers(args) -> None:
    shapes = {}
    for d, k in args.peer_shapes:
        t0 = time.perf_counter()
        result = in_child(job_peers, args.peers_n, d, k, args.iters, args.repeats, args.mlpack_blas_threads)
        shapes[(d, k)] = PeerShape(args.peers_n, d, k, args.iters, result)
        print(f"[peers {(d, k)}: {time.perf_counter() - t0:.0f} s; peak RSS of its process "
              f"{fmt_mib(result.get('peak'))} MiB (data {fmt_mib(result.get('data_mib'))} MiB; every library)]")
        sys.stdout.flush()
    with_mlpack = any(s.result.get("mlpack_pools") is not None for s in shapes.values())
    fits = tuple(fit for fit in PEER_FITS if with_mlpack or fit != "mlpack")
    measured = [s for s in shapes.values() if "error" not in s.result]
    print_table(
        f"Peers: seconds per EM iteration, median [min-max] of {args.repeats} interleaved repeats of {args.iters} "
        "iterations (f64, f32: float64, float32 data; NaN: float64 with 10 % missing)",
        ["shape (n,d,K)", "cov", *(f"{fit} f64" if fit in ("sklearn", "mlpack") else fit for fit in fits),
         "n_iter ok"],
        [_times_row(s, cov, fits) for s in measured for cov in COVARIANCE_TYPES],
    )
    print_table(
        "Peers: ratios of s/it within each repeat, median [min-max]; lower-bound agreement (last repeat)",
        ["shape (n,d,K)", "cov", "sklearn/gmm f64", "sklearn/gmm f32", *(["mlpack/gmm f64"] if with_mlpack else []),
         "NaN/complete", "gmm f64 / full's", "|dLB| f32 vs f64", "|dLB| gmm f64 vs sk"],
        [_ratios_row(s, cov, with_mlpack) for s in measured for cov in COVARIANCE_TYPES],
    )
    print_table(
        f"GEMM rates (GF/s) of NumPy's BLAS in the same processes: {GEMM_SIZE}x{GEMM_SIZE} squares, "
        f"tall ({GEMM_ROWS}xd)@(dxK*d) over all rows; 'full' EM at 4*n*K*d^2 flops per iteration",
        ["shape (n,d,K)", "BLAS threads", "square f64", "square f32", "tall f64", "tall f32",
         "full gmm f64", "/ square f64", "full gmm f32", "/ square f32"],
        [_gemm_row(s) for s in measured],
    )
    print_table("Peers: targets (median of the repeats; margin: how far on the passing side)",
                ["target", "shape (d,K)", "measured", "target", "margin", "verdict"], peer_targets(shapes))
    print("notes:")
    print("  sklearn: GaussianMixture on the float64 NumPy array, EM loop timed on _e_step/_m_step, NumPy's BLAS "
          f"threads untouched; gmm-stream: da.from_array(X, chunks=(n/{PEERS_CHUNKS}, d)), threaded scheduler, "
          "EM loop timed on _em; both from the same start")
    if with_mlpack:
        print("\n".join("  " + line for line in _mlpack_notes(shapes, args.mlpack_blas_threads)))
    else:
        print("  mlpack: not installed")
    pressures = [r["pressure"] for s in measured for runs in s.result["runs"].values() for r in runs
                 if r.get("pressure") is not None]
    high = sum(p > HIGH_PRESSURE for p in pressures)
    if high:
        print(f"  CPU pressure above {HIGH_PRESSURE:.0%} during {high} of {len(pressures)} fits (details): other "
              "processes wanted the cores; a multi-threaded BLAS (scikit-learn's) can then lose far more than "
              "the cores it lost, and the ratios against it are not the code's")
    print_peer_details(shapes)


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
    "peers": section_peers,
    "sklearn": section_sklearn,
    "missing": section_missing,
    "distributed": section_distributed,
    "outofcore": section_outofcore,
}


# -------------------------------------------------------------------------------- main


def parse_shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="rows of the in-memory data sets (not peers)")
    p.add_argument("--peers-n", type=int, default=200_000, help="rows of the peers section's data")
    p.add_argument("--shapes", help=f"comma-separated dxK (default {DEFAULT_SHAPES}; peers: {PEERS_SHAPES})")
    p.add_argument("--mlpack-blas-threads", type=int, default=1,
                   help="threads of mlpack's own OpenBLAS in the peers section (0: its default)")
    p.add_argument("--iters", type=int, default=5, help="EM iterations per fit (tol=0)")
    p.add_argument("--repeats", type=int, default=3, help="fits per measurement; medians are reported")
    p.add_argument("--parts", default=",".join(SECTIONS),
                   help=f"comma-separated sections among {', '.join(SECTIONS)}")
    p.add_argument("--memory-limit-mib", type=int, default=1024,
                   help="memory limit of the out-of-core fit; the store is twice as large")
    p.add_argument("--quick", action="store_true", help="smoke run: n=20000 (peers too), 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.peers_n, args.repeats = 20_000, 20_000, 1
    args.shape_list = parse_shapes(args.shapes or DEFAULT_SHAPES)
    args.peer_shapes = parse_shapes(args.shapes or PEERS_SHAPES)
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
