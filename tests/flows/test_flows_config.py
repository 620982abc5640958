"""The job schema: examples validate, bad jobs are rejected with the key path, before any data is read."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import get_args

import jsonschema
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import gmm_stream
from flows import config
from flows.cli import app
from flows.config import apply_overrides, expand_env, load_job, parse_job
from flows.exceptions import ConfigError, JobNotFoundError
from gmm_stream import GaussianMixture
from gmm_stream.exceptions import InvalidParameterError
from pipeline import preprocess
from pipeline.sinks import SINKS, make_sink
from pipeline.sources import SOURCES

from flows_testing import CONFIGS

EXAMPLES = sorted(CONFIGS.glob("*.yaml"))
EXPECTED_EXAMPLES = {"demo", "parquet", "singlecell", "select", "cluster", "predict"}

BASE = {
    "name": "t",
    "flow": "fit",
    "source": {"format": "parquet", "path": "/nonexistent/data.parquet", "selection": {"id_column": "id"}},
    "preprocessing": ["standardize"],
    "model": {"n_components": 3},
    "output": {"directory": "/nonexistent/out", "sinks": [{"format": "parquet", "path": "p.parquet"}]},
}


@pytest.fixture(autouse=True)
def no_data_access(monkeypatch):
    """Fail any test here that would open a data source."""
    from pipeline.sources import base

    def refuse(self, *args, **kwargs):
        raise AssertionError("the configuration layer must not touch data")

    monkeypatch.setattr(base.Source, "__init__", refuse)


def test_the_examples_are_shipped():
    assert {p.stem for p in EXAMPLES} == EXPECTED_EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    job = load_job(path)
    assert job.name and job.flow in ("fit", "predict", "select")
    assert Path(job.source.path).is_absolute() and Path(job.output.directory).is_absolute()
    assert all(Path(s.path).is_relative_to(job.output.directory) for s in job.output.sinks)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates_against_the_exported_json_schema(path):
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads(result.stdout))


def test_the_json_schema_rejects_an_unknown_key():
    schema = json.loads(CliRunner().invoke(app, ["schema"]).stdout)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**BASE, "modle": {}}, schema)


def _with(path: str, value):
    """A copy of BASE with ``path`` (dotted) set to ``value`` (``DELETE`` removes it)."""
    data = copy.deepcopy(BASE)
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[keys[-1]]
    elif isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return data


DELETE = object()

# (case id, job mapping, expected key path, expected words in the message)
BAD = [
    ("n_components=0", _with("model.n_components", 0), "model.n_components", "must be >= 1, got 0"),
    ("n_components str", _with("model.n_components", "three"), "model.n_components", "must be an integer"),
    ("n_components float", _with("model.n_components", 2.5), "model.n_components", "must be an integer"),
    ("n_components bool", _with("model.n_components", True), "model.n_components", "must be an integer"),
    ("misspelt model key", _with("model.n_component", 3), "model.n_component", "did you mean 'n_components'"),
    ("unknown top key", _with("modle", {}), "modle", "unknown key"),
    ("covariance type", _with("model.covariance_type", "ful"), "model.covariance_type", "must be one of"),
    ("negative tol", _with("model.tol", -1.0), "model.tol", "must be >= 0"),
    ("tol not a number", _with("model.tol", "small"), "model.tol", "must be a number"),
    ("max_iter=0", _with("model.max_iter", 0), "model.max_iter", "must be >= 1"),
    ("init_params", _with("model.init_params", "kmedoids"), "model.init_params", "must be one of"),
    # the *_init rules and messages are the estimator's (gmm_stream.check_initial_parameters)
    ("weights_init length", _with("model.weights_init", [0.5, 0.5]), "model.weights_init",
     "The parameter 'weights' should have the shape of (3,), but got (2,)"),
    ("weights_init sum", _with("model.weights_init", [0.5, 0.5, 0.5]), "model.weights_init",
     "should be normalized, but got sum(weights) = 1.50000"),
    ("weights_init sum within 1e-5", _with("model.weights_init", [0.333333] * 3), "model.weights_init",
     "should be normalized"),
    ("means_init rows", _with("model.means_init", [[0, 0]]), "model.means_init",
     "The parameter 'means' should have the shape of (3, 2), but got (1, 2)"),
    ("precisions_init shape", _with("model.precisions_init", [[1.0]]), "model.precisions_init",
     "The parameter 'full precision' should have the shape of (3, 1, 1), but got (1, 1)"),
    ("precisions_init features", _with("model", {"n_components": 1, "means_init": [[0, 0]],
                                                 "precisions_init": [[[1.0]]]}), "model.precisions_init",
     "should have the shape of (1, 2, 2), but got (1, 1, 1)"),
    ("precisions_init not positive definite",
     _with("model.precisions_init", [[[1.0, 2.0], [2.0, 1.0]] for _ in range(3)]),
     "model.precisions_init", "'full precision' should be symmetric, positive-definite"),
    ("negative random_state", _with("model.random_state", -1), "model.random_state", "must be >= 0"),
    ("source format", _with("source.format", "csv"), "source.format", "must be one of"),
    ("source format missing", _with("source.format", DELETE), "source.format", "required key is missing"),
    ("source path missing", _with("source.path", DELETE), "source.path", "required key is missing"),
    ("selection key of another format", _with("source.selection", {"obsm": "X_pca"}), "source.selection.obsm",
     "unknown key"),
    ("parquet columns twice", _with("source.selection", {"columns": ["a", "a"], "id_column": "a"}),
     "source.selection.columns", "columns are listed twice: ['a']"),
    ("parquet id among the columns", _with("source.selection", {"columns": ["a", "a"], "id_column": "a"}),
     "source.selection.id_column", "'a' is also a feature column"),
    ("zarr array and variable", _with("source", {"format": "zarr", "path": "/d.zarr",
                                                 "selection": {"array": "X", "variable": "v"}}),
     "source.selection.variable", "give either array or variable, not both"),
    ("anndata layer and obsm", _with("source", {"format": "anndata", "path": "/d.h5ad",
                                                "selection": {"layer": "raw", "obsm": "X_pca"}}),
     "source.selection.obsm", "give either layer or obsm, not both"),
    ("selection flag not a bool", _with("source", {"format": "zarr", "path": "/d.zarr",
                                                   "selection": {"allow_missing_chunks": "yes"}}),
     "source.selection.allow_missing_chunks", "must be true or false"),
    ("parquet columns empty", _with("source.selection", {"columns": []}), "source.selection.columns",
     "at least 1 item"),
    ("chunk_rows=0", _with("source.chunk_rows", 0), "source.chunk_rows", "must be >= 1"),
    ("chunk_bytes", _with("source.chunk_bytes", "lots"), "source.chunk_bytes", "must be a size"),
    ("unset env var", _with("source.path", "${GMM_STREAM_TEST_UNSET_VAR}/x.parquet"), "source.path",
     "GMM_STREAM_TEST_UNSET_VAR is not set"),
    ("unknown step", _with("preprocessing", ["whiten"]), "preprocessing.0.name", "must be one of"),
    ("pca without n_components", _with("preprocessing", [{"name": "pca"}]), "preprocessing.0.n_components",
     "required key is missing"),
    ("steps out of order", _with("preprocessing", ["standardize", "log1p"]), "preprocessing", "in the order"),
    ("sink format", _with("output.sinks", [{"format": "csv", "path": "x"}]), "output.sinks.0.format",
     "must be one of"),
    ("parquet sink compression", _with("output.sinks", [{"format": "parquet", "path": "x", "compression": "lzo"}]),
     "output.sinks.0.compression", "must be one of 'snappy', 'zstd', 'gzip', 'lz4', 'brotli' or 'none'"),
    ("zarr sink format", _with("output.sinks", [{"format": "zarr", "path": "x", "zarr_format": 4}]),
     "output.sinks.0.zarr_format", "must be one of 2 or 3, got an integer 4"),
    ("anndata sink, parquet source", _with("output.sinks", [{"format": "anndata", "path": "x.h5ad"}]),
     "output.sinks.0.format", "needs an anndata source"),
    ("duplicate sink paths",
     _with("output.sinks", [{"format": "parquet", "path": "a"}, {"format": "zarr", "path": "a"}]),
     "output.sinks.1.path", "same path"),
    ("output directory missing", _with("output.directory", DELETE), "output.directory", "required key is missing"),
    ("overwrite not a bool", _with("output.overwrite", "yes"), "output.overwrite", "must be true or false"),
    ("key_added with /", _with("output.key_added", "a/b"), "output.key_added", "must match"),
    ("compute kind", _with("compute", {"kind": "slurm"}), "compute.kind", "must be one of"),
    ("scheduler address", _with("compute", {"kind": "scheduler", "address": "10.0.0.5"}), "compute.address",
     "Dask scheduler address"),
    ("cluster workers", _with("compute", {"kind": "local_cluster", "n_workers": 0}), "compute.n_workers",
     "must be >= 1"),
    ("memory limit", _with("compute", {"kind": "local_cluster", "memory_limit": "-1GB"}), "compute.memory_limit",
     "must be"),
    ("checkpoint every", _with("checkpoint", {"every": 0}), "checkpoint.every", "must be >= 1"),
    ("labels distance", _with("labels", {"distance": "kl"}), "labels.distance", "must be one of"),
    ("previous without overwrite", _with("labels", {"reference": "previous"}), "labels.reference",
     "needs output.overwrite: true"),
    ("flow name", _with("flow", "train"), "flow", "must be one of"),
    ("select without grid", _with("flow", "select"), "selection", "required for flow 'select'"),
    ("grid on fit", _with("selection", {"n_components": [2, 3]}), "selection", "only used by flow 'select'"),
    ("criterion", {**_with("flow", "select"), "model": {}, "selection": {"n_components": [2], "criterion": "dic"}},
     "selection.criterion", "must be one of"),
    ("empty grid", {**_with("flow", "select"), "model": {}, "selection": {"n_components": []}},
     "selection.n_components", "at least 1 item"),
    ("predict without model path", {**_with("flow", "predict"), "model": None, "predict": {}}, "predict.model",
     "required key is missing"),
    ("anomaly quantile", {**_with("flow", "predict"), "model": None, "preprocessing": [],
                          "predict": {"model": "m", "anomaly_quantile": 1.5}},
     "predict.anomaly_quantile", "must be < 1"),
    ("bad job name", _with("name", "my job"), "name", "must match"),
    ("model not a mapping", _with("model", [3]), "model", "must be a mapping"),
]


@pytest.mark.parametrize("data, key, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_config_is_rejected_with_its_key_path(tmp_path, data, key, words, monkeypatch):
    monkeypatch.delenv("GMM_STREAM_TEST_UNSET_VAR", raising=False)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_job(path)
    lines = info.value.lines
    matching = [line for line in lines if line.startswith(f"{path}: {key}: ")]
    assert matching, f"no problem reported at {key!r}: {lines}"
    assert any(words in line for line in matching), lines
    assert isinstance(info.value, ValueError)


def test_there_are_at_least_twenty_bad_configs():
    assert len(BAD) >= 20


def test_several_problems_are_reported_together(tmp_path):
    data = _with("model", {"n_components": 0, "tol": -1, "covariance_type": "x"})
    with pytest.raises(ConfigError) as info:
        parse_job(data, file="job.yaml")
    keys = [line.split(": ")[1] for line in info.value.lines]
    assert sorted(keys) == ["model.covariance_type", "model.n_components", "model.tol"]


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: t\nmodel: {n_components: 3\n")
    with pytest.raises(ConfigError, match=r"job.yaml: invalid YAML: line \d+, column \d+"):
        load_job(path)


def test_a_job_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_job(path)


def test_missing_job_file(tmp_path):
    with pytest.raises(JobNotFoundError, match="does not exist"):
        load_job(tmp_path / "nope.yaml")


def test_environment_variables_in_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("GMM_TEST_DATA", "/data/here")
    monkeypatch.delenv("GMM_TEST_OUT", raising=False)
    job = parse_job(_with("source.path", "$GMM_TEST_DATA/a.parquet") | {
        "output": {"directory": "${GMM_TEST_OUT:-fallback}/run", "sinks": [{"format": "zarr", "path": "r.zarr"}]}},
        base_dir=tmp_path)
    assert job.source.path == "/data/here/a.parquet"
    assert job.output.directory == str(tmp_path / "fallback" / "run")
    assert job.output.sinks[0].path == str(tmp_path / "fallback" / "run" / "r.zarr")
    assert expand_env("${A:-x}-${B}", {"B": "b"}) == "x-b"
    with pytest.raises(ValueError, match="C is not set"):
        expand_env("$C", {})


def test_urls_are_left_alone():
    job = parse_job(_with("source.path", "s3://bucket/data/*.parquet"))
    assert job.source.path == "s3://bucket/data/*.parquet"


def test_overrides_set_values_read_as_yaml():
    data = apply_overrides(copy.deepcopy(BASE), ["model.n_components=12", "output.sinks.0.path=q.parquet",
                                                  "model.tol=1e-5", "preprocessing=[log1p]", "labels.order=none"])
    job = parse_job(data)
    assert job.model.n_components == 12 and job.model.tol == 1e-5
    assert job.output.sinks[0].path.endswith("q.parquet")
    assert [s.name for s in job.preprocessing] == ["log1p"] and job.labels.order == "none"


@pytest.mark.parametrize("option", ["model.n_components", "=3", "output.sinks.5.path=x", "name.x=1"])
def test_bad_overrides(option):
    with pytest.raises(ConfigError, match="--set"):
        parse_job(copy.deepcopy(BASE), overrides=[option], file="job.yaml")


def test_override_errors_name_the_key(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match=r"job.yaml: model.n_components: must be >= 1, got 0"):
        load_job(path, ["model.n_components=0"])


def test_cli_validate(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(BASE))
    ok = CliRunner().invoke(app, ["validate", str(path)])
    assert ok.exit_code == 0 and "valid" in ok.stdout
    bad = CliRunner().invoke(app, ["validate", str(path), "--set", "model.n_components=0"])
    assert bad.exit_code == 2
    assert bad.stderr.strip() == f"error: {path}: model.n_components: must be >= 1, got 0"
    missing = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_cli_run_rejects_a_bad_job_before_starting_anything(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_with("model.covariance_type", "ful")))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "model.covariance_type: must be one of" in result.stderr
    assert "Traceback" not in result.output


def test_cli_schema_to_a_file(tmp_path):
    result = CliRunner().invoke(app, ["schema", "--output", str(tmp_path / "job.schema.json")])
    assert result.exit_code == 0
    schema = json.loads((tmp_path / "job.schema.json").read_text())
    assert schema["additionalProperties"] is False and "source" in schema["required"]


# ------------------------------------------------------------- the rules of the lower layers


def test_the_schema_takes_its_choices_from_the_layers_that_own_them():
    assert config.COVARIANCE_TYPES is gmm_stream.COVARIANCE_TYPES
    assert config.STEP_ORDER is preprocess.STEP_ORDER
    constraints = GaussianMixture._parameter_constraints
    model = config.ModelConfig.model_fields
    assert get_args(model["covariance_type"].annotation) == gmm_stream.COVARIANCE_TYPES
    assert set(get_args(model["covariance_type"].annotation)) == constraints["covariance_type"][0].options
    assert get_args(model["init_params"].annotation) == gmm_stream.INIT_PARAMS
    assert set(get_args(model["init_params"].annotation)) == constraints["init_params"][0].options
    grid = config.SelectionConfig.model_fields["covariance_types"].annotation
    assert get_args(get_args(grid)[0]) == gmm_stream.COVARIANCE_TYPES


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_each_source_selection_is_the_source_options_model(kind):
    section = {"zarr": config.ZarrSelection, "parquet": config.ParquetSelection, "anndata": config.AnnDataSelection}
    options = SOURCES[kind].options_model
    assert issubclass(section[kind], options)
    assert list(section[kind].model_fields) == list(options.model_fields)


@pytest.mark.parametrize("kind", sorted(SINKS))
def test_each_sink_section_holds_the_sink_options_it_does_not_take_from_the_job(kind):
    section = {"zarr": config.ZarrSinkConfig, "parquet": config.ParquetSinkConfig, "anndata": config.AnnDataSinkConfig}
    options = SINKS[kind].options_model.model_fields
    own = set(section[kind].model_fields) - {"path", "format"}
    from_job = {"anndata": {"input_path", "key_added"}}.get(kind, set())
    assert own == set(options) - from_job
    if own:
        assert issubclass(section[kind], SINKS[kind].options_model)


def test_anndata_selection_takes_every_option_of_the_source():
    job = parse_job(_with("source", {"format": "anndata", "path": "/d.h5ad",
                                     "selection": {"obsm": "X_pca", "allow_missing_chunks": True}}))
    assert job.source.source_options() == {"obsm": "X_pca", "sparse": "densify", "allow_missing_chunks": True}


def _fit_error(model: dict) -> str:
    X = np.random.default_rng(0).normal(size=(60, 2))
    with pytest.raises(InvalidParameterError) as info:
        GaussianMixture(**model).fit(X)
    return str(info.value)


@pytest.mark.parametrize("model, key", [
    ({"n_components": 3, "means_init": [[0.0, 0.0]]}, "model.means_init"),
    ({"n_components": 2, "means_init": [[0.0, 0.0], [1.0, 1.0]], "covariance_type": "diag",
      "precisions_init": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]}, "model.precisions_init"),
    ({"n_components": 2, "weights_init": [0.5, 0.6]}, "model.weights_init"),
    ({"n_components": 1, "covariance_type": "tied", "precisions_init": [[1.0, 2.0], [2.0, 1.0]]},
     "model.precisions_init"),
], ids=["means_init shape", "precisions_init features", "weights_init sum", "precisions_init definite"])
def test_a_bad_init_gets_the_estimator_message_in_the_job(tmp_path, model, key):
    """The job refuses what fit refuses, with fit's message after the key path."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_with("model", dict(model))))
    with pytest.raises(ConfigError) as info:
        load_job(path)
    assert info.value.lines == [f"{path}: {key}: {_fit_error(model)}"]


def test_sink_options_build_each_sink(tmp_path):
    data = _with("source", {"format": "anndata", "path": str(tmp_path / "cells.h5ad")})
    data["output"] = {"directory": str(tmp_path / "out"), "key_added": "clusters", "sinks": [
        {"format": "zarr", "path": "r.zarr", "zarr_format": 2},
        {"format": "parquet", "path": "r.parquet", "id_column": "cell", "compression": "zstd"},
        {"format": "anndata", "path": "r.h5ad"},
        {"format": "parquet", "path": "defaults.parquet"},
    ]}
    job = parse_job(data)
    assert [sink.sink_options(job) for sink in job.output.sinks] == [
        {"zarr_format": 2, "overwrite": False},
        {"id_column": "cell", "compression": "zstd", "overwrite": False},
        {"input_path": job.source.path, "key_added": "clusters", "overwrite": False},
        {"id_column": "sample_id", "compression": "snappy", "overwrite": False},
    ]
    for sink in job.output.sinks:
        built = make_sink(sink.format, sink.path, **sink.sink_options(job))
        assert isinstance(built, SINKS[sink.format]) and str(built.path) == sink.path and not built.overwrite
    anndata = make_sink("anndata", tmp_path / "x.h5ad", **job.output.sinks[2].sink_options(job, overwrite=True))
    assert anndata.input_path == Path(job.source.path) and anndata.key_added == "clusters" and anndata.overwrite
