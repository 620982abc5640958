"""Information criteria of a fitted mixture from its log-likelihood (scikit-learn's formulas)."""

from __future__ import annotations

import math

__all__ = ["bic", "aic", "icl"]


def bic(loglik: float, n_rows: int, n_parameters: int) -> float:
    """Bayesian information criterion ``-2 L + p ln n`` (lower is better)."""
    return -2.0 * loglik + n_parameters * math.log(n_rows)


def aic(loglik: float, n_parameters: int) -> float:
    """Akaike information criterion ``-2 L + 2 p`` (lower is better)."""
    return -2.0 * loglik + 2.0 * n_parameters


def icl(loglik: float, n_rows: int, n_parameters: int, entropy: float) -> float:
    """Integrated completed likelihood ``BIC + 2 E`` (Biernacki et al. 2000), with the entropy of
    the responsibilities ``E = -sum_i sum_k r_ik ln r_ik >= 0`` (lower is better)."""
    return bic(loglik, n_rows, n_parameters) + 2.0 * entropy
