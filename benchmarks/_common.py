"""What the benchmark scripts share: the fresh-process runner, memory and CPU-pressure
readings, the generating mixture, and the printed tables.

Importing this module imports neither NumPy nor a BLAS: a script unsets
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` before NumPy loads, and may import it first.
"""

from __future__ import annotations

import multiprocessing
import statistics
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["status_mib", "cpu_stall_seconds", "true_parameters", "in_child", "spread", "print_table",
           "code_version"]


def status_mib(field: str, pid: str = "self") -> float | None:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``, ``VmData``) in MiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_stall_seconds() -> float | None:
    """Machine-wide time some runnable task waited for a CPU (Linux PSI), or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rsplit("total=", 1)[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return None


def true_parameters(d: int, k: int, seed: int) -> tuple[Any, Any, Any]:
    """Weights, means and covariances of the generating mixture, seeded by ``seed`` and the shape."""
    import numpy as np

    rng = np.random.default_rng([seed, d, k])
    weights = rng.dirichlet(np.full(k, 5.0))
    means = 3.0 * rng.standard_normal((k, d))
    a = rng.standard_normal((k, d, d)) / np.sqrt(d)
    scale = rng.uniform(0.5, 2.0, size=k)[:, None, None]
    return weights, means, scale * (a @ a.transpose(0, 2, 1) + 0.5 * np.eye(d))


def _child_entry(conn, job: Callable[..., dict], args: tuple) -> None:
    try:
        result = job(*args)
    except BaseException:  # report, never hang the parent
        result = {"error": traceback.format_exc(limit=8)}
    conn.send(result)
    conn.close()


def in_child(job: Callable[..., dict], *args: Any) -> dict:
    """Run ``job(*args)`` in a fresh spawned process and return its result dict."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_entry, args=(sender, job, args))
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = None
    process.join()
    if result is None:
        result = {"error": f"child process died with exit code {process.exitcode}"}
    return result


def spread(values: list, fmt: str = "{:.1f}") -> str:
    """``median [min-max]`` of the values that are not None (the value alone for one, ``-`` for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def print_table(title: str, headers: list[str], rows: list[list]) -> None:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    sys.stdout.flush()


def code_version(root: Path) -> str:
    """The commit of ``root`` and whether its tree differs from it, or why that is unknown."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        if head.returncode != 0 or not (root / ".git").exists():
            return "not a git checkout"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return f"commit {head.stdout.strip()}" + (", working tree modified" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "git unavailable"
