"""What a new user meets in the first hour: the shipped configs work as documented."""

from __future__ import annotations

import numpy as np
import xarray as xr

from flows.config import load_job
from flows.demo import ensure_synthetic
from flows.tasks import SELECT_N_INIT, Candidate, fit_em, open_data
from flows_testing import CONFIGS
from pipeline import Preprocessor


def test_the_documented_synthetic_override_of_parquet_yaml_runs_through_log1p(tmp_path, monkeypatch):
    monkeypatch.setenv("GMM_STREAM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("GMM_STREAM_OUTPUT", str(tmp_path / "out"))
    (tmp_path / "data").mkdir()
    documented = "source.synthetic={n_samples: 20000, n_features: 4, n_components: 4}"
    assert documented in (CONFIGS / "parquet.yaml").read_text()  # the line the config documents
    job = load_job(CONFIGS / "parquet.yaml", [documented.replace("20000", "3000")])
    assert ensure_synthetic(job)
    X = open_data(job)
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
