"""Fits through every source equal the fit on the same data as a NumPy array; results end to end.

Tolerance: ``rtol=1e-9`` on the fitted parameters (the chunked and the in-memory fits
differ only in the order of floating-point sums).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from gmm_stream import GaussianMixture
from pipeline import (
    AnnDataSink,
    AnnDataSource,
    Preprocessor,
    load_model,
    make_provenance,
    model_params,
    predict_results,
    save_model,
)

from pipeline_testing import ALL_CASES, SourceCase, make_matrix

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RTOL = 1e-9


def init_kwargs(d: int) -> dict:
    return {
        "weights_init": np.array([0.4, 0.6]),
        "means_init": np.array([np.full(d, -1.5), np.full(d, 1.5)]),
        "precisions_init": np.stack([np.eye(d), np.eye(d)]),
    }


def fit(X, d: int) -> GaussianMixture:
    return GaussianMixture(2, covariance_type="full", max_iter=4, tol=0.0, **init_kwargs(d)).fit(X)


@pytest.mark.parametrize("case", ALL_CASES, ids=repr)
def test_fit_through_source_equals_numpy_fit(tmp_path, case: SourceCase):
    m = make_matrix(seed=30, zeros=case.zeros)
    data = case.write(tmp_path, m, chunk_rows=100).open()
    assert len(data.data.chunks[0]) == 5  # really chunked
    expected = case.expected(m)
    d = expected.shape[1]
    through_source, in_memory = fit(data, d), fit(expected, d)
    assert through_source.n_iter_ == in_memory.n_iter_ == 4
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(through_source, attr), getattr(in_memory, attr), rtol=RTOL, err_msg=attr)
    np.testing.assert_allclose(through_source.lower_bound_, in_memory.lower_bound_, rtol=RTOL)


def test_predict_results_equal_the_model_predictions():
    m = make_matrix(seed=31)
    X = m.X.copy()
    X[7] = np.nan  # a row with no observed value
    gm = fit(m.X, m.X.shape[1])
    import dask.array as da

    results = predict_results(gm, da.from_array(X, chunks=(50, -1)))
    np.testing.assert_array_equal(results.labels.compute(), gm.predict(X))
    np.testing.assert_allclose(results.proba.compute(), gm.predict_proba(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(results.logdens.compute(), gm.score_samples(X), rtol=1e-12)
    assert results.labels[7].compute() == -1


def test_single_cell_round_trip(tmp_path):
    """AnnData in (obsm['X_pca']), labels and probabilities back in a copy of the AnnData."""
    m = make_matrix(seed=32, nan_fraction=0.0)
    adata = ad.AnnData(X=np.zeros((len(m.ids), 3)), obs=pd.DataFrame(index=m.ids.tolist()))
    adata.obsm["X_pca"] = m.X
    adata.write_h5ad(tmp_path / "cells.h5ad")

    source = AnnDataSource(tmp_path / "cells.h5ad", obsm="X_pca", chunk_rows=128)
    X = source.open()
    pre = Preprocessor(["standardize"]).fit(X)
    Z = pre.transform(X)
    gm = fit(Z, Z.shape[1])
    settings = {"n_components": 2, "preprocessing": pre.get_config()}
    out = AnnDataSink(tmp_path / "cells_gmm.h5ad", source.path, key_added="gmm").write(
        predict_results(gm, Z), provenance=make_provenance(settings, source.identity()),
        settings=settings, params=model_params(gm),
    )

    result = ad.read_h5ad(out)
    Z_np = Z.values
    np.testing.assert_array_equal(result.obs["gmm"].astype(int).to_numpy(), gm.predict(Z_np))
    np.testing.assert_allclose(result.obsm["gmm_proba"], gm.predict_proba(Z_np), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.obs["gmm_logdens"], gm.score_samples(Z_np), rtol=1e-12)
    np.testing.assert_allclose(result.uns["gmm"]["params"]["means"], gm.means_, rtol=1e-15)
    assert result.uns["gmm"]["provenance"]["input"]["selection"]["obsm"] == "X_pca"


def test_saved_model_and_preprocessing_score_new_data_unchanged(tmp_path):
    m = make_matrix(seed=33)
    steps = ["standardize", {"name": "pca", "n_components": 3}]
    pre = Preprocessor(steps).fit(m.X)
    gm = fit(pre.transform(m.X), 3)
    save_model(gm, tmp_path / "model")
    pre.save(tmp_path / "model")  # beside the model

    new = make_matrix(seed=34, n=100).X
    pre2, gm2 = Preprocessor.load(tmp_path / "model"), load_model(tmp_path / "model")
    np.testing.assert_array_equal(pre2.transform(new), pre.transform(new))
    np.testing.assert_array_equal(gm2.predict(pre2.transform(new)), gm.predict(pre.transform(new)))
