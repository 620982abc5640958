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
- What the lower layers decide is theirs, with their messages: ``model.weights_init``,
  ``means_init`` and ``precisions_init`` follow the estimator's rules
  (:func:`gmm_stream.check_initial_parameters`, what ``fit`` applies; the data's features,
  unknown before the data are read, are those of ``means_init``), and ``source.selection``
  and the options of each sink are those of the pipeline class (its ``options_model``).

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

The package: :mod:`~flows.config.paths` (environment variables and paths),
:mod:`~flows.config.limits` (fixed bounds and those of this machine),
:mod:`~flows.config.schema` (the pydantic models), :mod:`~flows.config.errors` (one
``key.path: message`` per validation error) and :mod:`~flows.config.loading` (the strict
YAML loader and :func:`load_job`). Every name is importable from :mod:`flows.config`.
"""

from __future__ import annotations

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
)
from flows.config.loading import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    MAX_JOB_BYTES,
    apply_overrides,
    job_json_schema,
    load_job,
    parse_job,
)
from flows.config.paths import InputPath, OutputPath, expand_env
from flows.config.schema import (
    COVARIANCE_TYPES,
    CRITERIA,
    RESERVED_OUTPUT_NAMES,
    STEP_ORDER,
    AnnDataSelection,
    AnnDataSinkConfig,
    AnnDataSource,
    Bool,
    CheckpointConfig,
    ComputeConfig,
    CovarianceType,
    Int,
    Job,
    LabelsConfig,
    LocalClusterCompute,
    Log1pStep,
    ModelConfig,
    Name,
    NonNegInt,
    OutputConfig,
    ParquetSelection,
    ParquetSinkConfig,
    ParquetSource,
    PCAStep,
    PositiveInt,
    PredictConfig,
    ReportConfig,
    SchedulerCompute,
    Seed,
    SelectionConfig,
    SinkConfig,
    SourceConfig,
    StandardizeStep,
    Step,
    Str,
    SyntheticConfig,
    ThreadsCompute,
    UpdateConfig,
    ZarrSelection,
    ZarrSinkConfig,
    ZarrSource,
    _Model,
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
