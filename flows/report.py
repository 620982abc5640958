"""The run report: Prefect artifacts, and the same report as files with PNG plots.

Every run writes ``<output.directory>/report/``:

- ``summary.md`` -- the markdown summary (also the ``<job>-<flow>-summary`` artifact);
- ``components.csv`` -- label, weight, size (rows assigned), fraction, mean (artifact
  ``<job>-<flow>-components``);
- ``lower_bound.csv`` -- the lower bound (mean log-likelihood) per EM iteration
  (artifact ``<job>-<flow>-lower-bound``);
- ``selection.csv`` -- flow select: BIC, AIC and ICL of every candidate (artifact
  ``<job>-select-criteria``);
- ``report.json`` -- everything above, machine-readable;
- ``lower_bound.png``, ``criterion.png`` (select), ``clusters_pc.png`` -- the
  log-likelihood per iteration, the criterion against ``n_components`` (one line per
  covariance type), and a sample of rows on the first two principal components of the
  sample, coloured by label, with the component means.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunReport", "render_markdown", "write_report", "publish_artifacts", "artifact_key"]

logger = logging.getLogger(__name__)


@dataclass
class RunReport:
    """Everything a run reports. ``sample_*`` and ``means`` feed the scatter plot only."""

    job_name: str
    flow: str
    source: dict[str, Any]
    compute: str
    model: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    components: list[dict[str, Any]] = field(default_factory=list)
    lower_bounds: list[float] = field(default_factory=list)
    selection: list[dict[str, Any]] | None = None
    criterion: str | None = None
    best: str | None = None
    matching: dict[str, Any] | None = None
    anomalies: dict[str, Any] | None = None
    resumed_from: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    sample_X: np.ndarray | None = field(default=None, repr=False)
    sample_labels: np.ndarray | None = field(default=None, repr=False)
    means: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        skip = {"sample_X", "sample_labels", "means"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}


def components_table(weights: np.ndarray, means: np.ndarray, sizes: list[int], n_rows: int) -> list[dict[str, Any]]:
    """One row per component: label, weight, size, fraction of rows, mean (rounded)."""
    return [{"label": k, "weight": round(float(w), 6), "size": int(s),
             "fraction": round(s / n_rows, 6) if n_rows else 0.0,
             "mean": [round(float(v), 4) for v in m]}
            for k, (w, m, s) in enumerate(zip(weights, means, sizes))]


def artifact_key(job_name: str, flow: str, what: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{job_name}-{flow}-{what}".lower()).strip("-")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value[:6]) + (", …" if len(value) > 6 else "") + "]"
    return "" if value is None else str(value)


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "_none_\n"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_markdown(report: RunReport) -> str:
    """The summary of a run, in markdown."""
    src = report.source
    parts = [f"# gmm-stream {report.flow}: {report.job_name}\n"]
    facts = [
        ("source", f"{src.get('kind')} `{src.get('path')}` shape {src.get('shape')} {src.get('dtype', '')}"),
        ("compute", report.compute),
    ]
    facts += [(k, _fmt(v)) for k, v in report.model.items()]
    facts += [(k, _fmt(v)) for k, v in report.scores.items()]
    if report.resumed_from is not None:
        facts.append(("resumed", f"from the checkpoint at iteration {report.resumed_from}"))
    if report.seconds is not None:
        facts.append(("time", f"{report.seconds:.1f} s"))
    parts.append(_table([{"": k, "value": v} for k, v in facts], ["", "value"]))
    if report.selection is not None:
        parts.append(f"\n## Model selection ({(report.criterion or '').upper()}, lower is better)\n")
        parts.append(f"Best: **{report.best}**\n\n")
        parts.append(_table(report.selection))
    if report.matching is not None:
        m = report.matching
        parts.append("\n## Labels\n")
        if m.get("reference"):
            parts.append(f"Matched to the reference `{m['reference']}` by the Hungarian algorithm on the "
                         f"{m['distance']} distance; total cost {_fmt(m['total_cost'])}.\n\n")
            parts.append(_table(m["pairs"]))
        else:
            parts.append("Canonical order: decreasing weight (no reference model).\n")
        if m.get("note"):
            parts.append(f"\n{m['note']}\n")
    if report.anomalies is not None:
        a = report.anomalies
        parts.append("\n## Anomalies\n")
        parts.append(f"{a['count']} of {a['n_rows']} rows have a log-density below {_fmt(a['threshold'])}, "
                     f"the {a['quantile']:g} quantile of the training log-density (`{a['path']}`).\n")
    parts.append("\n## Components\n")
    parts.append(_table(report.components))
    if report.outputs:
        parts.append("\n## Outputs\n")
        for name, value in report.outputs.items():
            for path in value if isinstance(value, list) else [value]:
                parts.append(f"- {name}: `{path}`\n")
    return "".join(parts)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        if not rows:
            return
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})


# ------------------------------------------------------------------------------- plots


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_lower_bound(lower_bounds: list[float], path: Path, title: str) -> None:
    """Lower bound (mean log-likelihood) against the EM iteration."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(lower_bounds) + 1), lower_bounds, marker="o", ms=3)
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("lower bound (mean log-likelihood)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_criterion(rows: list[dict[str, Any]], criterion: str, path: Path, title: str) -> None:
    """The criterion against ``n_components``, one line per covariance type; the best is circled."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    for cov in sorted({r["covariance_type"] for r in rows}):
        sub = sorted((r for r in rows if r["covariance_type"] == cov), key=lambda r: r["n_components"])
        ax.plot([r["n_components"] for r in sub], [r[criterion] for r in sub], marker="o", label=cov)
    best = min(rows, key=lambda r: r[criterion])
    ax.scatter([best["n_components"]], [best[criterion]], s=160, facecolors="none", edgecolors="k", zorder=3,
               label="best")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("n_components")
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def principal_plane(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the first two principal axes (2, d) of ``X`` (NaN replaced by column means)."""
    X = np.asarray(X, dtype=np.float64)
    mean = np.nanmean(X, axis=0) if X.size else np.zeros(X.shape[1])
    Z = np.where(np.isnan(X), mean, X) - mean
    _, _, vt = np.linalg.svd(Z, full_matrices=False)
    axes = vt[:2]
    if axes.shape[0] < 2:  # one feature: plot it against a zero axis
        axes = np.vstack([axes, np.zeros((2 - axes.shape[0], X.shape[1]))])
    return mean, axes


def plot_clusters(X: np.ndarray, labels: np.ndarray, means: np.ndarray, path: Path, title: str) -> None:
    """A sample of rows on its first two principal components, coloured by label."""
    plt = _figure()
    mean, axes = principal_plane(X)
    P = (np.where(np.isnan(X), mean, X) - mean) @ axes.T
    M = (np.asarray(means) - mean) @ axes.T
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab20" if len(means) > 10 else "tab10")
    for k in range(len(means)):
        rows = labels == k
        ax.scatter(P[rows, 0], P[rows, 1], s=4, alpha=0.5, color=cmap(k % cmap.N), label=str(k))
    ax.scatter(M[:, 0], M[:, 1], marker="X", s=120, c="k", label="means")
    for k, (x, y) in enumerate(M):
        ax.annotate(str(k), (x, y), xytext=(4, 4), textcoords="offset points", fontweight="bold")
    ax.set_xlabel("PC1 (of the plotted sample)")
    ax.set_ylabel("PC2")
    ax.set_title(title)
    legend = ax.legend(fontsize="small", ncol=2)
    for handle in legend.legend_handles:
        handle.set_sizes([30])
        handle.set_alpha(1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------ output


def write_report(report: RunReport, directory: Path, *, plots: bool = True) -> dict[str, str]:
    """Write the report files into ``directory`` (replaced); return their paths by name."""
    from gmm_stream.atomic import atomic_output

    files: dict[str, str] = {}
    with atomic_output(directory, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "summary.md").write_text(render_markdown(report))
        _write_csv(tmp / "components.csv", report.components)
        _write_csv(tmp / "lower_bound.csv", [{"iteration": i + 1, "lower_bound": v}
                                             for i, v in enumerate(report.lower_bounds)])
        if report.selection is not None:
            _write_csv(tmp / "selection.csv", report.selection)
        (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=_json_default) + "\n")
        if plots:
            _plots(report, tmp)
        names = sorted(p.name for p in tmp.iterdir())
    for name in names:
        files[name] = str(directory / name)
    logger.info("wrote the report to %s", directory)
    return files


def _plots(report: RunReport, directory: Path) -> None:
    title = f"{report.job_name} ({report.flow})"
    if report.lower_bounds:
        plot_lower_bound(report.lower_bounds, directory / "lower_bound.png", title)
    if report.selection:
        plot_criterion(report.selection, report.criterion or "bic", directory / "criterion.png", title)
    if report.sample_X is not None and report.means is not None and len(report.sample_X):
        plot_clusters(report.sample_X, report.sample_labels, report.means, directory / "clusters_pc.png", title)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def publish_artifacts(report: RunReport) -> list[str]:
    """Publish the summary, components, lower bound (and selection) as Prefect artifacts."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = lambda what: artifact_key(report.job_name, report.flow, what)  # noqa: E731
    keys = [key("summary"), key("components")]
    create_markdown_artifact(render_markdown(report), key=keys[0], description=f"gmm-stream {report.flow} summary")
    create_table_artifact([{k: _fmt(v) if isinstance(v, list) else v for k, v in row.items()}
                           for row in report.components], key=keys[1], description="Components: weights and sizes")
    if report.lower_bounds:
        keys.append(key("lower-bound"))
        create_table_artifact([{"iteration": i + 1, "lower_bound": v} for i, v in enumerate(report.lower_bounds)],
                              key=keys[-1], description="Lower bound (mean log-likelihood) per EM iteration")
    if report.selection is not None:
        keys.append(key("criteria"))
        create_table_artifact(report.selection, key=keys[-1],
                              description=f"BIC, AIC and ICL of every candidate (best by {report.criterion})")
    return keys
