"""The pydantic models of a job: :class:`Job` and its sections, checked before any data is read.

The rules a job file follows are in the package docstring (:mod:`flows.config`). The choices
and rules of the lower layers are theirs, not re-stated here: the covariance types and
``init_params`` are :mod:`gmm_stream`'s, the ``*_init`` arrays are checked by
:func:`gmm_stream.check_initial_parameters` (what ``fit`` applies), the order of the
preprocessing steps is :data:`pipeline.preprocess.STEP_ORDER`, and the selection of each
source and the options of each sink are the options model of its pipeline class
(:mod:`pipeline.options`), read with the job's strictness.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flows.config.errors import _Keyed, _non_finite, _not_finite
from flows.config.limits import (
    MAX_CHECKPOINT_EVERY,
    MAX_COMPONENTS,
    MAX_FEATURES,
    MAX_GRID,
    MAX_ITER,
    MAX_N_INIT,
    MAX_PLOT_POINTS,
    MAX_ROWS,
    MAX_SEED,
    MAX_SYNTHETIC_GRID,
    MAX_TIMEOUT,
    THREADS_PER_CORE,
    ByteSize,
    MemoryLimit,
    _bytes,
    _cpu_count,
    _max_threads,
    _parse_size,
    _physical_memory,
)
from flows.config.paths import InputPath, OutputPath, _input_path, _relative_to, _resolve, expand_env
from gmm_stream import COVARIANCE_TYPES, INIT_PARAMS, check_initial_parameters
from gmm_stream.exceptions import InvalidParameterError
from pipeline.preprocess import STEP_ORDER
from pipeline.sinks import SINKS, AnnDataSinkOptions, ParquetSinkOptions, ZarrSinkOptions
from pipeline.sinks.anndata_sink import KeyAdded
from pipeline.sources import AnnDataSourceOptions, ParquetSourceOptions, ZarrSourceOptions

__all__ = [
    "Job", "SyntheticConfig", "ZarrSelection", "ParquetSelection", "AnnDataSelection", "ZarrSource",
    "ParquetSource", "AnnDataSource", "SourceConfig", "Log1pStep", "StandardizeStep", "PCAStep", "Step",
    "ModelConfig", "SelectionConfig", "PredictConfig", "ZarrSinkConfig", "ParquetSinkConfig",
    "AnnDataSinkConfig", "SinkConfig", "OutputConfig", "ThreadsCompute", "LocalClusterCompute",
    "SchedulerCompute", "ComputeConfig", "CheckpointConfig", "LabelsConfig", "ReportConfig",
    "COVARIANCE_TYPES", "CRITERIA", "STEP_ORDER", "RESERVED_OUTPUT_NAMES",
    "CovarianceType", "Int", "PositiveInt", "NonNegInt", "Seed", "Bool", "Name", "Str",
]

CRITERIA = ("bic", "aic", "icl")

#: Names the run layout uses at the top of ``output.directory``; sinks may not go under them.
RESERVED_OUTPUT_NAMES = ("runs", "current", "model", "report", "checkpoint")

CovarianceType = Literal[COVARIANCE_TYPES]
InitParams = Literal[INIT_PARAMS]
Int = Annotated[int, Field(strict=True)]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
Seed = Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)]
Bool = Annotated[bool, Field(strict=True)]
Name = Annotated[str, Field(strict=True, min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Str = Annotated[str, Field(strict=True, min_length=1)]


def _scheduler_address(value: str) -> str:
    value = expand_env(value)
    if not re.fullmatch(r"(tcp|tls|ucx|ws|wss|inproc)://[^\s/:]+(:\d+)?/?", value):
        raise ValueError(f"must be a Dask scheduler address like 'tcp://10.0.0.5:8786', got {value!r}")
    return value


class _Model(BaseModel):
    # allow_inf_nan=False: every float field (and float items of lists) refuses inf and nan.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------- source


class SyntheticConfig(_Model):
    """Synthetic data written to ``source.path`` on first run when it does not exist (the demo)."""

    n_samples: PositiveInt = Field(20_000, le=MAX_ROWS, description="Rows to generate.")
    n_features: PositiveInt = Field(4, le=MAX_FEATURES, description="Columns to generate.")
    n_components: PositiveInt = Field(4, le=MAX_COMPONENTS, description="Gaussian clusters in the data.")
    separation: float = Field(6.0, gt=0, description="Distance scale between cluster centres (in cluster SDs).")
    missing_fraction: float = Field(
        0.0, ge=0, lt=0.5, description="Fraction of entries set to NaN (never a whole row).")
    seed: Seed = Field(0, description="Random seed: the same seed writes the same data.")

    @model_validator(mode="after")
    def _enough_rows(self) -> SyntheticConfig:
        if self.n_samples < self.n_components:
            raise _Keyed([("n_samples", f"must be >= n_components ({self.n_components}), got {self.n_samples}")])
        return self

    @model_validator(mode="after")
    def _fits_in_memory(self) -> SyntheticConfig:
        """The data are generated in memory, centres on a grid: both must fit this machine."""
        k, d, n = self.n_components, self.n_features, self.n_samples
        side = int(np.ceil(k ** (1.0 / d))) if d > 1 else k
        if side**d > MAX_SYNTHETIC_GRID:
            raise _Keyed([("n_features", f"{d} features x {k} components need a grid of {side}**{d} candidate "
                                         f"centres, more than {MAX_SYNTHETIC_GRID}; lower n_features")])
        need = n * d * 17  # X (float64), the missing mask and its random draws
        memory = _physical_memory()
        if need > memory // 2:
            raise _Keyed([("n_samples", f"{n} rows x {d} features need about {_bytes(need)} to generate, more "
                                        f"than half of this machine's physical memory ({_bytes(memory)} / 2 = "
                                        f"{_bytes(memory // 2)}); lower n_samples or n_features")])
        return self


class _Options(_Model):
    """A section that is a pipeline options model (:mod:`pipeline.options`): its fields and
    rules, read strictly (``true``/``false`` only, no numbers for names) as the rest of a job."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False, strict=True)


class ZarrSelection(ZarrSourceOptions, _Options):
    """What to read inside a Zarr store (see :class:`pipeline.sources.ZarrSource`)."""


class ParquetSelection(ParquetSourceOptions, _Options):
    """Which Parquet columns are the features, and which holds the sample ids."""


class AnnDataSelection(AnnDataSourceOptions, _Options):
    """``X``, a layer, or an ``obsm`` matrix (e.g. ``X_pca``) of an AnnData file."""


class _SourceBase(_Model):
    path: InputPath = Field(description="Local path or fsspec URL; $VAR and ${VAR:-default} expanded.")
    chunk_rows: Annotated[int, Field(strict=True, ge=1, le=MAX_ROWS)] | None = Field(
        None, description="Rows per chunk (wins over chunk_bytes).")
    chunk_bytes: ByteSize | None = Field(
        None, description="Target bytes per row chunk, e.g. '128MiB' (at most half the physical memory).")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for URLs.")

    @field_validator("chunk_bytes")
    @classmethod
    def _chunk_fits(cls, value: int | str | None) -> int | str | None:
        if value is None or value == "auto":
            return value
        memory = _physical_memory()
        if _parse_size(value) > memory // 2:
            raise ValueError(f"{value!r} is more than half of this machine's physical memory ({_bytes(memory)} / 2 "
                             f"= {_bytes(memory // 2)}); a chunk is held in memory: lower chunk_bytes")
        return value

    @field_validator("storage_options")
    @classmethod
    def _finite_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems = [(key, _not_finite(number)) for key, number in _non_finite(value)]
        if problems:
            raise _Keyed(problems)
        return value

    def source_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`pipeline.sources.make_source` (selection and chunking)."""
        options: dict[str, Any] = {k: v for k, v in self.selection.model_dump().items() if v is not None}
        if self.chunk_rows is not None:
            options["chunk_rows"] = self.chunk_rows
        if self.chunk_bytes is not None:
            options["chunk_bytes"] = self.chunk_bytes
        if self.storage_options:
            options["storage_options"] = dict(self.storage_options)
        return options


class ZarrSource(_SourceBase):
    format: Literal["zarr"]
    selection: ZarrSelection = Field(default_factory=ZarrSelection)
    synthetic: SyntheticConfig | None = Field(
        None, description="Generate synthetic data at path if it is missing (array X, ids, names).")

    @model_validator(mode="after")
    def _synthetic_array(self) -> ZarrSource:
        if self.synthetic is not None:
            if self.selection.variable is not None or self.selection.array not in (None, "X"):
                raise _Keyed([("selection", "synthetic data are written as array 'X': select {array: X}")])
            self.selection.array = "X"
        return self


class ParquetSource(_SourceBase):
    format: Literal["parquet"]
    selection: ParquetSelection = Field(default_factory=ParquetSelection)
    synthetic: SyntheticConfig | None = Field(
        None, description="Generate synthetic data at path if it is missing (columns sample_id, x0, x1, ...).")

    @model_validator(mode="after")
    def _synthetic_ids(self) -> ParquetSource:
        if self.synthetic is not None and self.selection.id_column is None:
            self.selection.id_column = "sample_id"
        return self


class AnnDataSource(_SourceBase):
    format: Literal["anndata"]
    selection: AnnDataSelection = Field(default_factory=AnnDataSelection)

    @property
    def synthetic(self) -> None:
        return None


SourceConfig = Annotated[ZarrSource | ParquetSource | AnnDataSource, Field(discriminator="format")]


# ----------------------------------------------------------------------- preprocessing


def _step_from_name(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class Log1pStep(_Model):
    name: Literal["log1p"]


class StandardizeStep(_Model):
    name: Literal["standardize"]


class PCAStep(_Model):
    name: Literal["pca"]
    n_components: PositiveInt = Field(le=MAX_FEATURES, description="Principal axes kept.")
    n_oversamples: NonNegInt = Field(10, le=MAX_FEATURES, description="Extra random axes of the sketch.")
    n_power_iter: NonNegInt = Field(4, le=100, description="Power iterations of the randomized SVD.")
    random_state: Seed = 0


Step = Annotated[
    Log1pStep | StandardizeStep | PCAStep,
    Field(discriminator="name"),
    BeforeValidator(_step_from_name, json_schema_input_type=(
        Literal["log1p", "standardize"] | Log1pStep | StandardizeStep | PCAStep)),
]


# ------------------------------------------------------------------------------ model


def _as_array(value: Any, key: str) -> np.ndarray:
    """``value`` as a float array; a :class:`_Keyed` error at ``key`` (or its first non-finite entry)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise _Keyed([(key, "must be a (nested) list of numbers of regular shape")]) from None
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        at = tuple(int(i) for i in bad[0])
        raise _Keyed([(".".join([key, *map(str, at)]), _not_finite(float(array[at])))])
    return array


#: The initial parameters a job may give, in the order ``fit`` checks them.
_INITS = ("weights_init", "means_init", "precisions_init")


def _init_problems(covariance_type: str, n_components: int,
                   arrays: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """``(name, message)`` for each ``*_init`` array that ``fit`` would refuse.

    Each is checked on its own by :func:`gmm_stream.check_initial_parameters`, as ``fit``
    checks it, so the rules and messages are the estimator's. The data's features are not
    known before the data are read: ``precisions_init`` is checked against the features of
    ``means_init`` when that passed, else against its own.
    """
    problems: list[tuple[str, str]] = []
    means: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        given = {**means, name: array} if name == "precisions_init" else {name: array}
        try:
            check_initial_parameters(covariance_type, n_components, None, **given)
        except InvalidParameterError as err:
            problems.append((name, str(err)))
        else:
            if name == "means_init":
                means = {"means_init": array}
    return problems


class ModelConfig(_Model):
    """The estimator's parameters (:class:`gmm_stream.GaussianMixture`, scikit-learn's names).

    ``random_state`` defaults to 0 (not None) so that a job gives the same model every time;
    set it to null for a fresh random start.
    """

    n_components: PositiveInt = Field(1, le=MAX_COMPONENTS, description="Number of mixture components.")
    covariance_type: CovarianceType = "full"
    tol: float = Field(1e-3, ge=0, description="EM stops when the lower bound changes by less than this.")
    reg_covar: float = Field(1e-6, ge=0, description="Added to every covariance diagonal.")
    max_iter: PositiveInt = Field(100, le=MAX_ITER, description="EM iterations at most.")
    n_init: PositiveInt = Field(1, le=MAX_N_INIT, description="EM restarts; the best is kept.")
    init_params: InitParams = "kmeans"
    weights_init: list[float] | None = Field(None, description="Shape (n_components,), sums to 1.")
    means_init: list[list[float]] | None = Field(None, description="Shape (n_components, n_features).")
    precisions_init: list[Any] | None = Field(
        None, description="full (K, d, d), tied (d, d), diag (K, d), spherical (K,)."
    )
    random_state: Seed | None = Field(0, description="Seed (below 2**32); null for a different start each run.")
    verbose: NonNegInt = 0
    verbose_interval: PositiveInt = Field(10, le=MAX_ITER, description="EM iterations between messages.")
    init_max_samples: PositiveInt = Field(
        100_000, le=MAX_ROWS, description="Rows the initialisation may hold in memory.")
    sample_first: Bool = Field(
        True, description="Above init_max_samples rows, converge on the in-memory sample first, then finish with "
                          "full-data passes (the same batch-EM fixed point in fewer passes).")

    @model_validator(mode="after")
    def _check_inits(self) -> ModelConfig:
        """The ``*_init`` arrays: numbers of regular shape, finite, then ``fit``'s rules."""
        problems: list[tuple[str, str]] = []
        arrays: dict[str, np.ndarray] = {}
        for name in _INITS:
            value = getattr(self, name)
            if value is not None:
                try:
                    arrays[name] = _as_array(value, name)
                except _Keyed as err:
                    problems += err.problems
        problems += _init_problems(self.covariance_type, self.n_components, arrays)
        if problems:
            raise _Keyed(problems)
        return self

    def estimator_params(self) -> dict[str, Any]:
        """Keyword arguments of :class:`gmm_stream.GaussianMixture`."""
        params = self.model_dump()
        for key in ("weights_init", "means_init", "precisions_init"):
            if params[key] is not None:
                params[key] = np.asarray(params[key], dtype=np.float64)
        return params


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class SelectionConfig(_Model):
    """Model selection: every ``(n_components, covariance_type)`` of the grid is fitted."""

    n_components: list[Annotated[int, Field(strict=True, ge=1, le=MAX_COMPONENTS)]] = Field(
        min_length=1, max_length=MAX_GRID, description="Candidate numbers of components.")
    covariance_types: list[CovarianceType] = Field(["full"], min_length=1, description="Candidate covariance types.")
    criterion: Annotated[Literal["bic", "aic", "icl"], BeforeValidator(_lower)] = Field(
        "bic", description="bic, aic or icl (lower is better for all three)."
    )

    @model_validator(mode="after")
    def _unique(self) -> SelectionConfig:
        problems = []
        for key in ("n_components", "covariance_types"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                problems.append((key, f"values are repeated: {values}"))
        if problems:
            raise _Keyed(problems)
        return self


class PredictConfig(_Model):
    """Scoring new data with a saved model (flow ``predict``)."""

    model: InputPath = Field(description="Directory of a model saved by the fit or select flow.")
    anomaly_quantile: float = Field(
        0.01, gt=0, lt=1, description="Rows below this quantile of the training log-density are anomalies."
    )
    anomalies: OutputPath = Field(
        "anomalies.parquet", description="Anomaly flags (Parquet); must be inside output.directory.")


class UpdateConfig(_Model):
    """Refreshing a fitted model with the data added since (flow ``update``)."""

    stale_partitions: Annotated[int, Field(strict=True, ge=0, le=MAX_ROWS)] = Field(
        0, description="Unchanged partitions to read again besides the new and changed ones, those visited "
                       "longest ago first.")


# ---------------------------------------------------------------------------- outputs


class _SinkBase(_Options):
    path: OutputPath = Field(
        description="Output path, relative to output.directory; an absolute path must be inside it.")

    def sink_options(self, job: Job, *, overwrite: bool = False) -> dict[str, Any]:
        """Keyword arguments of :func:`pipeline.sinks.make_sink` for this sink of ``job``.

        ``make_sink(self.format, path, **self.sink_options(job))`` builds the sink; the path
        is the caller's (where the run writes it, e.g. inside the run directory).

        Parameters
        ----------
        job : Job
            The job this sink belongs to (an AnnData sink takes its input and ``key_added``
            from it).
        overwrite : bool, default False
            Whether the sink may replace an existing output at its path. A run writes its
            outputs into a new run directory and publishes them together, so its sinks never
            replace one.

        Returns
        -------
        dict
            ``overwrite`` and the options of the pipeline sink class of ``self.format``
            (its ``options_model``): ``zarr_format`` for Zarr; ``id_column`` and
            ``compression`` for Parquet; ``input_path`` (``job.source.path``) and
            ``key_added`` (``job.output.key_added``) for AnnData.
        """
        fields = SINKS[self.format].options_model.model_fields
        own = {name: getattr(self, name) for name in fields if name in type(self).model_fields}
        return {**own, **self._job_options(job), "overwrite": overwrite}

    def _job_options(self, job: Job) -> dict[str, Any]:
        """Options of the sink that come from elsewhere in the job (none by default)."""
        return {}


class ZarrSinkConfig(ZarrSinkOptions, _SinkBase):
    format: Literal["zarr"]


class ParquetSinkConfig(ParquetSinkOptions, _SinkBase):
    format: Literal["parquet"]


class AnnDataSinkConfig(_SinkBase):
    """A copy of the input AnnData with the results added under ``output.key_added``."""

    format: Literal["anndata"]

    def _job_options(self, job: Job) -> dict[str, Any]:
        return {"input_path": job.source.path, "key_added": job.output.key_added}


SinkConfig = Annotated[ZarrSinkConfig | ParquetSinkConfig | AnnDataSinkConfig, Field(discriminator="format")]


class OutputConfig(_Model):
    """Where results go: ``directory`` holds ``model/``, ``report/``, ``checkpoint/`` and the sinks."""

    directory: InputPath = Field(description="Output directory of the job.")
    sinks: list[SinkConfig] = Field(
        default_factory=list, description="Per-row results (labels, probabilities, log-density).")
    key_added: Annotated[KeyAdded, Field(strict=True)] = Field(
        AnnDataSinkOptions.model_fields["key_added"].default,
        description="Name of the results in AnnData (obs[key_added], obsm[key_added_proba], uns[key_added]).")
    overwrite: Bool = Field(False, description="Replace existing outputs.")


# ---------------------------------------------------------------------------- compute


class ThreadsCompute(_Model):
    """Dask's threaded scheduler in the flow's process (the default)."""

    kind: Literal["threads"] = "threads"
    num_workers: PositiveInt | None = Field(
        None, description="Threads (default: one per core; at most 4 per core).")

    @field_validator("num_workers")
    @classmethod
    def _threads_fit(cls, value: int | None) -> int | None:
        if value is not None and value > _max_threads():
            raise ValueError(f"{value} threads is more than {THREADS_PER_CORE} per core of this machine "
                             f"({_cpu_count()} cores, at most {_max_threads()}); lower num_workers")
        return value


class LocalClusterCompute(_Model):
    """A ``distributed.LocalCluster`` started for the run and stopped after it."""

    kind: Literal["local_cluster"]
    n_workers: PositiveInt = 2
    threads_per_worker: PositiveInt = 1
    memory_limit: MemoryLimit = Field(
        "auto", description="Per worker, e.g. '4GiB' ('auto': share of the RAM; 0: no limit).")
    processes: Bool = Field(True, description="Workers as processes (true) or threads of this process.")

    @model_validator(mode="after")
    def _fits_the_machine(self) -> LocalClusterCompute:
        problems: list[tuple[str, str]] = []
        n, t = self.n_workers, self.threads_per_worker
        if n * t > _max_threads():
            problems.append(("n_workers", f"n_workers x threads_per_worker = {n} x {t} = {n * t} threads, more "
                                          f"than {THREADS_PER_CORE} per core of this machine ({_cpu_count()} cores, "
                                          f"at most {_max_threads()}); lower n_workers or threads_per_worker"))
        if self.memory_limit != "auto":
            per_worker = _parse_size(self.memory_limit)
            total, memory = per_worker * n, _physical_memory()
            if total > memory:
                problems.append(("memory_limit", f"{self.memory_limit!r} per worker x {n} workers = {_bytes(total)}, "
                                                 f"more than this machine's physical memory ({_bytes(memory)}); "
                                                 "lower memory_limit or n_workers, or write 'auto'"))
        if problems:
            raise _Keyed(problems)
        return self


class SchedulerCompute(_Model):
    """An existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``."""

    kind: Literal["scheduler"]
    address: Annotated[str, Field(strict=True), AfterValidator(_scheduler_address)] = Field(
        description="Scheduler address; env vars expanded (e.g. ${DASK_SCHEDULER_ADDRESS})."
    )
    timeout: float = Field(30.0, gt=0, le=MAX_TIMEOUT, description="Seconds to wait for the connection (<= 3600).")


ComputeConfig = Annotated[ThreadsCompute | LocalClusterCompute | SchedulerCompute, Field(discriminator="kind")]


class CheckpointConfig(_Model):
    """EM checkpoints in ``<output.directory>/checkpoint``: a re-run resumes from the last one."""

    enabled: Bool = True
    every: PositiveInt = Field(
        1, le=MAX_CHECKPOINT_EVERY, description="Write a checkpoint every this many EM iterations.")


def _reference(value: str, info: ValidationInfo) -> str:
    return value if value == "previous" else _input_path(value, info)


class LabelsConfig(_Model):
    """Label continuity: canonical component order, and matching to a reference model.

    ``reference`` is a saved model directory (e.g. yesterday's), or ``previous``: the model
    currently in ``<output.directory>/model``, before this run replaces it.
    """

    order: Literal["weight", "none"] = Field("weight", description="Canonical order: decreasing weight.")
    reference: Annotated[str, Field(strict=True, min_length=1), AfterValidator(_reference)] | None = Field(
        None, description="A saved model directory, or 'previous'."
    )
    distance: Literal["bhattacharyya", "mahalanobis"] = Field(
        "bhattacharyya", description="Distance between components used by the Hungarian matching."
    )


class ReportConfig(_Model):
    """The run report (Prefect artifacts and files in ``<output.directory>/report``)."""

    artifacts: Bool = Field(True, description="Publish Prefect artifacts.")
    plots: Bool = Field(True, description="Write PNG plots.")
    max_plot_points: Annotated[int, Field(strict=True, ge=100, le=MAX_PLOT_POINTS)] = Field(
        5000, description="Rows in the scatter plot.")


# -------------------------------------------------------------------------------- job


class Job(_Model):
    """A gmm-stream job: one YAML file, one Prefect flow run."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False, title="gmm-stream job")

    version: Literal[1] = Field(1, description="Schema version of the job file.")
    name: Name = Field("gmm-stream", description="Job name (letters, digits, '.', '_', '-').")
    description: str | None = None
    flow: Literal["fit", "predict", "select", "update"] = Field("fit", description="Which flow runs the job.")
    source: SourceConfig
    preprocessing: list[Step] = Field(
        default_factory=list, description="Steps, in the order log1p, standardize, pca (each optional)."
    )
    model: ModelConfig | None = Field(None, description="The estimator (flows fit and select).")
    selection: SelectionConfig | None = Field(None, description="The grid (flow select).")
    predict: PredictConfig | None = Field(None, description="The saved model and anomaly rule (flow predict).")
    update: UpdateConfig | None = Field(None, description="How a refresh reads the data (flow update).")
    output: OutputConfig
    compute: ComputeConfig = Field(default_factory=ThreadsCompute)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("preprocessing")
    @classmethod
    def _order(cls, steps: list[Any]) -> list[Any]:
        names = [s.name for s in steps]
        ranks = [STEP_ORDER.index(n) for n in names]
        if ranks != sorted(set(ranks)):
            raise ValueError(f"steps {names} must each appear once, in the order {list(STEP_ORDER)}")
        return steps

    @model_validator(mode="after")
    def _cross_checks(self) -> Job:
        problems = self._flow_sections() + self._output_problems()
        written = dict(self._output_paths())
        self._resolve_output_paths()
        problems += self._output_locations(written)
        if problems:
            raise _Keyed(problems)
        return self

    def _flow_sections(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        flow = self.flow
        if flow in ("fit", "update") and self.model is None:
            problems.append(("model", f"required for flow {flow!r}"))
        if flow not in ("fit", "update") and self.update is not None:
            problems.append(("update", f"only used by flows 'fit' and 'update' (flow is {flow!r})"))
        if flow == "select" and self.selection is None:
            problems.append(("selection", "required for flow 'select'"))
        if flow == "predict" and self.predict is None:
            problems.append(("predict", "required for flow 'predict'"))
        if flow != "select" and self.selection is not None:
            problems.append(("selection", f"only used by flow 'select' (flow is {flow!r})"))
        if flow != "predict" and self.predict is not None:
            problems.append(("predict", f"only used by flow 'predict' (flow is {flow!r})"))
        if flow == "predict":
            if self.model is not None:
                problems.append(("model", "flow 'predict' uses the saved model (predict.model); remove this key"))
            if self.preprocessing:
                problems.append(("preprocessing",
                                 "flow 'predict' uses the preprocessing saved with the model; remove this key"))
            if self.labels.reference is not None:
                problems.append(("labels.reference", "flow 'predict' keeps the saved model's labels; remove this key"))
        if flow == "select" and self.model is not None:
            for key in ("n_components", "covariance_type"):
                if key in self.model.model_fields_set:
                    problems.append((f"model.{key}", "set by the selection grid in flow 'select'; remove this key"))
        return problems

    def _output_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for i, sink in enumerate(self.output.sinks):
            if sink.format == "anndata" and self.source.format != "anndata":
                problems.append((f"output.sinks.{i}.format",
                                 f"an anndata sink needs an anndata source (source.format is {self.source.format!r})"))
        if self.labels.reference == "previous" and not self.output.overwrite:
            problems.append(("labels.reference",
                             "'previous' replaces the model in place: it needs output.overwrite: true"))
        return problems

    def _resolve_output_paths(self) -> None:
        base = self.output.directory
        if base is None or not os.path.isabs(base):
            return
        for sink in self.output.sinks:
            sink.path = _resolve(sink.path, base)
        if self.predict is not None:
            self.predict.anomalies = _resolve(self.predict.anomalies, base)

    def _output_paths(self) -> list[tuple[str, str]]:
        """``(key, path)`` of every per-row output: the sinks, then ``predict.anomalies``."""
        items = [(f"output.sinks.{i}.path", sink.path) for i, sink in enumerate(self.output.sinks)]
        if self.predict is not None:
            items.append(("predict.anomalies", self.predict.anomalies))
        return items

    def _output_locations(self, written: Mapping[str, str]) -> list[tuple[str, str]]:
        """Outputs (resolved) inside ``output.directory``, off the reserved names, apart from each other.

        ``written`` maps each key to its path as the job wrote it (for the messages).
        """
        problems: list[tuple[str, str]] = []
        base = self.output.directory
        reserved = ", ".join(RESERVED_OUTPUT_NAMES)
        placed: list[tuple[str, str]] = []  # (key, path relative to base)
        for key, path in self._output_paths():
            rel = _relative_to(path, base)
            if rel is None or rel == ".":
                what = "is output.directory itself; it " if rel == "." else ""
                problems.append((key, f"{what}must be inside output.directory ({base}): "
                                      "a run's outputs are published together"))
                continue
            first = rel.split("/")[0]
            if first.lower() in RESERVED_OUTPUT_NAMES or first.startswith("."):
                problems.append((key, f"{first!r} is a name reserved for the run layout in output.directory "
                                      f"({reserved} and names starting with '.'); choose another path than "
                                      f"{written[key]!r}"))
                continue
            for other, other_rel in placed:
                if rel == other_rel:
                    problems.append((key, f"same path as {other}: {written[key]!r}"))
                    break
                if rel.startswith(other_rel + "/") or other_rel.startswith(rel + "/"):
                    inner, outer = (written[key], written[other]) if len(rel) > len(other_rel) else (
                        written[other], written[key])
                    problems.append((key, f"overlaps {other}: {inner!r} is inside {outer!r}; "
                                          "give each output its own path"))
                    break
            placed.append((key, rel))
        return problems

    # -- derived locations -----------------------------------------------------------

    @property
    def output_dir(self) -> Path:
        return Path(self.output.directory)

    @property
    def model_dir(self) -> Path:
        """Where the fitted model (and its preprocessing) is saved."""
        return self.output_dir / "model"

    @property
    def report_dir(self) -> Path:
        return self.output_dir / "report"

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoint"

    def settings(self) -> dict[str, Any]:
        """The job as JSON-able values (stamped on outputs, hashed for provenance)."""
        return self.model_dump(mode="json")

