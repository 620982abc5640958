"""Out-of-core check of the data layer: a data set larger than the process's memory limit.

The parent writes a float64 matrix (default 2 GiB) as a Zarr array and as a Parquet
file, chunk by chunk. For each format a child process is started with its data segment
limited by ``RLIMIT_DATA`` (default 1 GiB: heap and anonymous mappings; the child cannot
hold the data set even once) and runs the pipeline:

    open the source lazily -> fit a standardisation (one pass) -> standardise lazily ->
    score every row with a small GaussianMixture (fitted on the first rows) ->
    write labels / probabilities / log-densities through the sink of the same format.

It prints the data size, the limit, the child's peak resident memory (``ru_maxrss``)
and the time. Peak memory is set by the chunk size (``--chunk-mib``), not by the data.

The child runs with ``ARROW_DEFAULT_MEMORY_POOL=system`` (pyarrow's jemalloc/mimalloc
reserve address space that ``RLIMIT_DATA`` counts) and ``MALLOC_MMAP_THRESHOLD_=1048576``
(glibc otherwise keeps freed chunk-sized buffers in per-thread heaps; measured here: a
pass over Parquet with 32 MiB chunks peaked ~490 MiB above the baseline with glibc's
default, ~170 MiB with the fixed threshold). ``--malloc-default`` drops the latter.

Run (about 1-2 minutes on 2 cores)::

    python benchmarks/bench_pipeline_memory.py
    python benchmarks/bench_pipeline_memory.py --size-mib 4096 --limit-mib 1024 --chunk-mib 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048, help="size of the data set (float64)")
    parser.add_argument("--limit-mib", type=int, default=1024, help="RLIMIT_DATA of the child process")
    parser.add_argument("--chunk-mib", type=int, default=32, help="row chunk size of the sources")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--components", type=int, default=4)
    parser.add_argument("--formats", default="zarr,parquet")
    parser.add_argument("--workdir", default=None, help="where to write (default: a temporary directory)")
    parser.add_argument("--malloc-default", action="store_true",
                        help="do not set MALLOC_MMAP_THRESHOLD_=1MiB in the child (glibc's dynamic threshold)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


# ----------------------------------------------------------------------------- parent


def _blocks(n_rows: int, n_features: int, rows: int, seed: int = 0):
    """Row blocks of a two-cluster float64 matrix, generated one at a time."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for start in range(0, n_rows, rows):
        n = min(rows, n_rows - start)
        centres = rng.integers(0, 2, n)[:, None] * 4.0 - 2.0
        yield start, centres + rng.standard_normal((n, n_features))


def write_zarr(path: Path, n_rows: int, n_features: int, rows: int) -> None:
    import zarr

    array = zarr.open_group(str(path), mode="w").create_array(
        "X", shape=(n_rows, n_features), chunks=(rows, n_features), dtype="f8", compressors=None)
    for start, block in _blocks(n_rows, n_features, rows):
        array[start:start + len(block)] = block


def write_parquet(path: Path, n_rows: int, n_features: int, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"f{j}" for j in range(n_features)]
    schema = pa.schema([(n, pa.float64()) for n in names])
    with pq.ParquetWriter(path, schema, use_dictionary=False, compression="none") as writer:
        for _, block in _blocks(n_rows, n_features, rows):
            writer.write_table(pa.table({n: block[:, j] for j, n in enumerate(names)}, schema=schema))


def run_child(fmt: str, data: Path, out: Path, args: argparse.Namespace) -> dict:
    limit = args.limit_mib * 2**20

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        # pyarrow's default allocator (jemalloc/mimalloc) reserves address space that
        # RLIMIT_DATA counts although it is never touched; the system allocator does not.
        "ARROW_DEFAULT_MEMORY_POOL": "system",
    }
    if not args.malloc_default:
        # glibc raises its mmap threshold up to 32 MiB after the first large free, after
        # which chunk-sized buffers come from per-thread heaps that are not given back
        # (fragmentation): a fixed threshold returns every freed chunk to the system.
        env["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
    command = [sys.executable, __file__, "--child", json.dumps({
        "format": fmt, "data": str(data), "out": str(out), "chunk_mib": args.chunk_mib,
        "components": args.components})]
    done = subprocess.run(command, env=env, preexec_fn=limit_memory, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child for {fmt} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = _parse()
    if args.child:
        child(json.loads(args.child))
        return
    n_features = args.features
    n_rows = args.size_mib * 2**20 // (8 * n_features)
    rows = max(1, args.chunk_mib * 2**20 // (8 * n_features))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pipeline-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"data: {n_rows} rows x {n_features} float64 = {n_rows * n_features * 8 / 2**20:.0f} MiB; "
          f"child RLIMIT_DATA = {args.limit_mib} MiB; chunks of {args.chunk_mib} MiB ({rows} rows)")
    try:
        for fmt in args.formats.split(","):
            data = workdir / ("data.zarr" if fmt == "zarr" else "data.parquet")
            started = time.perf_counter()
            (write_zarr if fmt == "zarr" else write_parquet)(data, n_rows, n_features, rows)
            written = time.perf_counter() - started
            report = run_child(fmt, data, workdir / f"out-{fmt}", args)
            print(f"{fmt:8s} wrote input in {written:5.1f} s | pipeline {report['seconds']:5.1f} s | "
                  f"peak RSS {report['peak_rss_mib']:6.0f} MiB (after imports {report['baseline_rss_mib']:.0f} MiB) "
                  f"| limit {args.limit_mib} MiB | data {report['data_mib']:.0f} MiB | "
                  f"rows written {report['rows_written']}")
            shutil.rmtree(data, ignore_errors=True) if data.is_dir() else data.unlink(missing_ok=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------------------ child


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child(job: dict) -> None:
    import warnings

    import numpy as np
    import pandas as pd
    import xarray as xr

    from gmm_stream import GaussianMixture
    from pipeline import (
        ParquetSink,
        ParquetSource,
        Preprocessor,
        ZarrSink,
        ZarrSource,
        make_provenance,
        predict_results,
    )

    del np  # imported above only to be counted in the baseline

    baseline = _rss_mib()
    started = time.perf_counter()
    chunk = f"{job['chunk_mib']}MiB"
    source = ZarrSource(job["data"], "X", chunk_bytes=chunk) if job["format"] == "zarr" \
        else ParquetSource(job["data"], chunk_bytes=chunk)
    X = source.open()
    pre = Preprocessor(["standardize"]).fit(X)  # one pass over the data
    Z = pre.transform(X)
    sample = Z[:5_000].values  # a small model: the memory under test is the data layer's
    k = job["components"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short fit; convergence is not the point
        gm = GaussianMixture(k, max_iter=5, means_init=sample[:: len(sample) // k][:k]).fit(sample)
    results = predict_results(gm, Z)
    provenance = make_provenance({"bench": job}, source.identity())
    out = Path(job["out"])
    if job["format"] == "zarr":
        ZarrSink(out.with_suffix(".zarr"), overwrite=True).write(results, provenance=provenance)
        n_written = xr.open_zarr(out.with_suffix(".zarr"), consolidated=False)["label"].shape[0]
    else:
        ParquetSink(out.with_suffix(".parquet"), overwrite=True).write(results, provenance=provenance)
        n_written = len(pd.read_parquet(out.with_suffix(".parquet"), columns=["label"]))
    assert n_written == X.shape[0], (n_written, X.shape)
    print(json.dumps({
        "seconds": time.perf_counter() - started,
        "peak_rss_mib": _rss_mib(),
        "baseline_rss_mib": baseline,
        "data_mib": X.nbytes / 2**20,
        "rows_written": int(n_written),
    }))


if __name__ == "__main__":
    main()
