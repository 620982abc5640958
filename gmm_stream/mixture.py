"""The estimator: scikit-learn's GaussianMixture, out of core and exact with missing values."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from numbers import Integral, Real
from typing import Any, TypeAlias, overload

import dask.array as da
import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import Tags, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils._param_validation import InvalidParameterError as _SklearnInvalidParameterError
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from . import _criteria, _dask, _state
from ._array_api import Namespace, check_same_namespace, dispatch_enabled, input_namespace, to_numpy
from ._features import check_features
from ._incremental import PartitionStatistics
from ._init import INITIAL_RESPONSIBILITIES, draw_sample, initial_parameters, parameters_from_responsibilities
from ._init_checks import check_init_array, check_precisions_init, check_weights_init
from ._params import (
    COVARIANCE_TYPES,
    GaussianParams,
    covariance_shape,
    n_free_parameters,
    precision_cholesky_from_precisions,
)
from ._stats import SufficientStats, m_step, posterior
from ._validate import Headers
from .exceptions import (
    ConvergenceWarning,
    InvalidInputError,
    InvalidParameterError,
    NumericalOverflowError,
    OverParameterizedWarning,
)

_CHECK_ARRAY = {"dtype": [np.float64, np.float32], "ensure_all_finite": "allow-nan", "ensure_min_samples": 1}
#: fit needs two rows, as scikit-learn's does
_MIN_FIT_SAMPLES = 2
#: ``fit`` warns (OverParameterizedWarning) above this many free parameters per usable row
MAX_PARAMETERS_PER_ROW = 0.1
#: ``init_params`` that scikit-learn allows with ``array_api_dispatch`` enabled
_ARRAY_API_INIT_PARAMS = ["random", "random_from_data"]

__all__ = ["EMResult", "EMState", "GaussianMixture"]

#: Data the estimator reads: an array-like NumPy reads (a list, a pandas frame, an
#: xarray.DataArray over NumPy or Dask), a Dask array, or, under scikit-learn's
#: ``array_api_dispatch``, an array of an array-API namespace.
Data: TypeAlias = "ArrayLike | da.Array"
#: What inference gives back for :data:`Data`: NumPy for data in memory, a lazy Dask array
#: for data over Dask, or under ``array_api_dispatch`` an array of the data's namespace
#: (``Any``: that library's type).
Result: TypeAlias = "np.ndarray | da.Array | Any"
#: A fitted array: NumPy, or an array of the training data's namespace under
#: ``array_api_dispatch`` (``Any``: that library's type).
FittedArray: TypeAlias = "np.ndarray | Any"


# ----------------------------------------------------------------------------- EM state


@dataclass
class _OnlineState:
    """The running statistics of online EM (per unit of weight), the batches taken and the
    total weight seen (see :meth:`GaussianMixture.partial_fit`)."""

    stats: SufficientStats | None = None
    steps: int = 0
    n_seen: float = 0.0


@dataclass(frozen=True, eq=False)
class EMResult:
    """The outcome of one finished EM initialisation.

    Attributes
    ----------
    params : GaussianParams
        Parameters after the last M-step.
    converged : bool
    n_iter : int
        Iterations done.
    lower_bound : float
        The last lower bound (``-inf`` when no iteration ran).
    lower_bounds : tuple of float
        Lower bound of each iteration.
    n_empty : int
        Rows with no observed value.
    """

    params: GaussianParams
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: tuple[float, ...]
    n_empty: int


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
    best : EMResult or None
        Result of the best finished initialisation.
    stats : SufficientStats or None
        Statistics of the last E-step.
    """

    init: int
    n_iter: int
    params: GaussianParams
    lower_bounds: list = field(default_factory=list)
    converged: bool = False
    n_empty: int = 0
    best: EMResult | None = None
    stats: SufficientStats | None = None

    @property
    def lower_bound(self) -> float:
        return self.lower_bounds[-1] if self.lower_bounds else -np.inf

    def result(self) -> EMResult:
        """This initialisation's outcome, as it stands."""
        return EMResult(self.params, bool(self.converged), int(self.n_iter), float(self.lower_bound),
                        tuple(float(b) for b in self.lower_bounds), int(self.n_empty))

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The checkpoint as JSON-able metadata and NumPy arrays (see :mod:`gmm_stream._state`).

        Returns
        -------
        meta : dict
        arrays : dict of str to ndarray
        """
        return _state.checkpoint_state(self)

    @classmethod
    def check_state(cls, meta: Any, headers: Headers | None = None) -> None:
        """Check checkpoint metadata and the names, shapes and dtypes of its arrays, no values.

        ``headers`` maps each array name to ``(shape, dtype)``: a file layer passes the
        headers it read, before reading any data. Without it only ``meta`` is checked.

        Raises
        ------
        ModelFormatError
            Naming the field (see :func:`gmm_stream._state.check_checkpoint_state`).
        """
        _state.check_checkpoint_state(meta, headers)

    @classmethod
    def from_state(cls, meta: Any, arrays: Mapping[str, Any]) -> EMState:
        """The checkpoint of :meth:`get_state`, after checking every key, shape and value.

        Raises
        ------
        ModelFormatError
            Naming the field; its ``part`` is ``"meta"`` or ``"arrays"``.
        """
        pieces = _state.checkpoint_from_state(meta, arrays)
        best = pieces.pop("best")
        if best is not None:
            best = EMResult(best["params"], best["converged"], best["n_iter"], float(best["lower_bound"]),
                            tuple(float(b) for b in best["lower_bounds"]), best["n_empty"])
        return cls(best=best, **pieces)


# ------------------------------------------------------------------ block functions (pure)


def _block_score_samples(X: np.ndarray, params: GaussianParams) -> np.ndarray:
    return posterior(X, params)[2]


def _block_proba(X: np.ndarray, params: GaussianParams) -> np.ndarray:
    return posterior(X, params)[1]


def _block_predict(X: np.ndarray, params: GaussianParams) -> np.ndarray:
    return posterior(X, params)[0]


def _block_as(X: np.ndarray, params: GaussianParams, func, dtype) -> np.ndarray:
    return func(X, params).astype(dtype, copy=False)


class _VerboseReport:
    """scikit-learn's ``verbose`` output, to stdout, word for word (``BaseMixture._print_verbose_msg_*``)."""

    def __init__(self, verbose: int, interval: int):
        self.verbose, self.interval = int(verbose), interval
        self._init_start = self._iter_start = time.time()

    def init_begin(self, init: int) -> None:
        if self.verbose >= 1:
            print(f"Initialization {init}")
            self._init_start = self._iter_start = time.time()

    def iteration(self, n_iter: int, change: float) -> None:
        if n_iter % self.interval != 0:
            return
        if self.verbose == 1:
            print(f"  Iteration {n_iter}")
        elif self.verbose >= 2:
            now = time.time()
            print(f"  Iteration {n_iter}\t time lapse {now - self._iter_start:.5f}s\t ll change {change:.5f}")
            self._iter_start = now

    def init_end(self, lower_bound: float, converged: bool) -> None:
        message = "converged" if converged else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {message}.")
        elif self.verbose >= 2:
            lapse = time.time() - self._init_start
            print(f"Initialization {message}. time lapse {lapse:.5f}s\t lower bound {lower_bound:.5f}.")


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
        Start from the fitted parameters and the lower bound of the previous call to
        ``fit`` (``n_init`` is then ignored), as scikit-learn does: a second call continues
        the same EM, and converges when the first iteration changes the previous call's
        lower bound by less than ``tol``.
    verbose : int or bool, default=0
        scikit-learn's output, printed to stdout: 1 (or True) prints the start and end of
        each initialisation and every ``verbose_interval``-th iteration; 2 also the time
        taken and the change of the lower bound.
    verbose_interval : int, default=10
    init_max_samples : int, default=100_000
        Rows the initialisation may hold in memory (a seeded sample of rows; with
        ``sample_weight``, drawn with probability proportional to the weights).
    sample_first : bool, default=True
        When the data have more rows than ``init_max_samples``, run EM to convergence on
        that in-memory sample first (same ``tol`` and ``max_iter``), then go on with
        full-data EM passes from its result until ``tol`` holds on the full data. The
        result is still batch EM on all the data (a fixed point of it, from a start already
        close to it), in fewer full passes (typically 2-4 instead of 10 or more). It is
        the fixed point plain batch EM reaches from the same initialisation when EM on the
        sample stays in that start's basin; with overlapping clusters it can end in another
        local optimum, higher or lower (docs/math.md). ``n_iter_``, ``lower_bounds_`` and ``converged_`` describe the
        full-data passes; ``n_iter_sample_`` counts the iterations on the sample. Set it to
        False for plain batch EM from the initialisation. The sample is drawn even when
        every ``*_init`` is given.
    learning_decay : float in (0.5, 1], default=0.7
        ``α`` of the step size of :meth:`partial_fit`, ``η_t = (learning_offset + t)^(−α)``
        for the ``t``-th batch after the first: 1 averages every batch equally (the running
        mean of the statistics), values near 0.5 forget old batches fastest while still
        converging (Cappé & Moulines 2009).
    learning_offset : float >= 0, default=1.0
        ``t₀`` of that step size: larger values give the early batches less weight each.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
        Full-data EM iterations of the best initialisation.
    n_iter_sample_ : int
        EM iterations on the in-memory sample before them (0 without ``sample_first``).
    n_steps_ : int
        Batches :meth:`partial_fit` has taken (online EM); 0 after :meth:`fit`.
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

    Under ``sklearn.config_context(array_api_dispatch=True)`` ``X`` may also be an array of
    another array-API namespace that can be copied to NumPy: it is, and the fitted
    attributes and results are given back in its namespace and on its device; as in
    scikit-learn, only ``init_params`` 'random' and 'random_from_data' are allowed then,
    and ``predict`` & co. refuse input of another namespace than the training data's.

    float32 input gives float32 fitted attributes and float32 ``score_samples`` and
    ``predict_proba``, as in scikit-learn; the statistics are accumulated in float64 and
    the big products stay in float32 (see ``gmm_stream._stats``).

    ``fit`` warns with :class:`~gmm_stream.exceptions.OverParameterizedWarning` when the
    model has more free parameters (as counted by ``bic``) than ``MAX_PARAMETERS_PER_ROW``
    = 1/10 of the number of usable rows (rows with at least one observed value), e.g. 3
    full components in 10 features (197 parameters) need at least 1970 rows.
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
        sample_first=True,
        learning_decay=0.7,
        learning_offset=1.0,
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
        self.sample_first = sample_first
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset

    #: scikit-learn's constraints (``GaussianMixture._parameter_constraints``) and ours,
    #: checked once, at the start of ``fit``, with scikit-learn's messages
    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INITIAL_RESPONSIBILITIES))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "init_max_samples": [Interval(Integral, 1, None, closed="left")],
        "sample_first": ["boolean"],
        "learning_decay": [Interval(Real, 0.5, 1.0, closed="right")],
        "learning_offset": [Interval(Real, 0.0, None, closed="left")],
    }

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.array_api_support = self.init_params in _ARRAY_API_INIT_PARAMS and not self.warm_start
        return tags

    # ------------------------------------------------------------------ checks (one place)

    def _check_constructor_parameters(self) -> None:
        """Types and ranges of the parameters (``_parameter_constraints``), scikit-learn's messages.

        Raises
        ------
        InvalidParameterError
            A ``ValueError`` and a ``TypeError`` (and scikit-learn's ``InvalidParameterError``).
        """
        try:
            self._validate_params()
        except _SklearnInvalidParameterError as exc:
            raise InvalidParameterError(str(exc)) from None

    def _check_parameters(self, n_features: int) -> dict:
        """The checked ``*_init`` arrays (float64, or None), once the data's features are known.

        The messages are scikit-learn's for the same conditions.

        Raises
        ------
        InvalidParameterError
            A ``ValueError`` and a ``TypeError`` (and scikit-learn's ``InvalidParameterError``).
        NotImplementedError
            With ``array_api_dispatch`` enabled and ``init_params`` other than 'random' or
            'random_from_data' (scikit-learn's rule and message).
        """
        k, kind = self.n_components, self.covariance_type
        inits = {
            "weights": self._check_weights_init(k),
            "means": self._check_init("means_init", "means", (k, n_features)),
            "precisions": self._check_precisions_init(covariance_shape(kind, k, n_features)),
        }
        if dispatch_enabled() and self.init_params not in _ARRAY_API_INIT_PARAMS:
            raise NotImplementedError(
                f"Allowed `init_params` are {_ARRAY_API_INIT_PARAMS} if "
                f"'array_api_dispatch' is enabled. You passed "
                f"init_params={self.init_params!r}, which are not implemented to work "
                "with 'array_api_dispatch' enabled. Please disable "
                f"'array_api_dispatch' to use init_params={self.init_params!r}."
            )
        return inits

    def _check_init(self, name: str, label: str, shape: tuple, **check):
        """``getattr(self, name)`` as a finite float array of ``shape``, or None.

        The rules are :func:`~gmm_stream.check_initial_parameters`'s (as are the two below).
        """
        return check_init_array(getattr(self, name), name, label, shape, n_components=self.n_components,
                                covariance_type=self.covariance_type, **check)

    def _check_weights_init(self, k: int):
        return check_weights_init(self.weights_init, k, self.covariance_type)

    def _check_precisions_init(self, shape: tuple):
        return check_precisions_init(self.precisions_init, shape, self.n_components, self.covariance_type)

    def _validate_X(self, X, *, reset: bool) -> np.ndarray | da.Array:
        """The data as a NumPy or Dask array of float32/float64; sets or checks the features.

        ``reset=True`` (``fit``) also requires two rows, as scikit-learn does.
        """
        try:
            return self._validate_X_unchecked(to_numpy(X), reset=reset)
        except InvalidInputError:
            raise
        except ValueError as exc:  # scikit-learn's validation: same message, our error class
            raise InvalidInputError(str(exc)) from exc

    def _validate_X_unchecked(self, X, *, reset: bool):
        if getattr(X, "ndim", 2) > 2:
            raise InvalidInputError(
                f"X must be 2-D (n_samples, n_features), got a {X.ndim}-D array of shape {X.shape}"
            )
        min_samples = _MIN_FIT_SAMPLES if reset else 1
        if not _is_dataarray(X) and not isinstance(X, da.Array):
            return validate_data(self, X, reset=reset, **dict(_CHECK_ARRAY, ensure_min_samples=min_samples))
        names = None
        if _is_dataarray(X):
            if X.ndim != 2:
                raise InvalidInputError("X must be 2-D (samples, features), got an xarray.DataArray "
                                        f"with dims {X.dims}")
            names = _dataarray_feature_names(X)
            X = X.data
        X = _check_dask(X) if isinstance(X, da.Array) else check_array(X, **_CHECK_ARRAY)
        if X.shape[0] < min_samples:  # scikit-learn's message
            raise InvalidInputError(
                f"Found array with {X.shape[0]} sample(s) (shape={X.shape}) while a minimum of "
                f"{min_samples} is required by {type(self).__name__}."
            )
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
        check_features(n_features, names, expected=self.n_features_in_,
                       expected_names=getattr(self, "feature_names_in_", None), owner=type(self).__name__)

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
            if w.size and not np.any(w > 0):
                raise InvalidInputError("sample_weight is zero for every row; at least one row needs a positive weight")
        if w.ndim != 1 or w.shape[0] != X.shape[0]:
            raise InvalidInputError(f"sample_weight must have shape ({X.shape[0]},), got {w.shape}")
        return w

    # -------------------------------------------------------------------------------- fit

    def fit(self, X: Data, y: object = None, sample_weight: ArrayLike | da.Array | None = None, *,
            callback: Callable[[EMState], object] | None = None,
            resume_from: EMState | None = None) -> GaussianMixture:
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
        namespace = input_namespace(X)
        self._check_constructor_parameters()
        X = self._validate_X(X, reset=True)
        n = X.shape[0]
        if n < self.n_components:
            raise InvalidInputError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, n_samples = {n}"
            )
        inits = self._check_parameters(X.shape[1])
        w = self._validate_weights(sample_weight, X)
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        if not isinstance(X, da.Array):  # cheap in memory; Dask input is checked by the first pass
            observed = ~np.isnan(X)
            self._check_usable(observed.sum(axis=0), int(observed.any(axis=1).sum()), warn=do_init)
        random_state = check_random_state(self.random_state)
        n_init = self.n_init if do_init else 1
        # scikit-learn's warm start: the same EM goes on, from the last parameters and lower bound
        start_bound = -np.inf if do_init else self.lower_bound_
        # more rows than the sample holds: EM converges on the sample first (in memory), and the
        # full-data EM goes on from there to the same tol (see ``sample_first``)
        sample_first = do_init and self.sample_first and self.max_iter > 0 and n > self.init_max_samples
        needs_sample = do_init and (sample_first or any(v is None for v in inits.values()))
        sample = draw_sample(X, self.init_max_samples, random_state, w) if needs_sample else None
        report = _VerboseReport(self.verbose, self.verbose_interval)
        if resume_from is not None and not 0 <= resume_from.init < n_init:
            raise InvalidParameterError(
                f"resume_from is a state of initialisation {resume_from.init}, but this fit runs {n_init} "
                "initialisation(s) (n_init, or 1 with warm_start); resume with the parameters of the interrupted fit"
            )
        best = None if resume_from is None else resume_from.best
        best_init = -1
        sample_iterations: dict[int, int] = {}
        for init in range(n_init):
            report.init_begin(init)
            # initial parameters are always drawn, so the random state advances as in an
            # uninterrupted fit; a resumed init then starts from its checkpoint instead
            try:
                params = self._initial_parameters(sample, inits, random_state) if do_init else self._params
            except NumericalOverflowError as err:
                raise self._overflow_error(err, X, "the initialisation") from None
            if resume_from is not None and init < resume_from.init:
                continue
            if resume_from is not None and init == resume_from.init:
                state = resume_from
            else:
                if sample_first:
                    params, sample_iterations[init] = self._fit_sample(sample, params, init)
                state = EMState(init=init, n_iter=0, params=params, lower_bounds=[], best=best)
            state = self._em(X, w, state, callback, start_bound=start_bound, report=report,
                             check_usable=isinstance(X, da.Array), warn=do_init)
            result = state.result()
            # as scikit-learn: the best lower bound wins; with max_iter=0 (no bound) the last init
            if best is None or result.lower_bound > best.lower_bound or best.lower_bound == -np.inf:
                best, best_init = result, init
        assert best is not None  # n_init >= 1
        self._set_fitted(best, X.dtype, namespace)
        self.n_iter_sample_ = sample_iterations.get(best_init, 0)
        self.__dict__.pop("_online", None)  # a batch fit starts a new stream
        self.__dict__.pop("partitions_", None)  # and a new partition record (see ``refresh``)
        self.n_steps_ = 0
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    # ------------------------------------------------------------------------- online EM

    def partial_fit(self, X: ArrayLike, y: Any = None, sample_weight: ArrayLike | None = None, *,
                    shuffle: bool = False) -> GaussianMixture:
        """Online (stepwise) EM: update the model with one batch of a stream.

        Each batch gives its expected sufficient statistics under the current parameters
        (the same exact E-step as :meth:`fit`, missing values marginalised), per unit of
        weight, ``s(batch)``; the running statistics become
        ``s ← (1 − η_t) s + η_t s(batch)`` with ``η_t = (learning_offset + t)^(−learning_decay)``
        (``t = 1, 2, ...`` the batches after the first, which sets ``s``), and the M-step of
        :meth:`fit` turns ``s`` into the parameters (Cappé & Moulines 2009; Liang & Klein
        2009). With ``learning_decay`` in (0.5, 1] the parameters converge on a stationary
        stream; the mean log-likelihood of each batch, under the parameters before its
        step, is appended to ``lower_bounds_``.

        The first call initialises: from ``*_init`` when given, else from the batch (as
        :meth:`fit` does, on at most ``init_max_samples`` of its rows); after :meth:`fit`,
        from the fitted model. The running statistics and the step count are part of the
        model's state (:meth:`get_state`), so a saved model continues its stream.

        Parameters
        ----------
        X : array-like, dask array or xarray.DataArray of shape (n_samples, n_features)
            One batch; a Dask array is a sequence of batches, one per row chunk, taken in
            order (or in a seeded random order with ``shuffle=True``).
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
        shuffle : bool, default=False
            Take a Dask array's chunks in a random order drawn from ``random_state``.

        Returns
        -------
        self
        """
        first = "_online" not in self.__dict__
        if first:
            self._check_constructor_parameters()
        X = self._validate_X(X, reset=first and not hasattr(self, "_params"))
        w = self._validate_weights(sample_weight, X)
        if first:
            self._start_stream(X, w)
        if isinstance(X, da.Array):
            bounds = np.cumsum((0,) + tuple(X.chunks[0]))
            order = np.arange(X.numblocks[0])
            if shuffle:
                self._stream_order_rng().shuffle(order)
            for b in order:
                rows = slice(int(bounds[b]), int(bounds[b + 1]))
                block = np.asarray(X.blocks[int(b)].compute())
                self._online_step(block, None if w is None else np.asarray(w[rows]))
        else:
            self._online_step(X, None if w is None else np.asarray(w))
        return self

    def _stream_order_rng(self) -> np.random.RandomState:
        """The random order of a shuffled pass: drawn from ``random_state`` and the steps taken,
        so successive passes of one stream take different orders, reproducibly."""
        seed = self.random_state
        if seed is None or isinstance(seed, np.random.RandomState):
            return check_random_state(seed)
        return np.random.RandomState(np.random.SeedSequence([int(seed), self._online.steps]).generate_state(1))

    def _start_stream(self, X, w) -> None:
        """The online state of a first :meth:`partial_fit` (parameters: fitted, given or from the batch)."""
        if "_params" not in self.__dict__:
            inits = self._check_parameters(X.shape[1])
            random_state = check_random_state(self.random_state)
            sample = draw_sample(X, self.init_max_samples, random_state, w) \
                if any(v is None for v in inits.values()) else None
            self._params = self._initial_parameters(sample, inits, random_state)
            self.lower_bounds_ = np.zeros(0)
            self.n_empty_rows_ = 0
            self.n_iter_sample_ = 0
        self._online = _OnlineState()
        self.converged_: bool = False  # an online fit has no convergence test
        self.n_iter_ = 0

    def _online_step(self, X, w) -> None:
        """One batch of online EM (see :meth:`partial_fit`)."""
        online: _OnlineState = self._online
        params = self._params.astype(np.float64)
        try:
            stats = _dask.statistics(X, params, w)
        except NumericalOverflowError as err:
            raise self._overflow_error(err, X, f"online step {online.steps + 1}") from None
        self.n_empty_rows_ = int(getattr(self, "n_empty_rows_", 0)) + stats.n_empty
        if stats.n_rows <= 0:  # no usable row (or zero weight): nothing to learn
            return
        batch = stats.scaled(1.0 / stats.n_rows)
        if online.stats is None:
            running = batch
        else:
            eta = (self.learning_offset + online.steps) ** (-self.learning_decay)
            running = online.stats.recentred(batch.center).scaled(1.0 - eta) + batch.scaled(eta)
        n_seen = online.n_seen + stats.n_rows
        self._params = m_step(running.scaled(n_seen), reg_covar=self.reg_covar,
                              covariance_type=self.covariance_type, previous=params).astype(self._params.dtype)
        online.stats, online.steps, online.n_seen = running, online.steps + 1, n_seen
        self.n_steps_ = self.n_iter_ = online.steps
        bound = float(stats.loglik / stats.n_rows)
        self.lower_bound_: float = bound
        self.lower_bounds_ = np.append(np.asarray(getattr(self, "lower_bounds_", [])), bound)

    # ----------------------------------------------------------------------- incremental EM

    def refresh(self, X: Data, partitions: Mapping[str, tuple[int, int]], sample_weight: ArrayLike | None = None,
                *, remove: Iterable[str] = ()) -> GaussianMixture:
        """Incremental EM (Neal & Hinton 1998): update the model from some partitions of the data.

        The model keeps, in :attr:`partitions_`, the sufficient statistics of every
        partition it has seen, each computed under the parameters of that partition's last
        visit, and its parameters are the M-step of their sum. ``refresh`` visits the
        partitions of ``partitions`` (new ones, changed ones, or old ones whose statistics
        have grown stale): their statistics are replaced by fresh ones under the current
        parameters, the M-step follows, and this repeats over the same partitions until the
        lower bound changes by less than ``tol`` (at most ``max_iter`` times). Partitions in
        ``remove`` are subtracted first. The partitions not visited keep their statistics.

        What it guarantees: each visit and each M-step does not decrease the free energy
        ``F`` (a lower bound of the log-likelihood of all the data the record holds; up to
        ``reg_covar``'s effect on the M-step), which ``lower_bounds_`` reports per row;
        ``F`` equals the log-likelihood when every partition was last visited under the
        current parameters, and then one refresh of every partition is one batch EM
        iteration over all the data. What it does not: the unvisited partitions'
        statistics stay those of older parameters, so after a partial refresh the model is
        not exactly the batch fixed point of all the data (visit the stalest partitions in
        each refresh to keep them close). The derivation is in docs/math.md.

        Parameters
        ----------
        X : array-like, dask array or xarray.DataArray of shape (n_samples, n_features)
            The rows the partitions are ranges of.
        partitions : mapping of str to (start, stop)
            The partitions to visit, by key, each a row range ``X[start:stop]``. A key not in
            :attr:`partitions_` enters the record.
        sample_weight : array-like of shape (n_samples,), optional
        remove : iterable of str
            Keys of partitions whose data are gone: their statistics are subtracted (a key
            the record does not hold is an error).

        Returns
        -------
        self

        Raises
        ------
        NotFittedError
            If the model is not fitted (``fit`` or ``partial_fit`` it first).
        InvalidInputError
            A row range outside ``X``, a key both visited and removed, or no partition left.
        """
        params = self._fitted().astype(np.float64)
        X = self._validate_X(X, reset=False)
        w = self._validate_weights(sample_weight, X)
        record = self.__dict__.get("partitions_", PartitionStatistics())
        remove = [remove] if isinstance(remove, str) else [str(k) for k in remove]
        unknown = sorted(set(remove) - set(record.keys))
        if unknown:
            raise InvalidInputError(f"cannot remove partition(s) {unknown}: the model's record holds no such key "
                                    f"(it holds {record.keys[:10]}{' ...' if len(record) > 10 else ''})")
        parts = self._checked_partitions(partitions, X.shape[0], remove)
        record = record.removed(remove).next_refresh()
        if not parts and not record:
            raise InvalidInputError("refresh: no partition is left to fit (every one was removed and none given)")
        lower_bounds: list[float] = []
        converged, n_iter, previous = False, 0, -np.inf
        if not parts:  # only removals: one M-step from what is left
            lower_bounds.append(record.free_energy(params) / record.n_rows)
            params = m_step(record.total(), reg_covar=self.reg_covar, covariance_type=self.covariance_type,
                            previous=params)
            converged, n_iter = True, 1
        while not converged and n_iter < self.max_iter:
            n_iter += 1
            try:
                record = record.visited(params, _dask.partition_statistics(X, params, parts, w))
                total = record.total()
                if n_iter == 1:
                    self._check_first_statistics(total, X.shape[0], check_usable=False)
                bound = record.free_energy(params) / total.n_rows
                params = m_step(total, reg_covar=self.reg_covar, covariance_type=self.covariance_type,
                                previous=params)
            except NumericalOverflowError as err:
                raise self._overflow_error(err, X, f"refresh iteration {n_iter}") from None
            lower_bounds.append(bound)
            converged = abs(bound - previous) < self.tol
            previous = bound
        self._params = params.astype(self._params.dtype)
        self.partitions_ = record
        self.__dict__.pop("_online", None)  # a batch update ends an online stream
        self.n_steps_ = 0
        self.converged_, self.n_iter_ = bool(converged), n_iter
        self.lower_bounds_ = np.asarray(lower_bounds, dtype=np.float64)
        self.lower_bound_ = float(lower_bounds[-1]) if lower_bounds else float(self.lower_bound_)
        self.n_empty_rows_ = int(sum(s.n_empty for s in record.stats.values()))
        if not converged and self.max_iter > 0:
            warnings.warn("refresh did not converge within max_iter; refresh again or increase max_iter",
                          ConvergenceWarning, stacklevel=2)
        return self

    def record_partitions(self, statistics: Mapping[str, SufficientStats]) -> GaussianMixture:
        """Start the partition record of :meth:`refresh` from statistics computed under the
        fitted parameters (``gmm_stream.partition_statistics(X, model.params_, partitions)``,
        or its lazy form computed in another pass over the data). Replaces any record (keeping
        its count of refreshes).

        Returns
        -------
        self

        Raises
        ------
        InvalidInputError
            If the statistics were not computed under this model's parameters.
        """
        params = self._fitted().astype(np.float64)
        for key, stats in statistics.items():
            if stats.center.shape != params.means.shape or not np.allclose(stats.center, params.means,
                                                                            rtol=1e-12, atol=0.0):
                raise InvalidInputError(
                    f"the statistics of partition {key!r} were not computed under this model's parameters; "
                    "compute them with partition_statistics(X, model.params_, partitions)")
        refreshes = self.partitions_.refreshes if "partitions_" in self.__dict__ else 0
        self.partitions_ = PartitionStatistics(refreshes=refreshes).visited(
            params, {str(key): stats for key, stats in statistics.items()})
        return self

    def _checked_partitions(self, partitions: Mapping[str, tuple[int, int]], n: int,
                            remove: list[str]) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for key, bounds in partitions.items():
            start, stop = (int(b) for b in bounds)
            if not 0 <= start <= stop <= n:
                raise InvalidInputError(
                    f"partition {key!r}: rows {start}:{stop} are not a row range of X, which has {n} rows")
            out[str(key)] = (start, stop)
        both = sorted(set(out) & set(remove))
        if both:
            raise InvalidInputError(f"partition(s) {both} are both visited and removed; pass each to one of the two")
        return out

    def _fit_sample(self, sample, params: GaussianParams, init: int) -> tuple[GaussianParams, int]:
        """EM to convergence on the in-memory ``sample`` from ``params`` (the first stage of a
        fit of more rows than ``init_max_samples``); its result starts the full-data EM."""
        X_sample, w_sample = sample
        state = self._em(X_sample, w_sample, EMState(init=init, n_iter=0, params=params), None,
                         check_usable=False, warn=False)
        return state.params, state.n_iter

    def _set_fitted(self, best: EMResult, dtype, namespace: Namespace | None) -> None:
        """The fitted attributes from the best initialisation, in the input's dtype and namespace."""
        self._params = best.params.astype(dtype)
        self._xp = namespace
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bound_ = best.lower_bound
        self.lower_bounds_ = np.asarray(best.lower_bounds, dtype=np.float64)
        self.n_empty_rows_ = best.n_empty

    def _initial_parameters(self, sample, inits: dict, random_state) -> GaussianParams:
        params = None
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
        return self._with_inits(params, inits)

    def _with_inits(self, params: GaussianParams | None, inits: dict) -> GaussianParams:
        """``params`` with the user's ``weights_init``, ``means_init``, ``precisions_init``.

        ``params`` is None when no sample was drawn: the user gave all three."""
        weights, means = inits["weights"], inits["means"]
        if params is not None:
            weights = weights if weights is not None else params.weights
            means = means if means is not None else params.means
        if inits["precisions"] is not None:
            chol = precision_cholesky_from_precisions(inits["precisions"], self.covariance_type)
            return GaussianParams(weights, means, chol, self.covariance_type)
        assert params is not None
        return GaussianParams(weights, means, params.precisions_cholesky, self.covariance_type, params.covariances)

    def _em(self, X, w, state: EMState, callback, *, start_bound: float = -np.inf, report=None,
            check_usable: bool = True, warn: bool = True) -> EMState:
        """Run EM from ``state`` until convergence or ``max_iter``.

        ``start_bound`` is the lower bound the first iteration is compared with (the
        previous call's, for a warm start). ``check_usable`` and ``warn``: check the usable
        rows and features on the first pass (for Dask input, whose rows are first seen there).
        """
        report = report or _VerboseReport(0, self.verbose_interval)
        params = state.params.astype(np.float64)
        lower_bounds = list(state.lower_bounds)
        previous = lower_bounds[-1] if lower_bounds else start_bound
        converged = state.converged
        n_empty = state.n_empty
        n_iter = state.n_iter
        while not converged and n_iter < self.max_iter:
            n_iter += 1
            try:
                stats = _dask.statistics(X, params, w)
                if n_iter == 1:
                    n_empty = self._check_first_statistics(stats, X.shape[0], check_usable, warn)
                lower_bound = stats.loglik / stats.n_rows
                params = m_step(stats, reg_covar=self.reg_covar, covariance_type=self.covariance_type, previous=params)
            except NumericalOverflowError as err:
                raise self._overflow_error(err, X, f"iteration {n_iter}") from None
            lower_bounds.append(lower_bound)
            report.iteration(n_iter, lower_bound - previous)
            converged = abs(lower_bound - previous) < self.tol
            previous = lower_bound
            # a copy: a state kept by the callback must not grow with the next iterations
            state = EMState(state.init, n_iter, params, list(lower_bounds), converged, n_empty, state.best, stats)
            if callback is not None:
                callback(state)
        if self.max_iter > 0:
            report.init_end(previous, converged)
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

    def _check_first_statistics(self, stats: SufficientStats, n_samples: int, check_usable: bool = True,
                                warn: bool = True) -> int:
        if check_usable:
            self._check_usable(stats.feature_counts, n_samples - stats.n_empty, warn=warn)
        if stats.n_rows <= 0:
            raise InvalidInputError("the total sample_weight of the usable rows is 0")
        return stats.n_empty

    def _check_usable(self, feature_counts: np.ndarray, n_usable: int, warn: bool = True) -> None:
        """Every feature observed at least once; at least one usable row per component; and
        (a warning) not more free parameters than ``MAX_PARAMETERS_PER_ROW`` per usable row."""
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
        if warn:
            self._warn_if_over_parameterized(len(feature_counts), n_usable)

    def _warn_if_over_parameterized(self, n_features: int, n_usable: int) -> None:
        n_params = n_free_parameters(self.covariance_type, self.n_components, n_features)
        if n_params > MAX_PARAMETERS_PER_ROW * n_usable:
            warnings.warn(
                f"The model has {n_params} free parameters (n_components={self.n_components}, "
                f"covariance_type={self.covariance_type!r}, {n_features} features) for {n_usable} usable rows, "
                f"more than one per {round(1 / MAX_PARAMETERS_PER_ROW)} rows: they are poorly determined and the fit "
                "may overfit or collapse. Use fewer components, a simpler covariance_type ('diag' or "
                "'spherical'), or fewer features.",
                OverParameterizedWarning,
                stacklevel=4,
            )

    def _feature_labels(self, indices) -> list:
        names = getattr(self, "feature_names_in_", None)
        return [str(names[i]) for i in indices] if names is not None else [int(i) for i in indices]

    # ------------------------------------------------------------------- fitted attributes

    @property
    def weights_(self) -> FittedArray:
        return self._out(self._fitted().weights)

    @property
    def means_(self) -> FittedArray:
        return self._out(self._fitted().means)

    @property
    def covariances_(self) -> FittedArray:
        return self._out(self._fitted().covariances)

    @property
    def precisions_cholesky_(self) -> FittedArray:
        return self._out(self._fitted().precisions_cholesky)

    @property
    def precisions_(self) -> FittedArray:
        return self._out(self._fitted().precisions)

    @property
    def lower_bounds_(self) -> FittedArray:
        if "_lower_bounds" not in self.__dict__:
            self._missing("lower_bounds_")
        return self._out(np.asarray(self.__dict__["_lower_bounds"], dtype=np.float64))

    @lower_bounds_.setter
    def lower_bounds_(self, value: ArrayLike) -> None:
        self.__dict__["_lower_bounds"] = tuple(float(v) for v in np.asarray(value, dtype=np.float64))

    def _missing(self, name: str):
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def params_(self) -> GaussianParams:
        """The fitted parameters as a :class:`GaussianParams` (NumPy arrays)."""
        return self._fitted()

    def permuted(self, order: ArrayLike) -> GaussianMixture:
        """A copy of the fitted model with its components renumbered: ``order[j]`` becomes component ``j``.

        The copy is the same mixture (the same densities and scores); only the labels
        change, e.g. to keep cluster numbers stable from one scheduled run to the next
        (``order`` from :mod:`gmm_stream.matching`). This model is left unchanged.

        Parameters
        ----------
        order : array-like of shape (n_components,)
            A permutation of ``0 .. n_components - 1``.

        Returns
        -------
        GaussianMixture
            A new fitted estimator: deep copies of this one's constructor parameters and
            fitted attributes (``converged_``, ``n_iter_``, ``lower_bound_``,
            ``lower_bounds_``, ``n_features_in_``, ``feature_names_in_``,
            ``n_empty_rows_``), with the permuted components.

        Raises
        ------
        InvalidParameterError
            If ``order`` is not a permutation of the components.
        sklearn.exceptions.NotFittedError
            If the model is not fitted.
        """
        params = self._fitted().permute(order)
        new = copy.copy(self)
        new.__dict__ = copy.deepcopy({key: value for key, value in self.__dict__.items() if key != "_params"})
        new._params = params
        if "partitions_" in self.__dict__:
            new.partitions_ = self.partitions_.permuted(np.asarray(order))
        return new

    def permute_components(self, order: ArrayLike) -> GaussianMixture:
        """Renumber the fitted components in place: ``order[j]`` becomes component ``j``.

        .. deprecated::
            Changing a fitted model in place is deprecated; use
            ``model = model.permuted(order)``, which returns a relabelled copy.

        Returns ``self``.
        """
        warnings.warn("GaussianMixture.permute_components changes the model in place and is deprecated; "
                      "use model = model.permuted(order), which returns a relabelled copy",
                      DeprecationWarning, stacklevel=2)
        self._params = self.permuted(order).params_
        return self

    def _fitted(self) -> GaussianParams:
        if "_params" not in self.__dict__:
            check_is_fitted(self, "converged_")
            raise AttributeError("model is not fitted")
        return self._params

    def _out(self, a):
        """A fitted array in the namespace and on the device of the training data."""
        namespace = self.__dict__.get("_xp")
        return a if namespace is None else namespace.asarray(a)

    def __sklearn_is_fitted__(self) -> bool:
        return "_params" in self.__dict__

    # ------------------------------------------- scikit-learn's parameter hooks (BaseMixture)

    def _get_parameters(self) -> tuple:
        """``(weights_, means_, covariances_, precisions_cholesky_)``, as scikit-learn's."""
        return self.weights_, self.means_, self.covariances_, self.precisions_cholesky_

    def _set_parameters(self, params) -> None:
        """Set the fitted parameters from scikit-learn's tuple
        ``(weights, means, covariances, precisions_cholesky)`` (arrays keep their dtype)."""
        weights, means, covariances, chol = (np.asarray(to_numpy(a)) for a in params)
        self._params = GaussianParams(weights, means, chol, self.covariance_type, covariances)

    def _initialize(self, X, resp) -> None:
        """scikit-learn's ``_initialize``: parameters from responsibilities ``resp`` (n, K) of
        complete rows ``X``, overridden by ``weights_init``, ``means_init``, ``precisions_init``.
        ``resp`` may be None when all three are given. As in scikit-learn, the ``*_init``
        arrays are used as they are (``fit`` checks them)."""
        X = check_array(to_numpy(X), dtype=[np.float64, np.float32])
        inits = {key: None if value is None else np.asarray(to_numpy(value), dtype=np.float64)
                 for key, value in (("weights", self.weights_init), ("means", self.means_init),
                                    ("precisions", self.precisions_init))}
        params = None
        if resp is not None:
            resp = np.asarray(to_numpy(resp), dtype=np.float64)
            params = parameters_from_responsibilities(X.astype(np.float64), resp, None,
                                                      covariance_type=self.covariance_type, reg_covar=self.reg_covar)
        self._params = self._with_inits(params, inits).astype(X.dtype)

    # ------------------------------------------------------------------------- inference

    def _apply(self, X, func, n_columns, dtype=None, *, method: str, give_back: bool = True):
        """``func(block, params)`` over the rows of ``X``: NumPy, lazy Dask, or (``give_back``)
        the array-API namespace of ``X``. ``dtype`` None: the floating result type of ``X``
        and the model. Under array_api_dispatch, ``X`` must be in the namespace and on the
        device of the training data, as scikit-learn requires (``method`` names the caller)."""
        check_is_fitted(self)
        check_same_namespace(X, self, attribute="means_", method=method)
        namespace = input_namespace(X) if give_back else None
        X = self._validate_X(X, reset=False)
        dtype = np.result_type(X.dtype, self._params.dtype) if dtype is None else np.dtype(dtype)
        if isinstance(X, da.Array):
            return _dask.map_rows(X, partial(_block_as, func=func, dtype=dtype), self._params, n_columns, dtype)
        out = _block_as(X, self._params, func, dtype)
        return out if namespace is None else namespace.asarray(out)

    @overload
    def score_samples(self, X: np.ndarray) -> np.ndarray: ...
    @overload
    def score_samples(self, X: da.Array) -> da.Array: ...
    @overload
    def score_samples(self, X: Data) -> Result: ...
    def score_samples(self, X: Data) -> Result:
        """Log-density of each row (of its observed entries).

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,)
            NaN for rows with no observed value; lazy for Dask input; float32 when both
            ``X`` and the fitted model are float32.
        """
        return self._apply(X, _block_score_samples, None, method="score_samples")

    @overload
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...
    @overload
    def predict_proba(self, X: da.Array) -> da.Array: ...
    @overload
    def predict_proba(self, X: Data) -> Result: ...
    def predict_proba(self, X: Data) -> Result:
        """Posterior probability of each component for each row.

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples, n_components)
        """
        return self._apply(X, _block_proba, self.n_components, method="predict_proba")

    @overload
    def predict(self, X: np.ndarray) -> np.ndarray: ...
    @overload
    def predict(self, X: da.Array) -> da.Array: ...
    @overload
    def predict(self, X: Data) -> Result: ...
    def predict(self, X: Data) -> Result:
        """Most probable component of each row (-1 for rows with no observed value).

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,)
        """
        return self._apply(X, _block_predict, None, np.int64, method="predict")

    @overload
    def fit_predict(self, X: np.ndarray, y: object = None,
                    sample_weight: ArrayLike | da.Array | None = None) -> np.ndarray: ...
    @overload
    def fit_predict(self, X: da.Array, y: object = None,
                    sample_weight: ArrayLike | da.Array | None = None) -> da.Array: ...
    @overload
    def fit_predict(self, X: Data, y: object = None, sample_weight: ArrayLike | da.Array | None = None) -> Result: ...
    def fit_predict(self, X: Data, y: object = None, sample_weight: ArrayLike | da.Array | None = None) -> Result:
        """``fit(X)`` then ``predict(X)``."""
        return self.fit(X, y, sample_weight=sample_weight).predict(X)

    def _score_parts(self, X) -> tuple[float, int]:
        """Mean log-density of the usable rows of ``X``, and their number.

        For NumPy input the mean is ``np.mean`` of ``score_samples`` (scikit-learn's ``score``,
        in the same dtype); for Dask input a float64 sum over the chunks.
        """
        s = self._apply(X, _block_score_samples, None, method="score", give_back=False)
        if isinstance(s, da.Array):
            total, count = da.compute(da.nansum(s, dtype=np.float64), da.sum(~da.isnan(s)))
            return float(total) / int(count), int(count)
        usable = ~np.isnan(s)
        s = s if usable.all() else s[usable]
        return float(np.mean(s)), int(s.shape[0])

    def score(self, X: Data, y: object = None) -> float:
        """Mean log-likelihood of the usable rows of ``X``."""
        return self._score_parts(X)[0]

    def bic(self, X: Data) -> float:
        """Bayesian information criterion on ``X`` (usable rows only)."""
        mean, count = self._score_parts(X)
        return _criteria.bic(mean * count, count, self._params.n_parameters())

    def aic(self, X: Data) -> float:
        """Akaike information criterion on ``X`` (usable rows only)."""
        mean, count = self._score_parts(X)
        return _criteria.aic(mean * count, self._params.n_parameters())

    def _n_parameters(self) -> int:
        return self._fitted().n_parameters()

    def sample(self, n_samples: int = 1) -> tuple[FittedArray, FittedArray]:
        """Draw samples from the fitted model.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            float64 (the widest float of the training data's namespace and device).
        y : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        if n_samples < 1:
            raise InvalidParameterError(
                f"Invalid value for 'n_samples': {n_samples}. The sampling requires at least one sample."
            )
        p = self._params
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, p.weights.astype(np.float64))
        cov = p.covariances
        assert cov is not None  # set by GaussianParams
        if self.covariance_type == "full":
            X = np.vstack([rng.multivariate_normal(m, c, int(s)) for m, c, s in zip(p.means, cov, counts)])
        elif self.covariance_type == "tied":
            X = np.vstack([rng.multivariate_normal(m, cov, int(s)) for m, s in zip(p.means, counts)])
        else:
            var = cov if self.covariance_type == "diag" else np.repeat(cov[:, None], p.n_features, axis=1)
            X = np.vstack([m + rng.standard_normal(size=(s, p.n_features)) * np.sqrt(v)
                           for m, v, s in zip(p.means, var, counts)])
        y = np.concatenate([np.full(s, j, dtype=np.int64) for j, s in enumerate(counts)])
        namespace = self.__dict__.get("_xp")
        if namespace is None:
            return X.astype(np.float64, copy=False), y
        return namespace.asarray(X, "max_float"), namespace.asarray(y, "int64")

    # ------------------------------------------------------------------------------ state

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted model as JSON-able metadata and NumPy arrays (no pickle, no files).

        ``meta`` holds the estimator's name and parameters, ``n_features_in``,
        ``feature_names_in``, ``converged``, ``n_iter``, ``lower_bound``, ``lower_bounds``
        and ``n_empty_rows``; ``arrays`` the ``weights``, ``means``, ``covariances`` and
        ``precisions_cholesky`` (in the model's dtype). ``from_state`` takes them back;
        ``pipeline.save_model`` writes them to a directory. An integer ``random_state`` is
        kept, a random generator instance becomes None.

        Returns
        -------
        meta : dict
        arrays : dict of str to ndarray

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        """
        self._fitted()
        return _state.model_state(self)

    @classmethod
    def check_state(cls, meta: Any, headers: Headers | None = None) -> None:
        """Check a model's metadata and the names, shapes and dtypes of its arrays, no values.

        ``headers`` maps each array name to ``(shape, dtype)``: a file layer passes the
        headers it read, before reading any data. Without it only ``meta`` is checked.

        Raises
        ------
        ModelFormatError
            Naming the field (see :func:`gmm_stream._state.check_model_state`).
        """
        _state.check_model_state(meta, headers)

    @classmethod
    def from_state(cls, meta: Any, arrays: Mapping[str, Any]) -> GaussianMixture:
        """The fitted model of :meth:`get_state`, after checking every key, shape and value.

        Arrays may be float32 or float64; the model's are float64.

        Raises
        ------
        ModelFormatError
            Naming the field, e.g. ``model state: means has shape (3, 2), expected (4, 2)
            (n_components=4, n_features=2)``; its ``part`` is ``"meta"`` or ``"arrays"``.
        """
        params = _state.model_from_state(meta, arrays)
        model = cls(**meta["params"])
        model._params = params
        model.n_features_in_ = meta["n_features_in"]
        if meta["feature_names_in"] is not None:
            model.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        model.converged_ = meta["converged"]
        model.n_iter_ = meta["n_iter"]
        model.lower_bound_ = float(meta["lower_bound"])
        model.lower_bounds_ = np.asarray(meta["lower_bounds"], dtype=np.float64)
        online = _state.online_arrays(meta, arrays)
        if online is not None:
            info = meta["online"]
            stats = SufficientStats(online["N"], online["S1"], online["S2"], online["center"],
                                    float(info["loglik"]), float(info["n_rows"]), 0,
                                    np.zeros(online["center"].shape[1], np.int64))
            model._online = _OnlineState(stats, int(info["steps"]), float(info["n_seen"]))
            model.n_steps_ = int(info["steps"])
        if "partitions" in meta:
            model.partitions_ = PartitionStatistics.from_state(meta["partitions"], arrays)
        model.n_empty_rows_ = meta["n_empty_rows"]
        return model


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
