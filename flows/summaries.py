"""What a run reports and returns: the :class:`~flows.report.RunReport` and the flow's summary dict."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from gmm_stream import GaussianMixture

from flows.compute import ComputeInfo
from flows.config import Job
from flows.exceptions import ConfigError
from flows.labels import LabelMatching
from flows.report import RunReport, components_table
from flows.tasks import CandidateResult, FitResult, Scores

__all__ = ["require_flow", "model_report", "selection_rows", "run_summary"]


def require_flow(job: Job, job_path: str, flow: str) -> None:
    """Refuse a job written for another flow."""
    if job.flow != flow:
        raise ConfigError(job_path, [("flow", f"is {job.flow!r}, but this is the {flow!r} flow; "
                                              f"run it with `gmm-stream run` or the gmm-stream-{job.flow} flow")])


def _model_facts(model: GaussianMixture) -> dict[str, Any]:
    return {"n_components": int(model.n_components), "covariance_type": model.covariance_type,
            "converged": bool(model.converged_), "n_iter": int(model.n_iter_),
            "lower_bound": float(model.lower_bound_)}


def _score_facts(scores: Scores) -> dict[str, Any]:
    return {"rows": scores.n_rows, "empty_rows": scores.n_empty, "log_likelihood": scores.loglik,
            "n_parameters": scores.n_parameters, "bic": scores.bic, "aic": scores.aic, "icl": scores.icl}


def model_report(job: Job, identity: dict[str, Any], compute: ComputeInfo, model: GaussianMixture, scores: Scores,
                 *, fit: FitResult | None = None, matching: LabelMatching | None = None,
                 outputs: dict[str, Any] | None = None, started: float | None = None) -> RunReport:
    """The report of a run that fitted or applied ``model``."""
    params = model.params_
    return RunReport(
        job_name=job.name,
        flow=job.flow,
        source=identity,
        compute=compute.describe(),
        model=_model_facts(model),
        scores=_score_facts(scores),
        components=components_table(params.weights, params.means, scores.sizes, scores.n_rows + scores.n_empty),
        lower_bounds=[float(v) for v in model.lower_bounds_],
        matching=None if matching is None else matching.to_dict(),
        resumed_from=None if fit is None else fit.resumed_from,
        outputs=dict(outputs or {}),
        seconds=None if started is None else time.perf_counter() - started,
        sample_X=scores.sample_X,
        sample_labels=scores.sample_labels,
        means=np.asarray(params.means),
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
    return summary
