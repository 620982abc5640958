"""The ``predict`` flow: score new data with a saved model and its preprocessing."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from flows.compute import dask_compute
from flows.preflight import preflight
from flows.summaries import model_report, require_flow, run_summary
from flows.tasks import (
    anomaly_threshold,
    load_job_task,
    load_saved_model,
    output_set,
    prepare_source,
    publish_report,
    publish_run,
    start_run,
    write_predictions,
)

__all__ = ["predict_flow"]


@flow(name="gmm-stream-predict", description="Score new data with a saved model: labels, probabilities, "
                                             "log-density and anomaly flags.")
def predict_flow(job_path: str, overrides: list[str] | None = None,
                 working_directory: str | None = None) -> dict[str, Any]:
    """Run a ``flow: predict`` job.

    Rows whose log-density is below the ``predict.anomaly_quantile`` quantile of the
    training log-density (stored beside the model by the fit flow) are flagged.

    Parameters and return value as :func:`flows.fit.fit_flow`.
    """
    started = time.perf_counter()
    job = load_job_task(job_path, overrides or [], working_directory)
    require_flow(job, job_path, "predict")
    preflight(job)
    outputs = output_set(job)
    with outputs.lock(job.name), dask_compute(job.compute) as compute:
        saved = load_saved_model(job.predict.model)
        dataset = prepare_source(job).with_preprocessor(saved.preprocessor)
        run = start_run(job, outputs, dataset.identity)
        threshold = anomaly_threshold(saved.training, job.predict.anomaly_quantile)
        scores, written, _ = write_predictions(job, run, saved.model, dataset, threshold=threshold)  # one pass
        report = model_report(job, dataset.identity, compute, saved.model, scores, preprocessor=saved.preprocessor,
                              outputs={"model": str(saved.path), "predictions": written}, started=started)
        report.lower_bounds = []  # the saved model's training history is not this run's
        report.anomalies = {"quantile": job.predict.anomaly_quantile, "threshold": threshold,
                            "count": scores.n_anomalies, "n_rows": scores.n_rows, "path": job.predict.anomalies}
        files = publish_report(job, run, report)
        publish_run(outputs, run)
    return run_summary(job, report, files)
