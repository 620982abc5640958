"""The Prefect tasks of gmm-stream's flows: small, typed, taking the job and paths.

Every task takes the validated :class:`~flows.config.Job` (a config, not an open handle)
and opens what it needs itself; tasks that read or write files retry on transient I/O
errors (not on a missing file or an existing output). No task caches its inputs
(``cache_policy=NONE``): hashing arrays and models would cost more than it saves.

The run's data are opened once (:class:`pipeline.Dataset`, by ``prepare_source``) and the
handle passed to every stage: preprocessing (one pass), EM (one pass per iteration, and one
for the initial sample), then one pass that writes every sink and gathers the scores
(:func:`pipeline.write_results`). The plain functions (``open_dataset``, ``fingerprint``,
``fit_em``) hold the logic; the tasks only call them, so they can be tested without Prefect.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from prefect import task
from prefect.cache_policies import NONE

from flows import progress
from flows.config import Job, ModelConfig
from flows.demo import ensure_synthetic
from flows.exceptions import ModelNotFoundError
from flows.labels import label_components
from flows.preflight import output_set
from flows.report import RunReport, publish_artifacts, write_report
from gmm_stream import EMState, GaussianMixture, lazy_partition_statistics
from gmm_stream.exceptions import GMMStreamError, ModelFormatError
from gmm_stream.matching import LabelMatching
from pipeline import (
    Dataset,
    Preprocessor,
    Scores,
    load_model,
    load_state,
    make_provenance,
    make_sink,
    make_source,
    model_params,
    predict_results,
    save_state,
    score_values,
    scores_from,
    write_results,
)
from pipeline.atomic import disk_full
from pipeline.checkpoints import matching_checkpoint, write_fingerprint
from pipeline.labels import label_overlap, read_labels
from pipeline.model_directory import SavedModel, read_model_directory, training_record, write_model_directory
from pipeline.output_set import OutputSet, Run
from pipeline.partitions import RefreshPlan, partition_identities
from pipeline.provenance import canonical_json
from pipeline.scoring import QUANTILE_LEVELS, quantile_at, score
from pipeline.sources import Partition

__all__ = [
    "Candidate",
    "FitResult",
    "Scores",
    "SavedModel",
    "open_dataset",
    "fingerprint",
    "fit_em",
    "anomaly_threshold",
    "output_set",
    "run_fingerprint",
    "QUANTILE_LEVELS",
]

logger = logging.getLogger(__name__)

#: ``n_init`` of every candidate of the ``select`` flow unless the job sets ``model.n_init``.
SELECT_N_INIT = 3


def _transient(task_, task_run, state) -> bool:
    """Retry on I/O errors that may pass (network, busy file system), not on a user error."""
    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # the state holds no readable exception: do not retry
            return False
    permanent = (GMMStreamError, FileNotFoundError, FileExistsError, PermissionError,
                 IsADirectoryError, NotADirectoryError)
    if disk_full(exc):  # a full disk does not empty itself: fail once, naming the path
        return False
    return isinstance(exc, (OSError, TimeoutError)) and not isinstance(exc, permanent)


IO = {"retries": 2, "retry_delay_seconds": [1, 5], "retry_condition_fn": _transient, "cache_policy": NONE}


# ------------------------------------------------------------------------- plain logic


@dataclass(frozen=True)
class Candidate:
    """One model of a fit or of the selection grid."""

    n_components: int
    covariance_type: str

    @property
    def label(self) -> str:
        return f"K={self.n_components} {self.covariance_type}"

    @property
    def slug(self) -> str:
        return f"k{self.n_components}-{self.covariance_type}"


@dataclass
class FitResult:
    """A fitted model, and whether its fit resumed from a checkpoint."""

    candidate: Candidate
    model: GaussianMixture
    resumed_from: int | None
    seconds: float


def open_dataset(job: Job) -> Dataset:
    """The job's source, opened once (lazily) with its identity: the run's one data handle."""
    return Dataset.open(make_source(job.source.format, job.source.path, **job.source.source_options()))


def fingerprint(*parts: Any) -> str:
    """SHA-256 of the canonical JSON of ``parts`` (what a checkpoint belongs to)."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()


def job_fingerprint(job: Job, identity: dict[str, Any]) -> str:
    """What the fitted preprocessing and models depend on: source, input identity, preprocessing, model."""
    settings = job.settings()
    return fingerprint(settings["source"], identity, settings["preprocessing"], settings["model"])


def fit_preprocessor(job: Job, data: xr.DataArray, fp: str, checkpoint_dir: Path) -> Preprocessor:
    """Fit the job's preprocessing (or reload the one checkpointed by an interrupted run)."""
    steps = [s.model_dump() for s in job.preprocessing]
    ckpt = checkpoint_dir / "preprocessing"
    if job.checkpoint.enabled and matching_checkpoint(ckpt, fp, "preprocessing"):
        try:
            return Preprocessor.load(ckpt)
        except GMMStreamError as err:
            logger.warning("cannot reload the checkpointed preprocessing (%s); refitting", err)
    pre = Preprocessor(steps).fit(data)
    if job.checkpoint.enabled:
        pre.save(ckpt, overwrite=True)
        write_fingerprint(ckpt, fp)
    return pre


def fit_em(job: Job, Z: xr.DataArray, candidate: Candidate, fp: str, checkpoint_dir: Path) -> FitResult:
    """Run EM for ``candidate`` on the preprocessed data, checkpointing as the job says.

    A checkpoint (``<run>/checkpoint/<k..-type>/state``) of the same job and input is
    resumed from; the fit then ends with the model an uninterrupted fit gives.
    """
    start = time.perf_counter()
    model_config = job.model or ModelConfig()
    params = model_config.estimator_params()  # select: the grid sets K and the type
    params.update(n_components=candidate.n_components, covariance_type=candidate.covariance_type)
    if job.flow == "select" and "n_init" not in model_config.model_fields_set:
        params["n_init"] = SELECT_N_INIT  # one unlucky start must not decide the comparison
    model = GaussianMixture(**params)
    ckpt = checkpoint_dir / candidate.slug
    fp = fingerprint(fp, candidate.slug)
    resume = None
    if job.checkpoint.enabled:
        if matching_checkpoint(ckpt, fp, "EM") and (ckpt / "state").exists():
            try:
                resume = load_state(ckpt / "state")
            except ModelFormatError as err:
                logger.warning("cannot read the EM checkpoint %s (%s); starting afresh", ckpt, err)
        write_fingerprint(ckpt, fp)
    resumed_from = None if resume is None else int(resume.n_iter)
    if resume is not None:
        logger.info("%s: resuming from the checkpoint at iteration %d (initialisation %d)",
                    candidate.label, resume.n_iter, resume.init + 1)
    every, max_iter, n_init = job.checkpoint.every, model.max_iter, model.n_init

    def callback(state: EMState) -> None:
        if job.checkpoint.enabled and (state.n_iter % every == 0 or state.converged or state.n_iter >= max_iter):
            save_state(state, ckpt / "state")
        progress.notify(progress.FitProgress(candidate.label, state.init, n_init, state.n_iter, max_iter,
                                             float(state.lower_bound), bool(state.converged), resumed_from))

    model.fit(Z, callback=callback, resume_from=resume)
    return FitResult(candidate, model, resumed_from, time.perf_counter() - start)


def anomaly_threshold(training: dict[str, Any], quantile: float) -> float:
    """The training log-density at ``quantile`` (interpolated in the stored quantile table)."""
    return quantile_at(training["logdens_quantiles"], quantile)


# ------------------------------------------------------------------------------- tasks


@task(name="load-job", cache_policy=NONE)
def load_job_task(job_path: str, overrides: list[str], working_directory: str | None = None) -> Job:
    """Read and validate the YAML job (no data is read)."""
    from flows.config import load_job

    path = Path(job_path)
    if working_directory is not None and not path.is_absolute():
        path = Path(working_directory) / path
    return load_job(path, overrides, base_dir=working_directory)


@task(name="prepare-source", **IO)
def prepare_source(job: Job) -> Dataset:
    """Generate the synthetic data if the job asks for it; open the source once for the run."""
    if ensure_synthetic(job):
        logger.info("generated synthetic data at %s", job.source.path)
    return open_dataset(job)


def run_fingerprint(job: Job, identity: dict[str, Any]) -> str:
    """What a run's outputs depend on: the whole job and the input's identity."""
    return fingerprint(job.settings(), identity)


@task(name="start-run", cache_policy=NONE)
def start_run(job: Job, outputs: OutputSet, identity: dict[str, Any]) -> Run:
    """Resume this job's interrupted run, or start a new run directory (refused if outputs exist)."""
    run = outputs.begin(run_fingerprint(job, identity), overwrite=job.output.overwrite, job_name=job.name)
    if run.resumed:
        logger.info("resuming the interrupted run in %s", run.directory)
    return run


@task(name="publish-run", **IO)
def publish_run(outputs: OutputSet, run: Run) -> str:
    """Make the finished run the published output set (one atomic switch)."""
    outputs.publish(run)
    return str(outputs.current)


@task(name="fit-preprocessing", cache_policy=NONE)
def fit_preprocessing(job: Job, run: Run, dataset: Dataset) -> Dataset:
    """Fit the preprocessing steps in one pass (resumed from a checkpoint when there is one);
    return the dataset seen through them."""
    pre = fit_preprocessor(job, dataset.data, job_fingerprint(job, dataset.identity), run.checkpoint_dir)
    return dataset.with_preprocessor(pre)


@task(name="fit-model", cache_policy=NONE)
def fit_model(job: Job, run: Run, dataset: Dataset, candidate: Candidate) -> FitResult:
    """Initialise and run EM on the preprocessed data, with per-iteration checkpoints."""
    return fit_em(job, dataset.model_input, candidate, job_fingerprint(job, dataset.identity), run.checkpoint_dir)


@dataclass
class CandidateResult:
    """A fitted candidate of the selection grid and its scores."""

    fit: FitResult
    scores: Scores


@task(name="fit-candidate", cache_policy=NONE)
def fit_candidate(job: Job, run: Run, dataset: Dataset, candidate: Candidate) -> CandidateResult:
    """Fit one candidate of the grid and score it (BIC, AIC, ICL) in one more pass."""
    fit = fit_em(job, dataset.model_input, candidate, job_fingerprint(job, dataset.identity), run.checkpoint_dir)
    return CandidateResult(fit, score(fit.model, dataset.model_input, max_points=job.report.max_plot_points))


def _reference_model(job: Job) -> tuple[GaussianMixture | None, str | None]:
    ref = job.labels.reference
    if ref is None:
        return None, None
    path = job.model_dir if ref == "previous" else Path(ref)
    if not path.exists():
        if ref == "previous":
            logger.info("no previous model in %s: components in canonical order", path)
            return None, None
        raise ModelNotFoundError(f"labels.reference: no saved model at {path}")
    return load_model(path), str(path)


def previous_labels(job: Job) -> pd.Series | None:
    """The published run's labels by sample id (from its first Parquet or Zarr sink), or None."""
    for sink in job.output.sinks:
        path = job.output_dir / "current" / os.path.relpath(sink.path, job.output_dir)
        labels = read_labels(path, sink.format, getattr(sink, "id_column", "sample_id"))
        if labels is not None:
            return labels
    return None


def overlap_with_previous(job: Job, model: GaussianMixture, Z: xr.DataArray) -> np.ndarray | None:
    """Contingency of ``model``'s labels against the published run's, on the sample ids they share.

    None when the reference is not ``previous``, the source has no sample ids, or the
    previous run wrote no Parquet/Zarr predictions.
    """
    if job.labels.reference != "previous" or "sample" not in Z.coords:
        return None
    reference = previous_labels(job)
    return None if reference is None else label_overlap(predict_results(model, Z), reference)


@task(name="label-components", **IO)
def label_model(job: Job, model: GaussianMixture, dataset: Dataset) -> tuple[GaussianMixture, LabelMatching]:
    """A copy of ``model`` with its components in canonical order or matched to the reference model,
    and the matching (``model`` is unchanged).

    With ``labels.reference: previous`` and sample ids shared with the published run's
    predictions, the components are matched by the rows they claim (one more pass over
    the data); otherwise by the distance between the Gaussians.
    """
    reference, name = _reference_model(job)
    overlap = None
    if reference is not None:
        overlap = overlap_with_previous(job, model, dataset.model_input)
    return label_components(model, order=job.labels.order, reference=reference, reference_name=name,
                            distance=job.labels.distance, overlap=overlap)


@task(name="save-model", **IO)
def save_model(job: Job, run: Run, model: GaussianMixture, preprocessor: Preprocessor, scores: Scores,
               identity: dict[str, Any], matching: LabelMatching | None,
               partitions: list[Partition] | None = None) -> str:
    """Write ``model/`` into the run (:mod:`pipeline.model_directory`): the model, its
    preprocessing, the training record, the job and, with a partition record, the identity
    of each partition. Written atomically; a resumed run replaces the copy an interrupted
    attempt wrote."""
    training = training_record(scores, labels=None if matching is None else matching.to_dict(),
                               provenance=make_provenance(job.settings(), identity))
    identities = None
    if partitions is not None and "partitions_" in model.__dict__:
        identities = partition_identities(partitions)
    write_model_directory(run.path(job.model_dir), model, preprocessor, training, job.settings(), identities)
    return str(job.model_dir)


#: a partition record larger than this (``P × K × d²`` float64 statistics) is not kept: a
#: later ``update`` then fits from scratch
MAX_RECORD_BYTES = 256 * 2**20


def record_size(model: GaussianMixture, partitions: list[Partition]) -> int:
    """Bytes of the partition record of ``model`` over ``partitions``."""
    k, d = model.n_components, model.n_features_in_
    per = k * (1 + d + (d * d if model.covariance_type in ("full", "tied") else d)) + d
    return 8 * per * len(partitions)


def partitions_to_record(model: GaussianMixture, dataset: Dataset) -> list[Partition] | None:
    """The source's partitions, when the model can keep a record of them (not too large)."""
    partitions = dataset.source.partitions(dataset.data)
    size = record_size(model, partitions)
    if size > MAX_RECORD_BYTES:
        logger.warning("the partition record would take %d MiB (%d partitions); it is not kept, so a later update "
                       "fits from scratch: use larger source chunks (chunk_bytes) or fewer, larger files", size >> 20,
                       len(partitions))
        return None
    return partitions


@task(name="load-model", **IO)
def load_saved_model(path: str) -> SavedModel:
    """Read a model directory written by the fit or select flow."""
    try:
        return read_model_directory(path)
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"predict.model: no saved model at {path} (model.json missing); run the fit job first"
        ) from None


@task(name="write-predictions", **IO)
def write_predictions(job: Job, run: Run, model: GaussianMixture, dataset: Dataset,
                      threshold: float | None = None, partitions: list[Partition] | None = None,
                      ) -> tuple[Scores, list[str], GaussianMixture]:
    """Predictions and scores in one pass: every sink (and, for predict, the anomaly flags)
    written from the same E-step of each chunk, and the scores the report needs; with
    ``partitions``, the sufficient statistics of each partition under ``model`` too (the
    partition record of a later ``update``).

    Each output goes into the run directory; a resumed run keeps the ones an interrupted
    attempt finished (each was written atomically, so an existing one is complete). On a
    ``distributed`` cluster the workers write their chunks. Returns the scores, the
    paths where the outputs are published, and ``model`` (with ``partitions``: a copy
    whose partition record holds those statistics).
    """
    results = predict_results(model, dataset.model_input, anomaly_threshold=threshold)
    settings = job.settings()
    targets = [(sink.path, sink.format, sink.sink_options(job)) for sink in job.output.sinks]
    if threshold is not None and job.predict is not None:
        targets.append((job.predict.anomalies, "parquet", {"overwrite": False}))
    sinks, written = [], []
    for path, kind, options in targets:
        written.append(path)
        target = run.path(path)
        if target.exists():
            logger.info("%s: written by the interrupted attempt of this run; kept", path)
            continue
        sinks.append(make_sink(kind, target, **options))
    values: list[Any] = [score_values(results, dataset.model_input, max_points=job.report.max_plot_points)]
    if partitions is not None:
        values.append(lazy_partition_statistics(dataset.model_input.data, model.params_.astype(np.float64),
                                                {p.key: (p.start, p.stop) for p in partitions}))
    computed = write_results(sinks, results, provenance=make_provenance(settings, dataset.identity),
                             settings=_without_none(settings), params=model_params(model), values=values)
    if partitions is not None:
        model = copy.deepcopy(model).record_partitions(computed[1])
    return scores_from(computed[0], model.params_.n_parameters(), threshold), written, model


@task(name="refresh-model", cache_policy=NONE)
def refresh_model(job: Job, model: GaussianMixture, dataset: Dataset, plan: RefreshPlan) -> FitResult:
    """Incremental EM from the published ``model``: visit the plan's partitions (new, changed,
    stalest) to ``tol``, subtract the removed ones (``GaussianMixture.refresh``)."""
    assert job.model is not None
    start = time.perf_counter()
    model = copy.deepcopy(model).set_params(tol=job.model.tol, max_iter=job.model.max_iter,
                                             reg_covar=job.model.reg_covar)
    logger.info("refresh: %s", plan.to_dict())
    model.refresh(dataset.model_input, plan.rows, remove=plan.removed)
    return FitResult(Candidate(model.n_components, model.covariance_type), model, None,
                     time.perf_counter() - start)


def _without_none(value: Any) -> Any:
    """The settings without null entries (AnnData's ``uns`` cannot store None)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


@task(name="publish-report", **IO)
def publish_report(job: Job, run: Run, report: RunReport) -> dict[str, str]:
    """Write the report files (and plots) into the run and publish the Prefect artifacts.

    Returns the files by name, at the paths where they are published (``<output>/report/``).
    """
    files = write_report(report, run.path(job.report_dir), plots=job.report.plots)
    if job.report.artifacts:
        publish_artifacts(report)
    return {name: str(job.report_dir / name) for name in files}
