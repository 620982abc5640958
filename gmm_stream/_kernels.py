"""Fused element-wise loops of the E-step for complete rows ('full' and 'tied' covariances).

Around the GEMMs, the E-step makes a few passes over K × n × d values: the Mahalanobis
terms from the whitened rows, and the rows centred on each component and weighted by the
square root of their responsibilities. In NumPy each of those is two or three passes with
a temporary each (subtract, square, sum; subtract, multiply, sum); at small d they cost more
than the GEMMs. Here each is one compiled pass that reads its input once and writes only
what the next step needs. The loops release the GIL, so Dask's threads run them in
parallel.

``fastmath`` is limited to reassociation and fused multiply-add (as in ``_missing``): the
sums vectorise; nothing is assumed about NaN or infinity (the E-step checks for them).
Sums are carried in float64 whatever the input's dtype.
"""

from __future__ import annotations

import math

from numba import njit

_FAST = {"reassoc", "contract"}

__all__ = ["log_prob_from_whitened", "weighted_centred_rows"]


@njit(cache=True, nogil=True, fastmath=_FAST)
def log_prob_from_whitened(Y, bias, const, out):
    """``out[k, i] = const[k] − ½‖Y_i,k − bias_k‖²``.

    Parameters
    ----------
    Y : ndarray of shape (n, K·d) or (n, d)
        The rows times ``[L_1 … L_K]`` ('full'), or times the one ``L`` ('tied': every
        component reads the same d columns).
    bias : ndarray of shape (K, d)
        ``c_k L_k``, in Y's dtype.
    const : float64 ndarray of shape (K,)
    out : float64 ndarray of shape (K, n)
    """
    n = Y.shape[0]
    k, d = bias.shape
    stride = d if Y.shape[1] == k * d else 0
    for i in range(n):
        for c in range(k):
            base = c * stride
            s = 0.0
            for j in range(d):
                v = Y[i, base + j] - bias[c, j]
                s += v * v
            out[c, i] = const[c] - 0.5 * s


@njit(cache=True, nogil=True, fastmath=_FAST)
def weighted_centred_rows(X, centers, r, floor, T, S1):
    """``T[k, i] = √r[k, i] · (X_i − c_k)`` and ``S1[k] += Σ_i r[k, i] (X_i − c_k)``; a row whose
    ``√r`` is below ``floor`` counts as 0 (see ``_stats.FLOAT32_FLOOR``).

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The rows, centred on the shift.
    centers : ndarray of shape (K, d)
        ``c_k``, in X's dtype.
    r : float64 ndarray of shape (K, n)
        Weighted responsibilities (non-negative).
    floor : float
    T : ndarray of shape (K, n, d)
        Out, in X's dtype: the rows for the rank-n update ``S2_k += T_kᵀ T_k``.
    S1 : float64 ndarray of shape (K, d)
        Accumulator, updated in place.
    """
    n, d = X.shape
    k = centers.shape[0]
    for c in range(k):
        acc = S1[c]
        for i in range(n):
            w = math.sqrt(r[c, i])
            if w < floor:
                w = 0.0
            for j in range(d):
                t = (X[i, j] - centers[c, j]) * w
                T[c, i, j] = t
                acc[j] += w * t
