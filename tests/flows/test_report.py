"""The run report built from a real fitted mixture: components per feature, means mapped back to
the original units, PNG resolution, ellipse geometry, the lower-bound plot, the predict report."""

from __future__ import annotations

import json

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image
from sklearn.decomposition import PCA as SkPCA
from sklearn.preprocessing import StandardScaler

import flows.report as report_module
from flows.compute import ComputeInfo
from flows.config import parse_job
from flows.report import DPI, ellipse, full_covariances, plane_geometry, plot_lower_bound, write_report
from flows.summaries import model_report, read_umap_sample, run_summary
from gmm_stream import GaussianMixture
from pipeline import Preprocessor
from pipeline.scoring import score

from flows_testing import small_data

FEATURES = ["height", "weight", "income", "age"]
COMPUTE = ComputeInfo("threads", False, None, 2)
IDENTITY = {"kind": "parquet", "path": "data.parquet", "shape": [3000, 4], "dtype": "float64"}


def job(tmp_path, flow="fit"):
    spec = {"flow": flow, "name": "report-test", "source": {"format": "parquet", "path": str(tmp_path / "d.parquet")},
            "output": {"directory": str(tmp_path / "out")}}
    if flow == "predict":
        spec["predict"] = {"model": str(tmp_path / "model")}
    else:
        spec["model"] = {"n_components": 3}
    return parse_job(spec)


def data_array(X):
    return xr.DataArray(da.from_array(X, chunks=(1000, -1)), dims=("sample", "feature"), coords={"feature": FEATURES})


@pytest.fixture(scope="module")
def positive():
    """Positive data in mixed units (for log1p), as a named DataArray."""
    data = small_data(n=3000, d=4, k=3, seed=4)
    return np.abs(data.X) * np.array([1.0, 10.0, 1000.0, 0.1]) + 1.0


@pytest.fixture(scope="module")
def fitted_pca(positive):
    """standardize -> PCA(2), a full-covariance mixture on the PCA scores."""
    A = data_array(positive)
    pre = Preprocessor(["standardize", {"name": "pca", "n_components": 2}]).fit(A)
    Z = pre.transform(A)
    gm = GaussianMixture(3, random_state=0).fit(Z)
    return positive, pre, Z, gm


def sklearn_back_mapped(X, means, pre, log1p=False):
    """The means mapped back by scikit-learn's StandardScaler and PCA (signs aligned to ours)."""
    Y = np.log1p(X) if log1p else X
    scaler = StandardScaler().fit(Y)
    S = scaler.transform(Y)
    out = means
    pca_steps = [s for s in pre.steps if s.name == "pca"]
    if pca_steps:
        sk = SkPCA(n_components=pca_steps[0].n_components, svd_solver="full").fit(S)
        signs = np.sign(np.sum(sk.components_ * pca_steps[0].components_, axis=1))
        np.testing.assert_allclose(np.abs(np.sum(sk.components_ * pca_steps[0].components_, axis=1)), 1, atol=1e-8)
        out = sk.inverse_transform(means * signs)
    out = scaler.inverse_transform(out)
    return np.expm1(out) if log1p else out


# --------------------------------------------------------------- components and back-mapping


def test_inverse_transform_means_is_sklearns_back_projection(fitted_pca):
    X, pre, _, gm = fitted_pca
    back = pre.inverse_transform_means(gm.means_)
    np.testing.assert_allclose(back, sklearn_back_mapped(X, gm.means_, pre), rtol=1e-8, atol=1e-8)
    # the projection onto the span of the axes: transforming it back gives the means again
    np.testing.assert_allclose(pre.transform(back), gm.means_, atol=1e-8)
    np.testing.assert_allclose(pre.inverse_transform_means(gm.means_[0]), back[0])  # 1-D in, 1-D out
    with pytest.raises(Exception, match="2 columns"):
        pre.inverse_transform_means(np.zeros((3, 4)))


def test_components_csv_has_one_column_per_feature_and_back_mapped_means(tmp_path, fitted_pca):
    X, pre, Z, gm = fitted_pca
    scores = score(gm, Z, max_points=500)
    rep = model_report(job(tmp_path), IDENTITY, COMPUTE, gm, scores, preprocessor=pre)
    write_report(rep, tmp_path / "report")
    table = pd.read_csv(tmp_path / "report" / "components.csv")
    assert list(table.columns) == ["label", "weight", "size", "fraction", "mean_PC1", "mean_PC2",
                                   *[f"orig_{f}" for f in FEATURES]]
    np.testing.assert_allclose(table[["mean_PC1", "mean_PC2"]].to_numpy(), gm.means_, rtol=1e-7, atol=1e-9)
    expected = sklearn_back_mapped(X, gm.means_, pre)
    np.testing.assert_allclose(table[[f"orig_{f}" for f in FEATURES]].to_numpy(), expected, rtol=1e-7)
    np.testing.assert_allclose(table["weight"], gm.weights_, atol=1e-6)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "means in the preprocessed space: standardize → PCA (2 components)" in summary.replace("| in ", "in ")
    assert "projection onto the span of the 2 components" in summary
    assert "| mean_PC1 | mean_PC2 | orig_height |" in summary
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["space"]["features"] == ["PC1", "PC2"] and saved["space"]["original_features"] == FEATURES


def test_log1p_means_are_expm1_of_the_log_mean_and_say_so(tmp_path, positive):
    A = data_array(positive)
    pre = Preprocessor(["log1p", "standardize"]).fit(A)
    Z = pre.transform(A)
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(Z)
    rep = model_report(job(tmp_path), IDENTITY, COMPUTE, gm, score(gm, Z, max_points=300), preprocessor=pre)
    write_report(rep, tmp_path / "report", plots=False)
    table = pd.read_csv(tmp_path / "report" / "components.csv")
    assert [c for c in table.columns if c.startswith("mean_")] == [f"mean_{f}" for f in FEATURES]
    expected = sklearn_back_mapped(positive, gm.means_, pre, log1p=True)
    np.testing.assert_allclose(table[[f"orig_{f}" for f in FEATURES]].to_numpy(), expected, rtol=1e-7)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "log1p → standardize" in summary
    assert "expm1 of the mean of log1p values: not the mean in the original units" in summary


def test_no_preprocessing_means_are_in_the_original_units(tmp_path, positive):
    A = data_array(positive)
    pre = Preprocessor([]).fit(A)
    gm = GaussianMixture(2, covariance_type="spherical", random_state=0).fit(A)
    rep = model_report(job(tmp_path), IDENTITY, COMPUTE, gm, score(gm, A, max_points=300), preprocessor=pre)
    assert rep.space["description"] == "the original units (no preprocessing)"
    assert list(rep.components[0]) == ["label", "weight", "size", "fraction", *[f"mean_{f}" for f in FEATURES]]


def test_many_features_are_compact_in_the_summary_and_complete_in_the_csv(tmp_path):
    X = small_data(n=1500, d=12, k=2, seed=1).X
    gm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(X)
    Z = xr.DataArray(da.from_array(X, chunks=(500, -1)), dims=("sample", "feature"))
    rep = model_report(job(tmp_path), IDENTITY, COMPUTE, gm, score(gm, Z, max_points=300))
    write_report(rep, tmp_path / "report", plots=False)
    assert len(pd.read_csv(tmp_path / "report" / "components.csv").columns) == 4 + 12
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "mean (12 features)" in summary and "mean_x11" not in summary
    assert "the model's input space" in summary


# ------------------------------------------------------------------------------------ plots


@pytest.fixture
def saved_figures(monkeypatch):
    """Every figure the report saves: (path, figure size in inches), the figure inspected before closing."""
    seen = []
    original = report_module._save

    def spy(fig, path):
        seen.append({"path": path, "size": tuple(fig.get_size_inches()), "fig": fig,
                     "texts": [t.get_text() for ax in fig.axes for t in ax.texts]
                     + [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()],
                     "locator": fig.axes[0].xaxis.get_major_locator(),
                     "formatter": fig.axes[0].yaxis.get_major_formatter()})
        original(fig, path)

    monkeypatch.setattr(report_module, "_save", spy)
    return seen


def test_every_png_is_at_least_150_dpi(tmp_path, fitted_pca, saved_figures):
    _, pre, Z, gm = fitted_pca
    rep = model_report(job(tmp_path), IDENTITY, COMPUTE, gm, score(gm, Z, max_points=500), preprocessor=pre,
                       umap_sample=np.random.default_rng(0).normal(size=(500, 2)))
    files = write_report(rep, tmp_path / "report")
    pngs = sorted(name for name in files if name.endswith(".png"))
    assert pngs == ["clusters_pc.png", "clusters_umap.png", "lower_bound.png"]
    assert DPI >= 150 and len(saved_figures) == 3
    for seen in saved_figures:
        with Image.open(tmp_path / "report" / seen["path"].name) as im:  # saved in a temporary sibling, renamed
            width, height = im.size
            assert min(im.info["dpi"]) >= 149.9  # the pHYs chunk
        assert (width, height) == (round(seen["size"][0] * DPI), round(seen["size"][1] * DPI))


def test_lower_bound_plot_integer_ticks_plain_labels_and_convergence_marked(tmp_path, saved_figures):
    from matplotlib.ticker import MaxNLocator

    lower = [-1.234567, -1.234561, -1.2345605, -1.2345604]  # tiny differences: an offset would be used
    plot_lower_bound(lower, tmp_path / "a.png", "t", converged=True, n_iter=4, max_iter=100)
    plot_lower_bound(lower, tmp_path / "b.png", "t", converged=False, n_iter=4, max_iter=4)
    first, second = saved_figures
    assert isinstance(first["locator"], MaxNLocator) and first["locator"]._integer
    ticks = first["fig"].axes[0].get_xticks()
    assert np.all(ticks == np.round(ticks))
    assert first["formatter"].get_useOffset() is False and first["formatter"].get_offset() == ""
    assert "converged at iteration 4" in first["texts"]
    assert any(t.startswith("stopped at max_iter (4)") for t in second["texts"])


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_ellipses_are_the_projected_covariances(cov):
    X = small_data(n=1500, d=4, k=3, seed=7).X
    gm = GaussianMixture(3, covariance_type=cov, random_state=0).fit(X)
    geo = plane_geometry(X, gm.means_, gm.covariances_, cov)
    P = geo.axes
    np.testing.assert_allclose(P @ P.T, np.eye(2), atol=1e-10)
    # the plane: the sample's first two principal axes (up to sign)
    sk = SkPCA(2).fit(X)
    np.testing.assert_allclose(np.abs(np.sum(sk.components_ * P, axis=1)), 1, atol=1e-8)
    np.testing.assert_allclose(geo.explained, sk.explained_variance_ratio_, rtol=1e-8)
    np.testing.assert_allclose(geo.means, (gm.means_ - X.mean(axis=0)) @ P.T, atol=1e-10)
    full = gm.covariances_
    for k in range(3):  # Σ_k built independently from the covariance type
        if cov == "full":
            sigma = full[k]
        elif cov == "tied":
            sigma = full
        elif cov == "diag":
            sigma = np.diag(full[k])
        else:
            sigma = full[k] * np.eye(4)
        np.testing.assert_allclose(full_covariances(full, cov, 3, 4)[k], sigma)
        cov2 = P @ sigma @ P.T
        np.testing.assert_allclose(geo.covariances[k], cov2, rtol=1e-10, atol=1e-12)
        evals, evecs = np.linalg.eigh(cov2)
        for n_std in (1.0, 2.0):
            width, height, angle = ellipse(geo.covariances[k], n_std)
            np.testing.assert_allclose([width, height], 2 * n_std * np.sqrt(evals[::-1]), rtol=1e-9)
            major = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
            if evals[1] - evals[0] > 1e-9 * evals[1]:  # a circle (spherical) has no major axis
                assert abs(major @ evecs[:, 1]) == pytest.approx(1.0, abs=1e-8)
            # points of the drawn ellipse are at Mahalanobis distance n_std
            t = np.linspace(0, 2 * np.pi, 12)
            minor = np.array([-major[1], major[0]])
            pts = np.outer(width / 2 * np.cos(t), major) + np.outer(height / 2 * np.sin(t), minor)
            d2 = np.einsum("ni,ij,nj->n", pts, np.linalg.inv(cov2), pts)
            np.testing.assert_allclose(d2, n_std**2, rtol=1e-8)


def test_umap_plot_from_an_anndata_source(tmp_path, fitted_pca):
    _, pre, Z, gm = fitted_pca
    umap = np.random.default_rng(1).normal(size=(3000, 2))
    adata = ad.AnnData(X=np.zeros((3000, 2), dtype=np.float32),
                       obs=pd.DataFrame(index=[f"c{i}" for i in range(3000)]))
    adata.obsm["X_umap"] = umap
    adata.write_h5ad(tmp_path / "cells.h5ad")
    spec = {"flow": "fit", "name": "cells", "source": {"format": "anndata", "path": str(tmp_path / "cells.h5ad")},
            "model": {"n_components": 3}, "output": {"directory": str(tmp_path / "out")}}
    anndata_job = parse_job(spec)
    index = np.array([0, 5, 17, 2999])
    np.testing.assert_array_equal(read_umap_sample(anndata_job, index), umap[index])
    assert read_umap_sample(job(tmp_path), index) is None  # not AnnData
    scores = score(gm, Z, max_points=400)
    rep = model_report(anndata_job, IDENTITY, COMPUTE, gm, scores, preprocessor=pre, umap_sample=umap[:400])
    assert "clusters_umap.png" in write_report(rep, tmp_path / "report")
    rep.umap_sample = umap[:10]  # not aligned with the sample: no plot
    assert "clusters_umap.png" not in write_report(rep, tmp_path / "report2")


# ---------------------------------------------------------------------------------- predict


def test_predict_report_has_no_lower_bound_and_labels_the_training_facts(tmp_path, fitted_pca, saved_figures):
    _, pre, Z, gm = fitted_pca
    threshold = float(np.quantile(np.asarray(gm.score_samples(Z)), 0.05))
    scores = score(gm, Z, max_points=1000, threshold=threshold)
    predict_job = job(tmp_path, "predict")
    rep = model_report(predict_job, IDENTITY, COMPUTE, gm, scores, preprocessor=pre)
    rep.anomalies = {"quantile": 0.05, "threshold": threshold, "count": scores.n_anomalies, "n_rows": scores.n_rows,
                     "path": "anomalies.parquet"}
    files = write_report(rep, tmp_path / "report")
    assert "lower_bound.csv" not in files and "lower_bound.png" not in files
    assert {"summary.md", "components.csv", "report.json", "clusters_pc.png"} <= set(files)
    summary = (tmp_path / "report" / "summary.md").read_text()
    rows = {line.split("|")[1].strip() for line in summary.splitlines() if line.startswith("| ")}
    assert not rows & {"converged", "n_iter", "lower_bound", "max_iter"}
    assert {"model trained: converged", "model trained: n_iter", "model trained: lower_bound"} <= rows
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert "converged" not in saved["model"] and saved["lower_bounds"] == []
    assert saved["training"]["n_iter"] == gm.n_iter_
    result = run_summary(predict_job, rep, files)
    assert "converged" not in result and "n_iter" not in result and result["model_trained"]["n_iter"] == gm.n_iter_
    # the plot sample's anomalies, as the flagged rows of the run
    sample = xr.DataArray(scores.sample_X, dims=("sample", "feature"), coords={"feature": ["PC1", "PC2"]})
    expected = np.asarray(gm.score_samples(sample)) < threshold
    np.testing.assert_array_equal(rep.sample_anomalous, expected)
    assert 0 < expected.sum() < len(expected)
    assert any(t.startswith("anomalous (") for seen in saved_figures
               for t in [h.get_text() for h in seen["fig"].legends[0].get_texts()] if seen["fig"].legends)


def test_fit_report_keeps_its_own_convergence(tmp_path, fitted_pca):
    _, pre, Z, gm = fitted_pca
    rep = model_report(job(tmp_path), IDENTITY, COMPUTE, gm, score(gm, Z, max_points=300), preprocessor=pre)
    assert rep.training is None and rep.model["converged"] == bool(gm.converged_)
    assert rep.lower_bounds == list(gm.lower_bounds_) and rep.sample_anomalous is None
    files = write_report(rep, tmp_path / "report", plots=False)
    assert len(pd.read_csv(tmp_path / "report" / "lower_bound.csv")) == len(gm.lower_bounds_)
    assert "lower_bound.csv" in files
