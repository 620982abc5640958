"""The ``update`` flow: refresh the published model with the data added since (incremental EM).

The first run of a job (no published model yet, or one without a partition record) fits
from scratch, as the ``fit`` flow does. Later runs read only the partitions of the input
that are new or changed since the published run (plus ``update.stale_partitions`` of the
others), refresh the model by incremental EM (:meth:`gmm_stream.GaussianMixture.refresh`)
with the preprocessing fitted at the first run kept fixed, and publish a new output set:
the model, the predictions of every row in every sink (the pass that writes them also
refreshes every partition's statistics under the new model) and the report. Components
keep their labels from one run to the next.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import flow, task

from flows.compute import dask_compute
from flows.config import Job
from flows.exceptions import ConfigError
from flows.fit import fit_stages
from flows.preflight import preflight
from flows.summaries import model_report, run_summary
from flows.tasks import (
    IO,
    fingerprint,
    load_job_task,
    output_set,
    prepare_source,
    publish_report,
    publish_run,
    refresh_model,
    save_model,
    write_predictions,
)
from gmm_stream.matching import LabelMatching
from pipeline.model_directory import SavedModel, read_model_directory
from pipeline.partitions import plan_refresh

__all__ = ["update_flow", "incompatibilities", "FIXED_SETTINGS"]

logger = logging.getLogger(__name__)

#: settings of a job that the stored statistics depend on: an update refuses to change them
FIXED_SETTINGS = (("source", "format"), ("source", "selection"), ("preprocessing",),
                  ("model", "n_components"), ("model", "covariance_type"))


def _get(settings: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = settings
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def incompatibilities(stored: dict[str, Any], job: Job) -> list[tuple[str, str]]:
    """The settings of ``job`` that differ from those the published model was fitted with and
    that its stored statistics depend on, as ``(key, message)`` pairs."""
    now = job.settings()
    problems = []
    for path in FIXED_SETTINGS:
        before, after = _get(stored, path), _get(now, path)
        if before != after:
            problems.append((".".join(path), f"is {after!r}, but the published model was fitted with {before!r}; "
                             "its statistics do not apply: refit from scratch with `gmm-stream run` (flow 'fit', "
                             "output.overwrite: true), or restore the setting"))
    return problems


@task(name="load-published-model", **IO)
def load_published(job: Job) -> SavedModel | None:
    """The published model of the job's output directory, or None when there is none."""
    if not (job.model_dir / "model.json").exists():
        return None
    return read_model_directory(job.model_dir)


@flow(name="gmm-stream-update",
      description="Refresh the published Gaussian mixture with the data added since (incremental EM).")
def update_flow(job_path: str, overrides: list[str] | None = None,
                working_directory: str | None = None) -> dict[str, Any]:
    """Run a ``flow: update`` (or ``flow: fit``) job as a refresh of its published model.

    Parameters and return value as :func:`flows.fit.fit_flow` (``overrides`` as
    ``gmm-stream update --set``); the summary also says what the refresh read.
    """
    started = time.perf_counter()
    job = load_job_task(job_path, overrides or [], working_directory)
    if job.flow not in ("fit", "update"):
        raise ConfigError(job_path, [("flow", f"is {job.flow!r}; the update flow refreshes the model of a 'fit' "
                                              "or 'update' job")])
    job = job.model_copy(update={"flow": "update"})
    preflight(job)
    outputs = output_set(job)
    with outputs.lock(job.name), dask_compute(job.compute) as compute:
        dataset = prepare_source(job)
        published = load_published(job)
        if published is None or published.partitions is None:
            logger.info("no published model with a partition record in %s: fitting from scratch", job.output_dir)
            if published is not None:  # an update replaces the published set, whatever output.overwrite says
                job = job.model_copy(update={"output": job.output.model_copy(update={"overwrite": True})})
            return fit_stages(job, outputs, dataset, compute, started)
        problems = incompatibilities(published.settings or {}, job)
        if problems:
            raise ConfigError(job_path, problems)
        base = outputs.published_run()
        run = outputs.begin(fingerprint(job.settings(), dataset.identity, {"update_of": str(base)}), overwrite=True,
                            job_name=job.name)
        dataset = dataset.with_preprocessor(published.preprocessor)  # the first run's, kept fixed
        partitions = dataset.source.partitions(dataset.data)
        plan = plan_refresh(partitions, published.partitions, published.model.partitions_,
                            job.update.stale_partitions if job.update is not None else 0)
        refreshed = refresh_model(job, published.model, dataset, plan)
        # components keep their labels: the refresh continues the published model's EM
        matching = LabelMatching(order=list(range(published.model.n_components)), reference=str(job.model_dir),
                                 distance="refresh", note="refresh: every component keeps its label")
        scores, written, model = write_predictions(job, run, refreshed.model, dataset, partitions=partitions)
        model_dir = save_model(job, run, model, dataset.preprocessor, scores, dataset.identity, matching, partitions)
        report = model_report(job, dataset.identity, compute, model, scores, fit=refreshed, matching=matching,
                              preprocessor=dataset.preprocessor,
                              outputs={"model": model_dir, "predictions": written}, started=started)
        report.refresh = plan.to_dict()
        files = publish_report(job, run, report)
        publish_run(outputs, run)
    summary = run_summary(job, report, files)
    summary["refresh"] = plan.to_dict()
    return summary
