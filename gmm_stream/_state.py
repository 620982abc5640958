"""The state of a fitted model and of an EM checkpoint as plain values, checked on the way in.

A state is a pair: JSON-able metadata (a dict) and a dict of NumPy arrays. It is what
:meth:`GaussianMixture.get_state <gmm_stream.GaussianMixture.get_state>` and
:meth:`EMState.get_state <gmm_stream.EMState.get_state>` give and what their
``from_state`` take back; files are the data layer's business (``pipeline.model_files``,
``pipeline.checkpoints``), which adds the format stamp and the file names.

Model state
-----------
meta
    ``estimator``, ``params`` (the estimator's parameters), ``n_features_in``,
    ``feature_names_in`` (or null), ``converged``, ``n_iter``, ``lower_bound``,
    ``lower_bounds`` (one per iteration), ``n_empty_rows``.
arrays
    ``weights``, ``means``, ``covariances``, ``precisions_cholesky`` (shapes of the
    covariance type, see :mod:`gmm_stream._params`).

Checkpoint state
----------------
meta
    ``covariance_type``, ``init``, ``n_iter``, ``lower_bounds``, ``converged``,
    ``n_empty``, ``best`` (null, or ``converged``, ``n_iter``, ``lower_bound``,
    ``lower_bounds``, ``n_empty`` of the best finished initialisation).
arrays
    ``params_<name>`` for the four parameter arrays, ``best_<name>`` when there is a best,
    and ``stats_<name>`` for the statistics of the last E-step (all of them or none).

Checks
------
Nothing is trusted. The metadata must hold exactly the expected keys at every level,
each of the expected type and range, and be consistent (one lower bound per iteration,
one feature name per feature, ``*_init`` of the model's shapes). The arrays must be
exactly the expected ones, of the shapes ``n_components``, ``n_features`` and the
covariance type give, float32/float64 (counts integer), never object; these checks need
only the shapes and dtypes, so a file layer runs them on the headers before reading any
data (``check_*_state``). Then the values: finite, weights non-negative summing to 1,
covariances symmetric positive definite, precision factors triangular and inverting the
covariances, counts non-negative. Every failure is a
:class:`~gmm_stream.exceptions.ModelFormatError` naming the field, e.g.
``model state: means has shape (3, 2), expected (4, 2) (n_components=4, n_features=2)``,
with ``field``, ``part`` (``"meta"`` or ``"arrays"``) and ``reason`` set.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any, overload

import numpy as np

from . import _validate as v
from ._init import INITIAL_RESPONSIBILITIES
from ._params import COVARIANCE_TYPES, GaussianParams, covariance_shape
from ._stats import SufficientStats
from ._validate import Headers, Layout, StateReporter

__all__ = [
    "ARRAYS",
    "ESTIMATOR_PARAMS",
    "jsonable",
    "model_state",
    "check_model_state",
    "model_from_state",
    "checkpoint_state",
    "check_checkpoint_state",
    "checkpoint_from_state",
]

#: the parameter arrays of a mixture, as a state holds them
ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")
_STATS = ("N", "S1", "S2", "center", "loglik", "n_rows", "n_empty", "feature_counts")

#: the weights of a model sum to 1 within this
WEIGHTS_TOLERANCE = 1e-6
#: largest ``|C - Cᵀ|`` of a covariance, relative to its largest entry
SYMMETRY_TOLERANCE = 1e-6
#: largest ``|Lᵀ Σ L - I|`` of a precision factor ``L`` and its covariance ``Σ``
INVERSE_TOLERANCE = 1e-3

_MODEL_META = StateReporter("model state", "meta")
_MODEL_ARRAYS = StateReporter("model state", "arrays")
_CHECKPOINT_META = StateReporter("checkpoint state", "meta")
_CHECKPOINT_ARRAYS = StateReporter("checkpoint state", "arrays")


# ------------------------------------------------------------------------------ JSON


def jsonable(value: Any) -> Any:
    """``value`` with every NumPy array and scalar, tuple, set, path and datetime made JSON.

    The one conversion of gmm-stream's values to JSON types: arrays become nested lists,
    NumPy scalars Python numbers, tuples lists, sets sorted lists, paths and datetimes
    their ``str``; dicts (keys kept) and lists are converted item by item. NaN and
    infinities are kept (``json.dumps`` writes them as ``NaN``/``Infinity``).

    Raises
    ------
    TypeError
        For any other type (an open file, a random generator...), naming it.
    """
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {(k.item() if isinstance(k, np.generic) else k): jsonable(item) for k, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return [jsonable(item) for item in sorted(value)]
    if isinstance(value, (PurePath, datetime)):
        return str(value)
    text = repr(value)
    raise TypeError(f"cannot convert the {type(value).__name__} value {text[:60]} to JSON; "
                    "pass numbers, strings, lists, dicts or NumPy arrays")


# ------------------------------------------------------------------ mixture parameters


def _params_layout(prefix: str, covariance_type: str, k: int, d: int) -> dict:
    cov = covariance_shape(covariance_type, k, d)
    shapes = {"weights": (k,), "means": (k, d), "covariances": cov, "precisions_cholesky": cov}
    return {f"{prefix}{name}": (shapes[name], "f") for name in ARRAYS}


def _params_arrays(prefix: str, p: GaussianParams) -> dict[str, np.ndarray]:
    return {f"{prefix}{name}": np.asarray(getattr(p, name)) for name in ARRAYS}


def _shape_context(covariance_type: str, k: int, d: int, name: str = "") -> str:
    """``n_components=…, n_features=…`` (and the covariance type, for the arrays it shapes)."""
    context = f"n_components={k}, n_features={d}"
    by_type = name.endswith(("covariances", "precisions_cholesky", "precisions_init", "S2"))
    return context + f", covariance_type={covariance_type!r}" if by_type else context


def _check_weights(src, name: str, weights: np.ndarray, sums_to_one: bool) -> None:
    v.check_nonnegative(src, name, weights)
    total = float(weights.sum())
    if sums_to_one and abs(total - 1.0) > WEIGHTS_TOLERANCE:
        raise src.fail(name, f"sum to {total:.10g}, expected 1 (within {WEIGHTS_TOLERANCE})")
    if total <= 0:
        raise src.fail(name, "sum to 0; at least one weight must be positive")


def _matrices(a: np.ndarray, covariance_type: str, name: str) -> list[tuple[str, np.ndarray]]:
    """The matrices of a full (K, d, d) or tied (d, d) array, each with its label."""
    if covariance_type == "tied":
        return [(name, a)]
    return [(f"{name}[{i}]", m) for i, m in enumerate(a)]


def _check_covariances(src, name: str, cov: np.ndarray, covariance_type: str) -> None:
    """Positive variances; symmetric positive definite matrices (their Cholesky succeeds)."""
    if covariance_type in ("diag", "spherical"):
        v.check_nonnegative(src, name, cov, strict=True)
        return
    for label, c in _matrices(cov, covariance_type, name):
        asym = float(np.max(np.abs(c - c.T)))
        if asym > SYMMETRY_TOLERANCE * float(np.max(np.abs(c))):
            raise src.fail(label, f"is not symmetric (largest |C - Cᵀ| is {asym:.3g})")
        try:
            np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            raise src.fail(label, "is not positive definite (its Cholesky factorisation fails)") from None


def _check_triangular(src, label: str, chol: np.ndarray) -> None:
    if np.any(np.triu(chol, 1)) and np.any(np.tril(chol, -1)):
        raise src.fail(label, "is not triangular, so it is not a Cholesky factor")
    if np.any(np.diag(chol) <= 0):
        raise src.fail(label, "has a diagonal entry <= 0, so it is not a Cholesky factor")


def _check_precisions_cholesky(src, name: str, chol: np.ndarray, cov: np.ndarray, covariance_type: str) -> None:
    """``L`` is a Cholesky factor of the inverse of ``Σ``: ``Lᵀ Σ L = I`` (to :data:`INVERSE_TOLERANCE`)."""
    if covariance_type in ("diag", "spherical"):
        v.check_nonnegative(src, name, chol, strict=True)
        errors = [(name, float(np.max(np.abs(chol**2 * cov - 1.0))))]
    else:
        errors = []
        for (label, factor), (_, c) in zip(_matrices(chol, covariance_type, name), _matrices(cov, covariance_type, "")):
            _check_triangular(src, label, factor)
            errors.append((label, float(np.max(np.abs(factor.T @ c @ factor - np.eye(c.shape[0]))))))
    for label, err in errors:
        if not err <= INVERSE_TOLERANCE:
            raise src.fail(label, f"does not match the covariances: it is not the Cholesky factor of their "
                                  f"inverse (largest |Lᵀ Σ L - I| is {err:.3g})")


def _checked_params(src, arrays: Mapping[str, np.ndarray], prefix: str, covariance_type: str, *,
                    sums_to_one: bool) -> GaussianParams:
    """The mixture parameters ``<prefix><name>`` of ``arrays`` (shapes and finiteness checked)."""
    a = {name: arrays[f"{prefix}{name}"] for name in ARRAYS}
    _check_weights(src, f"{prefix}weights", a["weights"], sums_to_one)
    _check_covariances(src, f"{prefix}covariances", a["covariances"], covariance_type)
    _check_precisions_cholesky(src, f"{prefix}precisions_cholesky", a["precisions_cholesky"], a["covariances"],
                               covariance_type)
    return GaussianParams(a["weights"], a["means"], a["precisions_cholesky"], covariance_type, a["covariances"])


# ------------------------------------------------------------------------ model state

#: the checker of each estimator parameter in a model state
ESTIMATOR_PARAMS: dict[str, v.Checker] = {
    "n_components": v.integer(1),
    "covariance_type": v.string(*COVARIANCE_TYPES),
    "tol": v.number(0.0),
    "reg_covar": v.number(0.0),
    "max_iter": v.integer(0),
    "n_init": v.integer(1),
    "init_params": v.string(*INITIAL_RESPONSIBILITIES),
    "weights_init": v.optional(v.numeric_array),
    "means_init": v.optional(v.numeric_array),
    "precisions_init": v.optional(v.numeric_array),
    "random_state": v.optional(v.integer(0, 2**32 - 1)),
    "warm_start": v.boolean,
    "verbose": v.verbosity,
    "verbose_interval": v.integer(1),
    "init_max_samples": v.integer(1),
    "sample_first": v.boolean,
    "learning_decay": v.number(0.0),
    "learning_offset": v.number(0.0),
}
#: parameters added after the first model format: a state written before them may lack
#: them, and the estimator's default applies
OPTIONAL_PARAMS = ("sample_first", "learning_decay", "learning_offset")

_MODEL_KEYS: dict[str, v.Checker] = {
    "estimator": v.string("GaussianMixture"),
    "params": v.obj(ESTIMATOR_PARAMS, optional=OPTIONAL_PARAMS),
    "n_features_in": v.integer(1),
    "feature_names_in": v.optional(v.list_of(v.string())),
    "converged": v.boolean,
    "n_iter": v.integer(0),
    "lower_bound": v.number(minus_infinity=True),
    "lower_bounds": v.list_of(v.number()),
    "n_empty_rows": v.integer(0),
    "online": v.obj({"steps": v.integer(1), "n_seen": v.number(0.0), "loglik": v.number(minus_infinity=True),
                     "n_rows": v.number(0.0)}),
    "partitions": v.obj({"keys": v.list_of(v.string()), "visits": v.list_of(v.integer(0)),
                         "entropy": v.list_of(v.number()), "refreshes": v.integer(0),
                         "loglik": v.list_of(v.number()), "n_rows": v.list_of(v.number(0.0)),
                         "n_empty": v.list_of(v.integer(0))}),
}
#: keys of a model state that may be missing: ``online`` (only a model fitted by
#: ``partial_fit`` has it: the running averages of online EM, so a stream can continue) and
#: ``partitions`` (only a model with a partition record, for ``refresh``: incremental EM)
_OPTIONAL_MODEL_KEYS = ("online", "partitions")
#: the running statistics of online EM, ``online_<name>`` arrays of a model state
ONLINE_ARRAYS = ("N", "S1", "S2", "center")


def _estimator_params(model) -> dict[str, Any]:
    """``model.get_params()`` as JSON values; a random generator instance becomes null
    (its state is not reproducible from a file), an integer seed is kept."""
    params = dict(model.get_params())
    seed = params.get("random_state")
    if seed is not None and not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        params["random_state"] = None
    return jsonable(params)


def model_state(model) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and the arrays of a fitted :class:`~gmm_stream.GaussianMixture`."""
    p: GaussianParams = model.params_
    names = getattr(model, "feature_names_in_", None)
    meta = {
        "estimator": type(model).__name__,
        "params": _estimator_params(model),
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": None if names is None else [str(n) for n in names],
        "converged": bool(model.converged_),
        "n_iter": int(model.n_iter_),
        "lower_bound": float(model.lower_bound_),
        "lower_bounds": [float(b) for b in model.lower_bounds_],
        "n_empty_rows": int(getattr(model, "n_empty_rows_", 0)),
    }
    arrays = _params_arrays("", p)
    online = getattr(model, "_online", None)
    if online is not None and online.stats is not None:
        st = online.stats
        meta["online"] = {"steps": int(online.steps), "n_seen": float(online.n_seen), "loglik": float(st.loglik),
                          "n_rows": float(st.n_rows)}
        arrays.update({f"online_{name}": np.asarray(getattr(st, name), dtype=np.float64) for name in ONLINE_ARRAYS})
    record = model.__dict__.get("partitions_")
    if record is not None and len(record):
        meta["partitions"], more = record.to_state()
        arrays.update(more)
    return meta, arrays


def _partitions_layout(src, meta: dict, covariance_type: str, k: int, d: int) -> dict:
    """Shapes of the ``partitions_*`` arrays of a partition record of ``P`` partitions, after
    checking that its lists all have ``P`` distinct keys' entries."""
    info = meta["partitions"]
    n = len(info["keys"])
    if n == 0:
        raise src.fail("partitions.keys", "is empty; a saved partition record has at least one partition")
    if len(set(info["keys"])) != n:
        raise src.fail("partitions.keys", "has duplicate keys; each partition is named once")
    for name in ("visits", "entropy", "loglik", "n_rows", "n_empty"):
        if len(info[name]) != n:
            raise src.fail(f"partitions.{name}", f"has {len(info[name])} entries, expected {n} (one per key)")
    s2 = (n, k, d, d) if covariance_type in ("full", "tied") else (n, k, d)
    return {"partitions_N": ((n, k), "f"), "partitions_S1": ((n, k, d), "f"), "partitions_S2": (s2, "f"),
            "partitions_feature_counts": ((n, d), "i"), "partitions_center": ((k, d), "f")}


def _online_layout(covariance_type: str, k: int, d: int) -> dict:
    """Shapes of the ``online_*`` arrays (S2 holds only the diagonal for 'diag' and 'spherical')."""
    s2 = (k, d, d) if covariance_type in ("full", "tied") else (k, d)
    shapes = {"N": (k,), "S1": (k, d), "S2": s2, "center": (k, d)}
    return {f"online_{name}": (shapes[name], "f") for name in ONLINE_ARRAYS}


def _check_init_shapes(src, params: dict, n_features: int) -> None:
    """``weights_init``, ``means_init`` and ``precisions_init`` fit the model's shapes."""
    k, ct = params["n_components"], params["covariance_type"]
    shapes = {"weights_init": (k,), "means_init": (k, n_features),
              "precisions_init": covariance_shape(ct, k, n_features)}
    for name, shape in shapes.items():
        if params[name] is not None and np.shape(params[name]) != shape:
            raise src.fail(f"params.{name}", f"has shape {np.shape(params[name])}, expected {shape} "
                                             f"({_shape_context(ct, k, n_features, name)})")


def check_model_state(meta: Any, headers: Headers | None = None) -> Layout:
    """Check a model's metadata and the names, shapes and dtypes of its arrays.

    Parameters
    ----------
    meta : dict
        The metadata (see the module docstring).
    headers : mapping, optional
        ``{name: (shape, dtype)}`` of the arrays (e.g. read from file headers before any
        data); without it only the metadata is checked.

    Returns
    -------
    dict
        The layout ``{name: (shape, kind)}`` of the arrays the metadata describes.

    Raises
    ------
    ModelFormatError
        Naming the field at fault (``part`` "meta" or "arrays").
    """
    v.check_object(_MODEL_META, "", meta, _MODEL_KEYS, _OPTIONAL_MODEL_KEYS)
    v.check_feature_names(_MODEL_META, meta)
    v.check_history(_MODEL_META, "", meta)
    _check_init_shapes(_MODEL_META, meta["params"], meta["n_features_in"])
    ct, k, d = meta["params"]["covariance_type"], meta["params"]["n_components"], meta["n_features_in"]
    layout = _params_layout("", ct, k, d)
    if "online" in meta:
        layout.update(_online_layout(ct, k, d))
    if "partitions" in meta:
        layout.update(_partitions_layout(_MODEL_META, meta, ct, k, d))
    if headers is not None:
        v.check_array_names(_MODEL_ARRAYS, headers, layout)
        v.check_array_headers(_MODEL_ARRAYS, headers, layout, lambda name: _shape_context(ct, k, d, name))
    return layout


def model_from_state(meta: Any, arrays: Mapping[str, Any]) -> GaussianParams:
    """The fitted parameters of a model state, once every check of the module docstring passed."""
    layout = check_model_state(meta, v.headers_of(arrays))
    checked = v.as_checked_arrays(_MODEL_ARRAYS, arrays, layout)
    online_arrays(meta, checked)  # checked with the rest
    if "partitions" in meta:
        v.check_nonnegative(_MODEL_ARRAYS, "partitions_N", checked["partitions_N"])
    # scikit-learn's initial weights of 'k-means++' and 'random_from_data' sum to K/n;
    # a model fitted with max_iter=0 keeps them
    return _checked_params(_MODEL_ARRAYS, checked, "", meta["params"]["covariance_type"],
                           sums_to_one=meta["n_iter"] > 0)


def online_arrays(meta: Any, arrays: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The ``online_*`` arrays of a checked model state by statistic name, or None."""
    if "online" not in meta:
        return None
    out = {name: np.asarray(arrays[f"online_{name}"], dtype=np.float64) for name in ONLINE_ARRAYS}
    if np.any(out["N"] < 0):
        raise _MODEL_ARRAYS.fail("online_N", "has negative entries; the online statistics are damaged")
    return out


# ------------------------------------------------------------------- checkpoint state

_BEST_KEYS: dict[str, v.Checker] = {
    "converged": v.boolean,
    "n_iter": v.integer(0),
    "lower_bound": v.number(minus_infinity=True),
    "lower_bounds": v.list_of(v.number()),
    "n_empty": v.integer(0),
}

_CHECKPOINT_KEYS: dict[str, v.Checker] = {
    "covariance_type": v.string(*COVARIANCE_TYPES),
    "init": v.integer(0),
    "n_iter": v.integer(0),
    "lower_bounds": v.list_of(v.number()),
    "converged": v.boolean,
    "n_empty": v.integer(0),
    "best": v.optional(v.obj(_BEST_KEYS)),
}


def checkpoint_state(state) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and the arrays of an :class:`~gmm_stream.EMState`."""
    best = state.best
    meta = {
        "covariance_type": state.params.covariance_type,
        "init": int(state.init),
        "n_iter": int(state.n_iter),
        "lower_bounds": [float(b) for b in state.lower_bounds],
        "converged": bool(state.converged),
        "n_empty": int(state.n_empty),
        "best": None if best is None else {
            "converged": bool(best.converged), "n_iter": int(best.n_iter), "lower_bound": float(best.lower_bound),
            "lower_bounds": [float(b) for b in best.lower_bounds], "n_empty": int(best.n_empty),
        },
    }
    arrays = _params_arrays("params_", state.params)
    if best is not None:
        arrays.update(_params_arrays("best_", best.params))
    if state.stats is not None:
        arrays.update({f"stats_{k}": np.asarray(a) for k, a in state.stats.to_arrays().items()})
    return meta, arrays


def _stats_layout(covariance_type: str, k: int, d: int) -> dict:
    s2 = (k, d) if covariance_type in ("diag", "spherical") else (k, d, d)
    shapes = {"N": ((k,), "f"), "S1": ((k, d), "f"), "S2": (s2, "f"), "center": ((k, d), "f"),
              "loglik": ((), "f"), "n_rows": ((), "f"), "n_empty": ((), "i"), "feature_counts": ((d,), "i")}
    return {f"stats_{name}": shapes[name] for name in _STATS}


def _checkpoint_names(meta: dict, found) -> list[str]:
    names = [f"params_{n}" for n in ARRAYS]
    if meta["best"] is not None:
        names += [f"best_{n}" for n in ARRAYS]
    if any(n.startswith("stats_") for n in found):  # the statistics are optional, but all or none
        names += [f"stats_{n}" for n in _STATS]
    return names


@overload
def check_checkpoint_state(meta: Any, headers: None = None) -> None: ...
@overload
def check_checkpoint_state(meta: Any, headers: Headers) -> Layout: ...
def check_checkpoint_state(meta: Any, headers: Headers | None = None) -> Layout | None:
    """Check a checkpoint's metadata and the names, shapes and dtypes of its arrays.

    ``n_components`` and ``n_features`` are those of ``params_means``, so without
    ``headers`` only the metadata is checked and None is returned. Parameters, return
    value and errors otherwise as :func:`check_model_state`.
    """
    v.check_object(_CHECKPOINT_META, "", meta, _CHECKPOINT_KEYS)
    v.check_history(_CHECKPOINT_META, "", meta)
    if meta["best"] is not None:
        v.check_history(_CHECKPOINT_META, "best", meta["best"])
    if headers is None:
        return None
    src = _CHECKPOINT_ARRAYS
    v.check_array_names(src, headers, _checkpoint_names(meta, headers))
    shape = tuple(headers["params_means"][0])
    if len(shape) != 2 or min(shape) < 1:
        raise src.fail("params_means", f"has shape {shape}, expected (n_components, n_features), both >= 1")
    (k, d), ct = shape, meta["covariance_type"]
    layout = _params_layout("params_", ct, k, d)
    if meta["best"] is not None:
        layout.update(_params_layout("best_", ct, k, d))
    if "stats_N" in headers:
        layout.update(_stats_layout(ct, k, d))

    def context(name: str) -> str:
        return _shape_context(ct, k, d, "covariances" if name.startswith("stats_") else name)

    v.check_array_headers(src, headers, layout, context)
    return layout


def checkpoint_from_state(meta: Any, arrays: Mapping[str, Any]) -> dict[str, Any]:
    """The pieces of an :class:`~gmm_stream.EMState`, once every check passed.

    Returns
    -------
    dict
        ``init, n_iter, params, lower_bounds, converged, n_empty, best, stats``; ``best``
        is None or a dict ``params, converged, n_iter, lower_bound, lower_bounds, n_empty``.
    """
    layout = check_checkpoint_state(meta, v.headers_of(arrays))
    src = _CHECKPOINT_ARRAYS
    checked = v.as_checked_arrays(src, arrays, layout)
    ct = meta["covariance_type"]
    params = _checked_params(src, checked, "params_", ct, sums_to_one=meta["n_iter"] > 0)
    best = None
    if meta["best"] is not None:
        best_params = _checked_params(src, checked, "best_", ct, sums_to_one=meta["best"]["n_iter"] > 0)
        best = dict(meta["best"], params=best_params)
    stats = None
    if "stats_N" in checked:
        for name in ("stats_N", "stats_n_rows", "stats_n_empty", "stats_feature_counts"):
            v.check_nonnegative(src, name, checked[name])
        stats = SufficientStats.from_arrays({n[len("stats_"):]: a for n, a in checked.items()
                                             if n.startswith("stats_")})
    return {"init": meta["init"], "n_iter": meta["n_iter"], "params": params,
            "lower_bounds": list(meta["lower_bounds"]), "converged": meta["converged"], "n_empty": meta["n_empty"],
            "best": best, "stats": stats}
