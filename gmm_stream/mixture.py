"""The estimator: scikit-learn's GaussianMixture, out of core and exact with missing values."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from . import _dask
from ._init import INITIAL_RESPONSIBILITIES, draw_sample, initial_parameters
from ._params import (
    COVARIANCE_TYPES,
    GaussianParams,
    covariance_shape,
    precision_cholesky_from_precisions,
)
from ._stats import SufficientStats, m_step, posterior
from .exceptions import ConvergenceWarning, InvalidInputError, InvalidParameterError, NumericalOverflowError

logger = logging.getLogger(__name__)

_CHECK_ARRAY = {"dtype": [np.float64, np.float32], "ensure_all_finite": "allow-nan", "ensure_min_samples": 1}

__all__ = ["EMState", "GaussianMixture"]


# ----------------------------------------------------------------------------- EM state


@dataclass(frozen=True, eq=False)
class EMState:
    """Where a fit stands after an EM iteration: enough to report progress and to resume.

    Attributes
    ----------
    init : int
        Index of the initialisation being run (0 ≤ init < n_init).
    n_iter : int
        Iterations done in this initialisation.
    params : GaussianParams
        Parameters after the last M-step.
    lower_bounds : list of float
        Lower bound of each iteration of this initialisation.
    converged : bool
    n_empty : int
        Rows with no observed value.
    best : dict or None
        Result of the best finished initialisation (keys ``params, converged, n_iter,
        lower_bound, lower_bounds, n_empty``).
    stats : SufficientStats or None
        Statistics of the last E-step.
    """

    init: int
    n_iter: int
    params: GaussianParams
    lower_bounds: list = field(default_factory=list)
    converged: bool = False
    n_empty: int = 0
    best: dict | None = None
    stats: SufficientStats | None = None

    @property
    def lower_bound(self) -> float:
        return self.lower_bounds[-1] if self.lower_bounds else -np.inf

    def result(self) -> dict:
        return {"params": self.params, "converged": self.converged, "n_iter": self.n_iter,
                "lower_bound": self.lower_bound, "lower_bounds": list(self.lower_bounds), "n_empty": self.n_empty}


# ------------------------------------------------------------------ block functions (pure)


def _block_score_samples(X: np.ndarray, params: GaussianParams) -> np.ndarray:
    return posterior(X, params)[2]


def _block_proba(X: np.ndarray, params: GaussianParams) -> np.ndarray:
    return posterior(X, params)[1]


def _block_predict(X: np.ndarray, params: GaussianParams) -> np.ndarray:
    return posterior(X, params)[0]


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture model fitted by EM over row chunks, exact with missing values.

    The parameters and fitted attributes are scikit-learn's
    :class:`sklearn.mixture.GaussianMixture`, with the same meaning and defaults; on
    complete data started from the same parameters the results are scikit-learn's.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
    tol : float, default=1e-3
        EM stops when the lower bound (mean log-likelihood) changes by less than this.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance.
    max_iter : int, default=100
    n_init : int, default=1
        Number of initialisations; the one with the best lower bound is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        How the initial responsibilities are drawn (scikit-learn's choices and default);
        computed on a seeded sample of at most ``init_max_samples`` rows (the whole data
        when it has no more rows, in which case the start is scikit-learn's for the same
        ``random_state``).
    weights_init : array-like of shape (n_components,), optional
    means_init : array-like of shape (n_components, n_features), optional
    precisions_init : array-like, optional
        Shape (n_components,) spherical, (n_features, n_features) tied,
        (n_components, n_features) diag, (n_components, n_features, n_features) full.
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
        Start from the fitted parameters of the previous call to ``fit``.
    verbose : int, default=0
        0 silent; 1 logs the start and end of each initialisation; 2 also logs the lower
        bound every ``verbose_interval`` iterations. Messages go to the ``gmm_stream``
        logger (``logging.INFO``).
    verbose_interval : int, default=10
    init_max_samples : int, default=100_000
        Rows the initialisation may hold in memory (a seeded sample of rows).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood of the usable rows under the parameters of the E-step that
        started the last iteration (scikit-learn's convention).
    lower_bounds_ : ndarray of shape (n_iter_,)
        The lower bound at each iteration of the best initialisation.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        When the input names its features (pandas columns, or the feature coordinate of an
        ``xarray.DataArray``).
    n_empty_rows_ : int
        Rows of the training data with no observed value; they are skipped.

    Notes
    -----
    ``X`` may be a NumPy array, a Dask array, or an ``xarray.DataArray`` whose first
    dimension is the samples. Missing values are NaN; the E-step uses the marginal density
    of each row's observed entries and the M-step the expected sufficient statistics
    (conditional means and covariances of the missing entries). For a Dask input,
    ``predict``, ``predict_proba`` and ``score_samples`` return lazy Dask arrays.
    Rows with no observed value get ``score_samples`` NaN, ``predict_proba`` NaN and
    ``predict`` -1.
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        init_max_samples=100_000,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.init_max_samples = init_max_samples

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # ------------------------------------------------------------------ checks (one place)

    def _check_parameters(self, n_features: int) -> dict:
        """Validate the constructor's parameters; return the checked ``*_init`` arrays."""
        def integer(name, low):
            value = getattr(self, name)
            if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
                raise InvalidParameterError(f"{name} must be an integer >= {low}, got {value!r}")

        def real(name, low, strict=False):
            value = getattr(self, name)
            if not isinstance(value, Real) or isinstance(value, bool) or value < low or (strict and value == low):
                raise InvalidParameterError(f"{name} must be a number {'>' if strict else '>='} {low}, got {value!r}")

        integer("n_components", 1)
        integer("max_iter", 0)
        integer("n_init", 1)
        integer("verbose", 0)
        integer("verbose_interval", 1)
        integer("init_max_samples", 1)
        real("tol", 0.0)
        real("reg_covar", 0.0)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise InvalidParameterError(
                f"covariance_type must be one of {list(COVARIANCE_TYPES)}, got {self.covariance_type!r}"
            )
        if self.init_params not in INITIAL_RESPONSIBILITIES:
            raise InvalidParameterError(
                f"init_params must be one of {sorted(INITIAL_RESPONSIBILITIES)}, got {self.init_params!r}"
            )
        k = self.n_components
        return {
            "weights": self._check_init("weights_init", (k,)),
            "means": self._check_init("means_init", (k, n_features)),
            "precisions": self._check_init("precisions_init", covariance_shape(self.covariance_type, k, n_features)),
        }

    def _check_init(self, name: str, shape: tuple):
        value = getattr(self, name)
        if value is None:
            return None
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != shape:
            raise InvalidParameterError(
                f"{name} must have shape {shape} for n_components={self.n_components}, "
                f"covariance_type={self.covariance_type!r} and the data's features, got {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise InvalidParameterError(f"{name} must be finite")
        if name == "weights_init":
            if np.any(arr < 0) or np.any(arr > 1):
                raise InvalidParameterError(f"weights_init must be in [0, 1], got min {arr.min()}, max {arr.max()}")
            if not np.allclose(arr.sum(), 1.0):
                raise InvalidParameterError(f"weights_init must sum to 1, got sum(weights_init) = {arr.sum():.5f}")
        if name == "precisions_init" and self.covariance_type in ("diag", "spherical") and np.any(arr <= 0):
            raise InvalidParameterError("precisions_init must be positive")
        return arr

    def _validate_X(self, X, *, reset: bool):
        """The data as a NumPy or Dask array of float32/float64; sets or checks the features."""
        try:
            return self._validate_X_unchecked(X, reset=reset)
        except InvalidInputError:
            raise
        except ValueError as exc:  # scikit-learn's validation: same message, our error class
            raise InvalidInputError(str(exc)) from exc

    def _validate_X_unchecked(self, X, *, reset: bool):
        if getattr(X, "ndim", 2) > 2:
            raise InvalidInputError(
                f"X must be 2-D (n_samples, n_features), got a {X.ndim}-D array of shape {X.shape}"
            )
        if not _is_dataarray(X) and not isinstance(X, da.Array):
            return validate_data(self, X, reset=reset, **_CHECK_ARRAY)
        names = None
        if _is_dataarray(X):
            if X.ndim != 2:
                raise InvalidInputError(f"X must be 2-D (samples, features), got an xarray.DataArray with dims {X.dims}")
            names = _dataarray_feature_names(X)
            X = X.data
        X = _check_dask(X) if isinstance(X, da.Array) else check_array(X, **_CHECK_ARRAY)
        if reset:
            self.n_features_in_ = X.shape[1]
            if names is not None:
                self.feature_names_in_ = names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            self._check_features(X.shape[1], names)
        return X

    def _check_features(self, n_features: int, names) -> None:
        if n_features != self.n_features_in_:
            raise InvalidInputError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        fitted = getattr(self, "feature_names_in_", None)
        if names is not None and fitted is not None and not np.array_equal(names, fitted):
            raise InvalidInputError("the feature names of X differ from those seen in fit")

    def _validate_weights(self, sample_weight, X):
        if sample_weight is None:
            return None
        if isinstance(sample_weight, da.Array):
            w = sample_weight.astype(np.float64)
        else:
            w = np.asarray(sample_weight, dtype=np.float64)
            if w.ndim == 0:
                w = np.full(X.shape[0], float(w))
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise InvalidInputError("sample_weight must be finite and non-negative")
        if w.ndim != 1 or w.shape[0] != X.shape[0]:
            raise InvalidInputError(f"sample_weight must have shape ({X.shape[0]},), got {w.shape}")
        return w

    # -------------------------------------------------------------------------------- fit

    def fit(self, X, y=None, sample_weight=None, *, callback=None, resume_from=None):
        """Estimate the model parameters with EM.

        Parameters
        ----------
        X : array-like, dask array or xarray.DataArray of shape (n_samples, n_features)
            NaN marks a missing value.
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weight of each row (1 by default).
        callback : callable, optional
            Called as ``callback(state)`` with an :class:`EMState` after every EM iteration
            (for progress reports and checkpoints).
        resume_from : EMState, optional
            A state passed to ``callback`` by an earlier, interrupted call with the same
            data and parameters: the fit continues from it and ends with the model the
            uninterrupted call would have produced.

        Returns
        -------
        self
        """
        X = self._validate_X(X, reset=True)
        inits = self._check_parameters(X.shape[1])
        w = self._validate_weights(sample_weight, X)
        n = X.shape[0]
        if n < self.n_components:
            raise InvalidInputError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, n_samples = {n}"
            )
        if not isinstance(X, da.Array):  # cheap in memory; Dask input is checked by the first pass
            observed = ~np.isnan(X)
            self._check_usable(observed.sum(axis=0), int(observed.any(axis=1).sum()))
        random_state = check_random_state(self.random_state)
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        n_init = self.n_init if do_init else 1
        needs_sample = do_init and any(v is None for v in inits.values())
        sample = draw_sample(X, self.init_max_samples, random_state, w) if needs_sample else None
        best = None if resume_from is None else resume_from.best
        for init in range(n_init):
            # initial parameters are always drawn, so the random state advances as in an
            # uninterrupted fit; a resumed init then starts from its checkpoint instead
            try:
                params = self._initial_parameters(sample, inits, random_state) if do_init else self._params
            except NumericalOverflowError as err:
                raise self._overflow_error(err, X, "the initialisation") from None
            if resume_from is not None and init < resume_from.init:
                continue
            state = EMState(init=init, n_iter=0, params=params, lower_bounds=[], best=best)
            if resume_from is not None and init == resume_from.init:
                state = resume_from
            if self.verbose:
                logger.info("initialisation %d of %d", init + 1, n_init)
            state = self._em(X, w, state, callback)
            result = state.result()
            if best is None or result["lower_bound"] > best["lower_bound"]:
                best = result
        self._params = best["params"]
        self.converged_ = best["converged"]
        self.n_iter_ = best["n_iter"]
        self.lower_bound_ = best["lower_bound"]
        self.lower_bounds_ = np.asarray(best["lower_bounds"])
        self.n_empty_rows_ = best["n_empty"]
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _initial_parameters(self, sample, inits: dict, random_state) -> GaussianParams:
        if sample is not None:
            X_sample, w_sample = sample
            params = initial_parameters(
                X_sample,
                w_sample,
                n_components=self.n_components,
                covariance_type=self.covariance_type,
                init_params=self.init_params,
                reg_covar=self.reg_covar,
                random_state=random_state,
            )
        else:
            params = None
        weights = inits["weights"] if inits["weights"] is not None else params.weights
        means = inits["means"] if inits["means"] is not None else params.means
        if inits["precisions"] is not None:
            chol = precision_cholesky_from_precisions(inits["precisions"], self.covariance_type)
            return GaussianParams(weights, means, chol, self.covariance_type)
        return GaussianParams(weights, means, params.precisions_cholesky, self.covariance_type, params.covariances)

    def _em(self, X, w, state: EMState, callback) -> EMState:
        """Run EM from ``state`` until convergence or ``max_iter``."""
        params = state.params
        lower_bounds = list(state.lower_bounds)
        previous = lower_bounds[-1] if lower_bounds else -np.inf
        converged = state.converged
        n_empty = state.n_empty
        n_iter = state.n_iter
        while not converged and n_iter < self.max_iter:
            n_iter += 1
            try:
                stats = _dask.statistics(X, params, w)
                if n_iter == 1:
                    n_empty = self._check_first_statistics(stats, X.shape[0])
                lower_bound = stats.loglik / stats.n_rows
                params = m_step(stats, reg_covar=self.reg_covar, covariance_type=self.covariance_type, previous=params)
            except NumericalOverflowError as err:
                raise self._overflow_error(err, X, f"iteration {n_iter}") from None
            lower_bounds.append(lower_bound)
            if self.verbose >= 2 and n_iter % self.verbose_interval == 0:
                logger.info("iteration %d: lower bound %.8g", n_iter, lower_bound)
            converged = abs(lower_bound - previous) < self.tol
            previous = lower_bound
            state = EMState(state.init, n_iter, params, lower_bounds, converged, n_empty, state.best, stats)
            if callback is not None:
                callback(state)
        if self.verbose:
            logger.info("initialisation %s after %d iterations, lower bound %.8g",
                        "converged" if converged else "did not converge", n_iter, previous)
        return state

    def _overflow_error(self, err: NumericalOverflowError, X, when: str) -> NumericalOverflowError:
        """``err`` of the M-step, saying when, for which features, and how large their values are
        (one more pass over those features, on this error path only)."""
        features = err.features or list(range(X.shape[1]))
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            if isinstance(X, da.Array):
                vmax = float(da.nanmax(da.fabs(X[:, features])).compute())
            else:
                vmax = float(np.nanmax(np.abs(X[:, features])))
        hint = f" (e.g. divide by 1e{int(np.floor(np.log10(vmax)))})" if np.isfinite(vmax) and vmax > 0 else ""
        return NumericalOverflowError(
            f"EM: {err.quantity} of feature(s) {self._feature_labels(features)} overflowed to inf in {when} "
            f"(feature values up to {vmax:.3g}); scale the input data{hint}"
            f"{', or pass float64 data' if X.dtype == np.float32 else ''}",
            step="EM", quantity=err.quantity, features=features,
        )

    def _check_first_statistics(self, stats: SufficientStats, n_samples: int) -> int:
        self._check_usable(stats.feature_counts, n_samples - stats.n_empty)
        if stats.n_rows <= 0:
            raise InvalidInputError("the total sample_weight of the usable rows is 0")
        return stats.n_empty

    def _check_usable(self, feature_counts: np.ndarray, n_usable: int) -> None:
        """Every feature observed at least once; at least one usable row per component."""
        empty_features = np.flatnonzero(feature_counts == 0)
        if empty_features.size:
            raise InvalidInputError(
                f"feature(s) {self._feature_labels(empty_features)} have no observed value "
                "(the whole column is NaN); drop them before fitting"
            )
        if n_usable < self.n_components:
            raise InvalidInputError(
                f"n_components={self.n_components} is larger than the number of usable rows "
                f"(rows with at least one observed value): {n_usable}. Use fewer components or more data."
            )

    def _feature_labels(self, indices) -> list:
        names = getattr(self, "feature_names_in_", None)
        return [str(names[i]) for i in indices] if names is not None else [int(i) for i in indices]

    # ------------------------------------------------------------------- fitted attributes

    @property
    def weights_(self):
        return self._fitted().weights

    @property
    def means_(self):
        return self._fitted().means

    @property
    def covariances_(self):
        return self._fitted().covariances

    @property
    def precisions_cholesky_(self):
        return self._fitted().precisions_cholesky

    @property
    def precisions_(self):
        return self._fitted().precisions

    @property
    def params_(self) -> GaussianParams:
        """The fitted parameters as a :class:`GaussianParams`."""
        return self._fitted()

    def permute_components(self, order):
        """Renumber the fitted components in place: ``order[j]`` becomes component ``j``.

        The model is the same mixture; only the labels change (used to keep cluster numbers
        stable from one scheduled run to the next). Returns ``self``.
        """
        self._params = self._fitted().permute(order)
        return self

    def _fitted(self) -> GaussianParams:
        if "_params" not in self.__dict__:
            check_is_fitted(self, "converged_")
            raise AttributeError("model is not fitted")
        return self._params

    def __sklearn_is_fitted__(self) -> bool:
        return "_params" in self.__dict__

    # ------------------------------------------------------------------------- inference

    def _apply(self, X, func, n_columns, dtype):
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        if isinstance(X, da.Array):
            return _dask.map_rows(X, func, self._params, n_columns, dtype)
        return func(X, self._params)

    def score_samples(self, X):
        """Log-density of each row (of its observed entries).

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,)
            NaN for rows with no observed value; lazy for Dask input.
        """
        return self._apply(X, _block_score_samples, None, np.float64)

    def predict_proba(self, X):
        """Posterior probability of each component for each row.

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples, n_components)
        """
        return self._apply(X, _block_proba, self.n_components, np.float64)

    def predict(self, X):
        """Most probable component of each row (-1 for rows with no observed value).

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,)
        """
        return self._apply(X, _block_predict, None, np.int64)

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X)`` then ``predict(X)``."""
        return self.fit(X, y, sample_weight=sample_weight).predict(X)

    def _score_parts(self, X) -> tuple[float, int]:
        s = self.score_samples(X)
        if isinstance(s, da.Array):
            total, count = da.compute(da.nansum(s), da.sum(~da.isnan(s)))
        else:
            total, count = np.nansum(s), np.sum(~np.isnan(s))
        return float(total), int(count)

    def score(self, X, y=None):
        """Mean log-likelihood of the usable rows of ``X``."""
        total, count = self._score_parts(X)
        return total / count

    def bic(self, X):
        """Bayesian information criterion on ``X`` (usable rows only)."""
        total, count = self._score_parts(X)
        return -2.0 * total + self._params.n_parameters() * np.log(count)

    def aic(self, X):
        """Akaike information criterion on ``X`` (usable rows only)."""
        total, _ = self._score_parts(X)
        return -2.0 * total + 2 * self._params.n_parameters()

    def _n_parameters(self) -> int:
        return self._fitted().n_parameters()

    def sample(self, n_samples=1):
        """Draw samples from the fitted model.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        if n_samples < 1:
            raise InvalidParameterError(
                f"Invalid value for 'n_samples': {n_samples}. The sampling requires at least one sample."
            )
        p = self._params
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, p.weights)
        cov = p.covariances
        if self.covariance_type == "full":
            X = np.vstack([rng.multivariate_normal(m, c, int(s)) for m, c, s in zip(p.means, cov, counts)])
        elif self.covariance_type == "tied":
            X = np.vstack([rng.multivariate_normal(m, cov, int(s)) for m, s in zip(p.means, counts)])
        else:
            var = cov if self.covariance_type == "diag" else np.repeat(cov[:, None], p.n_features, axis=1)
            X = np.vstack([m + rng.standard_normal(size=(s, p.n_features)) * np.sqrt(v)
                           for m, v, s in zip(p.means, var, counts)])
        y = np.concatenate([np.full(s, j, dtype=int) for j, s in enumerate(counts)])
        return X, y

    # ----------------------------------------------------------------------- persistence

    def save(self, path, *, overwrite: bool = False) -> None:
        """Write the fitted model to a directory (JSON metadata + ``.npz`` arrays, no pickle)."""
        from ._persist import save_model

        save_model(self, path, overwrite=overwrite)


# ------------------------------------------------------------------------------ helpers


def _is_dataarray(X) -> bool:
    return type(X).__name__ == "DataArray" and hasattr(X, "dims") and hasattr(X, "coords")


def _dataarray_feature_names(X):
    dim = X.dims[1]
    if dim not in X.coords:
        return None
    values = np.asarray(X.coords[dim].values)
    if values.dtype.kind in "OUS":
        return values.astype(object)
    return None


def _check_dask(X: da.Array) -> da.Array:
    if X.ndim != 2:
        raise InvalidInputError(
            f"Expected a 2-D array of shape (n_samples, n_features), got {X.ndim}-D with shape {X.shape}"
        )
    if X.dtype.kind not in "fiub":
        raise InvalidInputError(f"X must be numeric, got dtype {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if any(np.isnan(c) for c in X.chunks[0]):
        raise InvalidInputError("X has unknown chunk sizes; call X.compute_chunk_sizes() first")
    return _dask.as_dask(X)
