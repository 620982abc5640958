"""The ``fit`` flow: open the source, fit preprocessing, run EM, save the model, write predictions, report."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from flows.compute import ComputeInfo, dask_compute
from flows.config import Job
from flows.preflight import preflight
from flows.summaries import model_report, require_flow, run_summary
from flows.tasks import (
    Candidate,
    fit_model,
    fit_preprocessing,
    label_model,
    load_job_task,
    output_set,
    partitions_to_record,
    prepare_source,
    publish_report,
    publish_run,
    save_model,
    start_run,
    write_predictions,
)
from pipeline import Dataset
from pipeline.output_set import OutputSet

__all__ = ["fit_flow", "fit_stages"]


@flow(name="gmm-stream-fit", description="Fit a Gaussian mixture to a YAML job's data, save it, write predictions.")
def fit_flow(job_path: str, overrides: list[str] | None = None, working_directory: str | None = None) -> dict[str, Any]:
    """Run a ``flow: fit`` job.

    Parameters
    ----------
    job_path : str
        The YAML job.
    overrides : list of str, optional
        ``key.path=value`` items applied to the job (as ``gmm-stream run --set``).
    working_directory : str, optional
        Directory relative paths are relative to (default: the process's).

    Returns
    -------
    dict
        The run summary (paths, model facts, criteria).
    """
    started = time.perf_counter()
    job = load_job_task(job_path, overrides or [], working_directory)
    require_flow(job, job_path, "fit")
    preflight(job)
    outputs = output_set(job)
    with outputs.lock(job.name), dask_compute(job.compute) as compute:
        dataset = prepare_source(job)  # opened once; every stage reads through this handle
        return fit_stages(job, outputs, dataset, compute, started)


def fit_stages(job: Job, outputs: OutputSet, dataset: Dataset, compute: ComputeInfo, started: float) -> dict[str, Any]:
    """The stages of a fit from scratch, from the opened ``dataset`` to the published run
    (the ``fit`` flow's, and the ``update`` flow's first run)."""
    run = start_run(job, outputs, dataset.identity)
    dataset = fit_preprocessing(job, run, dataset)  # one pass
    fitted = fit_model(job, run, dataset, Candidate(job.model.n_components, job.model.covariance_type))
    model, matching = label_model(job, fitted.model, dataset)  # a relabelled copy, before any scoring
    partitions = partitions_to_record(model, dataset)  # kept for a later `update`
    # one pass: every sink, the scores and the statistics of each partition
    scores, written, model = write_predictions(job, run, model, dataset, partitions=partitions)
    model_dir = save_model(job, run, model, dataset.preprocessor, scores, dataset.identity, matching, partitions)
    report = model_report(job, dataset.identity, compute, model, scores, fit=fitted, matching=matching,
                          preprocessor=dataset.preprocessor, outputs={"model": model_dir, "predictions": written},
                          started=started)
    files = publish_report(job, run, report)
    publish_run(outputs, run)
    return run_summary(job, report, files)
