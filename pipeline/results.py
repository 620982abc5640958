"""The results a sink writes: labels, probabilities and log-densities, as lazy Dask arrays."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from gmm_stream import GaussianParams, check_features, posterior
from pipeline._chunks import row_chunks
from pipeline.exceptions import SinkError

__all__ = ["Results", "predict_results", "model_params"]

logger = logging.getLogger(__name__)

ArrayLike = da.Array | np.ndarray


def _lazy(x: Any, chunks: tuple[int, ...] | None = None) -> da.Array:
    if isinstance(x, xr.DataArray):
        x = x.data
    if isinstance(x, da.Array):
        return x
    x = np.asarray(x)
    return da.from_array(x, chunks=(chunks or (x.shape[0],),) + tuple((s,) for s in x.shape[1:]))


def _float_labels_block(block: np.ndarray) -> np.ndarray:
    """Labels held as floats (exact small integers) as int64; NaN becomes -1 (no observed value)."""
    block = np.asarray(block)
    out = np.full(block.shape, -1, dtype=np.int64)
    finite = np.isfinite(block)
    values = block[finite]
    if values.size and not np.array_equal(values, np.rint(values)):
        raise SinkError("labels must be whole numbers (component indices, -1 for no observed value); "
                        f"got {values[values != np.rint(values)][:3].tolist()}")
    out[finite] = values.astype(np.int64)
    return out


def _int64_labels(labels: da.Array) -> da.Array:
    """The labels as int64, without a detour that could change them (NaN would cast to INT64_MIN)."""
    kind = labels.dtype.kind
    if kind in "iu":
        return labels.astype(np.int64)
    if kind == "f":
        return da.map_blocks(_float_labels_block, labels, dtype=np.int64, meta=np.empty((0,), np.int64))
    raise SinkError(f"labels must be integers (component indices), got dtype {labels.dtype}")


@dataclass(frozen=True)
class Results:
    """Per-row results of a fitted mixture, lazy, with aligned row chunks.

    Parameters
    ----------
    labels : dask array of shape (n_samples,), int64
        Component of each row; -1 for a row with no observed value. Integer input is
        cast to int64; float input must hold whole numbers (NaN becomes -1), so the
        labels every sink writes are int64, never floats.
    proba : dask array of shape (n_samples, n_components), float32
        Posterior probability of each component (NaN row where no value is observed).
    logdens : dask array of shape (n_samples,), float64
        Log-density of each row under the mixture (the anomaly score: low is unusual).
    sample_ids : dask array of shape (n_samples,), optional
        Ids of the rows; ``None`` means row numbers ``0 .. n_samples-1``.
    anomaly_threshold : float, optional
        When given, every sink also writes the boolean ``anomaly`` column: the rows whose
        log-density is below it (a row with no observed value is not flagged).

    NumPy inputs are wrapped into Dask arrays; dtypes are cast lazily. Use
    :meth:`aligned` to get every array on the same regular row chunks.
    """

    labels: da.Array
    proba: da.Array
    logdens: da.Array
    sample_ids: da.Array | None = None
    anomaly_threshold: float | None = None

    def __post_init__(self) -> None:
        shapes = [tuple(np.shape(a)) for a in (self.labels, self.proba, self.logdens)]
        if [len(s) for s in shapes] != [1, 2, 1]:
            raise SinkError(f"results need labels (n,), proba (n, K), logdens (n,); got shapes {shapes}")
        if len({s[0] for s in shapes}) != 1:
            raise SinkError(f"results disagree on the number of rows: {[s[0] for s in shapes]}")
        labels = _lazy(self.labels)
        proba = _lazy(self.proba, labels.chunks[0])
        logdens = _lazy(self.logdens, labels.chunks[0])
        n = labels.shape[0]
        object.__setattr__(self, "labels", _int64_labels(labels))
        object.__setattr__(self, "proba", proba.astype(np.float32))
        object.__setattr__(self, "logdens", logdens.astype(np.float64))
        if self.sample_ids is not None:
            ids = _lazy(self.sample_ids, labels.chunks[0])
            if ids.shape != (n,):
                raise SinkError(f"sample_ids have shape {ids.shape}, expected ({n},) like the labels")
            object.__setattr__(self, "sample_ids", ids)

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_components(self) -> int:
        return int(self.proba.shape[1])

    def aligned(self, rows: int | None = None) -> Results:
        """The same results on regular row chunks of ``rows`` (default: the largest label chunk)."""
        rows = rows or max(max(self.labels.chunks[0]), 1)
        chunks = row_chunks(self.n_samples, rows)
        return replace(
            self,
            labels=self.labels.rechunk((chunks,)),
            proba=self.proba.rechunk((chunks, (self.n_components,))),
            logdens=self.logdens.rechunk((chunks,)),
            sample_ids=None if self.sample_ids is None else self.sample_ids.rechunk((chunks,)),
        )

    @property
    def anomaly(self) -> da.Array | None:
        """``logdens < anomaly_threshold`` (bool, False where the log-density is NaN), or None."""
        if self.anomaly_threshold is None:
            return None
        return self.logdens < self.anomaly_threshold

    def ids_or_row_numbers(self) -> da.Array:
        """The sample ids, or row numbers (int64) when there are none."""
        if self.sample_ids is not None:
            return self.sample_ids
        return da.arange(self.n_samples, chunks=self.labels.chunks, dtype=np.int64)


def _model_params(model: Any) -> GaussianParams:
    """The fitted parameters of a gmm-stream (or scikit-learn) GaussianMixture."""
    params = getattr(model, "params_", None)
    if isinstance(params, GaussianParams):
        return params
    return GaussianParams(np.asarray(model.weights_), np.asarray(model.means_),
                          np.asarray(model.precisions_cholesky_), str(model.covariance_type))


def _predict_block(block: np.ndarray, params: GaussianParams) -> np.ndarray:
    """``[proba | logdens | label]`` of one row block, shape (n, n_components + 2), from one
    E-step (:func:`gmm_stream.posterior`, the estimator's own rules)."""
    labels, proba, logdens = posterior(block, params)
    # the labels ride as float64 (exact for any component index) and come back as int64 in Results
    return np.column_stack([proba, logdens, labels.astype(np.float64)])


def _check_features(model: Any, X: Any, n_features: int) -> None:
    names = None
    if isinstance(X, xr.DataArray) and X.dims[1] in X.coords:
        names = np.asarray(X.coords[X.dims[1]].values).astype(str)
    check_features(n_features, names, expected=getattr(model, "n_features_in_", n_features),
                   expected_names=getattr(model, "feature_names_in_", None), owner=type(model).__name__)


def predict_results(model: Any, X: xr.DataArray | da.Array | np.ndarray, *,
                    anomaly_threshold: float | None = None) -> Results:
    """Lazy :class:`Results` of a fitted mixture on ``X``: one E-step per row chunk.

    Each block goes once through :func:`gmm_stream.estimate_weighted_log_prob`, from
    which come the labels (``model.predict``), the probabilities (``model.predict_proba``)
    and the log-densities (``model.score_samples``) by the estimator's own formulas, so
    the three are computed in one pass instead of three. Sample ids come from the
    DataArray's first-dimension coordinate, if any.

    Parameters
    ----------
    model : fitted ``gmm_stream.GaussianMixture`` (or scikit-learn's)
    X : DataArray, dask array or ndarray of shape (n_samples, n_features)
        Already preprocessed as the model expects.
    anomaly_threshold : float, optional
        Flag the rows whose log-density is below it (:attr:`Results.anomaly`).
    """
    ids = None
    if isinstance(X, xr.DataArray):
        row_dim = X.dims[0]
        ids = X.coords[row_dim].data if row_dim in X.coords else None
    data = _lazy(X)
    _check_features(model, X, data.shape[1])
    if data.dtype.kind != "f":
        data = data.astype(np.float64)
    if len(data.chunks[1]) > 1:
        data = data.rechunk({1: -1})
    params = _model_params(model)
    k = int(params.weights.shape[0])
    packed = da.map_blocks(_predict_block, data, dask.delayed(params, traverse=False), dtype=np.float64,
                           chunks=(data.chunks[0], (k + 2,)), meta=np.empty((0, 0)))
    return Results(labels=packed[:, k + 1], proba=packed[:, :k], logdens=packed[:, k],
                   sample_ids=None if ids is None else _lazy(ids, data.chunks[0]),
                   anomaly_threshold=anomaly_threshold)


def model_params(model: Any) -> dict[str, Any]:
    """The fitted parameters and fit summary of a mixture model, as plain values.

    Returns
    -------
    dict
        ``n_components``, ``covariance_type``, ``weights`` (K,), ``means`` (K, d),
        ``covariances`` (shape per covariance type), and where present ``converged``,
        ``n_iter``, ``lower_bound``, ``feature_names_in``.
    """
    out: dict[str, Any] = {
        "n_components": int(np.asarray(model.weights_).shape[0]),
        "covariance_type": str(model.covariance_type),
        "weights": np.asarray(model.weights_),
        "means": np.asarray(model.means_),
        "covariances": np.asarray(model.covariances_),
    }
    for attr, cast in (("converged_", bool), ("n_iter_", int), ("lower_bound_", float)):
        if hasattr(model, attr):
            out[attr.rstrip("_")] = cast(getattr(model, attr))
    if getattr(model, "feature_names_in_", None) is not None:
        out["feature_names_in"] = np.asarray(model.feature_names_in_).astype(str)
    return out
