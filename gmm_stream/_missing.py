"""Per-row work for rows with missing entries, from the full precision (docs/math.md, "Doing the
missing-value part fast").

For one component with precision ``P`` and a row whose centred values are ``z`` with the
missing entries set to 0, let ``w = P z``. With ``m`` the missing indices:

* ``z_oᵀ Σ_oo⁻¹ z_o = zᵀ P z − w_mᵀ P_mm⁻¹ w_m``
* ``log det Σ_oo = log det Σ + log det P_mm``
* ``E[x_m | x_o] − μ_m = −P_mm⁻¹ w_m`` and ``Cov[x_m | x_o] = P_mm⁻¹``

Only the small ``|m| × |m|`` block ``P_mm`` of each row is factorised, once per row and
component (its inverse factor is kept for the statistics), so a row with few missing entries
costs little, whatever its missingness pattern. ``zᵀ P z`` comes from the same wide GEMM as
for complete rows. The loops are compiled with numba; they release the GIL so Dask's threads
run them in parallel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: reassociation (and fused multiply-add) only: lets the dot products vectorise; no
#: assumption about NaN or infinity is made
_FAST = {"reassoc", "contract"}


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def missing_indices(mask):
    """Per row, the indices of the missing entries (first ``counts[i]`` of ``idx[i]``).

    Computed once per block and shared by every component.

    Returns
    -------
    idx : int64 ndarray of shape (n, d)
    counts : int64 ndarray of shape (n,)
    """
    n, d = mask.shape
    idx = np.empty((n, d), np.int64)
    counts = np.zeros(n, np.int64)
    for i in range(n):
        c = 0
        for j in range(d):
            if mask[i, j]:
                idx[i, c] = j
                c += 1
        counts[i] = c
    return idx, counts


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def factor_offsets(counts):
    """Where each row's packed ``|m| × |m|`` factor starts in a flat buffer (n + 1 offsets)."""
    n = counts.shape[0]
    off = np.empty(n + 1, np.int64)
    off[0] = 0
    for i in range(n):
        off[i + 1] = off[i] + counts[i] * (counts[i] + 1) // 2
    return off


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def condition_rows(XL, bias, centers, chol, P, missing, off, const, logp, U, F, LD):
    """Marginalise the missing entries of each row, for every component.

    The rows enter with 0 at their missing entries, already multiplied by the precisions'
    Cholesky factors (one wide GEMM, as for complete rows). With ``z = x − c_k`` (its
    missing entries 0), ``y = z L_k = y0 + Σ_{j∈m} c_kj L_k[j, :]`` with
    ``y0 = XL_k − c_k L_k``; with ``g = L_k[m, :] y0`` (``|m|·d`` products per row and
    component), ``w_m = (P z)_m = L_k[m, :] y = g + P_mm c_m`` and
    ``zᵀ P z = ‖y‖² = ‖y0‖² + c_mᵀ (g + w_m)``. ``P_mm`` is
    factorised once (``A Aᵀ``) and its inverse factor ``B = A⁻¹`` kept for the statistics
    (:func:`completed_weighted_rows`), so no row is factorised twice.

    Parameters
    ----------
    XL : ndarray of shape (n, K·d) or (n, d)
        The rows (0 at missing entries, centred on the shift) times ``[L_1 … L_K]`` ('full'),
        or times the one ``L`` ('tied').
    bias : ndarray of shape (K, d)
        ``c_k L_k`` in XL's dtype.
    centers : ndarray of shape (K, d)
        ``c_k``.
    chol, P : float64 ndarrays of shape (K, d, d)
        The precisions' Cholesky factors ``L_k`` and the precisions ``L_k L_kᵀ``.
    missing : tuple (idx, counts)
        From :func:`missing_indices`.
    off : int64 ndarray of shape (n + 1,)
        From :func:`factor_offsets`.
    const : float64 ndarray of shape (K,)
        ``log π_k + log det L_k``.
    logp : float64 ndarray of shape (K, n)
        Out: ``log π_k + log N(x_o; μ_o, Σ_oo)``.
    U : float64 ndarray of shape (K, n, max |m|)
        Out: ``P_mm⁻¹ w_m`` (the conditional mean of the missing entries is ``μ_m − U``).
    F : float64 ndarray of shape (K, off[n]), or (1, off[n])
        Out: each row's ``B = A⁻¹``, lower triangle packed by rows. With one row ('tied':
        every component has the same precision, so ``P_mm`` depends on the row only), each
        row is factorised once, for the first component, and the others reuse it.
    LD : float64 ndarray of shape (F.shape[0], n)
        Work: ``log det A`` of each row's factor.
    """
    idx_all, counts = missing
    n = XL.shape[0]
    k, d = bias.shape
    stride = d if XL.shape[1] == k * d else 0
    log_2pi = math.log(2.0 * math.pi)
    y = np.empty(d)
    g = np.empty(d)
    w = np.empty(d)
    v = np.empty(d)
    inv = np.empty(d)
    A = np.empty((d, d))
    for c in range(k):
        L = chol[c]
        Pc = P[c]
        Fc = F[c if F.shape[0] > 1 else 0]
        base = c * stride
        for i in range(n):
            m = counts[i]
            idx = idx_all[i]
            quad = 0.0  # ‖y0‖², y0 = (x − c_k with the missing entries −c_k,m) L_k
            for j in range(d):
                y[j] = XL[i, base + j] - bias[c, j]
                quad += y[j] * y[j]
            if m == 0:
                logp[c, i] = const[c] - 0.5 * (quad + d * log_2pi)
                continue
            # y = y0 + Σ_a c_a L[m_a, :] (the missing entries back to 0), never formed:
            # with g = L[m, :] y0, w_m = L[m, :] y = g + P_mm c_m and ‖y‖² = ‖y0‖² + c_mᵀ(g + w_m)
            for a in range(m):
                ia = idx[a]
                s = 0.0
                for j in range(d):
                    s += L[ia, j] * y[j]
                g[a] = s
            for a in range(m):
                s = g[a]
                for b in range(m):
                    s += Pc[idx[a], idx[b]] * centers[c, idx[b]]
                w[a] = s
            for a in range(m):
                quad += centers[c, idx[a]] * (g[a] + w[a])
            o = off[i]
            if c < F.shape[0]:  # factorise P_mm = A Aᵀ; keep B = A⁻¹ (packed by rows) and log det A
                det = 1.0  # det A, in pieces: log det P_mm = 2 log det A
                ld = 0.0
                for a in range(m):
                    for b in range(a + 1):
                        s = Pc[idx[a], idx[b]]
                        for p in range(b):
                            s -= A[a, p] * A[b, p]
                        if a == b:
                            root = math.sqrt(s)
                            A[a, a] = root
                            inv[a] = 1.0 / root
                            det *= root
                            if det > 1e150 or det < 1e-150:
                                ld += math.log(det)
                                det = 1.0
                        else:
                            A[a, b] = s * inv[b]
                LD[c, i] = ld + math.log(det)
                for b in range(m):  # B = A⁻¹, column by column
                    Fc[o + b * (b + 1) // 2 + b] = inv[b]
                    for a in range(b + 1, m):
                        s = 0.0
                        for p in range(b, a):
                            s -= A[a, p] * Fc[o + p * (p + 1) // 2 + b]
                        Fc[o + a * (a + 1) // 2 + b] = s * inv[a]
            ld = LD[0 if F.shape[0] == 1 else c, i]
            q = 0.0
            for a in range(m):  # v = B w_m = A⁻¹ w_m
                s = 0.0
                for p in range(a + 1):
                    s += Fc[o + a * (a + 1) // 2 + p] * w[p]
                v[a] = s
                q += s * s
            for b in range(m):  # U = Bᵀ v = P_mm⁻¹ w_m
                s = 0.0
                for a in range(b, m):
                    s += Fc[o + a * (a + 1) // 2 + b] * v[a]
                U[c, i, b] = s
            logp[c, i] = const[c] - 0.5 * (quad - q + 2.0 * ld + (d - m) * log_2pi)


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def completed_weighted_rows(X0, centers, missing, off, U, F, r, floor, T, S1, S2):
    """The statistics' per-row work for rows with missing entries.

    ``T[k, i] = √r_ik (x̂_ik − c_k)``, the row completed by its conditional mean
    (``x̂_m − c_k,m = −U``); ``S1_k += Σ_i r_ik (x̂_ik − c_k)``; and the conditional
    covariance ``S2_k[m, m] += r_ik P_mm⁻¹ = r_ik Bᵀ B`` from the factor kept by
    :func:`condition_rows`. ``S2_k += T_kᵀ T_k`` is left to the caller (one batched GEMM).
    A row whose ``√r`` is below ``floor`` counts as 0 (see ``_stats.FLOAT32_FLOOR``).

    Parameters
    ----------
    X0 : ndarray of shape (n, d)
        The rows centred on the shift, 0 at missing entries.
    centers : ndarray of shape (K, d)
    missing, off, U, F
        As given to and filled by :func:`condition_rows`.
    r : float64 ndarray of shape (K, n)
        Weighted responsibilities.
    floor : float
    T : ndarray of shape (K, n, d)
        Out, in X0's dtype.
    S1, S2 : float64 ndarrays of shape (K, d) and (K, d, d)
        Accumulators, updated in place (both triangles of S2).
    """
    idx_all, counts = missing
    n, d = X0.shape
    k = centers.shape[0]
    for c in range(k):
        acc = S1[c]
        S = S2[c]
        Fc = F[c if F.shape[0] > 1 else 0]
        for i in range(n):
            ri = r[c, i]
            wt = math.sqrt(ri)
            if wt < floor:
                ri = 0.0
                wt = 0.0
            m = counts[i]
            idx = idx_all[i]
            for j in range(d):
                T[c, i, j] = (X0[i, j] - centers[c, j]) * wt
            for a in range(m):
                T[c, i, idx[a]] = -U[c, i, a] * wt
            for j in range(d):
                acc[j] += wt * T[c, i, j]
            if m == 0 or ri == 0.0:
                continue
            o = off[i]
            for a in range(m):  # P_mm⁻¹ = Bᵀ B, B lower triangular
                for b in range(a + 1):
                    s = 0.0
                    for p in range(a, m):
                        s += Fc[o + p * (p + 1) // 2 + a] * Fc[o + p * (p + 1) // 2 + b]
                    s *= ri
                    S[idx[a], idx[b]] += s
                    if a != b:
                        S[idx[b], idx[a]] += s
