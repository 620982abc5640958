"""YAML jobs are bounded and strict: duplicate keys, aliases, non-finite numbers, values beyond
their bounds or this machine, and outputs outside ``output.directory`` are refused by name."""

from __future__ import annotations

import os
import textwrap
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from flows import config as config_module
from flows.config import MAX_JOB_BYTES, load_job
from flows.exceptions import ConfigError

from flows_testing import CONFIGS

OUT = "/nonexistent/out"

#: A valid fit job; ``{model}``, ``{source}``, ``{sinks}`` and ``{extra}`` are filled by the tests.
JOB = """\
name: t
flow: fit
source:
  format: parquet
  path: /nonexistent/data.parquet
  selection: {{id_column: id}}
{source}model:
  n_components: 3
{model}output:
  directory: %s
  sinks:
{sinks}{extra}""" % OUT  # noqa: UP031 - the braces are str.format fields, filled by job()

SINK = "    - {format: parquet, path: p.parquet}\n"

PREDICT = """\
name: p
flow: predict
source:
  format: parquet
  path: /nonexistent/data.parquet
predict:
  model: /nonexistent/model
{predict}output:
  directory: %s
  sinks:
{sinks}""" % OUT  # noqa: UP031 - the braces are str.format fields, filled by the tests

GiB = 2**30


def job(model: str = "", source: str = "", sinks: str = SINK, extra: str = "") -> str:
    """The text of :data:`JOB` with indented extra lines in ``model:``, ``source:``, at the end."""
    return JOB.format(model=textwrap.indent(model, "  "), source=textwrap.indent(source, "  "),
                      sinks=sinks, extra=extra)


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    """The ``key.path: message`` lines (file name stripped) of the ConfigError load_job raises."""
    with pytest.raises(ConfigError) as info:
        load_job(path, overrides)
    prefix = f"{path}: "
    assert all(line.startswith(prefix) for line in info.value.lines), info.value.lines
    return [line[len(prefix):] for line in info.value.lines]


def assert_problem(lines: list[str], key: str, *words: str) -> str:
    """The line reported at ``key``, checked to contain every one of ``words``."""
    matching = [line for line in lines if line.startswith(f"{key}: ")]
    assert matching, f"no problem reported at {key!r}: {lines}"
    assert any(all(w in line for w in words) for line in matching), (words, lines)
    return matching[0]


@pytest.fixture(autouse=True)
def no_data_access(monkeypatch):
    """Fail any test here that would open a data source."""
    from pipeline.sources import base

    def refuse(self, *args, **kwargs):
        raise AssertionError("the configuration layer must not touch data")

    monkeypatch.setattr(base.Source, "__init__", refuse)


@pytest.fixture
def small_machine(monkeypatch):
    """A machine with 2 cores and 8 GiB of physical memory."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=8 * GiB))


# ----------------------------------------------------------------------------- valid jobs


def test_the_base_job_is_valid(tmp_path):
    loaded = load_job(write(tmp_path, job()))
    assert loaded.model.n_components == 3
    assert loaded.output.sinks[0].path == f"{OUT}/p.parquet"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_shipped_configs_pass_the_strict_rules(path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    loaded = load_job(path)
    for sink in loaded.output.sinks:
        rel = Path(sink.path).relative_to(loaded.output.directory)
        assert rel.parts[0] not in config_module.RESERVED_OUTPUT_NAMES


def test_a_job_with_every_bound_at_its_limit_is_valid(tmp_path, small_machine):
    text = job(model="max_iter: 1000000\nn_init: 1000\nrandom_state: 4294967295\n",
               source="chunk_rows: 1000000000\nchunk_bytes: 4GiB\n",
               extra="compute: {kind: local_cluster, n_workers: 4, threads_per_worker: 2, memory_limit: 2GiB}\n"
                     "checkpoint: {every: 1000000}\nreport: {max_plot_points: 1000000}\n")
    loaded = load_job(write(tmp_path, text))
    assert loaded.model.max_iter == 10**6 and loaded.compute.memory_limit == "2GiB"
    assert loaded.source.chunk_rows == 10**9 and loaded.report.max_plot_points == 10**6


# --------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize("text, key, lines", [
    (job(model="tol: 0.1\nn_components: 4\n"), "model.n_components", (8, 10)),
    (job() + "name: again\n", "name", (1, 13)),
    (job(sinks="    - {format: parquet, path: p.parquet,\n       path: q.parquet}\n"), "output.sinks.0.path", (12, 13)),
    (job(source="storage_options:\n  anon: true\n  client_kwargs: {region: a}\n  anon: false\n"),
     "source.storage_options.anon", (8, 10)),
], ids=["nested", "top level", "in a list item", "deep"])
def test_a_duplicate_key_names_the_key_and_both_lines(tmp_path, text, key, lines):
    line = assert_problem(problems(write(tmp_path, text)), key, "duplicate key", "keep one")
    assert f"(lines {lines[0]} and {lines[1]})" in line


def test_keys_that_read_as_the_same_value_are_duplicates(tmp_path):
    text = job(extra="labels: {order: none}\nreport: {plots: true}\n") + "report:\n  artifacts: true\n"
    assert_problem(problems(write(tmp_path, text)), "report", "duplicate key (lines 14 and 15)")


def test_a_duplicate_key_in_a_set_value_is_refused(tmp_path):
    path = write(tmp_path, job())
    lines = problems(path, ("model={n_components: 2, n_components: 3}",))
    assert_problem(lines, "model.n_components", "--set", "duplicate key (columns 2 and 19)", "keep one")


# ----------------------------------------------------------------------- aliases and size


def test_an_alias_is_refused_with_its_line(tmp_path):
    lines = problems(write(tmp_path, job(model="max_iter: *iterations\n")))
    assert lines == ["model.max_iter: line 9: YAML aliases (*iterations) are not allowed in job files; "
                     "write the value out"]


def test_an_anchor_is_refused(tmp_path):
    text = job(model="max_iter: &iterations 300\nverbose_interval: *iterations\n")
    assert_problem(problems(write(tmp_path, text)), "model.max_iter", "line 9", "YAML anchors (&iterations)",
                   "not allowed", "write the value out")


def test_a_merge_key_with_an_alias_is_refused(tmp_path):
    text = "defaults: &d {n_components: 3}\n" + job().replace("model:\n  n_components: 3\n", "model:\n  <<: *d\n")
    assert_problem(problems(write(tmp_path, text)), "defaults", "line 1", "YAML anchors (&d)")


BILLION_LAUGHS = """\
lol0: &lol0 "lol"
lol1: &lol1 [*lol0, *lol0, *lol0, *lol0, *lol0, *lol0, *lol0, *lol0, *lol0, *lol0]
lol2: &lol2 [*lol1, *lol1, *lol1, *lol1, *lol1, *lol1, *lol1, *lol1, *lol1, *lol1]
lol3: &lol3 [*lol2, *lol2, *lol2, *lol2, *lol2, *lol2, *lol2, *lol2, *lol2, *lol2]
lol4: &lol4 [*lol3, *lol3, *lol3, *lol3, *lol3, *lol3, *lol3, *lol3, *lol3, *lol3]
lol5: &lol5 [*lol4, *lol4, *lol4, *lol4, *lol4, *lol4, *lol4, *lol4, *lol4, *lol4]
lol6: &lol6 [*lol5, *lol5, *lol5, *lol5, *lol5, *lol5, *lol5, *lol5, *lol5, *lol5]
lol7: &lol7 [*lol6, *lol6, *lol6, *lol6, *lol6, *lol6, *lol6, *lol6, *lol6, *lol6]
lol8: &lol8 [*lol7, *lol7, *lol7, *lol7, *lol7, *lol7, *lol7, *lol7, *lol7, *lol7]
lol9: &lol9 [*lol8, *lol8, *lol8, *lol8, *lol8, *lol8, *lol8, *lol8, *lol8, *lol8]
"""


@pytest.mark.parametrize("where", ["own file", "used by a job"])
def test_a_billion_laughs_fails_fast_without_expanding(tmp_path, where):
    # "used by a job": storage_options (any values) would walk all 10**9 strings if it were expanded.
    text = BILLION_LAUGHS if where == "own file" else BILLION_LAUGHS + job(source="storage_options: {x: *lol9}\n")
    path = write(tmp_path, text)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        lines = problems(path)
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert peak < 10 * 2**20, f"peak memory {peak} bytes: the aliases were expanded"
    assert len(lines) == 1 and lines[0].startswith("lol0: line 1: YAML anchors (&lol0)"), lines
    assert "not allowed in job files" in lines[0]


def test_an_alias_in_a_set_value_is_refused(tmp_path):
    lines = problems(write(tmp_path, job()), ("model.tol=*small",))
    assert_problem(lines, "model.tol", "--set 'model.tol=*small'", "YAML aliases (*small)", "not allowed")


def test_a_job_file_over_1_MiB_is_refused_and_one_under_is_read(tmp_path):
    padding = "#" * 1023 + "\n"
    base = job()
    under = base + padding * ((MAX_JOB_BYTES - len(base)) // len(padding))
    assert len(under.encode()) <= MAX_JOB_BYTES
    assert load_job(write(tmp_path, under, "under.yaml")).name == "t"
    over = under + padding
    assert len(over.encode()) > MAX_JOB_BYTES
    lines = problems(write(tmp_path, over, "over.yaml"))
    assert lines == [f"is larger than {MAX_JOB_BYTES} bytes (1 MiB), the most a job file may be; "
                     "a job describes the data, it does not hold them"]


def test_deep_nesting_is_refused(tmp_path):
    text = job(extra="description: " + "[" * 200 + "]" * 200 + "\n")
    line = assert_problem(problems(write(tmp_path, text)), "description" + ".0" * 31, "line 13",
                          "nested more than 32 levels")
    assert "description" in line


def test_a_huge_integer_literal_is_refused(tmp_path):
    text = job(model="max_iter: " + "9" * 5000 + "\n")
    assert_problem(problems(write(tmp_path, text)), "model.max_iter", "line 9", "integer of 5000 characters",
                   "at most 100")


def test_a_job_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_bytes(job().encode() + b"description: caf\xe9\n")
    assert problems(path) == [f"is not UTF-8 text (byte {len(job().encode()) + 16}); save the job file as UTF-8"]


# ------------------------------------------------------------------------ non-finite numbers


NON_FINITE = [
    ("reg_covar 1e400", job(model="reg_covar: 1e400\n"), "model.reg_covar", "'1e400'"),
    ("reg_covar 1.0e+400", job(model="reg_covar: 1.0e+400\n"), "model.reg_covar", "inf"),
    ("tol 1e400", job(model="tol: 1e400\n"), "model.tol", "'1e400'"),
    ("tol .inf", job(model="tol: .inf\n"), "model.tol", "inf"),
    ("tol .nan", job(model="tol: .nan\n"), "model.tol", "nan"),
    ("tol -.inf", job(model="tol: -.inf\n"), "model.tol", "-inf"),
    ("tol 'nan'", job(model="tol: 'nan'\n"), "model.tol", "'nan'"),
    ("means_init", job(model="means_init: [[0.0], [1.0], [.nan]]\n"), "model.means_init.2.0", "nan"),
    ("weights_init", job(model="weights_init: [0.5, .inf, 0.0]\n"), "model.weights_init.1", "inf"),
    ("precisions_init", job(model="covariance_type: diag\nprecisions_init: [[1.0], [1.0e+999], [1.0]]\n"),
     "model.precisions_init.1.0", "inf"),
    ("precisions_init full", job(model="n_components: 1\nprecisions_init: [[[1.0, 0.0], [0.0, .nan]]]\n")
     .replace("  n_components: 3\n", ""), "model.precisions_init.0.1.1", "nan"),
    ("synthetic separation", job(source="synthetic: {separation: .inf}\n"), "source.synthetic.separation", "inf"),
    ("missing_fraction", job(source="synthetic: {missing_fraction: .nan}\n"), "source.synthetic.missing_fraction",
     "nan"),
    ("storage_options", job(source="storage_options: {client_kwargs: {timeout: .inf}}\n"),
     "source.storage_options.client_kwargs.timeout", "inf"),
    ("scheduler timeout", job(extra="compute: {kind: scheduler, address: 'tcp://h:1', timeout: .nan}\n"),
     "compute.timeout", "nan"),
    ("anomaly_quantile", PREDICT.format(predict="  anomaly_quantile: .nan\n", sinks=SINK),
     "predict.anomaly_quantile", "nan"),
]


@pytest.mark.parametrize("text, key, value", [c[1:] for c in NON_FINITE], ids=[c[0] for c in NON_FINITE])
def test_non_finite_numbers_are_refused(tmp_path, text, key, value):
    assert_problem(problems(write(tmp_path, text)), key, "must be a finite number", f"got {value}")
    assert_problem(problems(write(tmp_path, text)), key, value)


@pytest.mark.parametrize("option, key, value", [
    ("model.tol=.inf", "model.tol", "inf"),
    ("model.reg_covar=1e400", "model.reg_covar", "'1e400'"),
    ("model.means_init=[[0.0], [.nan], [1.0]]", "model.means_init.1.0", "nan"),
    ("model={n_components: 1, weights_init: [.inf]}", "model.weights_init.0", "inf"),
])
def test_non_finite_numbers_in_set_overrides_are_refused(tmp_path, option, key, value):
    assert_problem(problems(write(tmp_path, job()), (option,)), key, "must be a finite number", value)


def _models(cls):
    yield cls
    for sub in cls.__subclasses__():
        yield from _models(sub)


def test_every_schema_model_refuses_inf_and_nan():
    models = list(_models(config_module._Model))
    assert config_module.Job in models and config_module.ModelConfig in models
    assert [m.__name__ for m in models if m.model_config.get("allow_inf_nan", True)] == []


# ----------------------------------------------------------------------------------- bounds


BOUNDS = [
    ("max_iter", job(model="max_iter: 1000001\n"), "model.max_iter", "must be <= 1000000, got 1000001"),
    ("n_init", job(model="n_init: 1001\n"), "model.n_init", "must be <= 1000, got 1001"),
    ("n_components", job(model="n_components: 100001\n").replace("  n_components: 3\n", ""),
     "model.n_components", "must be <= 100000, got 100001"),
    ("random_state", job(model="random_state: 4294967296\n"), "model.random_state", "must be <= 4294967295"),
    ("init_max_samples", job(model="init_max_samples: 1000000001\n"), "model.init_max_samples",
     "must be <= 1000000000"),
    ("max_plot_points", job(extra="report: {max_plot_points: 1000001}\n"), "report.max_plot_points",
     "must be <= 1000000, got 1000001"),
    ("checkpoint every", job(extra="checkpoint: {every: 1000001}\n"), "checkpoint.every",
     "must be <= 1000000, got 1000001"),
    ("chunk_rows", job(source="chunk_rows: 1000000001\n"), "source.chunk_rows",
     "must be <= 1000000000, got 1000000001"),
    ("scheduler timeout", job(extra="compute: {kind: scheduler, address: 'tcp://h:1', timeout: 3601}\n"),
     "compute.timeout", "must be <= 3600.0, got 3601"),
    ("pca n_components", job(extra="preprocessing: [{name: pca, n_components: 100001}]\n"),
     "preprocessing.0.n_components", "must be <= 100000"),
    ("synthetic seed", job(source="synthetic: {seed: 4294967296}\n"), "source.synthetic.seed",
     "must be <= 4294967295"),
]


@pytest.mark.parametrize("text, key, words", [c[1:] for c in BOUNDS], ids=[c[0] for c in BOUNDS])
def test_values_beyond_their_bounds_are_refused(tmp_path, text, key, words):
    assert_problem(problems(write(tmp_path, text)), key, words)


def test_the_selection_grid_is_bounded(tmp_path):
    text = job(extra="selection: {n_components: [2, 100001]}\n").replace("flow: fit", "flow: select").replace(
        "model:\n  n_components: 3\n", "")
    assert_problem(problems(write(tmp_path, text)), "selection.n_components.1", "must be <= 100000, got 100001")


def test_local_cluster_threads_are_bounded_by_the_cores(tmp_path, small_machine):
    text = job(extra="compute: {kind: local_cluster, n_workers: 3, threads_per_worker: 3}\n")
    line = assert_problem(problems(write(tmp_path, text)), "compute.n_workers", "3 x 3 = 9 threads",
                          "2 cores, at most 8")
    assert "lower n_workers or threads_per_worker" in line


def test_threads_are_bounded_by_the_cores(tmp_path, small_machine):
    assert load_job(write(tmp_path, job(extra="compute: {kind: threads, num_workers: 8}\n"))).compute.num_workers == 8
    text = job(extra="compute: {kind: threads, num_workers: 9}\n")
    assert_problem(problems(write(tmp_path, text)), "compute.num_workers", "9 threads", "2 cores, at most 8")


@pytest.mark.parametrize("limit", ["3GiB", 3 * GiB])
def test_memory_limit_times_workers_is_bounded_by_the_physical_memory(tmp_path, small_machine, limit):
    text = job(extra=f"compute: {{kind: local_cluster, n_workers: 3, memory_limit: {limit}}}\n")
    line = assert_problem(problems(write(tmp_path, text)), "compute.memory_limit", f"{limit!r} per worker x 3 workers",
                          "9.00 GiB", "physical memory (8.00 GiB)")
    assert "'auto'" in line


@pytest.mark.parametrize("limit", ["auto", "0", "2GiB"])
def test_memory_limit_auto_zero_and_a_fitting_size_are_valid(tmp_path, small_machine, limit):
    text = job(extra=f"compute: {{kind: local_cluster, n_workers: 4, memory_limit: {limit}}}\n")
    loaded = load_job(write(tmp_path, text))
    assert loaded.compute.memory_limit == (0 if limit == "0" else limit)


def test_chunk_bytes_is_at_most_half_the_physical_memory(tmp_path, small_machine):
    assert load_job(write(tmp_path, job(source="chunk_bytes: 4GiB\n"))).source.chunk_bytes == "4GiB"
    for size in ("5GiB", 5 * GiB):
        assert_problem(problems(write(tmp_path, job(source=f"chunk_bytes: {size}\n"))), "source.chunk_bytes",
                       repr(size), "more than half", "8.00 GiB / 2 = 4.00 GiB")


def test_chunk_bytes_that_overflow_are_not_a_size(tmp_path):
    assert_problem(problems(write(tmp_path, job(source="chunk_bytes: 1e400GB\n"))), "source.chunk_bytes",
                   "must be a size", "'1e400GB'")


def test_synthetic_data_must_fit_the_machine(tmp_path, small_machine):
    grid = job(source="synthetic: {n_features: 40, n_components: 4}\n")
    assert_problem(problems(write(tmp_path, grid)), "source.synthetic.n_features", "2**40", "lower n_features")
    big = job(source="synthetic: {n_samples: 100000000, n_features: 4}\n")
    assert_problem(problems(write(tmp_path, big)), "source.synthetic.n_samples", "100000000 rows x 4 features",
                   "half of this machine's physical memory")


# ----------------------------------------------------------------------------- zarr option


ZARR = job().replace("format: parquet\n  path: /nonexistent/data.parquet\n  selection: {id_column: id}",
                     "format: zarr\n  path: /nonexistent/data.zarr\n  selection: {array: X%s}")


def test_zarr_allow_missing_chunks_reaches_the_source_options(tmp_path):
    default = load_job(write(tmp_path, ZARR % "", "default.yaml"))
    assert default.source.selection.allow_missing_chunks is False
    assert default.source.source_options()["allow_missing_chunks"] is False
    allowed = load_job(write(tmp_path, ZARR % ", allow_missing_chunks: true", "allowed.yaml"))
    assert allowed.source.source_options() == {"array": "X", "allow_missing_chunks": True}


def test_allow_missing_chunks_is_a_zarr_boolean(tmp_path):
    assert_problem(problems(write(tmp_path, ZARR % ", allow_missing_chunks: 'yes'")),
                   "source.selection.allow_missing_chunks", "must be true or false")
    parquet = job(source="").replace("{id_column: id}", "{id_column: id, allow_missing_chunks: true}")
    assert_problem(problems(write(tmp_path, parquet)), "source.selection.allow_missing_chunks", "unknown key")


# ---------------------------------------------------------------------------- output paths


INSIDE = "must be inside output.directory (/nonexistent/out): a run's outputs are published together"


@pytest.mark.parametrize("path", ["/elsewhere/p.parquet", "../p.parquet", "sub/../../p.parquet",
                                  "/nonexistent/outside/p.parquet", "/nonexistent/out", ".", "sub/.."])
def test_a_sink_outside_the_output_directory_is_refused(tmp_path, path):
    text = job(sinks=f"    - {{format: parquet, path: '{path}'}}\n")
    assert_problem(problems(write(tmp_path, text)), "output.sinks.0.path", INSIDE)


def test_anomalies_outside_the_output_directory_are_refused(tmp_path):
    text = PREDICT.format(predict="  anomalies: /tmp/anomalies.parquet\n", sinks=SINK)
    assert_problem(problems(write(tmp_path, text)), "predict.anomalies", INSIDE)


@pytest.mark.parametrize("path, name", [("runs/p.parquet", "runs"), ("current", "current"),
                                        ("model/p.parquet", "model"), ("report/p.parquet", "report"),
                                        ("checkpoint/p.zarr", "checkpoint"), ("./.cache/p.parquet", ".cache"),
                                        ("/nonexistent/out/model/p.parquet", "model"), ("Model/p.parquet", "Model")])
def test_a_sink_under_a_reserved_name_is_refused(tmp_path, path, name):
    text = job(sinks=f"    - {{format: parquet, path: '{path}'}}\n")
    assert_problem(problems(write(tmp_path, text)), "output.sinks.0.path", f"{name!r} is a name reserved",
                   "run layout", path)


def test_anomalies_under_a_reserved_name_are_refused(tmp_path):
    text = PREDICT.format(predict="  anomalies: .anomalies.parquet\n", sinks=SINK)
    assert_problem(problems(write(tmp_path, text)), "predict.anomalies", "'.anomalies.parquet' is a name reserved")


def test_outputs_on_top_of_each_other_are_refused(tmp_path):
    sinks = "    - {format: zarr, path: a.zarr}\n    - {format: parquet, path: a.zarr/b.parquet}\n"
    assert_problem(problems(write(tmp_path, job(sinks=sinks))), "output.sinks.1.path",
                   "overlaps output.sinks.0.path", "'a.zarr/b.parquet' is inside 'a.zarr'")
    same = "    - {format: zarr, path: a.zarr}\n    - {format: zarr, path: ./a.zarr}\n"
    assert_problem(problems(write(tmp_path, job(sinks=same))), "output.sinks.1.path", "same path", "'./a.zarr'")
    anomalies = PREDICT.format(predict="  anomalies: p.parquet\n", sinks=SINK)
    assert_problem(problems(write(tmp_path, anomalies)), "predict.anomalies", "same path as output.sinks.0.path")


def test_outputs_inside_the_output_directory_are_valid(tmp_path):
    sinks = ("    - {format: parquet, path: /nonexistent/out/abs.parquet}\n"
             "    - {format: zarr, path: sub/dir/../p.zarr}\n"
             "    - {format: parquet, path: models.parquet}\n"
             "    - {format: parquet, path: runs.parquet}\n")
    loaded = load_job(write(tmp_path, job(sinks=sinks)))
    assert [s.path for s in loaded.output.sinks] == [f"{OUT}/abs.parquet", f"{OUT}/sub/p.zarr",
                                                     f"{OUT}/models.parquet", f"{OUT}/runs.parquet"]
    predict = load_job(write(tmp_path, PREDICT.format(predict="  anomalies: flags/a.parquet\n", sinks=SINK), "p.yaml"))
    assert predict.predict.anomalies == f"{OUT}/flags/a.parquet"


def test_url_outputs_must_be_under_a_url_directory(tmp_path):
    text = job(sinks="    - {format: parquet, path: 's3://other/p.parquet'}\n").replace(
        f"directory: {OUT}", "directory: s3://bucket/out")
    assert_problem(problems(write(tmp_path, text)), "output.sinks.0.path",
                   "must be inside output.directory (s3://bucket/out)")
    ok = text.replace("s3://other/p.parquet", "s3://bucket/out/p.parquet")
    assert load_job(write(tmp_path, ok, "ok.yaml")).output.sinks[0].path == "s3://bucket/out/p.parquet"
