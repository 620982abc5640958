"""Preprocessing fitted out of core: ``log1p``, per-feature standardisation and PCA.

Steps always run in the order ``log1p -> standardize -> pca`` (each is optional); a
:class:`Preprocessor` refuses any other order. Every step is fitted once, in passes
over the row chunks of the training data (nothing larger than ``d x (k + oversamples)``
or ``d x d`` is held in memory), saved beside the model as JSON + ``.npz`` (never
pickle), and re-applied unchanged when a saved model scores new data.

Rules
-----
log1p
    ``log(1 + x)``; values ``<= -1`` are refused when the chunk is computed. NaN stays NaN.
standardize
    ``(x - mean) / scale`` with the mean and the population standard deviation
    (``ddof=0``) of each feature over its observed (non-NaN) values, as scikit-learn's
    ``StandardScaler``; NaN stays NaN. A constant feature (variance within rounding of
    zero, scikit-learn's test) or a feature with no observed value gets scale 1 (mean 0
    for the latter) and a :class:`~pipeline.exceptions.ConstantFeatureWarning`.
pca
    Projection on the first ``n_components`` principal axes of the training data.
    NaN rule: a missing entry is replaced by its feature's mean (0 after centring)
    before fitting and before projecting, so the PCA output has no NaN. Up to
    :data:`GRAM_MAX_FEATURES` (2048) features the PCA is exact: the centred
    cross-product ``Zc^T Zc`` (d x d) is gathered in the same pass as the moments (per
    pair of features, over the rows where both are observed, merged by Chan et al.'s
    pairwise update, centred afterwards) and its eigen-decomposition gives the axes.
    Above that, the axes come from a randomised SVD (Halko et al. 2011, subspace
    iteration on ``Zc^T Zc``, ``n_power_iter + 2`` more passes). Signs follow
    scikit-learn (largest-magnitude loading of each axis positive).

Passes
------
:meth:`Preprocessor.fit` reads the data once, whatever the steps (up to
:data:`GRAM_MAX_FEATURES` features).
"""

from __future__ import annotations

import abc
import hashlib
import io
import logging
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import dask
import dask.array as da
import numpy as np
import xarray as xr

import pipeline.model_files as model_files
from gmm_stream import _validate as check
from gmm_stream import check_features, one_blas_thread_per_dask_thread
from gmm_stream.exceptions import NumericalOverflowError
from pipeline.atomic import atomic_output, check_not_input, fsync_tree, remove_path
from pipeline.exceptions import (
    ConstantFeatureWarning,
    OutputExistsError,
    PreprocessingError,
    PreprocessingFormatError,
    PreprocessingNotFoundError,
)
from pipeline.formats import json_text, stamp

__all__ = ["Step", "Log1p", "Standardize", "PCA", "Preprocessor", "make_step", "STEPS", "STEP_ORDER"]

logger = logging.getLogger(__name__)

JSON_NAME = "preprocessing.json"
#: the arrays of a preprocessing of format version 1 (version 2 names its arrays file)
LEGACY_NPZ_NAME = "preprocessing.npz"
_ARRAYS_FILE = re.compile(r"^preprocessing-[0-9a-f]{16}\.npz$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Data = TypeVar("Data", xr.DataArray, da.Array, np.ndarray)


# -- out-of-core reductions ------------------------------------------------------------


def _compute(tasks: list[Any]) -> tuple[Any, ...]:
    """``dask.compute`` with one BLAS thread per task (Dask threads x BLAS threads <= cores)."""
    with one_blas_thread_per_dask_thread(tasks):
        return dask.compute(*tasks)


def _block_moments(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NaN-aware (count, mean, sum of squared deviations) of each column of one block."""
    x = np.asarray(block, dtype=np.float64)
    missing = np.isnan(x)
    any_missing = bool(missing.any())
    count = (x.shape[0] - missing.sum(axis=0)).astype(np.float64)
    total = np.where(missing, 0.0, x).sum(axis=0) if any_missing else x.sum(axis=0)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    dev = x - mean  # the one block-sized temporary
    if any_missing:
        dev[missing] = 0.0
    return count, mean, np.einsum("ij,ij->j", dev, dev)


def _merge_moments(
    a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan et al.'s pairwise merge of two (count, mean, M2) summaries."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    delta = mb - ma
    frac = np.divide(nb, n, out=np.zeros_like(n), where=n > 0)
    return n, ma + delta * frac, sa + sb + delta**2 * na * frac


def column_moments(X: da.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature NaN-aware count, mean and population variance, in one pass.

    Parameters
    ----------
    X : dask array of shape (n_samples, n_features)

    Returns
    -------
    count, mean, var : ndarray of shape (n_features,)
        ``mean`` and ``var`` are NaN where ``count == 0``.
    """
    parts = _compute([dask.delayed(_block_moments)(b) for b in X.to_delayed().ravel()])
    count, mean, m2 = parts[0]
    for part in parts[1:]:
        count, mean, m2 = _merge_moments((count, mean, m2), part)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = m2 / count
    mean = np.where(count > 0, mean, np.nan)
    return count, mean, var


def _block_gram_times(block: np.ndarray, mean: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """``Zc^T Zc @ basis`` for one block (``Zc^T Zc`` when ``basis`` is None); NaN -> mean."""
    z = np.asarray(block, dtype=np.float64) - mean
    np.nan_to_num(z, copy=False, nan=0.0)
    if basis is None:
        return z.T @ z
    return z.T @ (z @ basis)


def gram_times(X: da.Array, mean: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """One pass: ``Zc^T Zc @ basis`` with ``Zc = X - mean`` and NaN set to 0.

    Returns an array of shape (n_features, n_features) when ``basis`` is None, else
    (n_features, basis.shape[1]).
    """
    blocks = X.to_delayed().ravel()
    parts = _compute([dask.delayed(_block_gram_times)(b, mean, basis) for b in blocks])
    return np.sum(parts, axis=0)


# -- one pass: moments and the cross-products together -----------------------------------
#: PCA is exact from the d x d cross-product, gathered in the same pass as the
#: standardisation moments, up to this many features; above it (a d x d matrix of more
#: than 32 MiB per partial result) the axes come from the randomised subspace iteration.
GRAM_MAX_FEATURES = 2048


class _PairMoments:
    """Mergeable NaN-aware moments of every pair of features of some rows.

    For features ``i, j`` over the rows where both are observed: ``count[i, j]``, the
    mean of feature ``i`` there (``mean[i, j]``; ``mean[j, i]`` is feature ``j``'s) and
    the co-moment ``comoment[i, j] = sum (x_i - mean[i, j]) (x_j - mean[j, i])``. The
    diagonal holds each feature's count, mean and sum of squared deviations. Blocks
    without a missing value are held compactly (one count, one mean per feature). Two
    summaries merge exactly by Chan et al.'s pairwise update, element by element, so no
    sum of raw squares is ever formed (no cancellation when means are large).
    """

    __slots__ = ("count", "mean", "comoment")

    def __init__(self, count: np.ndarray | float, mean: np.ndarray, comoment: np.ndarray) -> None:
        self.count, self.mean, self.comoment = count, mean, comoment

    @property
    def complete(self) -> bool:
        return np.ndim(self.count) == 0

    @classmethod
    def of_block(cls, block: np.ndarray) -> _PairMoments:
        x = np.asarray(block, dtype=np.float64)
        missing = np.isnan(x)
        if not missing.any():
            shift = x.mean(axis=0) if x.shape[0] else np.zeros(x.shape[1])
            u = x - shift
            return cls(float(x.shape[0]), shift, u.T @ u)
        observed = (~missing).astype(np.float64)
        n_col = observed.sum(axis=0)
        shift = np.divide(np.where(missing, 0.0, x).sum(axis=0), n_col, out=np.zeros(x.shape[1]), where=n_col > 0)
        u = x - shift
        u[missing] = 0.0
        count = observed.T @ observed
        shifted_mean = np.divide(u.T @ observed, count, out=np.zeros_like(count), where=count > 0)
        comoment = u.T @ u - count * shifted_mean * shifted_mean.T
        return cls(count, shifted_mean + shift[:, None], comoment)

    def full(self) -> tuple[np.ndarray, np.ndarray]:
        """``(count, mean)`` as (d, d) matrices."""
        d = self.comoment.shape[0]
        if self.complete:
            return np.full((d, d), self.count), np.broadcast_to(self.mean[:, None], (d, d))
        return np.asarray(self.count), self.mean  # (d, d) already

    def __add__(self, other: _PairMoments) -> _PairMoments:
        if self.complete and other.complete:
            n = self.count + other.count
            if n == 0:
                return self
            delta = other.mean - self.mean
            frac = other.count / n
            return _PairMoments(n, self.mean + delta * frac,
                                self.comoment + other.comoment + np.outer(delta, delta) * self.count * frac)
        (na, ma), (nb, mb) = self.full(), other.full()
        n = na + nb
        delta = mb - ma
        frac = np.divide(nb, n, out=np.zeros_like(n), where=n > 0)
        return _PairMoments(n, ma + delta * frac, self.comoment + other.comoment + delta * delta.T * na * frac)

    def column_moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-feature count, mean and sum of squared deviations (the diagonal)."""
        count, mean = self.full()
        return np.diag(count).copy(), np.diag(mean).copy(), np.diag(self.comoment).copy()

    def centred_gram(self, centre: np.ndarray) -> np.ndarray:
        """``Zc^T Zc`` with ``Zc = X - centre`` and every missing entry of ``Zc`` set to 0."""
        if self.complete:
            delta = self.mean - centre
            return self.comoment + self.count * np.outer(delta, delta)
        offset = self.mean - centre[:, None]  # offset[i, j]: mean of x_i where j is observed, minus centre_i
        return self.comoment + self.count * offset * offset.T


def _moments(pairs: _PairMoments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature count, mean and population variance, as :func:`column_moments` returns them."""
    count, mean, m2 = pairs.column_moments()
    with np.errstate(invalid="ignore", divide="ignore"):
        var = m2 / count
    return count, np.where(count > 0, mean, np.nan), var


def pair_moments(X: da.Array) -> _PairMoments:
    """One pass over the row chunks of ``X``: the :class:`_PairMoments` of all its rows."""
    parts = _compute([dask.delayed(_PairMoments.of_block)(b) for b in X.to_delayed().ravel()])
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


# -- overflow to inf -------------------------------------------------------------------
# Values near the float64 maximum (1e300...) are finite, but their squares are not. The
# small reduced statistics (moments, cross-products) and the transformed blocks are
# checked; only when one is not finite is the data read once more, to tell an infinite
# input from an overflow and to say how large the values are.


def _features_text(names: Sequence[str] | None, idx: Sequence[int]) -> str:
    """``feature 'x3'`` / ``features 'x3', 'x7'`` (indices when the features have no names)."""
    labels = [repr(names[j]) if names is not None and j < len(names) else str(j) for j in idx]
    more = f" and {len(labels) - 10} more" if len(labels) > 10 else ""
    return f"feature {labels[0]}" if len(labels) == 1 else f"features {', '.join(labels[:10])}{more}"


def _power_of_ten(value: float) -> str:
    """``1e300`` for 3.2e300: a divisor that brings ``value`` near 1."""
    return f"1e{math.floor(math.log10(value))}" if value > 0 and math.isfinite(value) else "a large power of 10"


def _max_abs(X: da.Array, idx: np.ndarray) -> np.ndarray:
    """Largest ``|value|`` of the features ``idx`` (NaN ignored): one more pass, on the error path only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        (vmax,) = _compute([da.nanmax(da.fabs(X[:, idx]), axis=0)])
    return np.asarray(vmax, dtype=np.float64)


def _raise_not_finite(X: da.Array, idx: np.ndarray, step: str, quantity: str, names: Sequence[str] | None,
                      advice: str) -> None:
    """The statistic ``quantity`` of features ``idx`` of ``X`` is not finite: say whether the
    input holds infinities (:class:`PreprocessingError`) or the statistic overflowed
    (:class:`~gmm_stream.exceptions.NumericalOverflowError`)."""
    vmax = _max_abs(X, idx)
    infinite = idx[np.isinf(vmax)]
    if infinite.size:
        raise PreprocessingError(
            f"features {infinite[:10].tolist()} hold infinite values; remove or clip them before fitting"
        )
    top = float(np.nanmax(vmax)) if np.any(~np.isnan(vmax)) else float("nan")
    raise NumericalOverflowError(
        f"{step}: {quantity} of {_features_text(names, idx.tolist())} overflowed to inf (values up to {top:.3g}); "
        f"rescale the data (e.g. divide by {_power_of_ten(top)}) or {advice}",
        step=step, quantity=quantity, features=idx,
    )


def _overflowed_columns(out: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Columns of an element-wise transformed block with an infinity where the input had none.

    Two NaN-ignoring reductions of ``out`` (no temporary) find nothing in the common case;
    the element-wise test runs only when they see an infinity (or an all-NaN block).
    """
    if out.size == 0 or (np.isfinite(np.fmax.reduce(out, axis=None)) and np.isfinite(np.fmin.reduce(out, axis=None))):
        return np.zeros(0, np.intp)
    return np.flatnonzero((np.isinf(out) & ~np.isinf(block)).any(axis=0))


def _float32_advice(dtype: np.dtype) -> str:
    return ", or pass float64 data" if dtype == np.float32 else ""


# -- steps -----------------------------------------------------------------------------


class Step(abc.ABC):
    """One preprocessing step: ``fit`` on a Dask array out of core, ``transform`` lazily.

    A step's constructor arguments (``get_params``) and its fitted arrays
    (``get_arrays``) are everything needed to rebuild it; both are saved by
    :meth:`Preprocessor.save`.
    """

    name: ClassVar[str]
    _fitted_arrays: ClassVar[tuple[str, ...]] = ()
    #: the names of the input features, told by Preprocessor.fit (for overflow messages); unset before
    _feature_names: list[str] | None

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able)."""
        return {}

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Fitted arrays, by name."""
        self._check_fitted()
        return {k: np.asarray(getattr(self, k + "_")) for k in self._fitted_arrays}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore fitted arrays saved by :meth:`get_arrays`."""
        missing = [k for k in self._fitted_arrays if k not in arrays]
        if missing:
            raise PreprocessingFormatError(f"step {self.name!r}: saved arrays {missing} are missing")
        for key in self._fitted_arrays:
            setattr(self, key + "_", np.asarray(arrays[key]))

    @property
    def is_fitted(self) -> bool:
        return all(hasattr(self, k + "_") for k in self._fitted_arrays)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise PreprocessingError(f"step {self.name!r} is not fitted; call Preprocessor.fit first")

    @abc.abstractmethod
    def fit(self, X: da.Array) -> Step:
        """Fit on ``X`` of shape (n_samples, n_features), one chunk of features; return self."""

    @abc.abstractmethod
    def transform(self, X: da.Array) -> da.Array:
        """Lazy transform of ``X`` of shape (n_samples, n_features)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _log1p_block(block: np.ndarray) -> np.ndarray:
    low = np.nanmin(block) if block.size and not np.all(np.isnan(block)) else 0.0
    if low <= -1:
        raise PreprocessingError(
            f"log1p needs values > -1, got a minimum of {low} in a chunk; drop the log1p step "
            "or shift the data"
        )
    return np.log1p(block)


class Log1p(Step):
    """``log(1 + x)``, element-wise; nothing to fit."""

    name = "log1p"

    def fit(self, X: da.Array) -> Log1p:
        return self

    def transform(self, X: da.Array) -> da.Array:
        return da.map_blocks(_log1p_block, X, dtype=X.dtype)


def _standardize_block(block: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                       names: Sequence[str] | None = None) -> np.ndarray:
    out = np.subtract(block, mean, dtype=block.dtype)
    out /= scale
    cols = _overflowed_columns(out, block)
    if cols.size:
        vmax = float(np.nanmax(np.abs(block[:, cols])))
        raise NumericalOverflowError(
            f"standardize (transform): the standardised values of {_features_text(names, cols.tolist())} overflowed "
            f"to inf (values up to {vmax:.3g}, scale {float(np.min(scale[cols])):.3g}, {block.dtype}); rescale the "
            f"data as the training data were{_float32_advice(block.dtype)}",
            step="standardize", quantity="the standardised values", features=cols,
        )
    return out


def _constant_mask(count: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """scikit-learn's test for a feature whose variance is zero up to rounding."""
    eps = np.finfo(np.float64).eps
    with np.errstate(invalid="ignore"):
        bound = count * eps * var + (count * mean * eps) ** 2
        return ~(var > bound)


class Standardize(Step):
    """Per-feature ``(x - mean_) / scale_`` with NaN-aware statistics (``ddof=0``).

    Fitted attributes
    -----------------
    mean_ : ndarray of shape (n_features,)
    scale_ : ndarray of shape (n_features,)
        Standard deviation; 1 for constant features and features with no observed value.
    var_ : ndarray of shape (n_features,)
    n_samples_seen_ : ndarray of shape (n_features,)
        Number of observed (non-NaN) values of each feature.
    """

    name = "standardize"
    _fitted_arrays = ("mean", "scale", "var", "n_samples_seen")

    def fit(self, X: da.Array) -> Standardize:
        return self._fit_moments(X, *column_moments(X))

    def _fit_moments(self, X: da.Array, count: np.ndarray, mean: np.ndarray, var: np.ndarray) -> Standardize:
        """Fit from the NaN-aware moments of ``X`` (:func:`column_moments`); ``X`` is read
        again only on the error path, to describe a non-finite statistic."""
        bad = np.flatnonzero((count > 0) & ~(np.isfinite(mean) & np.isfinite(var)))
        if bad.size:  # infinite values in the input, or moments that overflowed
            quantity = "the sum of squares" if np.all(np.isfinite(mean[bad])) else "the sum"
            _raise_not_finite(X, bad, self.name, quantity, getattr(self, "_feature_names", None),
                              "add the log1p step before standardize")
        empty = count == 0
        constant = _constant_mask(count, mean, var) & ~empty
        _warn_constant(constant, empty)
        self.mean_ = np.where(empty, 0.0, mean)
        self.var_ = np.where(empty, 0.0, var)
        self.scale_ = np.where(constant | empty, 1.0, np.sqrt(self.var_))
        self.n_samples_seen_ = count.astype(np.int64)
        return self

    def transform(self, X: da.Array) -> da.Array:
        self._check_fitted()
        mean, scale = self.mean_.astype(X.dtype), self.scale_.astype(X.dtype)
        names = getattr(self, "_feature_names", None)
        names = None if names is None else tuple(names)
        return da.map_blocks(_standardize_block, X, mean, scale, dtype=X.dtype, names=names)


def _warn_constant(constant: np.ndarray, empty: np.ndarray) -> None:
    for mask, what in ((constant, "are constant"), (empty, "have no observed value")):
        if mask.any():
            idx = np.flatnonzero(mask)
            shown = idx[:10].tolist()
            more = f" and {idx.size - 10} more" if idx.size > 10 else ""
            warnings.warn(
                f"features {shown}{more} {what}; they are left unscaled (scale 1). "
                "Consider dropping them.",
                ConstantFeatureWarning,
                stacklevel=3,
            )


def _project_block(block: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    z = np.asarray(block, dtype=np.float64) - mean
    np.nan_to_num(z, copy=False, nan=0.0)
    out = (z @ components.T).astype(block.dtype, copy=False)
    if not np.all(np.isfinite(out)) and not np.isinf(block).any():  # finite input, no NaN left: an overflow
        axes = np.flatnonzero(~np.all(np.isfinite(out), axis=0))
        raise NumericalOverflowError(
            f"pca (transform): the projections on {', '.join(f'PC{j + 1}' for j in axes[:10])} overflowed to inf "
            f"(values up to {float(np.nanmax(np.abs(block))):.3g}, {block.dtype}); rescale the data as the training "
            f"data were, or add standardize before pca{_float32_advice(block.dtype)}",
            step="pca", quantity="the projections", features=(),
        )
    return out


def _orthonormal(Y: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(Y)
    return q


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude loading of each row positive (scikit-learn's svd_flip)."""
    rows = np.arange(components.shape[0])
    signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


class PCA(Step):
    """Projection on the first principal axes, fitted by randomised SVD over Dask chunks.

    Parameters
    ----------
    n_components : int
        Number of axes kept, ``1 <= n_components <= n_features``.
    n_oversamples : int, default 10
        Extra random directions of the sketch.
    n_power_iter : int, default 4
        Subspace iterations; each costs one pass over the data.
    random_state : int, default 0
        Seed of the random sketch.

    Fitted attributes
    -----------------
    mean_ : ndarray of shape (n_features,)
        NaN-aware feature means (the value a missing entry takes).
    components_ : ndarray of shape (n_components, n_features)
    explained_variance_ : ndarray of shape (n_components,)
        Eigenvalues of the covariance (``ddof=1``), as scikit-learn's ``PCA``.
    singular_values_ : ndarray of shape (n_components,)
    """

    name = "pca"
    _fitted_arrays = ("mean", "components", "explained_variance", "singular_values")

    def __init__(self, n_components: int, *, n_oversamples: int = 10, n_power_iter: int = 4,
                 random_state: int = 0) -> None:
        if int(n_components) < 1:
            raise PreprocessingError(f"pca n_components must be >= 1, got {n_components!r}")
        if int(n_oversamples) < 0 or int(n_power_iter) < 0:
            raise PreprocessingError(
                f"pca n_oversamples and n_power_iter must be >= 0, got {n_oversamples!r}, {n_power_iter!r}"
            )
        self.n_components = int(n_components)
        self.n_oversamples = int(n_oversamples)
        self.n_power_iter = int(n_power_iter)
        self.random_state = int(random_state)

    def get_params(self) -> dict[str, Any]:
        return {"n_components": self.n_components, "n_oversamples": self.n_oversamples,
                "n_power_iter": self.n_power_iter, "random_state": self.random_state}

    def _check_size(self, shape: tuple[int, ...]) -> None:
        n_samples, n_features = shape
        if self.n_components > min(n_samples, n_features):
            raise PreprocessingError(
                f"pca n_components={self.n_components} exceeds min(n_samples, n_features) = "
                f"{min(n_samples, n_features)}; choose fewer components"
            )

    def fit(self, X: da.Array) -> PCA:
        """Fit on ``X``: one pass (moments and cross-products together) up to
        :data:`GRAM_MAX_FEATURES` features, else ``n_power_iter + 3`` passes."""
        self._check_size(X.shape)
        if X.shape[1] <= GRAM_MAX_FEATURES:
            return self._fit_pairs(X, pair_moments(X))
        count, mean, _ = column_moments(X)
        return self._fit_randomized(X, self._checked_mean(X, count, mean))

    def _checked_mean(self, X: da.Array, count: np.ndarray, mean: np.ndarray) -> np.ndarray:
        bad = np.flatnonzero((count > 0) & ~np.isfinite(mean))
        if bad.size:  # infinite values in the input, or sums that overflowed
            _raise_not_finite(X, bad, self.name, "the sum", getattr(self, "_feature_names", None),
                              "add standardize (and log1p) before pca")
        return np.where(count > 0, mean, 0.0)

    def _fit_pairs(self, X: da.Array, pairs: _PairMoments, standardize: Standardize | None = None) -> PCA:
        """Exact PCA from the pair moments of the data before ``standardize`` (fitted), if any.

        The PCA sees ``Z = (Y - a) / s`` (``a = s = 1`` without standardize): its mean
        is ``(mean_Y - a) / s`` and its centred cross-product is the one of ``Y``, centred
        at the same point, divided by ``s_i s_j``; no further pass is needed.
        """
        count, mean, _ = _moments(pairs)
        offset = np.zeros_like(mean) if standardize is None else standardize.mean_
        scale = np.ones_like(mean) if standardize is None else standardize.scale_
        Z = X if standardize is None else standardize.transform(X)  # read only on the error path
        with np.errstate(invalid="ignore", over="ignore"):
            self.mean_ = self._checked_mean(Z, count, (mean - offset) / scale)
            gram = pairs.centred_gram(offset + scale * self.mean_) / np.outer(scale, scale)
        self._check_product(Z, gram)
        self._from_gram(gram, np.eye(X.shape[1]), gram, X.shape[0])
        return self

    def _fit_randomized(self, X: da.Array, mean: np.ndarray) -> PCA:
        """Randomised subspace iteration: ``n_power_iter + 2`` passes over ``X`` (mean known)."""
        self.mean_ = mean
        basis, gram_basis = self._range(X)
        self._from_gram(basis.T @ gram_basis, basis, gram_basis, X.shape[0])
        return self

    def _from_gram(self, small: np.ndarray, basis: np.ndarray, gram_basis: np.ndarray, n_samples: int) -> None:
        """Axes from the eigen-decomposition of ``basis^T Zc^T Zc basis`` (small, symmetric)."""
        evals, vecs = np.linalg.eigh(small)
        order = np.argsort(evals)[::-1][: self.n_components]
        evals = np.clip(evals[order], 0.0, None)
        self.components_ = _flip_signs((basis @ vecs[:, order]).T)
        self.explained_variance_ = evals / max(n_samples - 1, 1)
        self.singular_values_ = np.sqrt(evals)

    def _range(self, X: da.Array) -> tuple[np.ndarray, np.ndarray]:
        """An orthonormal basis Q (d, c) of the dominant subspace and ``Zc^T Zc @ Q``."""
        n_features = X.shape[1]
        width = self.n_components + self.n_oversamples
        if width >= n_features:
            return np.eye(n_features), self._gram_times(X, None)
        rng = np.random.default_rng(self.random_state)
        product = self._gram_times(X, rng.standard_normal((n_features, width)))
        for _ in range(self.n_power_iter):
            product = self._gram_times(X, _orthonormal(product))
        basis = _orthonormal(product)
        return basis, self._gram_times(X, basis)

    def _gram_times(self, X: da.Array, basis: np.ndarray | None) -> np.ndarray:
        """:func:`gram_times`, checked finite (row ``j`` of the product belongs to feature ``j``)."""
        product = gram_times(X, self.mean_, basis)
        self._check_product(X, product)
        return product

    def _check_product(self, X: da.Array, product: np.ndarray) -> None:
        bad = np.flatnonzero(~np.all(np.isfinite(product), axis=1))
        if bad.size:
            _raise_not_finite(X, bad, self.name, "the cross-products", getattr(self, "_feature_names", None),
                              "add standardize (and log1p) before pca")

    def transform(self, X: da.Array) -> da.Array:
        self._check_fitted()
        out_chunks = (X.chunks[0], (self.n_components,))
        return da.map_blocks(_project_block, X, self.mean_, self.components_, dtype=X.dtype, chunks=out_chunks)


#: Registry of steps, and the one order in which they run.
STEPS: dict[str, type[Step]] = {"log1p": Log1p, "standardize": Standardize, "pca": PCA}
STEP_ORDER: tuple[str, ...] = ("log1p", "standardize", "pca")


def make_step(spec: Step | str | Mapping[str, Any]) -> Step:
    """A step from a name (``"log1p"``) or a mapping (``{"name": "pca", "n_components": 10}``)."""
    if isinstance(spec, Step):
        return spec
    if isinstance(spec, str):
        name, params = spec, {}
    else:
        params = dict(spec)
        name = params.pop("name", None)
    if name not in STEPS:
        raise PreprocessingError(f"unknown preprocessing step {name!r}; use one of {list(STEP_ORDER)}")
    try:
        return STEPS[name](**params)
    except TypeError as err:
        raise PreprocessingError(f"bad arguments {params} for step {name!r}: {err}") from err


# -- the pipeline of steps -------------------------------------------------------------


def _as_dask(X: xr.DataArray | da.Array | np.ndarray) -> da.Array:
    data = X.data if isinstance(X, xr.DataArray) else X
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(-1, -1))
    if data.ndim != 2:
        raise PreprocessingError(f"preprocessing needs 2-D (samples, features) data, got shape {data.shape}")
    if data.dtype.kind not in "f":
        data = data.astype(np.float64)
    return data.rechunk({1: -1}) if len(data.chunks[1]) > 1 else data


def _feature_names(X: Any) -> list[str] | None:
    if isinstance(X, xr.DataArray) and X.dims[1] in X.coords:
        return [str(v) for v in np.asarray(X[X.dims[1]].values).tolist()]
    return None


class Preprocessor:
    """An ordered list of preprocessing steps, fitted out of core and saved beside the model.

    Parameters
    ----------
    steps : sequence of Step, str or mapping
        E.g. ``["log1p", "standardize", {"name": "pca", "n_components": 30}]``. Each
        name at most once, in the order ``log1p, standardize, pca``.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen by :meth:`fit`.
    feature_names_in_ : list of str or None
        Feature names seen by :meth:`fit` (from a DataArray's feature coordinate).

    Examples
    --------
    >>> pre = Preprocessor(["standardize", {"name": "pca", "n_components": 10}])  # doctest: +SKIP
    >>> Z = pre.fit(X).transform(X)                  # lazy                      # doctest: +SKIP
    >>> pre.save("model-dir"); Preprocessor.load("model-dir").transform(X_new)  # doctest: +SKIP
    """

    def __init__(self, steps: Sequence[Step | str | Mapping[str, Any]] = ()) -> None:
        self.steps: list[Step] = [make_step(s) for s in steps]
        names = [s.name for s in self.steps]
        ranks = [STEP_ORDER.index(n) for n in names]
        if ranks != sorted(set(ranks)):
            raise PreprocessingError(
                f"preprocessing steps {names} must each appear once, in the order {list(STEP_ORDER)}"
            )

    def __repr__(self) -> str:
        return f"Preprocessor({self.steps!r})"

    def get_config(self) -> list[dict[str, Any]]:
        """The step specs, as :class:`Preprocessor` accepts them (JSON-able)."""
        return [{"name": s.name, **s.get_params()} for s in self.steps]

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "n_features_in_") and all(s.is_fitted for s in self.steps)

    def fit(self, X: xr.DataArray | da.Array | np.ndarray) -> Preprocessor:
        """Fit every step in order, each on the output of the previous ones.

        Parameters
        ----------
        X : DataArray, dask array or ndarray of shape (n_samples, n_features)
            Read once: the standardisation moments and the PCA cross-products are
            gathered in the same pass. Only a PCA of more than
            :data:`GRAM_MAX_FEATURES` features reads it ``n_power_iter + 2`` more times.

        Returns
        -------
        self
        """
        data = _as_dask(X)
        self.n_features_in_ = int(data.shape[1])
        self.feature_names_in_ = _feature_names(X)
        self._name_features()
        steps = {step.name: step for step in self.steps}
        if "log1p" in steps:
            data = steps["log1p"].transform(data)
        standardize = cast("Standardize | None", steps.get("standardize"))
        pca = cast("PCA | None", steps.get("pca"))
        if pca is not None:
            pca._check_size(data.shape)
        if pca is not None and data.shape[1] <= GRAM_MAX_FEATURES:
            logger.info("fitting %s on %s rows in one pass", self, data.shape[0])
            pairs = pair_moments(data)  # standardisation moments and PCA cross-products together
            if standardize is not None:
                standardize._fit_moments(data, *_moments(pairs))
            pca._fit_pairs(data, pairs, standardize)
        elif standardize is not None or pca is not None:
            logger.info("fitting %s on %s rows", self, data.shape[0])
            count, mean, var = column_moments(data)
            if standardize is not None:
                standardize._fit_moments(data, count, mean, var)
            if pca is not None:
                if standardize is None:
                    pca._fit_randomized(data, pca._checked_mean(data, count, mean))
                else:  # the standardised data have mean 0 wherever a feature is observed
                    pca._fit_randomized(standardize.transform(data), np.zeros(data.shape[1]))
        return self

    def _name_features(self) -> None:
        """Tell the steps the feature names, for their overflow messages (pca is always last)."""
        for step in self.steps:
            step._feature_names = self.feature_names_in_

    def transform(self, X: Data) -> Data:
        """Apply the fitted steps lazily.

        Parameters
        ----------
        X : DataArray, dask array or ndarray of shape (n_samples, n_features)

        Returns
        -------
        Same type as ``X`` (NumPy in, NumPy out), of shape (n_samples, n_features_out).
        A DataArray keeps its sample coordinates; after ``pca`` its features are
        named ``PC1 ... PCk``.
        """
        if not self.is_fitted:
            raise PreprocessingError("this Preprocessor is not fitted; call fit first or load a saved one")
        data = _as_dask(X)
        self._check_features(data, X)
        for step in self.steps:
            data = step.transform(data)
        if isinstance(X, np.ndarray):
            return data.compute()
        if isinstance(X, xr.DataArray):
            return self._wrap(X, data)
        return data

    def fit_transform(self, X: Data) -> Data:
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform_means(self, means: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Map points of the preprocessed space (e.g. component means) back to the input units.

        The fitted steps are undone in reverse order:

        pca
            ``m @ components_ + mean_``: the back-projection. PCA keeps only the span of
            its ``n_components`` axes, so this is not an inverse but the **projection**: the
            point of the affine span ``mean_ + span(components_)`` whose PCA coordinates are
            ``m``. For a component mean (an average of PCA coordinates) it is the
            orthogonal projection, onto that span, of the component's mean in the space
            before PCA. Exact only when ``n_components == n_features``.
        standardize
            ``m * scale_ + mean_``: exact (affine, so a mean maps to the mean).
        log1p
            ``expm1(m)``. Of a mean, this is **not** the mean in the original units but
            ``expm1`` of the mean of the ``log1p`` values (``exp(mean(log(1 + x))) - 1``, a
            geometric-type mean, at most the arithmetic mean).

        Parameters
        ----------
        means : array-like of shape (n_points, n_features_out) or (n_features_out,)
            Points in the space :meth:`transform` outputs.

        Returns
        -------
        ndarray of float64, shape (n_points, n_features_in_) (1-D for a 1-D input).
        """
        if not self.is_fitted:
            raise PreprocessingError("this Preprocessor is not fitted; call fit first or load a saved one")
        m = np.asarray(means, dtype=np.float64)
        one = m.ndim == 1
        m = np.atleast_2d(m)
        width = self.steps[-1].n_components if self.steps and isinstance(self.steps[-1], PCA) else self.n_features_in_
        if m.ndim != 2 or m.shape[1] != width:
            raise PreprocessingError(f"means must have {width} columns (the preprocessed features), got shape "
                                     f"{np.shape(means)}")
        for step in reversed(self.steps):
            if isinstance(step, PCA):
                m = m @ step.components_ + step.mean_
            elif isinstance(step, Standardize):
                m = m * step.scale_ + step.mean_
            elif isinstance(step, Log1p):
                m = np.expm1(m)
            else:  # pragma: no cover - every registered step is handled above
                raise PreprocessingError(f"step {step.name!r} has no inverse")
        return m[0] if one else m

    def _check_features(self, data: da.Array, X: Any) -> None:
        check_features(int(data.shape[1]), _feature_names(X), expected=self.n_features_in_,
                       expected_names=self.feature_names_in_, owner="the preprocessing", error=PreprocessingError)

    def _wrap(self, X: xr.DataArray, data: da.Array) -> xr.DataArray:
        row_dim, col_dim = X.dims
        kept = X.drop_vars([k for k, v in X.coords.items() if col_dim in v.dims]).coords  # keeps lazy ids lazy
        out = xr.DataArray(data, dims=(row_dim, col_dim), coords=kept, name=X.name, attrs=dict(X.attrs))
        if self.steps and self.steps[-1].name == "pca":
            return out.assign_coords({col_dim: [f"PC{i + 1}" for i in range(data.shape[1])]})
        if col_dim in X.coords:
            return out.assign_coords({col_dim: X[col_dim].values})
        return out

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``preprocessing.json`` and its arrays ``preprocessing-<digest>.npz`` into ``path``.

        The directory may be the model's own (the names do not clash): save the model
        first (:func:`pipeline.save_model` creates the directory and refuses an existing
        one), then the preprocessing.

        The pair is replaced as one: the arrays are written (and flushed) to a new file
        named after their SHA-256, then ``preprocessing.json``, which records that name
        and digest, replaces the old one in one rename; arrays files it no longer names
        are removed last. A crash at any point leaves the old pair or the new one, each
        loadable, never the JSON of one with the arrays of the other (a stray arrays file
        at worst, removed by the next save).

        Raises
        ------
        OutputExistsError
            If a saved preprocessing is already there and ``overwrite`` is False.
        InputOverlapError
            If ``path`` (resolved) overlaps an input opened in this process.
        """
        if not self.is_fitted:
            raise PreprocessingError("cannot save a Preprocessor that is not fitted; call fit first")
        directory = Path(path)
        check_not_input(directory)  # before anything is created
        target_json = directory / JSON_NAME
        if target_json.exists() and not overwrite:
            raise OutputExistsError(f"{target_json} exists; pass overwrite=True to replace it")
        directory.mkdir(parents=True, exist_ok=True)
        # Any: savez's stubs type **kwds together with its allow_pickle keyword
        arrays: dict[str, Any] = {f"{i}.{s.name}.{k}": v for i, s in enumerate(self.steps)
                                  for k, v in s.get_arrays().items()}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        arrays_file = f"preprocessing-{digest[:16]}.npz"
        _replace_file(directory / arrays_file, data)
        _replace_file(target_json, json_text(self._header(arrays_file, digest)).encode())  # the switch
        _remove_stale_arrays(directory, keep=arrays_file)
        logger.info("saved preprocessing %r to %s", self, directory)
        return directory

    def _header(self, arrays_file: str, arrays_sha256: str) -> dict[str, Any]:
        from pipeline.provenance import gmm_stream_version

        return {
            **stamp("preprocessing"),
            "gmm_stream_version": gmm_stream_version(),
            "n_features_in": self.n_features_in_,
            "feature_names_in": self.feature_names_in_,
            "steps": self.get_config(),
            "arrays_file": arrays_file,
            "arrays_sha256": arrays_sha256,
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Preprocessor:
        """Read a preprocessing saved by :meth:`save` (no pickle involved), checking both files.

        Each must be a regular file (not a symbolic link, a directory or a FIFO; the
        directory itself may be reached through a link). ``preprocessing.json`` is bounded
        in size and nesting, of a known format version, with exactly the expected keys and
        value types, known step names in order with exactly their parameters; the arrays
        file it names has the SHA-256 it records and holds exactly the arrays of those
        steps, of the shapes the feature count gives, float (counts integer), finite, with
        ``scale > 0``, non-negative variances and orthonormal PCA axes. A preprocessing
        saved by an earlier gmm-stream (format version 1: ``preprocessing.json`` beside
        ``preprocessing.npz``, no digest) loads too.

        Raises
        ------
        PreprocessingNotFoundError
            If ``path`` holds no ``preprocessing.json``.
        PreprocessingFormatError
            If a file or a value is not what :meth:`save` writes; the message names the
            file and the field.
        """
        directory = Path(path)
        header = _read_header(directory)
        pre = _steps_from_header(model_files.SavedFile(directory, JSON_NAME, _WHAT, PreprocessingFormatError), header)
        arrays = _read_arrays(directory, pre.steps, header)
        for i, step in enumerate(pre.steps):
            prefix = f"{i}.{step.name}."
            step.set_arrays({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        pre.n_features_in_ = header["n_features_in"]
        pre.feature_names_in_ = header["feature_names_in"]
        pre._name_features()
        return pre


def _replace_file(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` in one rename, flushed to disk before it."""
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_bytes(data)
        fsync_tree(tmp)


def _remove_stale_arrays(directory: Path, keep: str) -> None:
    """Remove the arrays files of earlier saves (and of interrupted ones) but ``keep``."""
    for entry in os.scandir(directory):
        if entry.name != keep and (entry.name == LEGACY_NPZ_NAME or _ARRAYS_FILE.match(entry.name)):
            logger.info("removing %s, the arrays of an earlier preprocessing", entry.path)
            remove_path(Path(entry.path))


# -- checking a saved preprocessing (the readers of pipeline.model_files) ---------------

_WHAT = "preprocessing directory"

#: the parameters of each step in preprocessing.json, and their checkers
_STEP_PARAMS: dict[str, dict[str, check.Checker]] = {
    "log1p": {},
    "standardize": {},
    "pca": {"n_components": check.integer(1), "n_oversamples": check.integer(0),
            "n_power_iter": check.integer(0), "random_state": check.integer()},
}


def _check_step(src: check.Reporter, field: str, value: Any) -> None:
    """One step spec: a known ``name`` and exactly that step's parameters."""
    if not isinstance(value, dict) or "name" not in value:
        check.check_object(src, field, value, {"name": check.string()})
    check.string(*STEP_ORDER)(src, f"{field}.name", value["name"])
    check.check_object(src, field, value, {"name": check.string(), **_STEP_PARAMS[value["name"]]})


def _arrays_file(src: check.Reporter, field: str, value: Any) -> None:
    """The name of an arrays file beside ``preprocessing.json`` (never a path elsewhere)."""
    check.string()(src, field, value)
    if not _ARRAYS_FILE.match(value):
        raise src.fail(field, f"must be a file name like 'preprocessing-0123456789abcdef.npz', got {value!r}")


def _sha256(src: check.Reporter, field: str, value: Any) -> None:
    check.string()(src, field, value)
    if not _SHA256.match(value):
        raise src.fail(field, f"must be a SHA-256 digest (64 lowercase hexadecimal digits), got {value!r}")


_STAMP_KEYS: dict[str, check.Checker] = {"gmm_stream_version": check.string()}
#: the keys of preprocessing.json besides the stamp, by format version
_HEADER_KEYS: dict[int, dict[str, check.Checker]] = {1: {
    "n_features_in": check.integer(1),
    "feature_names_in": check.optional(check.list_of(check.string())),
    "steps": check.list_of(_check_step),
}}
_HEADER_KEYS[2] = {**_HEADER_KEYS[1], "arrays_file": _arrays_file, "arrays_sha256": _sha256}


def _read_header(directory: Path) -> dict[str, Any]:
    """``preprocessing.json``, checked: format and version, keys, types, feature names.

    A version 1 header gets ``arrays_file`` ``preprocessing.npz`` and no ``arrays_sha256``.
    """
    if not os.path.lexists(directory / JSON_NAME):
        raise PreprocessingNotFoundError(
            f"no saved preprocessing at {directory} ({JSON_NAME} missing); save one with Preprocessor.save"
        )
    src = model_files.SavedFile(directory, JSON_NAME, _WHAT, PreprocessingFormatError)
    header, version = model_files.read_stamped(src, "preprocessing", _STAMP_KEYS)
    check.check_object(src, "", header, _HEADER_KEYS[int(version)])  # an integer format
    check.check_feature_names(src, header)
    return {"arrays_file": LEGACY_NPZ_NAME, "arrays_sha256": None, **header}


def _steps_from_header(src: model_files.SavedFile, header: dict[str, Any]) -> Preprocessor:
    """The (unfitted) steps of the header, in a valid order, PCA no wider than the features."""
    try:
        pre = Preprocessor(header["steps"])
    except PreprocessingError as err:
        raise src.fail("steps", f"are not a valid preprocessing: {err}") from None
    n_features = header["n_features_in"]
    for i, step in enumerate(pre.steps):
        if isinstance(step, PCA) and step.n_components > n_features:
            raise src.fail(f"steps[{i}].n_components",
                           f"is {step.n_components}, more than n_features_in = {n_features}")
    return pre


def _step_shapes(step: Step, n_features: int) -> dict[str, tuple[int, ...]]:
    """Shape of each fitted array of ``step`` on ``n_features`` input features."""
    if isinstance(step, PCA):
        k = step.n_components
        return {"mean": (n_features,), "components": (k, n_features), "explained_variance": (k,),
                "singular_values": (k,)}
    return dict.fromkeys(step._fitted_arrays, (n_features,))


def _saved_layout(steps: Sequence[Step], n_features: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, kind) of every array of the arrays file (counts are integers)."""
    return {f"{i}.{step.name}.{key}": (shape, "i" if key == "n_samples_seen" else "f")
            for i, step in enumerate(steps) for key, shape in _step_shapes(step, n_features).items()}


def _check_step_values(src: model_files.SavedFile, prefix: str, step: Step, arrays: Mapping[str, np.ndarray]) -> None:
    """Ranges of a step's arrays (already finite): positive scales, non-negative variances
    and counts, orthonormal PCA axes."""
    if isinstance(step, Standardize):
        check.check_nonnegative(src, prefix + "scale", arrays[prefix + "scale"], strict=True)
        check.check_nonnegative(src, prefix + "var", arrays[prefix + "var"])
        check.check_nonnegative(src, prefix + "n_samples_seen", arrays[prefix + "n_samples_seen"])
    if isinstance(step, PCA):
        check.check_nonnegative(src, prefix + "explained_variance", arrays[prefix + "explained_variance"])
        check.check_nonnegative(src, prefix + "singular_values", arrays[prefix + "singular_values"])
        components = arrays[prefix + "components"]
        err = float(np.max(np.abs(components @ components.T - np.eye(components.shape[0]))))
        if err > 1e-6:
            raise src.fail(prefix + "components", f"are not orthonormal (largest |C Cᵀ - I| is {err:.3g})")


def _read_arrays(directory: Path, steps: Sequence[Step], header: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The arrays file the header names, checked: its digest, then against the steps of the header."""
    src = model_files.SavedFile(directory, header["arrays_file"], _WHAT, PreprocessingFormatError)
    n_features = header["n_features_in"]
    widths = "".join(f", pca n_components={s.n_components}" for s in steps if isinstance(s, PCA))
    arrays = model_files.load_arrays(src, _saved_layout(steps, n_features), f"n_features_in={n_features}{widths}",
                                     sha256=header["arrays_sha256"], recorded_in=JSON_NAME)
    for i, step in enumerate(steps):
        _check_step_values(src, f"{i}.{step.name}.", step, arrays)
    return arrays
