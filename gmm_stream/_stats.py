"""Sufficient statistics of a chunk (the E-step) and the M-step that turns them into parameters.

This is the whole of the math, over NumPy blocks; nothing here knows about Dask. The
derivation is in docs/math.md: per chunk, ``N_k = Σ w r``, ``S1_k = Σ w r x̂`` and
``S2_k = Σ w r (x̂x̂ᵀ + C)`` with ``x̂`` the row completed by its conditional mean and ``C`` the
conditional covariance of its missing entries.

Precision: every statistic is centred on the means of the parameters used in the E-step
(``center``), so sums of squares never subtract large, nearly equal numbers.

* 'full' and 'tied': rows are centred on a shift ``s`` (``Σ π_k μ_k`` rounded to the
  input's dtype, so ``x − s`` is exact for nearby values) and then on each component's
  centre ``c_k = μ_k − s`` (rounded once to that dtype); the big GEMMs (``Z L_k`` for the
  Mahalanobis terms, ``(r Z)ᵀ Z`` for ``S2``) run in the input's dtype, so float32 input
  keeps the float32 speed. The E-step then uses the means ``μ̃_k = s + c_k`` exactly, which
  differ from ``μ_k`` by at most half an ulp of ``|μ_k − s|`` (not of ``|μ_k|``), and the
  chunk's sums are re-centred exactly from ``μ̃`` to ``μ`` (``_recenter``). Rounding ``s``
  and ``c_k`` without accounting for them would offset every row of a large-norm cloud by
  up to an ulp of its norm, biasing the means and the lower bound of a float32 fit. The
  log-sum-exp, the log-likelihood and the block sums are float64.
* 'diag' and 'spherical' use an expansion ``Σ p (x−c)² = x²·p − 2x·cp + c²p`` around the
  shift; its terms cancel when the components lie far from the shift, so it always runs
  in float64 (its products are only ``n·K·d`` flops, not ``n·K·d²``).

GEMMs run over blocks of a few thousand rows; every block's result is added to float64
accumulators.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._kernels import log_prob_from_whitened, weighted_centred_rows
from ._missing import completed_weighted_rows, condition_rows, factor_offsets, missing_indices
from ._params import GaussianParams, log_det_cholesky
from .exceptions import EmptyComponentWarning, InvalidInputError, NumericalOverflowError

LOG_2PI = float(np.log(2.0 * np.pi))
#: bytes of the per-block work buffer (K × rows × d values); sets the block length
BLOCK_BYTES = 2 * 2**20
#: a component with less responsibility mass than this is "empty" (see ``m_step``)
EMPTY_MASS = 1e-8

__all__ = ["SufficientStats", "chunk_statistics", "estimate_weighted_log_prob", "m_step", "posterior"]


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True, eq=False)
class SufficientStats:
    """Expected sufficient statistics of some rows, mergeable by ``+``.

    Attributes
    ----------
    N : ndarray of shape (n_components,)
        ``Σ_i w_i r_ik``.
    S1 : ndarray of shape (n_components, n_features)
        ``Σ_i w_i r_ik (x̂_ik − center_k)``.
    S2 : ndarray of shape (n_components, n_features, n_features), or (n_components, n_features)
        ``Σ_i w_i r_ik ((x̂_ik − center_k)(x̂_ik − center_k)ᵀ + C_ik)``; only the diagonal for
        'diag' and 'spherical' covariances.
    center : ndarray of shape (n_components, n_features)
        The means of the parameters of the E-step; the reference the sums are centred on.
    loglik : float
        ``Σ_i w_i log p(x_i,o)`` over usable rows.
    n_rows : float
        ``Σ_i w_i`` over usable rows (rows with at least one observed value).
    n_empty : int
        Number of rows with no observed value (skipped).
    feature_counts : ndarray of shape (n_features,)
        Number of observed values of each feature.
    """

    N: np.ndarray
    S1: np.ndarray
    S2: np.ndarray
    center: np.ndarray
    loglik: float = 0.0
    n_rows: float = 0.0
    n_empty: int = 0
    feature_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def zeros(cls, center: np.ndarray, diagonal: bool) -> SufficientStats:
        k, d = center.shape
        s2 = np.zeros((k, d) if diagonal else (k, d, d))
        return cls(np.zeros(k), np.zeros((k, d)), s2, center, 0.0, 0.0, 0, np.zeros(d, np.int64))

    def __add__(self, other: SufficientStats) -> SufficientStats:
        if not isinstance(other, SufficientStats):
            return NotImplemented
        if self.center.shape != other.center.shape or not np.array_equal(self.center, other.center):
            raise ValueError("statistics centred on different points cannot be added")
        return SufficientStats(
            self.N + other.N,
            self.S1 + other.S1,
            self.S2 + other.S2,
            self.center,
            self.loglik + other.loglik,
            self.n_rows + other.n_rows,
            self.n_empty + other.n_empty,
            self.feature_counts + other.feature_counts,
        )

    def __radd__(self, other):  # lets sum() start from 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    @property
    def diagonal(self) -> bool:
        return self.S2.ndim == 2

    def scaled(self, factor: float) -> SufficientStats:
        """The statistics of the same rows with every weight multiplied by ``factor``
        (``N``, ``S1``, ``S2``, ``loglik`` and ``n_rows`` scale; counts of rows do not)."""
        return replace(self, N=self.N * factor, S1=self.S1 * factor, S2=self.S2 * factor,
                       loglik=self.loglik * factor, n_rows=self.n_rows * factor)

    def recentred(self, center: np.ndarray) -> SufficientStats:
        """The same statistics centred on ``center`` (K, d) instead of ``self.center``, exactly:
        with ``δ = self.center − center``, ``S1' = S1 + N δ`` and
        ``S2' = S2 + S1 δᵀ + δ S1ᵀ + N δ δᵀ`` (the diagonal of it for 'diag' and 'spherical')."""
        center = np.asarray(center, dtype=np.float64)
        delta = self.center - center
        s1 = self.S1 + self.N[:, None] * delta
        if self.diagonal:
            s2 = self.S2 + 2.0 * self.S1 * delta + self.N[:, None] * delta**2
        else:
            cross = np.einsum("ki,kj->kij", self.S1, delta)
            s2 = (self.S2 + cross + cross.transpose(0, 2, 1)
                  + self.N[:, None, None] * np.einsum("ki,kj->kij", delta, delta))
        return replace(self, S1=s1, S2=s2, center=center)

    def raw_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Uncentred ``(Σ w r x̂, Σ w r (x̂x̂ᵀ + C))`` as written in docs/math.md."""
        mu, n, s1 = self.center, self.N, self.S1
        raw1 = s1 + n[:, None] * mu
        if self.diagonal:
            raw2 = self.S2 + 2.0 * s1 * mu + n[:, None] * mu**2
        else:
            outer = np.einsum("ki,kj->kij", s1, mu)
            raw2 = self.S2 + outer + outer.transpose(0, 2, 1) + n[:, None, None] * np.einsum("ki,kj->kij", mu, mu)
        return raw1, raw2

    def to_arrays(self) -> dict[str, np.ndarray | np.generic]:
        """The statistics as a dict of arrays and NumPy scalars (the ``stats_*`` arrays of a checkpoint's state)."""
        return {
            "N": self.N, "S1": self.S1, "S2": self.S2, "center": self.center,
            "loglik": np.float64(self.loglik), "n_rows": np.float64(self.n_rows),
            "n_empty": np.int64(self.n_empty), "feature_counts": self.feature_counts,
        }

    @classmethod
    def from_arrays(cls, arrays) -> SufficientStats:
        return cls(
            np.asarray(arrays["N"]), np.asarray(arrays["S1"]), np.asarray(arrays["S2"]),
            np.asarray(arrays["center"]), float(arrays["loglik"]), float(arrays["n_rows"]),
            int(arrays["n_empty"]), np.asarray(arrays["feature_counts"]),
        )


# ------------------------------------------------------------------ per-call preparation


@dataclass
class _Prepared:
    """Everything the block loop needs from the parameters, in the compute dtype."""

    covariance_type: str
    dtype: np.dtype  # of the GEMMs: the input's for full/tied, float64 for diag/spherical
    shift: np.ndarray  # (d,) in dtype
    centers: np.ndarray  # (K, d) means − shift, in dtype
    log_weights: np.ndarray  # (K,)
    logdet: np.ndarray  # (K,) log det L_k
    offset: np.ndarray | None = None  # (K, d) float64: shift + centers − means (full/tied)
    chol: np.ndarray | None = None  # (K, d, d) in dtype (full/tied)
    chol_wide: np.ndarray | None = None  # (d, K·d) in dtype: [L_1 … L_K] ('full'), L ('tied')
    bias: np.ndarray | None = None  # (K, d) in dtype: c_k L_k (full/tied)
    chol64: np.ndarray | None = None  # (K, d, d) float64 (full/tied)
    prec64: np.ndarray | None = None  # (K, d, d) float64 (full/tied)
    prec: np.ndarray | None = None  # (K, d) float64 (diag/spherical)
    log_prec_chol: np.ndarray | None = None  # (K, d) (diag/spherical)
    var: np.ndarray | None = None  # (K, d) float64 (diag/spherical)

    @property
    def diagonal(self) -> bool:
        return self.prec is not None


def default_shift(params: GaussianParams) -> np.ndarray:
    """The point the data are centred on: the mixture's mean ``Σ π_k μ_k``."""
    w = params.weights / params.weights.sum()
    return w @ params.means


def _prepare(params: GaussianParams, dtype: np.dtype, shift: np.ndarray | None) -> _Prepared:
    k, d = params.means.shape
    kind = params.covariance_type
    if kind in ("diag", "spherical"):
        dtype = np.dtype(np.float64)
    pc = np.asarray(params.precisions_cholesky, dtype=np.float64)
    means = np.asarray(params.means, dtype=np.float64)
    shift = (default_shift(params) if shift is None else np.asarray(shift, np.float64)).astype(dtype)
    centers = (means - shift).astype(dtype)
    with np.errstate(divide="ignore"):
        log_weights = np.log(np.asarray(params.weights, dtype=np.float64))
    prep = _Prepared(
        covariance_type=kind,
        dtype=dtype,
        shift=shift,
        centers=centers,
        log_weights=log_weights,
        logdet=np.broadcast_to(log_det_cholesky(pc, kind, d), (k,)).astype(np.float64),
    )
    if kind in ("full", "tied"):
        prep.offset = (shift.astype(np.float64) + centers.astype(np.float64)) - means
        chol = np.broadcast_to(pc, (k, d, d))
        prep.chol = np.ascontiguousarray(chol, dtype=dtype)
        prep.chol64 = np.ascontiguousarray(chol, dtype=np.float64)
        prep.prec64 = np.ascontiguousarray(np.einsum("kij,klj->kil", chol, chol))
        wide = pc if kind == "tied" else np.asarray(pc).transpose(1, 0, 2).reshape(d, k * d)
        prep.chol_wide = np.ascontiguousarray(wide, dtype=dtype)
        # c_k L_k from the rounded c_k and L_k, in float64, rounded once
        prep.bias = np.einsum("kd,kde->ke", centers.astype(np.float64),
                              prep.chol.astype(np.float64)).astype(dtype)
    else:
        pcd = np.broadcast_to(pc[:, None] if kind == "spherical" else pc, (k, d))
        prep.prec = np.ascontiguousarray(pcd**2)
        prep.log_prec_chol = np.log(pcd)
        prep.var = 1.0 / pcd**2
    return prep


def _recenter(acc: dict, offset: np.ndarray) -> None:
    """Sums centred on ``μ̃ = μ + offset`` → the same sums centred on ``μ`` (exact algebra):
    ``S1 += N·offset``, ``S2 += S1'·offsetᵀ + offset·S1'ᵀ + N·offset·offsetᵀ``."""
    if not np.any(offset):
        return
    s1 = acc["S1"].copy()
    outer = np.einsum("ki,kj->kij", s1, offset)
    acc["S2"] += outer + outer.transpose(0, 2, 1) + acc["N"][:, None, None] * np.einsum("ki,kj->kij", offset, offset)
    acc["S1"] += acc["N"][:, None] * offset


class _Workspace(threading.local):
    """Work buffers reused from block to block and call to call (one set per thread).

    Fresh large allocations are slow inside Dask workers (their malloc settings make every
    new page fault), so the hot loop never allocates an n × d array per operation.
    """

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        size = int(np.prod(shape))
        buffers: dict[Any, np.ndarray] = self.__dict__  # this thread's, by (name, dtype)
        buf = buffers.get((name, np.dtype(dtype)))
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype)
            buffers[(name, np.dtype(dtype))] = buf
        return buf[:size].reshape(shape)


_ws = _Workspace()


def block_rows(n_components: int, n_features: int) -> int:
    """Rows per block so that the K × rows × d work buffer stays near ``BLOCK_BYTES``."""
    rows = BLOCK_BYTES // (8 * n_components * max(n_features, 1))
    return int(np.clip(rows, 512, 4096))


# --------------------------------------------------------------------------- the E-step


def _whitened_complete(Xc, prep: _Prepared) -> np.ndarray:
    """The complete rows times ``[L_1 … L_K]`` ('full': one wide GEMM, n × d times d × K·d,
    instead of K narrow ones over K shifted copies of the block) or times ``L`` ('tied').

    ``Y_k = (x − c_k) L_k`` is then ``XL_k − c_k L_k``, subtracted in
    :func:`log_prob_from_whitened`: its rounding is that of the product's terms,
    ``eps·|x − s|·|L_k|``, as it was for ``(x − s − c_k) L_k``.
    """
    assert prep.chol_wide is not None  # prepared for full/tied
    n = Xc.shape[0]
    return np.matmul(Xc, prep.chol_wide, out=_ws.get("Yw", (n, prep.chol_wide.shape[1]), prep.dtype))


def _log_prob_full(Xc, mask, prep: _Prepared):
    """Weighted log-probabilities (n, K) and what the statistics need: ``(rows, None)`` for
    complete rows; for rows with missing entries, the rows with 0 there and the per-row
    results of :func:`condition_rows` (conditional means, inverse factors).

    Both go through one wide GEMM (:func:`_whitened_complete`); complete rows then need
    ``‖Y_k‖²`` per row, rows with missing entries their small solves.
    """
    n, d = Xc.shape
    k = prep.centers.shape[0]
    const = prep.log_weights + prep.logdet
    logp = np.empty((k, n))
    if mask is None:
        log_prob_from_whitened(_whitened_complete(Xc, prep), prep.bias, const - 0.5 * d * LOG_2PI, logp)
        return logp.T, (Xc, None)
    X0 = _ws.get("X0", (n, d), prep.dtype)
    np.copyto(X0, Xc)
    np.putmask(X0, mask, 0)
    missing = missing_indices(mask)
    off = factor_offsets(missing[1])
    U = _ws.get("U", (k, n, max(int(missing[1].max()), 1)), np.float64)
    shared = 1 if prep.covariance_type == "tied" else k  # 'tied': one factor per row, for every component
    F = _ws.get("F", (shared, int(off[-1])), np.float64)
    LD = _ws.get("LD", (shared, n), np.float64)
    condition_rows(_whitened_complete(X0, prep), prep.bias, prep.centers, prep.chol64, prep.prec64,
                   missing, off, const, logp, U, F, LD)
    return logp.T, (X0, (missing, off, U, F))


def _log_prob_diag(Xc, mask, prep: _Prepared):
    """Weighted log-probabilities (n, K) and ``(X0, X0², obs)``: rows centred on the shift
    (float64) with 0 at missing entries, their squares (computed once, for the E-step and the
    statistics), and the observed indicator (None when the rows are complete)."""
    n, d = Xc.shape
    X0 = Xc
    obs = None
    if mask is not None:
        X0 = Xc.copy()
        np.putmask(X0, mask, 0)
        obs = (~mask).astype(np.float64)
    X2 = np.multiply(X0, X0, out=_ws.get("X2", (n, d), np.float64))
    c, p = prep.centers, prep.prec
    assert p is not None and prep.log_prec_chol is not None  # prepared for diag/spherical
    logp = X2 @ p.T
    logp -= X0 @ (2.0 * c * p).T
    if obs is None:
        logp += np.sum(c * c * p, axis=1) + d * LOG_2PI
        logp *= -0.5
        logp += prep.log_weights + prep.logdet
    else:
        logp += obs @ (c * c * p).T
        logp += (d - mask.sum(axis=1))[:, None] * LOG_2PI
        logp *= -0.5
        logp += prep.log_weights + obs @ prep.log_prec_chol.T
    return logp, (X0, X2, obs)


_LOG_PROB = {"full": _log_prob_full, "tied": _log_prob_full, "diag": _log_prob_diag, "spherical": _log_prob_diag}


# ---------------------------------------------------------------- accumulating statistics


#: float32 rows: a responsibility whose square root is below this adds nothing (its products
#: would be float32 subnormals, which are slow; they are below float32's resolution of any
#: component's sums whose mass is not already below ``EMPTY_MASS``)
FLOAT32_FLOOR = 1e-15


def _accumulate_full(aux, mask, rw, prep: _Prepared, acc: dict) -> None:
    """``S1_k += Σ r z``, ``S2_k += Σ r z zᵀ`` (+ the conditional covariances, for rows with
    missing entries: :func:`completed_weighted_rows`).

    With ``T_k = √r_k ⊙ Z_k``: ``S1_k = √r_kᵀ T_k`` (in the compiled loop that forms T) and
    ``S2_k = T_kᵀ T_k``, one batched product for all components (NumPy releases the GIL in
    it, so Dask's threads run it in parallel; SciPy's SYRK wrapper holds the GIL).
    """
    X0, conditioned = aux
    k = prep.centers.shape[0]
    n, d = X0.shape
    rk = np.ascontiguousarray(rw.T)  # (K, n)
    floor = FLOAT32_FLOOR if prep.dtype == np.float32 else 0.0
    T = _ws.get("T", (k, n, d), prep.dtype)
    if conditioned is None:
        weighted_centred_rows(X0, prep.centers, rk, floor, T, acc["S1"])
    else:
        missing, off, U, F = conditioned
        completed_weighted_rows(X0, prep.centers, missing, off, U, F, rk, floor, T, acc["S1"], acc["S2"])
    acc["S2"] += np.matmul(T.transpose(0, 2, 1), T, out=_ws.get("S2part", (k, d, d), prep.dtype))


def _accumulate_diag(aux, mask, rw, prep: _Prepared, acc: dict) -> None:
    X0, X2, obs = aux
    c = prep.centers
    r_x = rw.T @ X0
    r_xx = rw.T @ X2
    n_k = rw.sum(axis=0)[:, None]
    r_o = n_k if obs is None else rw.T @ obs
    acc["S1"] += r_x - c * r_o
    acc["S2"] += r_xx - 2.0 * c * r_x + c * c * r_o + prep.var * (n_k - r_o)


_ACCUMULATE = {"full": _accumulate_full, "tied": _accumulate_full,
               "diag": _accumulate_diag, "spherical": _accumulate_diag}


# ------------------------------------------------------------------------ block iteration


def _compute_dtype(X: np.ndarray) -> np.dtype:
    return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)


def _split_block(Xb: np.ndarray):
    """Split a block into complete rows and incomplete rows (with their mask); drop empty rows.

    Returns the parts as ``(row_index or None, rows, mask or None)`` and the number of
    rows with no observed value.
    """
    if not np.isnan(Xb.sum()):
        return [(None, Xb, None)], 0
    mask = np.isnan(Xb)
    n_miss = mask.sum(axis=1)
    d = Xb.shape[1]
    empty = n_miss == d
    if 2 * np.count_nonzero(n_miss == 0) < Xb.shape[0]:  # mostly incomplete: one part
        usable = np.flatnonzero(~empty)
        if usable.size == Xb.shape[0]:
            return [(None, Xb, mask)], 0
        return [(usable, Xb[usable], mask[usable])], int(empty.sum())
    complete = np.flatnonzero(n_miss == 0)
    partial = np.flatnonzero((n_miss > 0) & ~empty)
    parts = []
    if complete.size:
        parts.append((complete, Xb[complete], None))
    if partial.size:
        parts.append((partial, Xb[partial], mask[partial]))
    return parts, int(empty.sum())


def _responsibilities(logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalise ``logp`` (n, K) into responsibilities; return them and the log-sum-exp.

    Works on the components-first layout (K, n), where every reduction is contiguous;
    ``logp`` is overwritten when it already is a view of that layout.
    """
    lpk = logp.T if logp.flags.f_contiguous else np.ascontiguousarray(logp.T)
    top = lpk.max(axis=0)
    if not np.all(np.isfinite(top)):
        top = np.where(np.isfinite(top), top, 0.0)
    lpk -= top
    np.exp(lpk, out=lpk)
    total = lpk.sum(axis=0)
    lpk /= total
    return lpk.T, top + np.log(total)


def _iter_parts(X: np.ndarray, step: int):
    """Yield ``(start, row_index or None, rows, mask or None, n_empty)`` block by block."""
    for start in range(0, X.shape[0], step):
        parts, empty = _split_block(X[start : start + step])
        for i, (rows_idx, rows, mask) in enumerate(parts):
            yield start, rows_idx, rows, mask, empty if i == 0 else 0
        if not parts:
            yield start, None, X[start:start], None, empty


def _finite_parameters(prep: _Prepared) -> bool:
    factors = prep.chol if prep.chol is not None else prep.prec
    assert factors is not None  # one of them, by the covariance type
    return all(np.all(np.isfinite(a)) for a in (prep.centers, factors, prep.logdet))


def _raise_if_not_finite(lse: np.ndarray, rows: np.ndarray, prep: _Prepared) -> None:
    if np.all(np.isfinite(lse)):
        return
    bad = np.flatnonzero(~np.isfinite(lse))
    if np.isinf(rows[bad]).any():
        raise InvalidInputError(
            "X contains infinity; mark a missing value with NaN, or remove or clip the row"
        )
    if _finite_parameters(prep):  # finite rows, finite parameters: the squared distances overflowed
        vmax = float(np.nanmax(np.abs(rows[bad])))
        raise NumericalOverflowError(
            f"E-step: the log-density of {bad.size} row(s) overflowed (values up to {vmax:.3g}): their squared "
            "distance to every component is beyond the floating-point range; scale the input data (as the "
            "training data were scaled)", step="E-step", quantity="the squared distances",
        )
    raise InvalidInputError("the log-likelihood of some rows is not finite; check X and the parameters")


def chunk_statistics(
    X: np.ndarray,
    params: GaussianParams,
    *,
    sample_weight: np.ndarray | None = None,
    shift: np.ndarray | None = None,
) -> SufficientStats:
    """E-step over one chunk: the chunk's expected sufficient statistics.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        float32 or float64; NaN marks a missing value.
    params : GaussianParams
        The parameters of the E-step.
    sample_weight : ndarray of shape (n_samples,), optional
        Non-negative row weights (1 by default).
    shift : ndarray of shape (n_features,), optional
        Point the rows are centred on before any product (``Σ π_k μ_k`` by default). It
        changes rounding only, never the result.

    Returns
    -------
    SufficientStats
        Statistics centred on ``params.means``.
    """
    X = np.asarray(X)
    dtype = _compute_dtype(X)
    prep = _prepare(params, dtype, shift)
    acc = SufficientStats.zeros(params.means, prep.diagonal)
    accd = {"N": acc.N, "S1": acc.S1, "S2": acc.S2}
    loglik = n_rows = 0.0
    n_empty = 0
    counts = np.zeros(X.shape[1], np.int64)
    log_prob, accumulate = _LOG_PROB[params.covariance_type], _ACCUMULATE[params.covariance_type]
    step = block_rows(*params.means.shape)
    for start, rows_idx, rows, mask, empty in _iter_parts(X, step):
        n_empty += empty
        if rows.shape[0] == 0:
            continue
        if sample_weight is None:
            w = np.ones(rows.shape[0])
        else:
            wb = sample_weight[start : start + step]
            w = wb[: rows.shape[0]] if rows_idx is None else wb[rows_idx]
        Xc = np.subtract(rows, prep.shift, dtype=prep.dtype)
        logp, aux = log_prob(Xc, mask, prep)
        rw, lse = _responsibilities(logp)
        _raise_if_not_finite(lse, rows, prep)
        rw *= w[:, None]
        accd["N"] += rw.sum(axis=0)
        accumulate(aux, mask, rw, prep, accd)
        loglik += float(w @ lse)
        n_rows += float(w.sum())
        counts += rows.shape[0] - (0 if mask is None else mask.sum(axis=0))
    if prep.offset is not None:
        _recenter(accd, prep.offset)
    return SufficientStats(acc.N, acc.S1, acc.S2, acc.center, loglik, n_rows, n_empty, counts)


def estimate_weighted_log_prob(X: np.ndarray, params: GaussianParams) -> np.ndarray:
    """``log π_k + log N(x_o; μ_o, Σ_oo)`` for every row and component.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    params : GaussianParams

    Returns
    -------
    ndarray of shape (n_samples, n_components)
        float64; NaN on rows with no observed value.
    """
    X = np.asarray(X)
    dtype = _compute_dtype(X)
    prep = _prepare(params, dtype, None)
    out = np.full((X.shape[0], params.n_components), np.nan)
    log_prob = _LOG_PROB[params.covariance_type]
    for start, rows_idx, rows, mask, _ in _iter_parts(X, block_rows(*params.means.shape)):
        if rows.shape[0] == 0:
            continue
        logp, _ = log_prob(np.subtract(rows, prep.shift, dtype=prep.dtype), mask, prep)
        _raise_if_not_finite(logp.max(axis=1), rows, prep)
        if rows_idx is None:
            out[start : start + rows.shape[0]] = logp
        else:
            out[start + rows_idx] = logp
    return out


def posterior(X: np.ndarray, params: GaussianParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities and log-density of each row, from one E-step.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    params : GaussianParams

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
        Most probable component; -1 for a row with no observed value.
    proba : ndarray of shape (n_samples, n_components)
        Posterior probabilities (NaN for a row with no observed value).
    logdens : ndarray of shape (n_samples,)
        ``log Σ_k π_k N(x_o; μ_o, Σ_oo)`` (NaN for a row with no observed value).
    """
    logp = estimate_weighted_log_prob(X, params)
    top = np.max(logp, axis=1)
    proba = np.exp(logp - top[:, None])
    total = proba.sum(axis=1)
    proba /= total[:, None]
    logdens = top + np.log(total)
    empty = np.isnan(logdens)
    labels = np.argmax(np.where(empty[:, None], 0.0, logp), axis=1).astype(np.int64)
    labels[empty] = -1
    return labels, proba, logdens


# --------------------------------------------------------------------------- the M-step


def _centred_scatter(stats: SufficientStats, nk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets ``m_k = μ_new − center`` and ``A_k = Σ w r (x̂ − μ_new)(x̂ − μ_new)ᵀ + C``."""
    m = stats.S1 / nk[:, None]
    if stats.diagonal:
        a = stats.S2 - 2.0 * stats.S1 * m + stats.N[:, None] * m**2
    else:
        outer = np.einsum("ki,kj->kij", stats.S1, m)
        a = stats.S2 - outer - outer.transpose(0, 2, 1) + stats.N[:, None, None] * np.einsum("ki,kj->kij", m, m)
    return m, a


def _sklearn_variance_floor(stats: SufficientStats, nk: np.ndarray) -> np.ndarray:
    """scikit-learn's variance of a component whose centred scatter is 0, times ``nk`` (K, d).

    scikit-learn's 'diag' and 'spherical' updates are ``Σ w r x² / nk − μ²`` with
    ``nk = N + 10·eps`` and ``μ = Σ w r x / nk``, which is exactly the centred variance plus
    ``(Σ w r x)² (nk − N) / (N nk²)`` ≈ ``10·eps·μ² / N``. For a singleton component (its
    centred scatter is exactly 0, up to rounding) that term is the whole variance: tiny but
    positive, so scikit-learn fits it with ``reg_covar=0`` (its issue 18216) where 0 would
    be refused as ill-defined. The M-step takes ``max(centred scatter, this)``: the result of
    scikit-learn for such a component, and the exact centred one wherever the variance is
    resolvable (the term is below scikit-learn's own rounding, ``eps·μ²``, so there it only
    adds error). Its 'full' and 'tied' updates are centred and have no such floor.
    """
    raw1 = stats.S1 + stats.N[:, None] * stats.center  # Σ w r x̂, uncentred
    scale = np.divide(nk - stats.N, stats.N * nk, out=np.zeros_like(nk), where=stats.N > 0)
    return raw1 * raw1 * scale[:, None]


def _cov_full(a, nk, reg):
    cov = a / nk[:, None, None]
    cov[:, np.arange(a.shape[1]), np.arange(a.shape[1])] += reg
    return cov


def _cov_tied(a, nk, reg):
    cov = a.sum(axis=0) / nk.sum()
    cov.flat[:: cov.shape[0] + 1] += reg
    return cov


def _cov_diag(a, nk, reg):
    return a / nk[:, None] + reg


def _cov_spherical(a, nk, reg):
    return _cov_diag(a, nk, reg).mean(axis=1)


_COVARIANCE = {"full": _cov_full, "tied": _cov_tied, "diag": _cov_diag, "spherical": _cov_spherical}

_MOMENTS = (("N", "the responsibility masses"), ("S1", "the first moments"), ("S2", "the second moments"),
            ("center", "the means"))


def _overflow(quantity: str, a: np.ndarray) -> NumericalOverflowError:
    """The error for ``a`` (K, …, d) that is not finite although it comes from finite data."""
    features: np.ndarray | list[int] = (np.flatnonzero((~np.isfinite(a)).reshape(-1, a.shape[-1]).any(axis=0))
                                        if a.ndim >= 2 else [])
    shown = f" of feature(s) {list(map(int, features))}" if len(features) else ""
    return NumericalOverflowError(f"EM: {quantity}{shown} overflowed to inf; scale the input data",
                                  step="EM", quantity=quantity, features=features)


def _check_finite_statistics(stats: SufficientStats) -> None:
    """The E-step refuses non-finite rows, so statistics that are not finite overflowed.

    Cheap: the statistics are (K, d, d) at most, whatever the number of rows.
    """
    for name, quantity in _MOMENTS:
        if not np.all(np.isfinite(getattr(stats, name))):
            raise _overflow(quantity, getattr(stats, name))


def m_step(
    stats: SufficientStats,
    *,
    reg_covar: float,
    covariance_type: str,
    previous: GaussianParams | None = None,
) -> GaussianParams:
    """Turn merged statistics into parameters (docs/math.md, "M-step").

    With no missing values this is scikit-learn's update, including the ``10·eps`` that
    scikit-learn adds to every ``N_k`` and what it implies for a 'diag' or 'spherical'
    component whose centred scatter is 0 (a variance of about ``10·eps·μ²/N``, see
    ``_sklearn_variance_floor``).

    Empty components: a component whose responsibility mass ``N_k`` is below
    ``EMPTY_MASS`` keeps its previous mean and covariance (from ``previous``, when given)
    and gets the weight its mass gives (≈ 0); an :class:`EmptyComponentWarning` says so.

    Raises
    ------
    IllConditionedCovarianceError
        If a covariance is not positive definite; the message says what to do.
    NumericalOverflowError
        If the statistics or the covariances overflowed to inf (values of the data too large).
    """
    _check_finite_statistics(stats)
    nk = stats.N + 10.0 * np.finfo(np.float64).eps
    m, a = _centred_scatter(stats, nk)
    if stats.diagonal:
        a = np.maximum(a, _sklearn_variance_floor(stats, nk))
    means = stats.center + m
    cov = _COVARIANCE[covariance_type](a, nk, reg_covar)
    for quantity, result in (("the means", means), ("the covariances", cov)):
        if not np.all(np.isfinite(result)):
            raise _overflow(quantity, result)
    empty = stats.N < EMPTY_MASS
    if empty.any():
        warnings.warn(
            f"component(s) {np.flatnonzero(empty).tolist()} received no responsibility; they keep "
            "their previous mean and covariance. Consider fewer components.",
            EmptyComponentWarning,
            stacklevel=2,
        )
        means[empty] = stats.center[empty]
        if previous is not None and covariance_type != "tied":
            assert previous.covariances is not None  # set by GaussianParams.__post_init__
            cov[empty] = previous.covariances[empty]
    weights = nk / nk.sum()
    return GaussianParams.from_covariances(weights, means, cov, covariance_type)
