"""What a new user meets in the first hour: the shipped configs work as documented."""

from __future__ import annotations

import numpy as np
import xarray as xr

from flows.config import load_job
from flows.demo import ensure_synthetic
from flows.tasks import SELECT_N_INIT, Candidate, fit_em, open_dataset
from pipeline import Preprocessor

from flows_testing import CONFIGS


def test_the_documented_synthetic_override_of_parquet_yaml_runs_through_log1p(tmp_path, monkeypatch):
    monkeypatch.setenv("GMM_STREAM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("GMM_STREAM_OUTPUT", str(tmp_path / "out"))
    (tmp_path / "data").mkdir()
    documented = "source.synthetic={n_samples: 20000, n_features: 4, n_components: 4}"
    assert documented in (CONFIGS / "parquet.yaml").read_text()  # the line the config documents
    job = load_job(CONFIGS / "parquet.yaml", [documented.replace("20000", "3000")])
    assert ensure_synthetic(job)
    X = open_dataset(job).data
    values = X.data.compute()
    assert np.nanmin(values) >= 0 and X.shape == (3000, 4)
    pre = Preprocessor([s.model_dump() for s in job.preprocessing]).fit(X)
    Z = pre.transform(X).data.compute()
    assert np.isfinite(Z).all() and Z.shape == (3000, 3)


def test_select_candidates_get_several_starts_unless_the_job_says(tmp_path):
    job_text = (CONFIGS / "select.yaml").read_text()
    path = tmp_path / "select.yaml"
    path.write_text(job_text)
    rng = np.random.default_rng(0)
    Z = xr.DataArray(rng.normal(size=(300, 2)), dims=("sample", "feature"))
    for overrides, expected in (([], SELECT_N_INIT), (["model.n_init=1"], 1)):
        job = load_job(path, overrides + ["checkpoint.enabled=false", f"output.directory={tmp_path / 'o'}"])
        fit = fit_em(job, Z, Candidate(2, "full"), "fp", tmp_path / "ckpt")
        assert fit.model.n_init == expected
    assert SELECT_N_INIT > 1


def test_validate_check_inputs_opens_the_source_and_refuses_missing_or_overlapping_inputs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.demo import ensure_synthetic

    monkeypatch.setenv("GMM_STREAM_DEMO_DIR", str(tmp_path / "demo"))
    runner = CliRunner()
    demo = str(CONFIGS / "demo.yaml")
    result = runner.invoke(app, ["validate", demo, "--check-inputs"])
    assert result.exit_code == 0 and "will be generated (synthetic)" in result.output
    ensure_synthetic(load_job(demo))
    result = runner.invoke(app, ["validate", demo, "--check-inputs"])
    assert result.exit_code == 0, result.output
    assert "opens: 20000 rows x 4 features (float64): x0, x1, x2, x3" in result.output
    inside = runner.invoke(app, ["validate", demo, "--check-inputs",
                                 "--set", f"output.directory={tmp_path / 'demo' / 'data' / 'blobs.zarr'}"])
    assert inside.exit_code == 1 and "is or lies inside the input" in inside.output
    missing = runner.invoke(app, ["validate", demo, "--check-inputs", "--set", "source.synthetic=null",
                                  "--set", f"source.path={tmp_path / 'nope.zarr'}"])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    plain = runner.invoke(app, ["validate", demo, "--set", f"source.path={tmp_path / 'nope.zarr'}",
                                "--set", "source.synthetic=null"])
    assert plain.exit_code == 0  # without --check-inputs no file is looked at


def test_the_summary_never_cuts_a_path_in_an_80_column_terminal(monkeypatch, tmp_path):
    import io
    import re

    from rich.console import Console

    import flows.cli as cli

    long_dir = tmp_path / ("a-rather-long-directory-name-" * 4) / "model"
    console = Console(width=80, force_terminal=True, file=io.StringIO(), color_system=None)
    monkeypatch.setattr(cli, "_stdout", lambda: console)
    cli._print_summary({"flow": "fit", "job": "demo", "n_components": 4, "covariance_type": "full",
                        "converged": True, "n_iter": 5, "lower_bound": -1.0, "rows": 10, "bic": 1.0, "aic": 1.0,
                        "icl": 1.0, "outputs": {"model": str(long_dir), "predictions": []}, "report": "r"})
    text = console.file.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    cells = [m.group(1).strip() for m in re.finditer(r"│[^│]*│([^│]*)│", text)]
    assert str(long_dir) in "".join(cells)  # folded over several lines, every character kept
