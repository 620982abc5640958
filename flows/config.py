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

Strictness and bounds
---------------------
- A job file is at most 1 MiB (:data:`MAX_JOB_BYTES`) of UTF-8 text, nested at most
  :data:`MAX_DEPTH` levels deep.
- A key given twice in one mapping is an error naming both lines
  (``model.n_components: duplicate key (lines 5 and 9); keep one``).
- YAML anchors and aliases (``&name``, ``*name``) are refused while the file is parsed, before
  anything is expanded (so a "billion laughs" file fails at once): write the values out.
- ``--set`` values are read with the same rules.
- Numbers must be finite: ``.inf``, ``.nan`` and numbers beyond the float range (``1e400``)
  are refused everywhere, including the entries of ``means_init``, ``weights_init`` and
  ``precisions_init``.
- Counts, sizes and durations have upper bounds: fixed ones in the schema (e.g.
  ``model.max_iter <= 10**6``, ``compute.timeout <= 3600`` s) and ones from this machine
  (threads at most 4 per core, ``memory_limit`` x ``n_workers`` at most the physical memory,
  ``source.chunk_bytes`` at most half of it).
- Sink paths and ``predict.anomalies`` must lie inside ``output.directory`` (a run's outputs
  are published together), and not under a name the run layout reserves there
  (:data:`RESERVED_OUTPUT_NAMES`, or a name starting with ``.``).
"""

from __future__ import annotations

import difflib
import math
import os
import posixpath
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
    "MAX_JOB_BYTES",
    "MAX_DEPTH",
    "RESERVED_OUTPUT_NAMES",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
CRITERIA = ("bic", "aic", "icl")

#: The largest job file :func:`load_job` reads (1 MiB): a job describes the data, it does not hold them.
MAX_JOB_BYTES = 1 << 20
#: The deepest nesting of YAML collections in a job file (``precisions_init`` needs 5).
MAX_DEPTH = 32
#: The longest integer literal (in characters) a job file may hold.
MAX_INT_DIGITS = 100
#: Names the run layout uses at the top of ``output.directory``; sinks may not go under them.
RESERVED_OUTPUT_NAMES = ("runs", "current", "model", "report", "checkpoint")

MAX_ROWS = 10**9  #: rows per chunk, rows held by the initialisation, synthetic rows
MAX_COMPONENTS = 10**5  #: mixture components (model, selection grid, synthetic data)
MAX_FEATURES = 10**5  #: synthetic features, PCA axes
MAX_ITER = 10**6  #: EM iterations
MAX_N_INIT = 1000  #: EM restarts
MAX_GRID = 1000  #: values of one selection-grid axis
MAX_TIMEOUT = 3600.0  #: seconds to wait for a Dask scheduler
MAX_PLOT_POINTS = 10**6  #: rows in the report's scatter plot
MAX_CHECKPOINT_EVERY = 10**6  #: EM iterations between checkpoints
MAX_SYNTHETIC_GRID = 10**6  #: candidate centres of synthetic data, ceil(k ** (1 / d)) ** d
MAX_SEED = 2**32 - 1  #: numpy's RandomState accepts seeds below 2**32
THREADS_PER_CORE = 4  #: Dask threads (all workers together) per core of this machine

CovarianceType = Literal["full", "tied", "diag", "spherical"]
Int = Annotated[int, Field(strict=True)]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
Seed = Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)]
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


def _parse_size(value: int | str) -> int:
    """The number of bytes of a size already checked by :func:`_byte_size` (not ``'auto'``)."""
    from dask.utils import parse_bytes

    return int(parse_bytes(value)) if isinstance(value, str) else int(value)


def _byte_size(value: Any, *, allow_zero: bool = False) -> Any:
    from dask.utils import parse_bytes

    if isinstance(value, bool):
        raise ValueError(f"must be a size like '2GiB' or a number of bytes, got {value!r}")
    if isinstance(value, str) and value != "auto":
        try:
            size = parse_bytes(value)
        except (ValueError, TypeError, OverflowError):
            raise ValueError(f"must be a size like '2GiB', '512MB' or a number of bytes, got {value!r}") from None
        if size < 0 or (size == 0 and not allow_zero):
            raise ValueError(f"must be positive, got {value!r}")
    if isinstance(value, int) and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f"must be positive, got {value!r}")
    return value


def _memory_size(value: Any) -> Any:
    return _byte_size(value, allow_zero=True)


_SizeValue = Union[Annotated[int, Field(strict=True)], Annotated[str, Field(strict=True)]]
ByteSize = Annotated[_SizeValue, AfterValidator(_byte_size)]
#: A byte size, ``'auto'``, or 0 (Dask's "no limit").
MemoryLimit = Annotated[_SizeValue, AfterValidator(_memory_size)]


# ------------------------------------------------------------------- this machine


def _cpu_count() -> int:
    """Cores of this machine (1 when the OS does not say)."""
    return os.cpu_count() or 1


def _physical_memory() -> int:
    """Bytes of physical memory of this machine."""
    import psutil

    return int(psutil.virtual_memory().total)


def _bytes(n: float) -> str:
    from dask.utils import format_bytes

    return format_bytes(int(n))


def _max_threads() -> int:
    return THREADS_PER_CORE * _cpu_count()


class _Keyed(ValueError):
    """Problems found by a model validator, each with its key path below the model."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{k}: {m}" for k, m in self.problems))


def _not_finite(value: Any) -> str:
    """The message for an inf or nan ``value`` (a float, or the string it was read from)."""
    return (f"must be a finite number, got {value!r} (.inf, .nan and numbers beyond the float range, "
            "about 1.8e308, are not allowed)")


def _non_finite(value: Any, key: str = "") -> list[tuple[str, float]]:
    """``(key.path, number)`` of every inf or nan float in nested mappings and lists."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(key, value)]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [found for k, v in items for found in _non_finite(v, f"{key}.{k}" if key else str(k))]


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


class ZarrSelection(_Model):
    """What to read inside a Zarr store (see :class:`pipeline.sources.ZarrSource`)."""

    array: Str | None = Field(None, description="Array name inside the group.")
    group: Str | None = Field(None, description="Group path inside the store.")
    variable: Str | None = Field(None, description="Variable of an xarray dataset in Zarr (instead of array).")
    sample_ids: Str | None = Field(None, description="Sibling 1-D array with the sample ids.")
    feature_names: Str | None = Field(None, description="Sibling 1-D array with the feature names.")
    allow_missing_chunks: Bool = Field(
        False, description="Read chunks missing from the store as the fill value instead of failing.")

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
    n_components: PositiveInt = Field(le=MAX_FEATURES, description="Principal axes kept.")
    n_oversamples: NonNegInt = Field(10, le=MAX_FEATURES, description="Extra random axes of the sketch.")
    n_power_iter: NonNegInt = Field(4, le=100, description="Power iterations of the randomized SVD.")
    random_state: Seed = 0


Step = Annotated[
    Union[Log1pStep, StandardizeStep, PCAStep],
    Field(discriminator="name"),
    BeforeValidator(_step_from_name, json_schema_input_type=Union[
        Literal["log1p", "standardize"], Log1pStep, StandardizeStep, PCAStep]),
]
STEP_ORDER = ("log1p", "standardize", "pca")


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
    init_params: Literal["kmeans", "k-means++", "random", "random_from_data"] = "kmeans"
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

    @model_validator(mode="after")
    def _check_inits(self) -> ModelConfig:
        problems: list[tuple[str, str]] = []
        k = self.n_components
        d = None
        if self.weights_init is not None:
            try:
                w = _as_array(self.weights_init, "weights_init")
            except _Keyed as err:
                problems += err.problems
            else:
                problems += self._check_weights(w, k)
        if self.means_init is not None:
            try:
                m = _as_array(self.means_init, "means_init")
            except _Keyed as err:
                problems += err.problems
            else:
                if m.ndim != 2 or m.shape[0] != k:
                    problems.append(("means_init", f"must have {k} rows (n_components), got shape {m.shape}"))
                else:
                    d = m.shape[1]
        if self.precisions_init is not None:
            problems += self._check_precisions(k, d)
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

    def _check_precisions(self, k: int, d: int | None) -> list[tuple[str, str]]:
        try:
            p = _as_array(self.precisions_init, "precisions_init")
        except _Keyed as err:
            return err.problems
        problem = self._precisions_shape(p, k, d)
        return [("precisions_init", problem)] if problem else []

    def _precisions_shape(self, p: np.ndarray, k: int, d: int | None) -> str | None:
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


# ---------------------------------------------------------------------------- outputs


class _SinkBase(_Model):
    path: OutputPath = Field(
        description="Output path, relative to output.directory; an absolute path must be inside it.")


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


ComputeConfig = Annotated[Union[ThreadsCompute, LocalClusterCompute, SchedulerCompute], Field(discriminator="kind")]


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
        written = dict(self._output_paths())
        self._resolve_output_paths()
        problems += self._output_locations(written)
        if problems:
            raise _Keyed(problems)
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


def _relative_to(path: str, base: str) -> str | None:
    """``path`` relative to ``base`` as a normalised POSIX path (``"."`` if equal), or None if outside."""
    if _is_url(base) or _is_url(path):
        if not _is_url(path):
            if os.path.isabs(path):
                return None
            rel = posixpath.normpath(path)
        elif not _is_url(base):
            return None
        else:
            root = base.rstrip("/")
            target = path.rstrip("/")
            if target == root:
                return "."
            if not target.startswith(root + "/"):
                return None
            rel = posixpath.normpath(target[len(root) + 1:])
    else:
        rel = os.path.relpath(path, base) if os.path.isabs(path) else os.path.normpath(path)
        rel = Path(rel).as_posix()
    if rel == ".." or rel.startswith("../"):
        return None
    return rel


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
    if kind == "finite_number":
        return _not_finite(value)
    if kind in ("float_type", "float_parsing"):
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
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} item(s), got {ctx.get('actual_length', 'more')}"
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


# ------------------------------------------------------------------------ strict YAML


class _YAMLProblem(yaml.YAMLError):
    """A job-file rule broken while reading the YAML, at ``key`` (dotted; "" for the top)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class _JobLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the rules of job files.

    - no anchors or aliases: refused when the parser meets them, before anything is composed
      or expanded (a "billion laughs" document costs nothing);
    - nesting at most :data:`MAX_DEPTH` levels (the composer recurses once per level);
    - no key twice in one mapping (PyYAML keeps the last one silently);
    - integer literals of at most :data:`MAX_INT_DIGITS` characters.

    Problems are :class:`_YAMLProblem` errors naming the dotted key path (``prefix`` first:
    the ``--set`` key a value is read for) and the line, or the column when ``columns``
    (a one-line ``--set`` value).
    """

    def __init__(self, stream: str, *, prefix: Sequence[str] = (), what: str = "job files",
                 columns: bool = False) -> None:
        super().__init__(stream)
        self._keys: list[str | None] = list(prefix)
        self._depth = 0
        self._what = what
        self._one_line = columns
        self._node_keys: dict[int, str] = {}

    def _key(self) -> str:
        return ".".join(k for k in self._keys if k is not None)

    def _at(self, mark: yaml.Mark) -> str:
        return f"column {mark.column + 1}" if self._one_line else f"line {mark.line + 1}"

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        part = index.value if isinstance(index, yaml.ScalarNode) else str(index) if isinstance(index, int) else None
        self._keys.append(part)
        self._depth += 1
        try:
            key, event = self._key(), self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                raise _YAMLProblem(key, f"{self._at(event.start_mark)}: YAML aliases (*{event.anchor}) are not "
                                        f"allowed in {self._what}; write the value out")
            if getattr(event, "anchor", None) is not None:
                raise _YAMLProblem(key, f"{self._at(event.start_mark)}: YAML anchors (&{event.anchor}) are not "
                                        f"allowed in {self._what} (aliases are refused); write the value out")
            if self._depth > MAX_DEPTH:
                raise _YAMLProblem(key, f"{self._at(event.start_mark)}: nested more than {MAX_DEPTH} levels "
                                        f"deep; a job is at most {MAX_DEPTH} levels of mappings and lists")
            node = super().compose_node(parent, index)
            self._node_keys[id(node)] = key
            return node
        finally:
            self._depth -= 1
            self._keys.pop()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class reports it
                    continue
                if first is not None:
                    where = self._node_keys.get(id(node), "")
                    name = str(getattr(key_node, "value", key))
                    marks = (first.start_mark, key_node.start_mark)
                    at = (f"columns {marks[0].column + 1} and {marks[1].column + 1}" if self._one_line
                          else f"lines {marks[0].line + 1} and {marks[1].line + 1}")
                    raise _YAMLProblem(f"{where}.{name}" if where else name, f"duplicate key ({at}); keep one")
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_DIGITS:
            raise _YAMLProblem(self._node_keys.get(id(node), ""),
                               f"{self._at(node.start_mark)}: an integer of {len(node.value)} characters; "
                               f"integers in {self._what} have at most {MAX_INT_DIGITS}")
        return super().construct_yaml_int(node)


_JobLoader.add_constructor("tag:yaml.org,2002:int", _JobLoader.construct_yaml_int)


def _load_yaml(text: str, *, prefix: Sequence[str] = (), what: str = "job files", columns: bool = False) -> Any:
    """Read one YAML document with the :class:`_JobLoader` rules."""
    loader = _JobLoader(text, prefix=prefix, what=what, columns=columns)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


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
    Values follow the rules of job files (no duplicate keys, anchors or aliases).

    Raises
    ------
    ValueError
        If an override is malformed, its value is not valid YAML, or its path does not exist.
        A value breaking a job-file rule raises a ``ValueError`` whose ``problems`` name the key.
    """
    for option in overrides:
        key, sep, text = option.partition("=")
        keys = key.strip().split(".")
        if not sep or not all(keys):
            raise ValueError(f"--set {option!r}: expected KEY.PATH=VALUE, e.g. model.n_components=12")
        try:
            one_line = "\n" not in text.strip()
            value = _load_yaml(text, prefix=keys, what="--set values", columns=one_line) if text.strip() else ""
        except _YAMLProblem as err:
            raise _Keyed([(err.key, f"--set {option!r}: {err.message}")]) from None
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
    except _Keyed as err:
        raise ConfigError(file, err.problems) from None
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
        The YAML file: UTF-8, at most 1 MiB (:data:`MAX_JOB_BYTES`), read like
        ``yaml.safe_load`` but strictly: a key twice in a mapping, anchors and aliases
        (``&name``, ``*name``), nesting deeper than :data:`MAX_DEPTH` levels are errors.
    overrides : sequence of str
        ``key.path=value`` items applied before validation (the CLI's ``--set``); the values
        are read with the same rules.
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
        With one ``file: key.path: message`` line per problem (size, encoding, YAML syntax,
        duplicate keys, aliases, unknown keys, wrong types, impossible or non-finite values,
        values beyond their bounds or this machine, outputs outside ``output.directory``,
        unset environment variables).
    """
    file = str(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_JOB_BYTES + 1)
    except FileNotFoundError:
        raise JobNotFoundError(f"job file {file} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(file, [("", "is a directory, not a YAML job file")]) from None
    if len(raw) > MAX_JOB_BYTES:
        raise ConfigError(file, [("", f"is larger than {MAX_JOB_BYTES} bytes (1 MiB), the most a job file may be; "
                                      "a job describes the data, it does not hold them")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(file, [("", f"is not UTF-8 text (byte {err.start}); save the job file as UTF-8")]) from None
    try:
        data = _load_yaml(text)
    except _YAMLProblem as err:
        raise ConfigError(file, [(err.key, err.message)]) from None
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
