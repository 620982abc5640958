"""Mixture parameters and the conversions between covariances and precision factors.

The model is parameterised, as in scikit-learn, by a triangular factor ``L`` of each
precision matrix (``P = L Lᵀ``, scikit-learn's ``precisions_cholesky_``). As in
scikit-learn it is the upper-triangular ``L = C⁻ᵀ`` for the lower Cholesky factor ``C`` of
the covariance, and, for a user's ``precisions_init``, the same upper-triangular factor
computed from ``P`` itself (``J chol(J P J) J`` with ``J`` the exchange matrix, scikit-learn's
``_compute_precision_cholesky_from_precisions``). Shapes follow scikit-learn for every
covariance type:

=========== ================= =====================
type        covariances        precisions_cholesky
=========== ================= =====================
full        (K, d, d)          (K, d, d)
tied        (d, d)             (d, d)
diag        (K, d)             (K, d)
spherical   (K,)               (K,)
=========== ================= =====================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from .exceptions import IllConditionedCovarianceError, InvalidParameterError

#: The values of ``covariance_type``, scikit-learn's default first.
COVARIANCE_TYPES: tuple[str, ...] = ("full", "tied", "diag", "spherical")

ILL_DEFINED_MESSAGE = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
    "the number of components, increase reg_covar, or scale the input data."
)


def check_covariance_type(covariance_type: str) -> str:
    if covariance_type not in COVARIANCE_TYPES:
        raise InvalidParameterError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}"
        )
    return covariance_type


def covariance_shape(covariance_type: str, n_components: int, n_features: int | None) -> tuple:
    """Shape of ``covariances`` (and of ``precisions``) for a covariance type.

    ``n_features`` None (not known) stands in the feature axes, for arrays not given."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def n_free_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    """Number of free parameters of a mixture (as scikit-learn counts them for BIC/AIC)."""
    k, d = n_components, n_features
    cov_params = {
        "full": k * d * (d + 1) / 2.0,
        "tied": d * (d + 1) / 2.0,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return int(cov_params + k * d + k - 1)


# --- covariance -> Cholesky factor of the precision -------------------------------------


def _chol_from_cov_matrix(cov: np.ndarray) -> np.ndarray:
    try:
        cov_chol = linalg.cholesky(cov, lower=True)
    except linalg.LinAlgError:
        raise IllConditionedCovarianceError(ILL_DEFINED_MESSAGE) from None
    return linalg.solve_triangular(cov_chol, np.eye(cov.shape[0]), lower=True).T


def _chol_full(cov: np.ndarray) -> np.ndarray:
    return np.stack([_chol_from_cov_matrix(c) for c in cov])


def _chol_diag(cov: np.ndarray) -> np.ndarray:
    if np.any(np.less_equal(cov, 0.0)) or not np.all(np.isfinite(cov)):
        raise IllConditionedCovarianceError(ILL_DEFINED_MESSAGE)
    return 1.0 / np.sqrt(cov)


_PRECISION_CHOLESKY = {
    "full": _chol_full,
    "tied": _chol_from_cov_matrix,
    "diag": _chol_diag,
    "spherical": _chol_diag,
}


def precision_cholesky_from_covariances(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    """Cholesky factor of the precision of each covariance (scikit-learn's convention).

    Raises
    ------
    IllConditionedCovarianceError
        If a covariance is not positive definite.
    """
    return _PRECISION_CHOLESKY[covariance_type](np.asarray(covariances, dtype=np.float64))


# --- precision (user given) -> Cholesky factor -------------------------------------------


def _chol_of_precision_matrix(prec: np.ndarray) -> np.ndarray:
    """The upper-triangular ``U`` with ``P = U Uᵀ`` (what scikit-learn stores), from ``P``."""
    try:
        return linalg.cholesky(prec[::-1, ::-1], lower=True)[::-1, ::-1].copy()
    except linalg.LinAlgError:
        raise InvalidParameterError("precisions_init: every precision matrix must be positive definite") from None


_PRECISION_TO_CHOL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "full": lambda p: np.stack([_chol_of_precision_matrix(m) for m in p]),
    "tied": _chol_of_precision_matrix,
    "diag": np.sqrt,
    "spherical": np.sqrt,
}


def precision_cholesky_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    """scikit-learn's factor of user-given precisions (``precisions_init``): upper triangular."""
    return _PRECISION_TO_CHOL[covariance_type](np.asarray(precisions, dtype=np.float64))


# --- Cholesky factor -> precisions / covariances -----------------------------------------


def precisions_from_cholesky(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type == "full":
        return np.einsum("kij,klj->kil", prec_chol, prec_chol)
    if covariance_type == "tied":
        return prec_chol @ prec_chol.T
    return prec_chol**2


def covariances_from_cholesky(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    """Invert ``P = L Lᵀ``: ``Σ = L⁻ᵀ L⁻¹`` (``L`` upper or lower triangular)."""
    if covariance_type in ("diag", "spherical"):
        return 1.0 / prec_chol**2
    chols = prec_chol[None] if covariance_type == "tied" else prec_chol
    d = chols.shape[-1]
    out = []
    for chol in chols:
        inv = linalg.solve_triangular(chol, np.eye(d), lower=not np.any(np.triu(chol, 1)))  # L⁻¹
        out.append(inv.T @ inv)
    cov = np.stack(out)
    return cov[0] if covariance_type == "tied" else cov


def log_det_cholesky(prec_chol: np.ndarray, covariance_type: str, n_features: int) -> np.ndarray:
    """``log det L`` per component, i.e. ``½ log det P`` (shape (K,), or () for tied)."""
    if covariance_type == "full":
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)
    if covariance_type == "tied":
        return np.sum(np.log(np.diag(prec_chol)))
    if covariance_type == "diag":
        return np.sum(np.log(prec_chol), axis=1)
    return n_features * np.log(prec_chol)


@dataclass(frozen=True, eq=False)
class GaussianParams:
    """The parameters of a Gaussian mixture: plain arrays, no behaviour beyond conversions.

    Parameters
    ----------
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    precisions_cholesky : ndarray
        Cholesky factor of each precision; shape depends on ``covariance_type`` (see module doc).
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    covariances : ndarray, optional
        The covariances, when known (the M-step knows them); computed from
        ``precisions_cholesky`` otherwise.
    """

    weights: np.ndarray
    means: np.ndarray
    precisions_cholesky: np.ndarray
    covariance_type: str
    covariances: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_covariance_type(self.covariance_type)
        if self.covariances is None:
            cov = covariances_from_cholesky(self.precisions_cholesky, self.covariance_type)
            object.__setattr__(self, "covariances", cov)

    @classmethod
    def from_covariances(cls, weights, means, covariances, covariance_type: str) -> GaussianParams:
        """Build parameters from covariances (factorises them; raises if one is not SPD)."""
        covariances = np.asarray(covariances, dtype=np.float64)
        chol = precision_cholesky_from_covariances(covariances, covariance_type)
        return cls(np.asarray(weights, np.float64), np.asarray(means, np.float64), chol,
                   covariance_type, covariances)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.means.dtype

    @property
    def precisions(self) -> np.ndarray:
        """``L Lᵀ``, computed in float64 and returned in the parameters' dtype."""
        chol = np.asarray(self.precisions_cholesky, dtype=np.float64)
        return precisions_from_cholesky(chol, self.covariance_type).astype(self.dtype, copy=False)

    def astype(self, dtype) -> GaussianParams:
        """The same parameters with every array in ``dtype`` (float32 for a float32 fit)."""
        dtype = np.dtype(dtype)
        assert self.covariances is not None  # set by __post_init__
        if all(a.dtype == dtype for a in (self.weights, self.means, self.precisions_cholesky, self.covariances)):
            return self
        return GaussianParams(np.asarray(self.weights).astype(dtype), np.asarray(self.means).astype(dtype),
                              np.asarray(self.precisions_cholesky).astype(dtype), self.covariance_type,
                              np.asarray(self.covariances).astype(dtype))

    def permute(self, order) -> GaussianParams:
        """The same mixture with its components in ``order`` (``order[j]`` becomes component ``j``).

        Every array is a new one (the shared covariance of 'tied' included), so the result
        never aliases these parameters.
        """
        order = np.asarray(order, dtype=np.intp)
        if sorted(order.tolist()) != list(range(self.n_components)):
            raise InvalidParameterError(f"order {order.tolist()} is not a permutation of 0..{self.n_components - 1}")
        tied = self.covariance_type == "tied"
        assert self.covariances is not None  # set by __post_init__
        return GaussianParams(
            self.weights[order],
            self.means[order],
            self.precisions_cholesky.copy() if tied else self.precisions_cholesky[order],
            self.covariance_type,
            self.covariances.copy() if tied else self.covariances[order],
        )

    def n_parameters(self) -> int:
        """Number of free parameters (as scikit-learn counts them for BIC/AIC)."""
        return n_free_parameters(self.covariance_type, *self.means.shape)
