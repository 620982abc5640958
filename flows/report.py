"""The run report: Prefect artifacts, and the same report as files with PNG plots.

Every run writes ``<output.directory>/report/``:

- ``summary.md`` -- the markdown summary (also the ``<job>-<flow>-summary`` artifact); it
  states the space the means are in (e.g. "the preprocessed space: standardize → PCA
  (3 components)"); a predict run labels the saved model's training facts
  "model trained: ...";
- ``components.csv`` -- label, weight, size (rows assigned), fraction, then one column
  ``mean_<feature>`` per feature of the model's space (``PC1 ...`` after PCA, else the
  feature names) and, when there is preprocessing, one column ``orig_<feature>`` per
  input feature: the means mapped back to the original units
  (:meth:`pipeline.Preprocessor.inverse_transform_means`; artifact ``<job>-<flow>-components``);
- ``lower_bound.csv`` -- the lower bound (mean log-likelihood) per EM iteration
  (artifact ``<job>-<flow>-lower-bound``); only when the run has a fit history (not
  for predict);
- ``selection.csv`` -- flow select: BIC, AIC and ICL of every candidate (artifact
  ``<job>-select-criteria``);
- ``report.json`` -- everything above, machine-readable;
- PNG plots at :data:`DPI` dots per inch: ``lower_bound.png`` (the lower bound per
  iteration, the convergence point marked), ``criterion.png`` (select: the criterion
  against ``n_components``, one line per covariance type), ``clusters_pc.png`` (a sample
  of rows on the first two principal axes of the sample, coloured by label, with each
  component's mean and its 1 and 2 σ covariance ellipses projected into the plane,
  anomalies of a predict run drawn as black crosses) and ``clusters_umap.png`` (the same
  sample on an AnnData source's ``obsm['X_umap']``, when the run passes it).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RunReport",
    "DPI",
    "components_table",
    "render_markdown",
    "write_report",
    "publish_artifacts",
    "artifact_key",
    "full_covariances",
    "projected_covariances",
    "ellipse",
    "plane_geometry",
    "PlaneGeometry",
]

logger = logging.getLogger(__name__)

#: Resolution of every PNG of the report (dots per inch).
DPI = 150

#: At most this many per-feature columns are shown in summary.md and the Prefect table
#: (components.csv always has all of them).
MAX_SHOWN_FEATURES = 8

_ARRAYS = ("sample_X", "sample_labels", "means", "covariances", "sample_anomalous", "umap_sample")


@dataclass
class RunReport:
    """Everything a run reports.

    The arrays (``sample_X``, ``sample_labels``, ``means``, ``covariances``,
    ``sample_anomalous``, ``umap_sample``) feed the plots only and are not in
    ``report.json``.

    Attributes added for the plots and the space of the means (all optional):

    space : dict, optional
        Where the means live (:func:`flows.summaries.mean_space`): ``description`` (e.g.
        "the preprocessed space: standardize → PCA (3 components)"), ``features`` (names
        of the model's features), ``original_features`` (names of the input features, or
        None when the means are already in the input units) and ``original_note`` (how
        the ``orig_`` columns were obtained).
    training : dict, optional
        Predict runs: the saved model's training facts (``converged``, ``n_iter``,
        ``max_iter``, ``lower_bound``), shown as "model trained: ..." -- never as this run's.
    sample_of : int, optional
        Rows the plot sample was drawn from (shown as "5,000 of 1,000,000 rows").
    covariances : ndarray, optional
        The model's covariances (shape of its ``covariance_type``, in the model's space)
        for the ellipses of ``clusters_pc.png``.
    sample_anomalous : ndarray of bool, optional
        Aligned with ``sample_X``: rows flagged anomalous (drawn as black crosses).
    umap_sample : ndarray of shape (n_sample, 2), optional
        Aligned with ``sample_X``/``sample_labels``: the rows' ``obsm['X_umap']``
        coordinates; draws ``clusters_umap.png``.
    """

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
    space: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    sample_of: int | None = None
    covariances: np.ndarray | None = field(default=None, repr=False)
    sample_anomalous: np.ndarray | None = field(default=None, repr=False)
    umap_sample: np.ndarray | None = field(default=None, repr=False)
    #: update runs: what the refresh read (:meth:`pipeline.partitions.RefreshPlan.to_dict`)
    refresh: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _ARRAYS}


def _sig(value: float, digits: int = 8) -> float:
    """``value`` rounded to ``digits`` significant digits (plain float, NaN/inf kept)."""
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else value


def components_table(weights: np.ndarray, means: np.ndarray, sizes: list[int], n_rows: int, *,
                     feature_names: list[str] | None = None, original_means: np.ndarray | None = None,
                     original_names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per component: label, weight, size, fraction of rows, then the mean per feature.

    Columns ``mean_<feature>`` hold the mean in the model's space (features
    ``feature_names``, default ``x0, x1, ...``); columns ``orig_<feature>`` (only when
    ``original_means`` is given) the mean mapped back to the input units. Values are
    rounded to 8 significant digits.
    """
    means = np.atleast_2d(np.asarray(means, dtype=np.float64))
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(means.shape[1])]
    if len(names) != means.shape[1]:
        raise ValueError(f"{len(names)} feature names for means of {means.shape[1]} features")
    orig = None if original_means is None else np.atleast_2d(np.asarray(original_means, dtype=np.float64))
    if orig is not None:
        onames = list(original_names) if original_names is not None else [f"x{j}" for j in range(orig.shape[1])]
        if len(onames) != orig.shape[1] or len(orig) != len(means):
            raise ValueError(f"original means of shape {orig.shape} for {len(onames)} names and {len(means)} means")
    rows = []
    for k, (w, m, s) in enumerate(zip(weights, means, sizes)):
        row: dict[str, Any] = {"label": k, "weight": round(float(w), 6), "size": int(s),
                               "fraction": round(s / n_rows, 6) if n_rows else 0.0}
        row.update({f"mean_{name}": _sig(v) for name, v in zip(names, m)})
        if orig is not None:
            row.update({f"orig_{name}": _sig(v) for name, v in zip(onames, orig[k])})
        rows.append(row)
    return rows


def _display_components(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The components table for summary.md and the Prefect artifact: per-feature columns when
    there are few features, else the mean as a short list (the CSV has every column)."""
    out = []
    for row in rows:
        shown: dict[str, Any] = {}
        for prefix, compact in (("mean_", "mean"), ("orig_", None)):
            keys = [k for k in row if k.startswith(prefix)]
            if len(keys) <= MAX_SHOWN_FEATURES:
                shown.update({k: row[k] for k in keys})
            elif compact:
                shown[f"{compact} ({len(keys)} features)"] = [row[k] for k in keys]
        out.append({**{k: v for k, v in row.items() if not k.startswith(("mean_", "orig_"))}, **shown})
    return out


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


def _count(n: int) -> str:
    return f"{int(n):,}"


def render_markdown(report: RunReport) -> str:
    """The summary of a run, in markdown."""
    src = report.source
    parts = [f"# gmm-stream {report.flow}: {report.job_name}\n"]
    facts = [
        ("source", f"{src.get('kind')} `{src.get('path')}` shape {src.get('shape')} {src.get('dtype', '')}"),
        ("compute", report.compute),
    ]
    facts += [(k, _fmt(v)) for k, v in report.model.items()]
    if report.training:
        facts += [(f"model trained: {k}", _fmt(v)) for k, v in report.training.items()]
    facts += [(k, _fmt(v)) for k, v in report.scores.items()]
    if report.space:
        facts.append(("means", f"in {report.space['description']}"))
    if report.resumed_from is not None:
        facts.append(("resumed", f"from the checkpoint at iteration {report.resumed_from}"))
    if report.refresh is not None:
        r = report.refresh
        facts.append(("refresh", f"{len(r['new'])} new, {len(r['changed'])} changed, {len(r['stale'])} stalest and "
                                 f"{len(r['removed'])} removed partition(s) ({r['rows_read']} rows read by EM); "
                                 f"{r['unchanged']} kept"))
    if report.seconds is not None:
        facts.append(("time", f"{report.seconds:.1f} s"))
    parts.append(_table([{"": k, "value": v} for k, v in facts], ["", "value"]))
    if report.training:
        parts.append("\nThe `model trained:` rows are facts of the saved model's training run; this run "
                     "fitted nothing (no lower bound history).\n")
    if report.selection is not None:
        parts.append(f"\n## Model selection ({(report.criterion or '').upper()}, lower is better)\n")
        parts.append(f"Best: **{report.best}**\n\n")
        parts.append(_table(report.selection))
    if report.matching is not None:
        m = report.matching
        parts.append("\n## Labels\n")
        if m.get("distance") == "refresh":
            parts.append(f"Refreshed from the published model `{m['reference']}`: every component keeps its label.\n")
        elif m.get("reference"):
            parts.append(f"Matched to the reference `{m['reference']}` by the Hungarian algorithm on the "
                         f"{m['distance']} distance; total cost {_fmt(m['total_cost'])}.\n\n")
            parts.append(_table(m["pairs"]))
        else:
            parts.append("Canonical order: decreasing weight (no reference model).\n")
        if m.get("note") and m.get("distance") != "refresh":
            parts.append(f"\n{m['note']}\n")
    if report.anomalies is not None:
        a = report.anomalies
        parts.append("\n## Anomalies\n")
        parts.append(f"{a['count']} of {a['n_rows']} rows have a log-density below {_fmt(a['threshold'])}, "
                     f"the {a['quantile']:g} quantile of the training log-density (`{a['path']}`).\n")
    parts.append("\n## Components\n")
    parts.append(_space_text(report))
    parts.append(_table(_display_components(report.components)))
    if report.outputs:
        parts.append("\n## Outputs\n")
        for name, value in report.outputs.items():
            for path in value if isinstance(value, list) else [value]:
                parts.append(f"- {name}: `{path}`\n")
    return "".join(parts)


def _space_text(report: RunReport) -> str:
    """The paragraph above the components table: the space of the ``mean_`` and ``orig_`` columns."""
    space = report.space
    if not space:
        return ""
    text = f"Columns `mean_<feature>`: the means in {space['description']}."
    if space.get("original_features") is not None:
        text += f" Columns `orig_<feature>`: {space['original_note']}."
    n = max(len(space.get("features") or []), len(space.get("original_features") or []))
    if n > MAX_SHOWN_FEATURES:
        text += " Every column is in `components.csv`."
    return text + "\n\n"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        if not rows:
            return
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})


# ---------------------------------------------------------------------------- geometry


def full_covariances(covariances: np.ndarray, covariance_type: str, n_components: int,
                     n_features: int) -> np.ndarray:
    """Every component's full covariance matrix, shape (n_components, d, d).

    ``covariances`` has scikit-learn's shape for ``covariance_type``: full (K, d, d),
    tied (d, d) (shared), diag (K, d) (the diagonals), spherical (K,) (one variance).
    """
    c = np.asarray(covariances, dtype=np.float64)
    K, d = int(n_components), int(n_features)
    if covariance_type == "full":
        full = c.reshape(K, d, d)
    elif covariance_type == "tied":
        full = np.broadcast_to(c.reshape(d, d), (K, d, d))
    elif covariance_type == "diag":
        full = c.reshape(K, d)[:, :, None] * np.eye(d)
    elif covariance_type == "spherical":
        full = c.reshape(K)[:, None, None] * np.eye(d)
    else:
        raise ValueError(f"unknown covariance_type {covariance_type!r}")
    return np.array(full)


def projected_covariances(covariances: np.ndarray, covariance_type: str, P: np.ndarray,
                          n_components: int) -> np.ndarray:
    """The covariances seen in a 2-D projection ``P`` (2, d): ``P Σ_k Pᵀ``, shape (K, 2, 2)."""
    P = np.asarray(P, dtype=np.float64)
    full = full_covariances(covariances, covariance_type, n_components, P.shape[1])
    return np.einsum("id,kde,je->kij", P, full, P)


def ellipse(cov2: np.ndarray, n_std: float = 1.0) -> tuple[float, float, float]:
    """The ``n_std``-σ ellipse of a 2×2 covariance: (width, height, angle in degrees).

    ``width`` is the full length of the major axis (``2 n_std sqrt(λ_max)``), ``height``
    that of the minor axis, ``angle`` the major axis's angle to the x axis
    (counter-clockwise, in (-90, 90]) -- the arguments of ``matplotlib.patches.Ellipse``.
    The points ``x`` of the ellipse satisfy ``xᵀ Σ⁻¹ x = n_std²``. Closed form for the
    symmetric 2×2 eigenproblem.
    """
    (a, b), (_, c) = np.asarray(cov2, dtype=np.float64)
    half_diff = 0.5 * (a - c)
    radius = math.hypot(half_diff, b)
    centre = 0.5 * (a + c)
    lam_max, lam_min = max(centre + radius, 0.0), max(centre - radius, 0.0)
    angle = 0.5 * math.degrees(math.atan2(2.0 * b, a - c)) if radius > 0 else 0.0
    return 2.0 * n_std * math.sqrt(lam_max), 2.0 * n_std * math.sqrt(lam_min), angle


@dataclass
class PlaneGeometry:
    """What ``clusters_pc.png`` draws, in the plane of the sample's first two principal axes.

    centre : (d,) the sample's (NaN-aware) mean; axes ``P`` : (2, d) orthonormal rows;
    explained : (2,) fraction of the sample's variance along each axis; points : (n, 2)
    the sample's rows ``(x - centre) Pᵀ``; means : (K, 2); covariances : (K, 2, 2)
    ``P Σ_k Pᵀ`` (None without covariances).
    """

    centre: np.ndarray
    axes: np.ndarray
    explained: np.ndarray
    points: np.ndarray
    means: np.ndarray
    covariances: np.ndarray | None


def principal_plane(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, the first two principal axes (2, d) of ``X`` (NaN replaced by column means), and
    the fraction of the variance of ``X`` along each."""
    X = np.asarray(X, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mean = np.nanmean(X, axis=0) if X.size else np.zeros(X.shape[1])
    mean = np.where(np.isnan(mean), 0.0, mean)
    Z = np.where(np.isnan(X), mean, X) - mean
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    total = float(np.sum(s**2))
    ratio = (s**2 / total) if total > 0 else np.zeros_like(s)
    axes, ratio = vt[:2], ratio[:2]
    if axes.shape[0] < 2:  # one feature: plot it against a zero axis
        axes = np.vstack([axes, np.zeros((2 - axes.shape[0], X.shape[1]))])
        ratio = np.concatenate([ratio, np.zeros(2 - ratio.shape[0])])
    return mean, axes, ratio


def plane_geometry(X: np.ndarray, means: np.ndarray, covariances: np.ndarray | None = None,
                   covariance_type: str | None = None) -> PlaneGeometry:
    """Project the sample, the means and the covariances on the sample's first two principal axes."""
    X = np.asarray(X, dtype=np.float64)
    centre, P, explained = principal_plane(X)
    points = (np.where(np.isnan(X), centre, X) - centre) @ P.T
    M = (np.asarray(means, dtype=np.float64) - centre) @ P.T
    cov2 = None
    if covariances is not None and covariance_type is not None:
        cov2 = projected_covariances(covariances, covariance_type, P, len(M))
    return PlaneGeometry(centre, P, explained, points, M, cov2)


# ------------------------------------------------------------------------------- plots


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Save at :data:`DPI` (the pixel size is exactly ``figsize * DPI``) and close."""
    fig.savefig(path, dpi=DPI)
    _figure().close(fig)


def _colours(n: int) -> list[Any]:
    plt = _figure()
    if n <= 10:
        cmap = plt.get_cmap("tab10")
        return [cmap(k) for k in range(n)]
    if n <= 20:
        cmap = plt.get_cmap("tab20")
        return [cmap(k) for k in range(n)]
    cmap = plt.get_cmap("turbo")
    return [cmap(x) for x in np.linspace(0.05, 0.95, n)]


def _outlined(size: float = 3.0) -> list[Any]:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=size, foreground="white")]


def _plain_ticks(ax: Any, *, integer_x: bool = False) -> None:
    from matplotlib.ticker import MaxNLocator

    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="both", style="plain", useOffset=False)


def plot_lower_bound(lower_bounds: list[float], path: Path, title: str, *, converged: bool | None = None,
                     n_iter: int | None = None, max_iter: int | None = None) -> None:
    """Lower bound (mean log-likelihood) against the EM iteration, the last iteration marked
    "converged at iteration N" or "stopped at max_iter"."""
    plt = _figure()
    y = np.asarray(lower_bounds, dtype=np.float64)
    x = np.arange(1, len(y) + 1)
    last = int(n_iter) if n_iter else len(y)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    ax.plot(x, y, marker="o", ms=3, lw=1.2, color="C0", label="lower bound")
    if converged:
        text, colour, marker = f"converged at iteration {last}", "tab:green", "*"
    elif converged is False:
        text = f"stopped at max_iter ({max_iter}), not converged" if max_iter else f"not converged ({last} iterations)"
        colour, marker = "tab:red", "X"
    else:
        text, colour, marker = f"last iteration {last}", "k", "o"
    ax.plot([x[-1]], [y[-1]], ls="none", marker=marker, ms=14, color=colour, markeredgecolor="k", zorder=3,
            label=text)
    ax.annotate(text, (x[-1], y[-1]), xytext=(-14, -28), textcoords="offset points", ha="right", va="top",
                color=colour, fontweight="bold", path_effects=_outlined(),
                arrowprops={"arrowstyle": "->", "color": colour})
    _plain_ticks(ax, integer_x=True)
    ax.set_xlim(0.5, len(y) + 0.5)
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("lower bound (mean log-likelihood per row)")
    ax.set_title(title)
    ax.legend(loc="lower right", framealpha=0.9)
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_criterion(rows: list[dict[str, Any]], criterion: str, path: Path, title: str) -> None:
    """The criterion against ``n_components``, one line per covariance type; the best is circled."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for cov in sorted({r["covariance_type"] for r in rows}):
        sub = sorted((r for r in rows if r["covariance_type"] == cov), key=lambda r: r["n_components"])
        ax.plot([r["n_components"] for r in sub], [r[criterion] for r in sub], marker="o", label=cov)
    best = min(rows, key=lambda r: r[criterion])
    ax.scatter([best["n_components"]], [best[criterion]], s=160, facecolors="none", edgecolors="k", zorder=3,
               label="best")
    _plain_ticks(ax, integer_x=True)
    ax.set_xlabel("n_components")
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    ax.set_title(title)
    ax.legend(loc="best", framealpha=0.9)
    ax.grid(alpha=0.3)
    _save(fig, path)


def _point_size(n: int) -> float:
    return float(np.clip(12_000 / max(n, 1), 1.5, 20.0))


def _sample_note(n_plotted: int, n_total: int | None) -> str:
    of = f" of {_count(n_total)}" if n_total else ""
    return f"{_count(n_plotted)}{of} rows plotted"


def _legend(fig: Any, ax: Any, handles: list[Any], n_components: int) -> None:
    """The legend outside the axes, on the right (it never covers the data)."""
    legend = fig.legend(handles=handles, loc="outside right upper", fontsize="small",
                        ncols=1 if n_components <= 14 else 2, title="component (rows plotted)", title_fontsize="small",
                        markerscale=1.0, frameon=False)
    for handle in legend.legend_handles:
        if hasattr(handle, "set_alpha"):
            handle.set_alpha(1.0)


def _component_handles(colours: list[Any], labels: np.ndarray) -> list[Any]:
    from matplotlib.lines import Line2D

    counts = np.bincount(labels[labels >= 0], minlength=len(colours)) if labels.size else np.zeros(len(colours))
    return [Line2D([], [], ls="none", marker="o", ms=6, color=c, label=f"{k}  ({_count(counts[k])})")
            for k, c in enumerate(colours)]


def plot_clusters(X: np.ndarray, labels: np.ndarray, means: np.ndarray, path: Path, title: str, *,
                  covariances: np.ndarray | None = None, covariance_type: str | None = None,
                  anomalous: np.ndarray | None = None, n_total: int | None = None,
                  space: str | None = None) -> PlaneGeometry:
    """A sample of rows on its first two principal axes, coloured by label, with each
    component's mean and its 1 and 2 σ ellipses (``P Σ_k Pᵀ``); anomalous rows as black crosses."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    plt = _figure()
    labels = np.asarray(labels)
    geo = plane_geometry(X, means, covariances, covariance_type)
    K = len(geo.means)
    colours = _colours(K)
    plotted = labels >= 0
    fig, ax = plt.subplots(figsize=(8.0, 6.0), layout="constrained")
    size = _point_size(int(plotted.sum()))
    one_feature = geo.axes.shape[1] < 2
    shown = geo.points.copy()
    if one_feature:  # a random vertical jitter spreads the points of the one axis
        spread = 0.05 * float(np.ptp(shown[:, 0])) if len(shown) else 1.0
        shown[:, 1] = np.random.default_rng(0).uniform(-spread, spread, len(shown))
    for k in range(K):
        rows = labels == k
        ax.scatter(shown[rows, 0], shown[rows, 1], s=size, alpha=0.45, color=colours[k], lw=0,
                   rasterized=True)
    handles = _component_handles(colours, labels)
    if anomalous is not None and np.any(anomalous):
        bad = np.asarray(anomalous, dtype=bool) & plotted
        ax.scatter(shown[bad, 0], shown[bad, 1], marker="x", c="k", s=22, lw=0.9, zorder=4)
        handles.append(Line2D([], [], ls="none", marker="x", color="k", ms=6, label=f"anomalous ({_count(bad.sum())})"))
    if geo.covariances is not None:
        for k in range(K):
            for n_std, style, width in ((1.0, "-", 1.6), (2.0, "--", 1.1)):
                w, h, angle = ellipse(geo.covariances[k], n_std)
                ax.add_patch(Ellipse(tuple(geo.means[k]), w, h, angle=angle, fill=False, ec=colours[k], ls=style,
                                     lw=width, zorder=3))
                ax.add_patch(Ellipse(tuple(geo.means[k]), w, h, angle=angle, fill=False, ec="white", ls=style,
                                     lw=width + 1.6, alpha=0.8, zorder=2.9))  # a halo: readable over the points
        handles += [Line2D([], [], color="0.3", ls="-", lw=1.6, label="1 σ ellipse"),
                    Line2D([], [], color="0.3", ls="--", lw=1.1, label="2 σ ellipse")]
    ax.scatter(geo.means[:, 0], geo.means[:, 1], marker="X", s=110, c=colours, edgecolors="k", linewidths=1.2,
               zorder=5)
    handles.append(Line2D([], [], ls="none", marker="X", ms=9, color="w", markeredgecolor="k", label="mean"))
    for k, (x, y) in enumerate(geo.means):
        ax.annotate(str(k), (x, y), xytext=(7, 7), textcoords="offset points", fontweight="bold", fontsize=11,
                    color="k", zorder=6, path_effects=_outlined(3.5),
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": colours[k], "alpha": 0.8, "lw": 1.2})
    ax.set_xlabel(f"PC1 ({100 * geo.explained[0]:.1f} % of variance)")
    _plain_ticks(ax)
    if one_feature:
        ax.set_ylabel("random jitter (one feature)")
        ax.set_yticks([])
    else:
        ax.set_ylabel(f"PC2 ({100 * geo.explained[1]:.1f} % of variance)")
        ax.set_aspect("equal", adjustable="datalim")  # the ellipses keep their true shape
    ax.grid(alpha=0.25)
    fig.suptitle(title)
    ax.set_title(f"{_sample_note(int(plotted.sum()), n_total)}; axes: the sample's principal axes\n"
                 f"in {space or 'the model space'}", fontsize="small")
    _legend(fig, ax, handles, K)
    _save(fig, path)
    return geo


def plot_clusters_umap(umap: np.ndarray, labels: np.ndarray, path: Path, title: str, *,
                       anomalous: np.ndarray | None = None, n_total: int | None = None,
                       n_components: int | None = None) -> None:
    """The sample on its UMAP embedding (``obsm['X_umap']``), coloured by label, as scanpy draws
    it: small points, no ticks, the component numbers on the data, the legend on the right."""
    from matplotlib.lines import Line2D

    plt = _figure()
    U = np.asarray(umap, dtype=np.float64)[:, :2]
    labels = np.asarray(labels)
    K = int(n_components if n_components is not None else (labels.max() + 1 if labels.size else 0))
    colours = _colours(K)
    plotted = (labels >= 0) & np.all(np.isfinite(U), axis=1)
    fig, ax = plt.subplots(figsize=(7.5, 6.0), layout="constrained")
    order = np.random.default_rng(0).permutation(np.flatnonzero(plotted))  # no component hides another
    ax.scatter(U[order, 0], U[order, 1], s=_point_size(order.size) * 1.5, c=[colours[k] for k in labels[order]],
               lw=0, alpha=0.8, rasterized=True)
    handles = _component_handles(colours, np.where(plotted, labels, -1))
    if anomalous is not None and np.any(anomalous):
        bad = np.asarray(anomalous, dtype=bool) & plotted
        ax.scatter(U[bad, 0], U[bad, 1], marker="x", c="k", s=22, lw=0.9, zorder=4)
        handles.append(Line2D([], [], ls="none", marker="x", color="k", ms=6, label=f"anomalous ({_count(bad.sum())})"))
    for k in range(K):
        rows = plotted & (labels == k)
        if rows.any():
            x, y = np.median(U[rows], axis=0)
            ax.text(x, y, str(k), ha="center", va="center", fontweight="bold", fontsize=11, zorder=6,
                    path_effects=_outlined(3.5))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP1")
    ax.set_ylabel("UMAP2")
    fig.suptitle(title)
    ax.set_title(f"{_sample_note(int(plotted.sum()), n_total)} on obsm['X_umap']", fontsize="small")
    _legend(fig, ax, handles, K)
    _save(fig, path)


# ------------------------------------------------------------------------------ output


def write_report(report: RunReport, directory: Path, *, plots: bool = True) -> dict[str, str]:
    """Write the report files into ``directory`` (replaced); return their paths by name.

    ``lower_bound.csv`` and ``lower_bound.png`` are written only when the run has a fit
    history (``report.lower_bounds`` not empty).
    """
    from pipeline.atomic import atomic_output
    from pipeline.formats import json_text

    files: dict[str, str] = {}
    with atomic_output(directory, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "summary.md").write_text(render_markdown(report))
        _write_csv(tmp / "components.csv", report.components)
        if report.lower_bounds:
            _write_csv(tmp / "lower_bound.csv", [{"iteration": i + 1, "lower_bound": v}
                                                 for i, v in enumerate(report.lower_bounds)])
        if report.selection is not None:
            _write_csv(tmp / "selection.csv", report.selection)
        (tmp / "report.json").write_text(json_text(report.to_dict()))
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
        plot_lower_bound(report.lower_bounds, directory / "lower_bound.png", title,
                         converged=report.model.get("converged"), n_iter=report.model.get("n_iter"),
                         max_iter=report.model.get("max_iter"))
    if report.selection:
        plot_criterion(report.selection, report.criterion or "bic", directory / "criterion.png", title)
    if report.sample_X is None or report.means is None or not len(report.sample_X):
        return
    n = len(report.sample_X)
    anomalous = _aligned(report.sample_anomalous, n, "sample_anomalous")
    space = (report.space or {}).get("description")
    plot_clusters(report.sample_X, report.sample_labels, report.means, directory / "clusters_pc.png", title,
                  covariances=report.covariances, covariance_type=report.model.get("covariance_type"),
                  anomalous=anomalous, n_total=report.sample_of, space=space)
    umap = _aligned(report.umap_sample, n, "umap_sample")
    if umap is not None:
        if umap.ndim != 2 or umap.shape[1] < 2:
            logger.warning("umap_sample has shape %s, not (n, 2): no clusters_umap.png", umap.shape)
        else:
            plot_clusters_umap(umap, report.sample_labels, directory / "clusters_umap.png", title,
                               anomalous=anomalous, n_total=report.sample_of, n_components=len(report.means))


def _aligned(values: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    """``values`` when it has one row per sampled row, else None (with a warning)."""
    if values is None:
        return None
    values = np.asarray(values)
    if len(values) != n:
        logger.warning("%s has %d rows but the plot sample %d: ignored", what, len(values), n)
        return None
    return values


def publish_artifacts(report: RunReport) -> list[str]:
    """Publish the summary, components, lower bound (and selection) as Prefect artifacts."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = lambda what: artifact_key(report.job_name, report.flow, what)  # noqa: E731
    keys = [key("summary"), key("components")]
    create_markdown_artifact(render_markdown(report), key=keys[0], description=f"gmm-stream {report.flow} summary")
    space = f" (means in {report.space['description']})" if report.space else ""
    create_table_artifact([{k: _fmt(v) if isinstance(v, list) else v for k, v in row.items()}
                           for row in _display_components(report.components)], key=keys[1],
                          description=f"Components: weights, sizes and means{space}")
    if report.lower_bounds:
        keys.append(key("lower-bound"))
        create_table_artifact([{"iteration": i + 1, "lower_bound": v} for i, v in enumerate(report.lower_bounds)],
                              key=keys[-1], description="Lower bound (mean log-likelihood) per EM iteration")
    if report.selection is not None:
        keys.append(key("criteria"))
        create_table_artifact(report.selection, key=keys[-1],
                              description=f"BIC, AIC and ICL of every candidate (best by {report.criterion})")
    return keys
