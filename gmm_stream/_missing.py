"""Per-row work for rows with missing entries, from the full precision (docs/math.md, "Doing the
missing-value part fast").

For one component with precision ``P`` and a row whose centred values are ``z`` with the
missing entries set to 0, let ``w = P z``. With ``m`` the missing indices:

* ``z_oᵀ Σ_oo⁻¹ z_o = zᵀ P z − w_mᵀ P_mm⁻¹ w_m``
* ``log det Σ_oo = log det Σ + log det P_mm``
* ``E[x_m | x_o] − μ_m = −P_mm⁻¹ w_m`` and ``Cov[x_m | x_o] = P_mm⁻¹``

Only the small ``|m| × |m|`` block ``P_mm`` of each row is factorised, so a row with few
missing entries costs little, whatever its missingness pattern. The loops are compiled
with numba; they release the GIL so Dask's threads run them in parallel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: reassociation (and fused multiply-add) only: lets the dot products vectorise; no
#: assumption about NaN or infinity is made
_FAST = {"reassoc", "contract"}


@njit(cache=True, nogil=True, fastmath=_FAST)
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


@njit(cache=True, nogil=True, fastmath=_FAST)
def _gather_cholesky(P, idx, c, A):
    """Lower Cholesky factor of ``P[idx[:c], idx[:c]]`` into ``A[:c, :c]``."""
    for a in range(c):
        for b in range(a + 1):
            s = P[idx[a], idx[b]]
            for p in range(b):
                s -= A[a, p] * A[b, p]
            if a == b:
                A[a, a] = math.sqrt(s)
            else:
                A[a, b] = s / A[b, b]


@njit(cache=True, nogil=True, fastmath=_FAST)
def condition_rows(missing, P, quad, logdet_pmm, Z):
    """Marginalise the missing entries of each row, for every component.

    Only the missing entries of ``w = P z`` are needed: ``w_m = P_m,: z``, |m|·d products
    per row and component, computed here rather than by a d × d GEMM.

    Parameters
    ----------
    missing : tuple (idx, counts)
        The missing entries of each row, from :func:`missing_indices`.
    P : float64 ndarray of shape (K, d, d)
        The components' precisions.
    quad : float64 ndarray of shape (K, n)
        On entry ``zᵀ P z``; on exit the Mahalanobis term of the observed entries.
    logdet_pmm : float64 ndarray of shape (K, n)
        Out: ``log det P_mm`` (0 for a complete row).
    Z : ndarray of shape (K, n, d)
        Centred rows with 0 at the missing entries; on exit the missing entries hold
        ``E[x_m | x_o] − μ_m``.
    """
    idx_all, counts = missing
    for k in range(Z.shape[0]):
        _condition_rows_one(idx_all, counts, P[k], quad[k], logdet_pmm[k], Z[k])


@njit(cache=True, nogil=True, fastmath=_FAST)
def _condition_rows_one(idx_all, counts, P, quad, logdet_pmm, Z):
    n, d = Z.shape
    A = np.empty((d, d))
    v = np.empty(d)
    u = np.empty(d)
    for i in range(n):
        c = counts[i]
        idx = idx_all[i]
        if c == 0:
            logdet_pmm[i] = 0.0
            continue
        _gather_cholesky(P, idx, c, A)
        q = 0.0
        ld = 0.0
        for a in range(c):  # v = A⁻¹ w_m, with w_m = P_m,: z
            s = 0.0
            row = P[idx[a]]
            for j in range(d):
                s += row[j] * Z[i, j]
            for p in range(a):
                s -= A[a, p] * v[p]
            v[a] = s / A[a, a]
            q += v[a] * v[a]
            ld += math.log(A[a, a])
        quad[i] -= q
        logdet_pmm[i] = 2.0 * ld
        for a in range(c - 1, -1, -1):  # u = A⁻ᵀ v = P_mm⁻¹ w_m
            s = v[a]
            for p in range(a + 1, c):
                s -= A[p, a] * u[p]
            u[a] = s / A[a, a]
        for a in range(c):
            Z[i, idx[a]] = -u[a]


@njit(cache=True, nogil=True, fastmath=_FAST)
def add_conditional_covariances(missing, P, r, S2):
    """``S2_k += Σ_i r_ik · P_k,mm,i⁻¹`` placed at the missing rows and columns of each row.

    Parameters
    ----------
    missing : tuple (idx, counts)
        The missing entries of each row, from :func:`missing_indices`.
    P : float64 ndarray of shape (K, d, d)
    r : float64 ndarray of shape (K, n)
        Weighted responsibilities.
    S2 : float64 ndarray of shape (K, d, d)
        Accumulator, updated in place (lower and upper triangles).
    """
    idx_all, counts = missing
    for k in range(P.shape[0]):
        _add_conditional_covariances_one(idx_all, counts, P[k], r[k], S2[k])


@njit(cache=True, nogil=True, fastmath=_FAST)
def _add_conditional_covariances_one(idx_all, counts, P, r, S2):
    n, d = idx_all.shape
    A = np.empty((d, d))
    B = np.empty((d, d))  # A⁻¹ (lower triangular)
    for i in range(n):
        c = counts[i]
        if r[i] == 0.0 or c == 0:
            continue
        idx = idx_all[i]
        if c == 0:
            continue
        _gather_cholesky(P, idx, c, A)
        for b in range(c):  # B = A⁻¹, column by column
            for a in range(c):
                if a < b:
                    B[a, b] = 0.0
                elif a == b:
                    B[a, a] = 1.0 / A[a, a]
                else:
                    s = 0.0
                    for p in range(b, a):
                        s -= A[a, p] * B[p, b]
                    B[a, b] = s / A[a, a]
        ri = r[i]
        for a in range(c):  # P_mm⁻¹ = Bᵀ B
            for b in range(a + 1):
                s = 0.0
                for p in range(a, c):
                    s += B[p, a] * B[p, b]
                s *= ri
                S2[idx[a], idx[b]] += s
                if a != b:
                    S2[idx[b], idx[a]] += s
