"""The Prefect tasks of gmm-stream's flows: small, typed, taking the job and paths.

Every task takes the validated :class:`~flows.config.Job` (a config, not an open handle)
and opens what it needs itself; tasks that read or write files retry on transient I/O
errors (not on a missing file or an existing output). No task caches its inputs
(``cache_policy=NONE``): hashing arrays and models would cost more than it saves.

The plain functions (``open_data``, ``fingerprint``, ``fit_em``, ``score``) hold the
logic; the tasks only call them, so they can be tested without Prefect.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from prefect import task
from prefect.cache_policies import NONE

from gmm_stream import EMState, GaussianMixture
from gmm_stream.exceptions import GMMStreamError, ModelFormatError
from pipeline import (
    Preprocessor,
    formats,
    load_model,
    load_state,
    make_provenance,
    make_sink,
    make_source,
    model_files,
    model_params,
    predict_results,
    save_state,
)
from pipeline.atomic import atomic_output, disk_full
from pipeline.checkpoints import matching_checkpoint, write_fingerprint
from pipeline.output_set import OutputSet, Run
from pipeline.provenance import canonical_json
from pipeline.results import Results

from flows import progress
from flows.config import Job, ModelConfig
from flows.demo import ensure_synthetic
from flows.exceptions import ModelNotFoundError
from flows.labels import LabelMatching, contingency, label_components
from flows.preflight import output_set
from flows.report import RunReport, publish_artifacts, write_report

__all__ = [
    "Candidate",
    "FitResult",
    "Scores",
    "SavedModel",
    "open_data",
    "fingerprint",
    "fit_em",
    "score",
    "anomaly_threshold",
    "output_set",
    "run_fingerprint",
    "QUANTILE_LEVELS",
]

logger = logging.getLogger(__name__)

#: Levels at which the training log-density quantiles are stored beside the model.
QUANTILE_LEVELS = np.concatenate([[1e-4, 2e-4, 5e-4], np.linspace(0.001, 0.999, 999), [0.9995, 0.9998, 0.9999]])
_SKETCH_POINTS = 4001
#: ``n_init`` of every candidate of the ``select`` flow unless the job sets ``model.n_init``.
SELECT_N_INIT = 3
TRAINING_FILE = "training.json"
JOB_FILE = "job.json"


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


@dataclass
class Scores:
    """One pass over the (preprocessed) data with a fitted model.

    ``bic = -2 L + p ln n`` and ``aic = -2 L + 2 p`` (scikit-learn's, on the usable rows);
    ``icl = bic + 2 E`` with the entropy of the responsibilities
    ``E = -sum_i sum_k r_ik ln r_ik >= 0`` (Biernacki et al. 2000). Lower is better for all three.
    """

    n_rows: int
    n_empty: int
    loglik: float
    n_parameters: int
    bic: float
    aic: float
    icl: float
    entropy: float
    sizes: list[int]
    quantile_levels: list[float] = field(repr=False)
    quantiles: list[float] = field(repr=False)
    sample_X: np.ndarray = field(repr=False)
    sample_labels: np.ndarray = field(repr=False)
    n_anomalies: int | None = None
    threshold: float | None = None
    sample_index: np.ndarray | None = field(default=None, repr=False)  # rows of sample_X in the data

    def criterion(self, name: str) -> float:
        return float(getattr(self, name))

    def relabelled(self, order: list[int]) -> Scores:
        """The same scores after the components were put in ``order`` (``order[j]`` becomes ``j``)."""
        new_label = np.empty(len(order), dtype=np.int64)
        new_label[np.asarray(order)] = np.arange(len(order))
        labels = np.where(self.sample_labels >= 0, new_label[np.clip(self.sample_labels, 0, None)], -1)
        return replace(self, sizes=[self.sizes[i] for i in order], sample_labels=labels)


@dataclass
class SavedModel:
    """A model directory as the fit and select flows write it."""

    path: Path
    model: GaussianMixture
    preprocessor: Preprocessor
    training: dict[str, Any]


def open_data(job: Job) -> xr.DataArray:
    """The job's source, opened lazily as a ``(sample, feature)`` DataArray."""
    return make_source(job.source.format, job.source.path, **job.source.source_options()).open()


def source_identity(job: Job) -> dict[str, Any]:
    """Identity of the input (path, selection, shape, dtype, mtime) for provenance."""
    return make_source(job.source.format, job.source.path, **job.source.source_options()).identity()


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


def _sketch(block: np.ndarray) -> np.ndarray:
    """Evenly spaced order statistics of the finite values of a block, and their weights.

    Returns an array of length ``2 * _SKETCH_POINTS``: the values (NaN-padded), then their
    weights (zero-padded); each value stands for ``weight`` rows of the block.
    """
    values = np.sort(block[~np.isnan(block)])
    n = values.size
    out = np.full(2 * _SKETCH_POINTS, np.nan)
    out[_SKETCH_POINTS:] = 0.0
    if n <= _SKETCH_POINTS:
        out[:n], out[_SKETCH_POINTS:_SKETCH_POINTS + n] = values, 1.0
    else:
        idx = np.linspace(0, n - 1, _SKETCH_POINTS).round().astype(np.intp)
        out[:_SKETCH_POINTS], out[_SKETCH_POINTS:] = values[idx], n / _SKETCH_POINTS
    return out


def merge_quantiles(sketches: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles at ``levels`` from concatenated per-chunk sketches (exact when a chunk has <= 4001 values)."""
    parts = np.asarray(sketches, dtype=np.float64).reshape(-1, 2, _SKETCH_POINTS)
    values, weights = parts[:, 0].ravel(), parts[:, 1].ravel()
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    if values.size == 0:
        return np.full(levels.shape, np.nan)
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cum = (np.cumsum(weights) - 0.5 * weights) / weights.sum()  # mid-rank plotting positions
    return np.interp(levels, cum, values)


def score(model: GaussianMixture, Z: xr.DataArray, *, max_points: int = 5000, threshold: float | None = None,
          seed: int = 0) -> Scores:
    """Sizes, log-likelihood, BIC, AIC, ICL, log-density quantiles and a plot sample, in one pass."""
    res: Results = predict_results(model, Z)
    k = model.n_components
    logd = res.logdens
    proba = res.proba.astype(np.float64)
    plogp = da.where(proba > 0, proba * da.log(da.where(proba > 0, proba, 1.0)), 0.0)
    n = res.n_samples
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_points), replace=False))
    data = Z.data if isinstance(Z, xr.DataArray) else Z
    lazy = {
        "counts": da.bincount(res.labels + 1, minlength=k + 1),
        "loglik": da.nansum(logd),
        "n_rows": da.sum(~da.isnan(logd)),
        "plogp": da.nansum(plogp),
        "sketches": logd.map_blocks(_sketch, dtype=np.float64,
                                    chunks=((2 * _SKETCH_POINTS,) * logd.numblocks[0],)),
        "sample_X": data[idx],
        "sample_labels": res.labels[idx],
    }
    if threshold is not None:
        lazy["n_anomalies"] = da.sum(logd < threshold)
    (out,) = dask.compute(lazy)
    n_rows, loglik = int(out["n_rows"]), float(out["loglik"])
    p = model.params_.n_parameters()
    entropy = -float(out["plogp"])
    bic = -2.0 * loglik + p * np.log(n_rows)
    quantiles = merge_quantiles(out["sketches"], QUANTILE_LEVELS)
    return Scores(
        n_rows=n_rows, n_empty=int(out["counts"][0]), loglik=loglik, n_parameters=p,
        bic=float(bic), aic=float(-2.0 * loglik + 2 * p), icl=float(bic + 2.0 * entropy), entropy=entropy,
        sizes=[int(c) for c in out["counts"][1:]],
        quantile_levels=QUANTILE_LEVELS.tolist(), quantiles=quantiles.tolist(),
        sample_X=np.asarray(out["sample_X"]), sample_labels=np.asarray(out["sample_labels"]),
        n_anomalies=None if threshold is None else int(out["n_anomalies"]), threshold=threshold,
        sample_index=idx,
    )


def anomaly_threshold(training: dict[str, Any], quantile: float) -> float:
    """The training log-density at ``quantile`` (interpolated in the stored quantile table)."""
    table = training["logdens_quantiles"]
    return float(np.interp(quantile, table["levels"], table["values"]))


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
def prepare_source(job: Job) -> dict[str, Any]:
    """Generate the synthetic data if the job asks for it; return the input's identity."""
    if ensure_synthetic(job):
        logger.info("generated synthetic data at %s", job.source.path)
    return source_identity(job)


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
def fit_preprocessing(job: Job, run: Run, identity: dict[str, Any]) -> Preprocessor:
    """Fit the preprocessing steps out of core (resumed from a checkpoint when there is one)."""
    return fit_preprocessor(job, open_data(job), job_fingerprint(job, identity), run.checkpoint_dir)


@task(name="fit-model", cache_policy=NONE)
def fit_model(job: Job, run: Run, preprocessor: Preprocessor, identity: dict[str, Any],
              candidate: Candidate) -> FitResult:
    """Initialise and run EM on the preprocessed data, with per-iteration checkpoints."""
    Z = preprocessor.transform(open_data(job))
    return fit_em(job, Z, candidate, job_fingerprint(job, identity), run.checkpoint_dir)


@dataclass
class CandidateResult:
    """A fitted candidate of the selection grid and its scores."""

    fit: FitResult
    scores: Scores


@task(name="fit-candidate", cache_policy=NONE)
def fit_candidate(job: Job, run: Run, preprocessor: Preprocessor, identity: dict[str, Any],
                  candidate: Candidate) -> CandidateResult:
    """Fit one candidate of the grid and score it (BIC, AIC, ICL) in one more pass."""
    Z = preprocessor.transform(open_data(job))
    fit = fit_em(job, Z, candidate, job_fingerprint(job, identity), run.checkpoint_dir)
    return CandidateResult(fit, score(fit.model, Z, max_points=job.report.max_plot_points))


@task(name="score-model", cache_policy=NONE)
def score_model(job: Job, model: GaussianMixture, preprocessor: Preprocessor,
                threshold: float | None = None) -> Scores:
    """One pass: component sizes, BIC/AIC/ICL, log-density quantiles, anomalies, plot sample."""
    Z = preprocessor.transform(open_data(job))
    return score(model, Z, max_points=job.report.max_plot_points, threshold=threshold)


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
        if not path.exists():
            continue
        if sink.format == "parquet":
            frame = pd.read_parquet(path, columns=[sink.id_column, "label"])
            return pd.Series(frame["label"].to_numpy(), index=frame[sink.id_column].astype(str).to_numpy())
        if sink.format == "zarr":
            import zarr

            group = zarr.open_group(str(path), mode="r")
            name = "label" if "label" in group else "labels"
            ids = np.asarray(group["sample"][:]).astype(str)
            return pd.Series(np.asarray(group[name][:]), index=ids)
    return None


def overlap_with_previous(job: Job, model: GaussianMixture, Z: xr.DataArray) -> np.ndarray | None:
    """Contingency of ``model``'s labels against the published run's, on the sample ids they share.

    None when the reference is not ``previous``, the source has no sample ids, or the
    previous run wrote no Parquet/Zarr predictions.
    """
    if job.labels.reference != "previous" or "sample" not in Z.coords:
        return None
    reference = previous_labels(job)
    if reference is None:
        return None
    res = predict_results(model, Z)
    labels, ids = dask.compute(res.labels, res.sample_ids)
    ids = np.asarray(ids).astype(str)
    shared = pd.Index(reference.index).get_indexer(ids)
    found = shared >= 0
    if not found.any():
        return None
    ref = reference.to_numpy()[shared[found]]
    k_ref = int(ref.max()) + 1 if ref.size else 0
    return contingency(np.asarray(labels)[found], ref, model.n_components, max(k_ref, 1))


@task(name="label-components", **IO)
def label_model(job: Job, model: GaussianMixture, preprocessor: Preprocessor) -> LabelMatching:
    """Put the components in canonical order, or match them to the reference model (in place).

    With ``labels.reference: previous`` and sample ids shared with the published run's
    predictions, the components are matched by the rows they claim (one more pass over
    the data); otherwise by the distance between the Gaussians.
    """
    reference, name = _reference_model(job)
    overlap = None
    if reference is not None:
        overlap = overlap_with_previous(job, model, preprocessor.transform(open_data(job)))
    return label_components(model, order=job.labels.order, reference=reference, reference_name=name,
                            distance=job.labels.distance, overlap=overlap)


@task(name="save-model", **IO)
def save_model(job: Job, run: Run, model: GaussianMixture, preprocessor: Preprocessor, scores: Scores,
               identity: dict[str, Any], matching: LabelMatching | None) -> str:
    """Write ``model/`` into the run: the model, its preprocessing, ``training.json`` and ``job.json``.

    Written atomically; a resumed run replaces the copy an interrupted attempt wrote.
    """
    training = {
        **formats.stamp("training"),
        "n_rows": scores.n_rows,
        "n_empty": scores.n_empty,
        "sizes": scores.sizes,
        "loglik": scores.loglik,
        "bic": scores.bic,
        "aic": scores.aic,
        "icl": scores.icl,
        "logdens_quantiles": {"levels": scores.quantile_levels, "values": scores.quantiles},
        "labels": None if matching is None else matching.to_dict(),
        "provenance": make_provenance(job.settings(), identity),
    }
    with atomic_output(run.path(job.model_dir), overwrite=True) as tmp:
        model_files.save_model(model, tmp)
        preprocessor.save(tmp)
        (tmp / TRAINING_FILE).write_text(formats.json_text(training))
        (tmp / JOB_FILE).write_text(formats.json_text(job.settings()))
    return str(job.model_dir)


@task(name="load-model", **IO)
def load_saved_model(path: str) -> SavedModel:
    """Read a model directory written by the fit or select flow."""
    directory = Path(path)
    if not (directory / "model.json").exists():
        raise ModelNotFoundError(
            f"predict.model: no saved model at {directory} (model.json missing); run the fit job first"
        )
    if not os.path.lexists(directory / TRAINING_FILE):
        raise ModelFormatError(f"{directory} has no {TRAINING_FILE}; it was not written by a gmm-stream flow")
    src = model_files.SavedFile(directory, TRAINING_FILE)
    training = model_files.read_json(src)
    formats.check_format(training, "training", src.path)
    return SavedModel(directory, load_model(directory), Preprocessor.load(directory), training)


def _write_anomaly_part(path: Path, ids: np.ndarray, logdens: np.ndarray, threshold: float,
                        metadata: dict[bytes, bytes]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = np.asarray(ids)
    table = pa.table({
        "sample_id": pa.array(ids.tolist() if ids.dtype.kind in "OUST" else ids),
        "logdens": pa.array(logdens, type=pa.float64()),
        "anomaly": pa.array(logdens < threshold, type=pa.bool_()),
    }).replace_schema_metadata(metadata)
    pq.write_table(table, path)
    return len(logdens)


def write_anomalies(path: Path, results: Results, threshold: float, quantile: float,
                    provenance: dict[str, Any], overwrite: bool) -> Path:
    """Anomaly flags as a Parquet dataset (``sample_id``, ``logdens``, ``anomaly``), one file per chunk.

    A row is an anomaly when its log-density is below ``threshold`` (the training
    log-density at ``quantile``); a row with no observed value (NaN) is not flagged.

    .. note:: An adapter: the pipeline's sinks write labels, probabilities and
       log-densities, but have no place for extra per-row columns yet.
    """
    stamp = {"encoding-type": "gmm_stream_anomalies", "encoding-version": "0.1.0", "threshold": threshold,
             "quantile": quantile, "provenance": provenance}
    metadata = {b"gmm_stream": canonical_json(stamp).encode()}
    aligned = results.aligned()
    with atomic_output(path, overwrite=overwrite) as tmp, dask.config.set(scheduler="threads"):
        tmp.mkdir()
        parts = [dask.delayed(_write_anomaly_part)(tmp / f"part-{i:05d}.parquet", ids, logd, threshold, metadata)
                 for i, (ids, logd) in enumerate(zip(aligned.ids_or_row_numbers().to_delayed().ravel(),
                                                     aligned.logdens.to_delayed().ravel()))]
        dask.compute(*parts)
    return path


@task(name="write-predictions", **IO)
def write_predictions(job: Job, run: Run, model: GaussianMixture, preprocessor: Preprocessor,
                      identity: dict[str, Any], threshold: float | None = None) -> list[str]:
    """Write labels, probabilities and log-densities to every sink (and anomaly flags for predict).

    Each output goes into the run directory; a resumed run keeps the ones an interrupted
    attempt finished (each was written atomically, so an existing one is complete).
    Returns the paths where they are published.
    """
    Z = preprocessor.transform(open_data(job))
    results = predict_results(model, Z)
    settings = job.settings()
    provenance = make_provenance(settings, identity)
    params = model_params(model)
    written = []
    for sink in job.output.sinks:
        written.append(sink.path)
        target = run.path(sink.path)
        if target.exists():
            logger.info("%s: written by the interrupted attempt of this run; kept", sink.path)
            continue
        options: dict[str, Any] = {"overwrite": False}
        if sink.format == "anndata":
            options.update(input_path=job.source.path, key_added=job.output.key_added)
        elif sink.format == "parquet":
            options.update(id_column=sink.id_column, compression=sink.compression)
        else:
            options.update(zarr_format=sink.zarr_format)
        make_sink(sink.format, target, **options).write(
            results, provenance=provenance, settings=_without_none(settings), params=params)
    if threshold is not None and job.predict is not None:
        written.append(job.predict.anomalies)
        target = run.path(job.predict.anomalies)
        if not target.exists():
            write_anomalies(target, results, threshold, job.predict.anomaly_quantile, provenance, False)
    return written


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
