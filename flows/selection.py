"""The ``select`` flow: fit every candidate of the grid, tabulate BIC, AIC and ICL, keep the best.

(The module is not called ``select``: Prefect loads ``flows/<name>.py`` entrypoints with
``flows/`` on ``sys.path``, where a ``select.py`` would shadow the standard library.)
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.compute import dask_compute
from flows.preflight import preflight
from flows.summaries import model_report, require_flow, run_summary, selection_rows
from flows.tasks import (
    Candidate,
    CandidateResult,
    fit_candidate,
    fit_preprocessing,
    label_model,
    load_job_task,
    output_set,
    prepare_source,
    publish_report,
    publish_run,
    save_model,
    start_run,
    write_predictions,
)

__all__ = ["select_flow"]

logger = logging.getLogger(__name__)


@flow(name="gmm-stream-select", task_runner=ThreadPoolTaskRunner(max_workers=8),
      description="Fit every candidate of a grid, keep the best by BIC, AIC or ICL.")
def select_flow(job_path: str, overrides: list[str] | None = None,
                working_directory: str | None = None) -> dict[str, Any]:
    """Run a ``flow: select`` job.

    Candidates are fitted concurrently (up to 8 at a time) when the job's compute is a
    Dask cluster, one after the other on the threaded scheduler. The best candidate by
    ``selection.criterion`` is labelled, saved and used for the predictions.

    Parameters and return value as :func:`flows.fit.fit_flow`.
    """
    started = time.perf_counter()
    job = load_job_task(job_path, overrides or [], working_directory)
    require_flow(job, job_path, "select")
    grid = [Candidate(k, cov) for cov in job.selection.covariance_types for k in job.selection.n_components]
    criterion = job.selection.criterion
    preflight(job)
    outputs = output_set(job)
    with outputs.lock(job.name), dask_compute(job.compute) as compute:
        dataset = prepare_source(job)  # opened once; every stage reads through this handle
        run = start_run(job, outputs, dataset.identity)
        dataset = fit_preprocessing(job, run, dataset)
        if compute.distributed:
            futures = [fit_candidate.submit(job, run, dataset, c) for c in grid]
            results: list[CandidateResult] = [f.result() for f in futures]
        else:
            results = [fit_candidate(job, run, dataset, c) for c in grid]
        table = selection_rows(results, criterion)
        best = min(results, key=lambda r: (r.scores.criterion(criterion), r.fit.candidate.n_components))
        model, matching = label_model(job, best.fit.model, dataset)  # a relabelled copy, before any scoring
        # the best model's scores again, of the relabelled model, from the pass that writes its predictions
        scores, written, model = write_predictions(job, run, model, dataset)
        model_dir = save_model(job, run, model, dataset.preprocessor, scores, dataset.identity, matching)
        report = model_report(job, dataset.identity, compute, model, scores, fit=best.fit, matching=matching,
                              preprocessor=dataset.preprocessor, outputs={"model": model_dir, "predictions": written},
                              started=started)
        report.selection, report.criterion, report.best = table, criterion, best.fit.candidate.label
        files = publish_report(job, run, report)
        publish_run(outputs, run)
    return run_summary(job, report, files)
