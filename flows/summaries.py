"""What a run reports and returns: the :class:`~flows.report.RunReport` and the flow's summary dict."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from flows.compute import ComputeInfo
from flows.config import Job
from flows.exceptions import ConfigError
from flows.report import RunReport, components_table
from flows.tasks import CandidateResult, FitResult, Scores
from gmm_stream import GaussianMixture
from gmm_stream.matching import LabelMatching
from pipeline.preprocess import Preprocessor

__all__ = ["require_flow", "model_report", "mean_space", "read_umap_sample", "selection_rows", "run_summary"]

logger = logging.getLogger(__name__)


def require_flow(job: Job, job_path: str, flow: str) -> None:
    """Refuse a job written for another flow."""
    if job.flow != flow:
        raise ConfigError(job_path, [("flow", f"is {job.flow!r}, but this is the {flow!r} flow; "
                                              f"run it with `gmm-stream run` or the gmm-stream-{job.flow} flow")])


def _model_facts(model: GaussianMixture) -> dict[str, Any]:
    return {"n_components": int(model.n_components), "covariance_type": model.covariance_type,
            "converged": bool(model.converged_), "n_iter": int(model.n_iter_), "max_iter": int(model.max_iter),
            "lower_bound": float(model.lower_bound_)}


#: Facts of a model's fit: the training run's, never a predict run's.
TRAINING_FACTS = ("converged", "n_iter", "max_iter", "lower_bound")


def _score_facts(scores: Scores) -> dict[str, Any]:
    return {"rows": scores.n_rows, "empty_rows": scores.n_empty, "log_likelihood": scores.loglik,
            "n_parameters": scores.n_parameters, "bic": scores.bic, "aic": scores.aic, "icl": scores.icl}


def _step_text(step: Any) -> str:
    if step.name == "pca":
        return f"PCA ({step.n_components} components)"
    return step.name


def _names(names: Any, n: int) -> list[str]:
    return [str(v) for v in names] if names is not None and len(names) == n else [f"x{j}" for j in range(n)]


def mean_space(preprocessor: Preprocessor | None, model: GaussianMixture) -> dict[str, Any]:
    """The space the model's means are in, and how the ``orig_`` columns map them back.

    Returns a dict: ``description`` (e.g. "the preprocessed space: standardize → PCA
    (3 components)"), ``steps`` (the preprocessing config), ``features`` (names of the
    model's features: ``PC1 ...`` after PCA, else the input names, else ``x0 ...``),
    ``original_features`` (the input feature names when there is preprocessing to undo,
    else None) and ``original_note`` (how the means were mapped back, or None).
    """
    d = int(model.means_.shape[1])
    if preprocessor is None:
        return {"description": "the model's input space (the report was not given the preprocessing)",
                "steps": None, "features": _names(getattr(model, "feature_names_in_", None), d),
                "original_features": None, "original_note": None}
    steps = preprocessor.steps
    names_in = _names(getattr(preprocessor, "feature_names_in_", None), int(preprocessor.n_features_in_))
    if not steps:
        return {"description": "the original units (no preprocessing)", "steps": [], "features": names_in,
                "original_features": None, "original_note": None}
    pca = steps[-1] if steps[-1].name == "pca" else None
    features = [f"PC{j + 1}" for j in range(pca.n_components)] if pca is not None else names_in
    undo = []
    for step in reversed(steps):
        if step.name == "pca":
            undo.append(f"back-projected out of PCA (`mean @ components + centre`: the projection onto the span "
                        f"of the {step.n_components} components, not an exact inverse)")
        elif step.name == "standardize":
            undo.append("un-standardized (`× scale + mean`, exact)")
        elif step.name == "log1p":
            undo.append("expm1 applied (expm1 of the mean of log1p values: not the mean in the original units)")
    return {"description": "the preprocessed space: " + " → ".join(_step_text(s) for s in steps),
            "steps": preprocessor.get_config(), "features": features, "original_features": names_in,
            "original_note": "the means mapped back to the original feature units: " + ", then ".join(undo)}


def _sample_anomalous(model: GaussianMixture, scores: Scores) -> np.ndarray | None:
    """Which rows of the plot sample have a log-density below the anomaly threshold."""
    if scores.threshold is None or scores.sample_X is None or not len(scores.sample_X):
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*feature names.*")
        logd = np.asarray(model.score_samples(np.asarray(scores.sample_X)), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return logd < float(scores.threshold)  # NaN (no observed value): not flagged


def read_umap_sample(job: Job, index: np.ndarray, key: str = "X_umap") -> np.ndarray | None:
    """``obsm[key][index, :2]`` of the job's AnnData source, or None (another format, no such key).

    ``index`` are the row positions of the plot sample (sorted, as :func:`flows.tasks.score`
    draws them). The two columns are read whole (``16 n_obs`` bytes) and then indexed.
    """
    if job.source.format != "anndata":
        return None
    path = str(job.source.path)
    index = np.asarray(index, dtype=np.int64)
    try:
        from pipeline.sources.anndata_source import anndata_format

        if anndata_format(path) == "h5ad":
            import h5py

            with h5py.File(path, "r") as f:
                if "obsm" not in f or key not in f["obsm"] or not isinstance(f["obsm"][key], h5py.Dataset):
                    return None
                values = f["obsm"][key][:, :2]
        else:
            import zarr

            from pipeline.sources._damage import open_store

            root = zarr.open_group(store=open_store(path, job.source.storage_options), mode="r")
            if "obsm" not in root or key not in root["obsm"] or not isinstance(root["obsm"][key], zarr.Array):
                return None
            values = root["obsm"][key][:, :2]
    except Exception as err:  # the plot is optional: never fail a run for it
        logger.warning("cannot read obsm[%r] of %s for the UMAP plot: %s", key, path, err)
        return None
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2 or (index.size and index.max() >= len(values)):
        logger.warning("obsm[%r] of %s has shape %s: no UMAP plot", key, path, values.shape)
        return None
    return values[index]


def model_report(job: Job, identity: dict[str, Any], compute: ComputeInfo, model: GaussianMixture, scores: Scores,
                 *, fit: FitResult | None = None, matching: LabelMatching | None = None,
                 outputs: dict[str, Any] | None = None, started: float | None = None,
                 preprocessor: Preprocessor | None = None, umap_sample: np.ndarray | None = None) -> RunReport:
    """The report of a run that fitted or applied ``model``.

    Parameters (beyond the run's facts)
    ----------
    preprocessor : Preprocessor, optional
        The fitted preprocessing the model's data went through (fit/select: the one fitted;
        predict: the saved one). It names the space of the means and maps them back to the
        original units (``orig_`` columns of ``components.csv``). Without it the means are
        reported in "the model's input space".
    umap_sample : ndarray of shape (len(scores.sample_X), 2), optional
        The ``obsm['X_umap']`` rows of the plot sample (:func:`read_umap_sample`); draws
        ``clusters_umap.png``. When not given and ``scores`` has a ``sample_index``
        attribute (the sample's row positions), it is read from an AnnData source.

    A predict run (``job.flow == "predict"``) reports the saved model's convergence facts
    as ``training`` ("model trained: ..."), no lower bound history, and flags the plot
    sample's anomalies (``scores.threshold``).
    """
    params = model.params_
    means = np.asarray(params.means, dtype=np.float64)
    space = mean_space(preprocessor, model)
    original = None
    if preprocessor is not None and space["original_features"] is not None:
        original = preprocessor.inverse_transform_means(means)
    facts = _model_facts(model)
    training = None
    predict = job.flow == "predict"
    if predict:
        training = {k: facts.pop(k) for k in TRAINING_FACTS}
    if umap_sample is None and getattr(scores, "sample_index", None) is not None:
        umap_sample = read_umap_sample(job, scores.sample_index)
    return RunReport(
        job_name=job.name,
        flow=job.flow,
        source=identity,
        compute=compute.describe(),
        model=facts,
        scores=_score_facts(scores),
        components=components_table(params.weights, means, scores.sizes, scores.n_rows + scores.n_empty,
                                    feature_names=space["features"], original_means=original,
                                    original_names=space["original_features"]),
        lower_bounds=[] if predict else [float(v) for v in model.lower_bounds_],
        matching=None if matching is None else matching.to_dict(),
        resumed_from=None if fit is None else fit.resumed_from,
        outputs=dict(outputs or {}),
        seconds=None if started is None else time.perf_counter() - started,
        sample_X=scores.sample_X,
        sample_labels=scores.sample_labels,
        means=means,
        space=space,
        training=training,
        sample_of=scores.n_rows + scores.n_empty,
        covariances=np.asarray(params.covariances, dtype=np.float64),
        sample_anomalous=_sample_anomalous(model, scores),
        umap_sample=None if umap_sample is None else np.asarray(umap_sample, dtype=np.float64),
    )


def selection_rows(results: list[CandidateResult], criterion: str) -> list[dict[str, Any]]:
    """The criteria table of the select flow, sorted by the criterion (best first)."""
    rows = [{"n_components": r.fit.candidate.n_components, "covariance_type": r.fit.candidate.covariance_type,
             "bic": r.scores.bic, "aic": r.scores.aic, "icl": r.scores.icl,
             "lower_bound": float(r.fit.model.lower_bound_), "converged": bool(r.fit.model.converged_),
             "n_iter": int(r.fit.model.n_iter_), "seconds": round(r.fit.seconds, 2)} for r in results]
    return sorted(rows, key=lambda r: (r[criterion], r["n_components"]))


def run_summary(job: Job, report: RunReport, files: dict[str, str]) -> dict[str, Any]:
    """The JSON-able value a flow returns (and the CLI prints)."""
    summary: dict[str, Any] = {
        "job": job.name,
        "flow": job.flow,
        "output_directory": str(job.output_dir),
        "report": str(job.report_dir),
        "outputs": report.outputs,
        **report.model,
        **{k: v for k, v in report.scores.items() if k in ("rows", "bic", "aic", "icl")},
        "resumed_from": report.resumed_from,
        "seconds": report.seconds,
        "report_files": sorted(Path(p).name for p in files.values()),
    }
    if report.matching is not None and report.matching.get("reference"):
        summary["matching_cost"] = report.matching["total_cost"]
    if report.selection is not None:
        summary["best"] = report.best
        summary["criterion"] = report.criterion
    if report.anomalies is not None:
        summary["anomalies"] = report.anomalies["count"]
    if report.training is not None:  # predict: the saved model's facts, under their own key
        summary["model_trained"] = dict(report.training)
    return summary
