"""The YAML job: one pydantic schema, loaded with ``yaml.safe_load`` and checked before any data is read.

A job names its flow (``fit``, ``predict`` or ``select``), the source, the preprocessing
steps, the model, the model-selection grid, the outputs, the compute and checkpointing::

    flow: fit
    source: {format: parquet, path: ${DATA}/cells.parquet, selection: {id_column: cell_id}}
    preprocessing: [standardize, {name: pca, n_components: 10}]
    model: {n_components: 8, covariance_type: full}
    output: {directory: out/cells, sinks: [{format: parquet, path: predictions.parquet}]}

Rules
-----
- Unknown keys, wrong types and impossible values are rejected with one line per problem,
  ``file: key.path: message`` (e.g. ``job.yaml: model.n_components: must be >= 1, got 0``),
  raised together as one :class:`~flows.exceptions.ConfigError`. Nothing touches the data.
- Paths may reference environment variables: ``$VAR``, ``${VAR}`` or ``${VAR:-default}``; an
  unset variable without a default is an error. ``~`` is expanded.
- Relative input paths (``source.path``, ``output.directory``, ``predict.model``,
  ``labels.reference``) are relative to the working directory (or the ``base_dir`` given to
  :func:`load_job`); sink paths and ``predict.anomalies`` are relative to ``output.directory``.
  URLs (``s3://...``) are left as they are. After loading, every local path is absolute.
- Integers and booleans are strict (``"3"``, ``true`` or ``2.0`` are not integers); numbers
  may be written ``1e-4`` (which YAML 1.1 reads as a string).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flows.exceptions import ConfigError, JobNotFoundError

__all__ = [
    "Job",
    "load_job",
    "parse_job",
    "apply_overrides",
    "job_json_schema",
    "expand_env",
    "COVARIANCE_TYPES",
    "CRITERIA",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
CRITERIA = ("bic", "aic", "icl")

CovarianceType = Literal["full", "tied", "diag", "spherical"]
Int = Annotated[int, Field(strict=True)]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
Bool = Annotated[bool, Field(strict=True)]
Name = Annotated[str, Field(strict=True, min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Str = Annotated[str, Field(strict=True, min_length=1)]


# ----------------------------------------------------------------------- paths and env


_ENV = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ``$VAR``, ``${VAR}`` and ``${VAR:-default}`` by their values.

    Raises
    ------
    ValueError
        If a variable is unset (or empty, for the ``:-`` form) and has no default.
    """
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        default = match.group("default")
        value = env.get(name)
        if value is None or (default is not None and value == ""):
            if default is not None:
                return default
            raise ValueError(
                f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
            )
        return value

    return _ENV.sub(replace, text)


def _is_url(path: str) -> bool:
    return "://" in path


def _resolve(path: str, base: str | os.PathLike[str] | None) -> str:
    if _is_url(path):
        return path
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    return os.path.normpath(p) if p.is_absolute() else str(p)


def _input_path(value: str, info: ValidationInfo) -> str:
    base = (info.context or {}).get("base_dir")
    return _resolve(expand_env(value), base)


def _env_only(value: str) -> str:
    return expand_env(value)


#: A path relative to the working directory (or ``base_dir``); env vars expanded.
InputPath = Annotated[str, Field(strict=True, min_length=1), AfterValidator(_input_path)]
#: A path relative to ``output.directory``; env vars expanded.
OutputPath = Annotated[str, Field(strict=True, min_length=1), AfterValidator(_env_only)]


def _scheduler_address(value: str) -> str:
    value = expand_env(value)
    if not re.fullmatch(r"(tcp|tls|ucx|ws|wss|inproc)://[^\s/:]+(:\d+)?/?", value):
        raise ValueError(f"must be a Dask scheduler address like 'tcp://10.0.0.5:8786', got {value!r}")
    return value


def _byte_size(value: Any) -> Any:
    from dask.utils import parse_bytes

    if isinstance(value, bool):
        raise ValueError(f"must be a size like '2GiB' or a number of bytes, got {value!r}")
    if isinstance(value, str) and value != "auto":
        try:
            size = parse_bytes(value)
        except (ValueError, TypeError):
            raise ValueError(f"must be a size like '2GiB', '512MB' or a number of bytes, got {value!r}") from None
        if size <= 0:
            raise ValueError(f"must be positive, got {value!r}")
    if isinstance(value, int) and value <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return value


ByteSize = Annotated[
    Union[Annotated[int, Field(strict=True)], Annotated[str, Field(strict=True)]], AfterValidator(_byte_size)
]


class _Keyed(ValueError):
    """Problems found by a model validator, each with its key path below the model."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{k}: {m}" for k, m in self.problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# ---------------------------------------------------------------------------- source


class SyntheticConfig(_Model):
    """Synthetic data written to ``source.path`` on first run when it does not exist (the demo)."""

    n_samples: PositiveInt = Field(20_000, description="Rows to generate.")
    n_features: PositiveInt = Field(4, description="Columns to generate.")
    n_components: PositiveInt = Field(4, description="Gaussian clusters in the data.")
    separation: float = Field(6.0, gt=0, description="Distance scale between cluster centres (in cluster SDs).")
    missing_fraction: float = Field(
        0.0, ge=0, lt=0.5, description="Fraction of entries set to NaN (never a whole row).")
    seed: NonNegInt = Field(0, description="Random seed: the same seed writes the same data.")

    @model_validator(mode="after")
    def _enough_rows(self) -> SyntheticConfig:
        if self.n_samples < self.n_components:
            raise _Keyed([("n_samples", f"must be >= n_components ({self.n_components}), got {self.n_samples}")])
        return self


class ZarrSelection(_Model):
    """What to read inside a Zarr store (see :class:`pipeline.sources.ZarrSource`)."""

    array: Str | None = Field(None, description="Array name inside the group.")
    group: Str | None = Field(None, description="Group path inside the store.")
    variable: Str | None = Field(None, description="Variable of an xarray dataset in Zarr (instead of array).")
    sample_ids: Str | None = Field(None, description="Sibling 1-D array with the sample ids.")
    feature_names: Str | None = Field(None, description="Sibling 1-D array with the feature names.")

    @model_validator(mode="after")
    def _one_of(self) -> ZarrSelection:
        if self.array is not None and self.variable is not None:
            raise _Keyed([("variable", "give either array or variable, not both")])
        return self


class ParquetSelection(_Model):
    """Which Parquet columns are the features, and which holds the sample ids."""

    columns: list[Str] | None = Field(
        None, min_length=1, description="Feature columns (default: every numeric column).")
    id_column: Str | None = Field(None, description="Column holding the sample ids.")

    @model_validator(mode="after")
    def _distinct(self) -> ParquetSelection:
        problems = []
        if self.columns is not None:
            dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
            if dupes:
                problems.append(("columns", f"columns are listed twice: {dupes}"))
            if self.id_column is not None and self.id_column in self.columns:
                problems.append(("id_column", f"{self.id_column!r} is also a feature column"))
        if problems:
            raise _Keyed(problems)
        return self


class AnnDataSelection(_Model):
    """``X``, a layer, or an ``obsm`` matrix (e.g. ``X_pca``) of an AnnData file."""

    layer: Str | None = Field(None, description="adata.layers[layer] instead of X.")
    obsm: Str | None = Field(None, description="adata.obsm[obsm] (e.g. X_pca) instead of X.")
    sparse: Literal["densify", "raise"] = Field("densify", description="What to do with a sparse X.")

    @model_validator(mode="after")
    def _one_of(self) -> AnnDataSelection:
        if self.layer is not None and self.obsm is not None:
            raise _Keyed([("obsm", "give either layer or obsm, not both")])
        return self


class _SourceBase(_Model):
    path: InputPath = Field(description="Local path or fsspec URL; $VAR and ${VAR:-default} expanded.")
    chunk_rows: PositiveInt | None = Field(None, description="Rows per chunk (wins over chunk_bytes).")
    chunk_bytes: ByteSize | None = Field(None, description="Target bytes per row chunk, e.g. '128MiB'.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for URLs.")

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


SourceConfig = Annotated[Union[ZarrSource, ParquetSource, AnnDataSource], Field(discriminator="format")]


# ----------------------------------------------------------------------- preprocessing


def _step_from_name(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class Log1pStep(_Model):
    name: Literal["log1p"]


class StandardizeStep(_Model):
    name: Literal["standardize"]


class PCAStep(_Model):
    name: Literal["pca"]
    n_components: PositiveInt = Field(description="Principal axes kept.")
    n_oversamples: NonNegInt = 10
    n_power_iter: NonNegInt = 4
    random_state: NonNegInt = 0


Step = Annotated[
    Union[Log1pStep, StandardizeStep, PCAStep],
    Field(discriminator="name"),
    BeforeValidator(_step_from_name, json_schema_input_type=Union[
        Literal["log1p", "standardize"], Log1pStep, StandardizeStep, PCAStep]),
]
STEP_ORDER = ("log1p", "standardize", "pca")


# ------------------------------------------------------------------------------ model


def _as_array(value: Any) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("must be a (nested) list of numbers of regular shape") from None
    if not np.all(np.isfinite(array)):
        raise ValueError("must be finite")
    return array


class ModelConfig(_Model):
    """The estimator's parameters (:class:`gmm_stream.GaussianMixture`, scikit-learn's names).

    ``random_state`` defaults to 0 (not None) so that a job gives the same model every time;
    set it to null for a fresh random start.
    """

    n_components: PositiveInt = Field(1, description="Number of mixture components.")
    covariance_type: CovarianceType = "full"
    tol: float = Field(1e-3, ge=0, description="EM stops when the lower bound changes by less than this.")
    reg_covar: float = Field(1e-6, ge=0, description="Added to every covariance diagonal.")
    max_iter: PositiveInt = 100
    n_init: PositiveInt = 1
    init_params: Literal["kmeans", "k-means++", "random", "random_from_data"] = "kmeans"
    weights_init: list[float] | None = Field(None, description="Shape (n_components,), sums to 1.")
    means_init: list[list[float]] | None = Field(None, description="Shape (n_components, n_features).")
    precisions_init: list[Any] | None = Field(
        None, description="full (K, d, d), tied (d, d), diag (K, d), spherical (K,)."
    )
    random_state: NonNegInt | None = Field(0, description="Seed; null for a different start each run.")
    verbose: NonNegInt = 0
    verbose_interval: PositiveInt = 10
    init_max_samples: PositiveInt = Field(100_000, description="Rows the initialisation may hold in memory.")

    @model_validator(mode="after")
    def _check_inits(self) -> ModelConfig:
        problems: list[tuple[str, str]] = []
        k = self.n_components
        d = None
        if self.weights_init is not None:
            try:
                w = _as_array(self.weights_init)
            except ValueError as err:
                problems.append(("weights_init", str(err)))
            else:
                problems += self._check_weights(w, k)
        if self.means_init is not None:
            try:
                m = _as_array(self.means_init)
            except ValueError as err:
                problems.append(("means_init", str(err)))
            else:
                if m.ndim != 2 or m.shape[0] != k:
                    problems.append(("means_init", f"must have {k} rows (n_components), got shape {m.shape}"))
                else:
                    d = m.shape[1]
        if self.precisions_init is not None:
            problem = self._check_precisions(k, d)
            if problem:
                problems.append(("precisions_init", problem))
        if problems:
            raise _Keyed(problems)
        return self

    @staticmethod
    def _check_weights(w: np.ndarray, k: int) -> list[tuple[str, str]]:
        if w.shape != (k,):
            return [("weights_init", f"must have {k} entries (n_components), got {w.size}")]
        if np.any(w < 0) or np.any(w > 1) or not np.isclose(w.sum(), 1.0):
            return [("weights_init", f"must be in [0, 1] and sum to 1, got sum {w.sum():.6g}")]
        return []

    def _check_precisions(self, k: int, d: int | None) -> str | None:
        try:
            p = _as_array(self.precisions_init)
        except ValueError as err:
            return str(err)
        ct = self.covariance_type
        ndim = {"full": 3, "tied": 2, "diag": 2, "spherical": 1}[ct]
        if p.ndim != ndim:
            return f"must have {ndim} dimensions for covariance_type {ct!r}, got shape {p.shape}"
        if ct in ("full", "diag", "spherical") and p.shape[0] != k:
            return f"must have {k} entries along its first axis (n_components), got shape {p.shape}"
        if ct in ("full", "tied") and p.shape[-1] != p.shape[-2]:
            return f"matrices must be square, got shape {p.shape}"
        if d is not None and ct != "spherical" and p.shape[-1] != d:
            return f"has {p.shape[-1]} features but means_init has {d}"
        if ct in ("diag", "spherical") and np.any(p <= 0):
            return "must be positive"
        return None

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

    n_components: list[PositiveInt] = Field(min_length=1, description="Candidate numbers of components.")
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
    anomalies: OutputPath = Field("anomalies.parquet", description="Anomaly flags (Parquet), under output.directory.")


# ---------------------------------------------------------------------------- outputs


class _SinkBase(_Model):
    path: OutputPath = Field(description="Output path, relative to output.directory unless absolute.")


class ZarrSinkConfig(_SinkBase):
    format: Literal["zarr"]
    zarr_format: Literal[2, 3] = 3


class ParquetSinkConfig(_SinkBase):
    format: Literal["parquet"]
    id_column: Str = "sample_id"
    compression: Literal["snappy", "zstd", "gzip", "lz4", "brotli", "none"] = "snappy"


class AnnDataSinkConfig(_SinkBase):
    format: Literal["anndata"]


SinkConfig = Annotated[Union[ZarrSinkConfig, ParquetSinkConfig, AnnDataSinkConfig], Field(discriminator="format")]


class OutputConfig(_Model):
    """Where results go: ``directory`` holds ``model/``, ``report/``, ``checkpoint/`` and the sinks."""

    directory: InputPath = Field(description="Output directory of the job.")
    sinks: list[SinkConfig] = Field(
        default_factory=list, description="Per-row results (labels, probabilities, log-density).")
    key_added: Annotated[str, Field(strict=True, pattern=r"^[^/]+$")] = Field(
        "gmm", description="Name of the results in AnnData (obs[key_added], obsm[key_added_proba], uns[key_added])."
    )
    overwrite: Bool = Field(False, description="Replace existing outputs.")


# ---------------------------------------------------------------------------- compute


class ThreadsCompute(_Model):
    """Dask's threaded scheduler in the flow's process (the default)."""

    kind: Literal["threads"] = "threads"
    num_workers: PositiveInt | None = Field(None, description="Threads (default: one per core).")


class LocalClusterCompute(_Model):
    """A ``distributed.LocalCluster`` started for the run and stopped after it."""

    kind: Literal["local_cluster"]
    n_workers: PositiveInt = 2
    threads_per_worker: PositiveInt = 1
    memory_limit: ByteSize = Field("auto", description="Per worker, e.g. '4GiB' ('auto': share of the RAM).")
    processes: Bool = Field(True, description="Workers as processes (true) or threads of this process.")


class SchedulerCompute(_Model):
    """An existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``."""

    kind: Literal["scheduler"]
    address: Annotated[str, Field(strict=True), AfterValidator(_scheduler_address)] = Field(
        description="Scheduler address; env vars expanded (e.g. ${DASK_SCHEDULER_ADDRESS})."
    )
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for the connection.")


ComputeConfig = Annotated[Union[ThreadsCompute, LocalClusterCompute, SchedulerCompute], Field(discriminator="kind")]


class CheckpointConfig(_Model):
    """EM checkpoints in ``<output.directory>/checkpoint``: a re-run resumes from the last one."""

    enabled: Bool = True
    every: PositiveInt = Field(1, description="Write a checkpoint every this many EM iterations.")


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
    max_plot_points: Annotated[int, Field(strict=True, ge=100)] = Field(5000, description="Rows in the scatter plot.")


# -------------------------------------------------------------------------------- job


class Job(_Model):
    """A gmm-stream job: one YAML file, one Prefect flow run."""

    model_config = ConfigDict(extra="forbid", validate_default=True, title="gmm-stream job")

    version: Literal[1] = Field(1, description="Schema version of the job file.")
    name: Name = Field("gmm-stream", description="Job name (letters, digits, '.', '_', '-').")
    description: str | None = None
    flow: Literal["fit", "predict", "select"] = Field("fit", description="Which flow runs the job.")
    source: SourceConfig
    preprocessing: list[Step] = Field(
        default_factory=list, description="Steps, in the order log1p, standardize, pca (each optional)."
    )
    model: ModelConfig | None = Field(None, description="The estimator (flows fit and select).")
    selection: SelectionConfig | None = Field(None, description="The grid (flow select).")
    predict: PredictConfig | None = Field(None, description="The saved model and anomaly rule (flow predict).")
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
        if problems:
            raise _Keyed(problems)
        self._resolve_output_paths()
        return self

    def _flow_sections(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        flow = self.flow
        if flow == "fit" and self.model is None:
            problems.append(("model", "required for flow 'fit'"))
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
        paths: dict[str, int] = {}
        for i, sink in enumerate(self.output.sinks):
            if sink.format == "anndata" and self.source.format != "anndata":
                problems.append((f"output.sinks.{i}.format",
                                 f"an anndata sink needs an anndata source (source.format is {self.source.format!r})"))
            if sink.path in paths:
                problems.append((f"output.sinks.{i}.path",
                                 f"same path as output.sinks.{paths[sink.path]}: {sink.path!r}"))
            paths.setdefault(sink.path, i)
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


# ----------------------------------------------------------------------- error report


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Annotated:
        return _models_in(get_args(annotation)[0])
    out: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        out += _models_in(arg)
    return out


def _clean_loc(loc: Sequence[str | int], keep_last: bool) -> tuple[list[str | int], list[type[BaseModel]]]:
    """Drop union tags and validator names from a pydantic location; return the models at its end."""
    candidates: list[type[BaseModel]] = [Job]
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out.append(part)
            continue
        owners = [m for m in candidates if part in m.model_fields]
        if owners:
            out.append(part)
            candidates = [x for m in owners for x in _models_in(m.model_fields[part].annotation)]
        elif keep_last and i == len(loc) - 1:
            out.append(part)
        else:  # a union tag (e.g. 'parquet'): keep the member it names
            tagged = [m for m in candidates if any(
                get_origin(f.annotation) is Literal and get_args(f.annotation) == (part,)
                for f in m.model_fields.values())]
            candidates = tagged or candidates
    return out, candidates


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping", type(None): "null"}
    kind = kinds.get(type(value), type(value).__name__)
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return kind
    return f"{kind} {value!r}"


def _message(err: Mapping[str, Any], candidates: list[type[BaseModel]]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        known = sorted({f for m in candidates for f in m.model_fields})
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})" if known else ""
        return f"unknown key{hint}"
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
              "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        return f"must be {op} {ctx[key]}, got {value!r}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {_describe(value)}"
    if kind in ("union_tag_invalid",):
        return f"must be one of {ctx['expected_tags']}, got {ctx['tag']!r}"
    if kind == "union_tag_not_found":
        return "required key is missing"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {_describe(value)}"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"must be a number, got {_describe(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {_describe(value)}"
    if kind == "string_type":
        return f"must be a string, got {_describe(value)}"
    if kind == "list_type":
        return f"must be a list, got {_describe(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping of keys to values, got {_describe(value)}"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s)"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx['pattern']}, got {value!r}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors():
        loc, candidates = _clean_loc(err["loc"], keep_last=err["type"] == "extra_forbidden")
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, _Keyed):
            items = [(loc + k.split("."), m) for k, m in error.problems]
        else:
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc = loc + [str(err["ctx"]["discriminator"]).strip("'")]
            items = [(loc, _message(err, candidates))]
        for path, message in items:
            key = ".".join(str(p) for p in path)
            if (key, message) not in seen:
                seen.add((key, message))
                problems.append((key, message))
    return problems


# --------------------------------------------------------------------------- loading


def _set_path(data: Any, keys: list[str], value: Any, option: str) -> None:
    node = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ValueError(f"--set {option}: {'.'.join(keys[:depth + 1])} is not an index of the list")
            index: Any = int(key)
        elif isinstance(node, dict):
            index = key
        else:
            raise ValueError(f"--set {option}: {'.'.join(keys[:depth])} is not a mapping")
        if last:
            node[index] = value
        else:
            if isinstance(node, dict) and node.get(index) is None:
                node[index] = {}
            node = node[index]


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (value read as YAML) to a job mapping, in order.

    ``model.n_components=12`` sets an integer, ``output.sinks.0.path=x.parquet`` an item of a
    list, ``preprocessing=[standardize]`` a list. Missing mappings on the way are created.
    """
    for option in overrides:
        key, sep, text = option.partition("=")
        keys = key.strip().split(".")
        if not sep or not all(keys):
            raise ValueError(f"--set {option!r}: expected KEY.PATH=VALUE, e.g. model.n_components=12")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ValueError(f"--set {option!r}: the value is not valid YAML ({err.__class__.__name__})") from None
        _set_path(data, keys, value, option)
    return data


def parse_job(
    data: Any,
    *,
    file: str = "<job>",
    overrides: Sequence[str] = (),
    base_dir: str | os.PathLike[str] | None = None,
) -> Job:
    """Validate a job mapping (as ``yaml.safe_load`` returns it); see :func:`load_job`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, [("", f"the job must be a mapping of keys to values, got {_describe(data)}")])
    try:
        data = apply_overrides(data, overrides)
    except ValueError as err:
        raise ConfigError(file, [("", str(err))]) from None
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        return Job.model_validate(data, context={"base_dir": str(base.absolute())})
    except ValidationError as err:
        raise ConfigError(file, _problems(err)) from None


def load_job(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> Job:
    """Read, override and validate a YAML job; no data is read.

    Parameters
    ----------
    path : str or os.PathLike
        The YAML file (read with ``yaml.safe_load``).
    overrides : sequence of str
        ``key.path=value`` items applied before validation (the CLI's ``--set``).
    base_dir : path, optional
        Directory that relative input paths are relative to (default: the working directory).

    Returns
    -------
    Job

    Raises
    ------
    JobNotFoundError
        If the file does not exist.
    ConfigError
        With one ``file: key.path: message`` line per problem (YAML syntax, unknown keys,
        wrong types, impossible values, unset environment variables).
    """
    file = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise JobNotFoundError(f"job file {file} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(file, [("", "is a directory, not a YAML job file")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(file, [("", f"invalid YAML: {where}{problem}")]) from None
    return parse_job(data, file=file, overrides=overrides, base_dir=base_dir)


def job_json_schema() -> dict[str, Any]:
    """The JSON Schema of a job file (for editors that validate YAML)."""
    schema = Job.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
