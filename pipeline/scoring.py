"""The scores of a fitted mixture on its data, gathered in the pass that writes its predictions.

:func:`score_values` gives the lazy reductions (component sizes, log-likelihood, entropy
of the responsibilities, log-density quantile sketches, a plot sample) of one
:class:`~pipeline.results.Results`; :func:`pipeline.sinks.write_results` computes them in
the same graph as the sinks' chunk writes, so scoring costs no pass of its own;
:func:`scores_from` turns their values into :class:`Scores` (BIC, AIC and ICL by
:mod:`gmm_stream.criteria`, the estimator's formulas).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from gmm_stream import criteria
from pipeline.results import Results

__all__ = ["QUANTILE_LEVELS", "Scores", "score_values", "scores_from", "merge_quantiles", "quantile_at",
           "score"]

#: Levels at which the training log-density quantiles are stored beside the model.
QUANTILE_LEVELS = np.concatenate([[1e-4, 2e-4, 5e-4], np.linspace(0.001, 0.999, 999), [0.9995, 0.9998, 0.9999]])
#: Order statistics kept per chunk: the quantiles are exact for chunks of up to this many rows.
SKETCH_POINTS = 4001


@dataclass
class Scores:
    """One pass over the (preprocessed) data with a fitted model.

    ``bic = -2 L + p ln n`` and ``aic = -2 L + 2 p`` (scikit-learn's, on the usable rows);
    ``icl = bic + 2 E`` with the entropy of the responsibilities
    ``E = -sum_i sum_k r_ik ln r_ik >= 0`` (Biernacki et al. 2000). Lower is better for all three.
    """

    n_rows: int
    n_empty: int
    loglik: float
    n_parameters: int
    bic: float
    aic: float
    icl: float
    entropy: float
    sizes: list[int]
    quantile_levels: list[float] = field(repr=False)
    quantiles: list[float] = field(repr=False)
    sample_X: np.ndarray = field(repr=False)
    sample_labels: np.ndarray = field(repr=False)
    n_anomalies: int | None = None
    threshold: float | None = None
    sample_index: np.ndarray | None = field(default=None, repr=False)  # rows of sample_X in the data

    def criterion(self, name: str) -> float:
        return float(getattr(self, name))


def _sketch(block: np.ndarray) -> np.ndarray:
    """Evenly spaced order statistics of the finite values of a block, and their weights.

    Returns an array of length ``2 * SKETCH_POINTS``: the values (NaN-padded), then their
    weights (zero-padded); each value stands for ``weight`` rows of the block.
    """
    values = np.sort(block[~np.isnan(block)])
    n = values.size
    out = np.full(2 * SKETCH_POINTS, np.nan)
    out[SKETCH_POINTS:] = 0.0
    if n <= SKETCH_POINTS:
        out[:n], out[SKETCH_POINTS:SKETCH_POINTS + n] = values, 1.0
    else:
        idx = np.linspace(0, n - 1, SKETCH_POINTS).round().astype(np.intp)
        out[:SKETCH_POINTS], out[SKETCH_POINTS:] = values[idx], n / SKETCH_POINTS
    return out


def merge_quantiles(sketches: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles at ``levels`` from concatenated per-chunk sketches (exact when a chunk has <= 4001 values)."""
    parts = np.asarray(sketches, dtype=np.float64).reshape(-1, 2, SKETCH_POINTS)
    values, weights = parts[:, 0].ravel(), parts[:, 1].ravel()
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    if values.size == 0:
        return np.full(levels.shape, np.nan)
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cum = (np.cumsum(weights) - 0.5 * weights) / weights.sum()  # mid-rank plotting positions
    return np.interp(levels, cum, values)


def quantile_at(table: dict[str, Any], quantile: float) -> float:
    """The value at ``quantile`` of a stored quantile table (``{"levels": [...], "values": [...]}``)."""
    return float(np.interp(quantile, table["levels"], table["values"]))


def score_values(results: Results, X: xr.DataArray | da.Array, *, max_points: int = 5000,
                 seed: int = 0) -> dict[str, Any]:
    """The lazy reductions behind :class:`Scores`: compute them with the sinks' writes.

    Parameters
    ----------
    results : Results
        Of the model on ``X`` (:func:`pipeline.results.predict_results`).
    X : DataArray or dask array
        The data the results were computed from (the plot sample is taken from it).
    max_points : int
        Rows of the plot sample (a seeded uniform choice).
    """
    k = results.n_components
    logd = results.logdens
    proba = results.proba.astype(np.float64)
    plogp = da.where(proba > 0, proba * da.log(da.where(proba > 0, proba, 1.0)), 0.0)
    n = results.n_samples
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_points), replace=False))
    data = X.data if isinstance(X, xr.DataArray) else X
    lazy: dict[str, Any] = {
        "counts": da.bincount(results.labels + 1, minlength=k + 1),
        "loglik": da.nansum(logd),
        "n_rows": da.sum(~da.isnan(logd)),
        "plogp": da.nansum(plogp),
        "sketches": da.map_blocks(_sketch, logd, dtype=np.float64, chunks=((2 * SKETCH_POINTS,) * logd.numblocks[0],)),
        "sample_X": data[idx],
        "sample_labels": results.labels[idx],
        "sample_index": idx,
    }
    if results.anomaly is not None:
        lazy["n_anomalies"] = da.sum(results.anomaly)
    return lazy


def scores_from(values: dict[str, Any], n_parameters: int, threshold: float | None = None) -> Scores:
    """:class:`Scores` from the computed :func:`score_values` of a model with ``n_parameters``."""
    n_rows, loglik = int(values["n_rows"]), float(values["loglik"])
    entropy = -float(values["plogp"])
    counts = np.asarray(values["counts"])
    return Scores(
        n_rows=n_rows, n_empty=int(counts[0]), loglik=loglik, n_parameters=int(n_parameters),
        bic=criteria.bic(loglik, n_rows, n_parameters), aic=criteria.aic(loglik, n_parameters),
        icl=criteria.icl(loglik, n_rows, n_parameters, entropy), entropy=entropy,
        sizes=[int(c) for c in counts[1:]],
        quantile_levels=QUANTILE_LEVELS.tolist(),
        quantiles=merge_quantiles(values["sketches"], QUANTILE_LEVELS).tolist(),
        sample_X=np.asarray(values["sample_X"]), sample_labels=np.asarray(values["sample_labels"]),
        n_anomalies=None if "n_anomalies" not in values else int(values["n_anomalies"]), threshold=threshold,
        sample_index=np.asarray(values["sample_index"]),
    )


def score(model: Any, X: xr.DataArray | da.Array, *, max_points: int = 5000, threshold: float | None = None,
          seed: int = 0) -> Scores:
    """:class:`Scores` of a fitted ``model`` on ``X`` in a pass of their own (when no predictions
    are written; otherwise compute :func:`score_values` with the sinks' writes)."""
    from pipeline._executor import compute_all
    from pipeline.results import predict_results

    results = predict_results(model, X, anomaly_threshold=threshold)
    (values,) = compute_all([], [score_values(results, X, max_points=max_points, seed=seed)])
    return scores_from(values, model.params_.n_parameters(), threshold)
