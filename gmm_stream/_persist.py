"""Saving a fitted model to a directory and loading it back (never pickle).

A model directory holds ``model.json`` (format, package version, estimator parameters,
fit history; readable by a person) and ``arrays.npz`` (weights, means, covariances and
precision factors, loaded with ``allow_pickle=False``). The directory is written beside
its destination and renamed into place, so a crash leaves the previous model or the new
one, never a mixture of both.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ._params import GaussianParams
from ._version import __version__
from .atomic import atomic_output
from .exceptions import ModelFormatError

FORMAT = "gmm-stream-model"
FORMAT_VERSION = 1
_ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return None  # e.g. a RandomState instance: not reproducible from a file


def model_to_dict(model) -> tuple[dict, dict]:
    """The JSON metadata and the arrays of a fitted model."""
    p: GaussianParams = model.params_
    names = getattr(model, "feature_names_in_", None)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gmm_stream_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "estimator": type(model).__name__,
        "params": {k: _jsonable(v) for k, v in model.get_params().items()},
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": None if names is None else [str(n) for n in names],
        "converged": bool(model.converged_),
        "n_iter": int(model.n_iter_),
        "lower_bound": float(model.lower_bound_),
        "lower_bounds": [float(v) for v in model.lower_bounds_],
        "n_empty_rows": int(getattr(model, "n_empty_rows_", 0)),
    }
    arrays = {name: np.asarray(getattr(p, name)) for name in _ARRAYS}
    return meta, arrays


def _write_directory(path, write, *, overwrite: bool) -> None:
    """Run ``write(directory)`` on a temporary sibling of ``path``, then rename it into place."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.mkdir()
        write(tmp)


def save_model(model, path, *, overwrite: bool = False) -> None:
    meta, arrays = model_to_dict(model)

    def write(tmp: Path) -> None:
        np.savez(tmp / "arrays.npz", **arrays)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")

    _write_directory(path, write, overwrite=overwrite)


def load_model(path):
    """Load a model written by :meth:`GaussianMixture.save`.

    Raises
    ------
    ModelFormatError
        If the directory is missing, incomplete, or not a gmm-stream model.
    """
    from .mixture import GaussianMixture

    path = Path(path)
    try:
        meta = json.loads((path / "model.json").read_text())
        with np.load(path / "arrays.npz", allow_pickle=False) as f:
            arrays = {name: f[name] for name in _ARRAYS}
    except FileNotFoundError as exc:
        raise ModelFormatError(f"{path} is not a gmm-stream model directory: {exc.filename} is missing") from None
    except (KeyError, ValueError, OSError) as exc:
        raise ModelFormatError(f"{path}: cannot read the model ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}/model.json is not a gmm-stream model of a known format version "
            f"(format={meta.get('format')!r}, version={meta.get('format_version')!r})"
        )
    params = dict(meta["params"])
    model = GaussianMixture(**params)
    model._params = GaussianParams(
        arrays["weights"], arrays["means"], arrays["precisions_cholesky"], params["covariance_type"], arrays["covariances"]
    )
    model.n_features_in_ = meta["n_features_in"]
    if meta["feature_names_in"] is not None:
        model.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
    model.converged_ = meta["converged"]
    model.n_iter_ = meta["n_iter"]
    model.lower_bound_ = meta["lower_bound"]
    model.lower_bounds_ = np.asarray(meta["lower_bounds"])
    model.n_empty_rows_ = meta["n_empty_rows"]
    return model


# ------------------------------------------------------------------------- EM checkpoints

STATE_FORMAT = "gmm-stream-em-state"


def _params_arrays(prefix: str, p: GaussianParams) -> dict:
    return {f"{prefix}{name}": np.asarray(getattr(p, name)) for name in _ARRAYS}


def _params_from(arrays, prefix: str, covariance_type: str) -> GaussianParams:
    a = {name: arrays[f"{prefix}{name}"] for name in _ARRAYS}
    return GaussianParams(a["weights"], a["means"], a["precisions_cholesky"], covariance_type, a["covariances"])


def save_state(state, path, *, overwrite: bool = True) -> None:
    """Write an :class:`~gmm_stream.mixture.EMState` (a checkpoint) to a directory, atomically."""
    arrays = _params_arrays("params_", state.params)
    best = state.best
    meta = {
        "format": STATE_FORMAT,
        "format_version": FORMAT_VERSION,
        "gmm_stream_version": __version__,
        "covariance_type": state.params.covariance_type,
        "init": state.init,
        "n_iter": state.n_iter,
        "lower_bounds": [float(v) for v in state.lower_bounds],
        "converged": bool(state.converged),
        "n_empty": int(state.n_empty),
        "best": None if best is None else {k: _jsonable(v) for k, v in best.items() if k != "params"},
    }
    if best is not None:
        arrays.update(_params_arrays("best_", best["params"]))
    if state.stats is not None:
        arrays.update({f"stats_{k}": v for k, v in state.stats.to_arrays().items()})

    def write(tmp: Path) -> None:
        np.savez(tmp / "state.npz", **arrays)
        (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n")

    _write_directory(path, write, overwrite=overwrite)


def load_state(path):
    """Read a checkpoint written by :func:`save_state`."""
    from ._stats import SufficientStats
    from .mixture import EMState

    path = Path(path)
    try:
        meta = json.loads((path / "state.json").read_text())
        with np.load(path / "state.npz", allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError as exc:
        raise ModelFormatError(f"{path} is not a gmm-stream checkpoint: {exc.filename} is missing") from None
    except (KeyError, ValueError, OSError) as exc:
        raise ModelFormatError(f"{path}: cannot read the checkpoint ({exc})") from None
    if meta.get("format") != STATE_FORMAT:
        raise ModelFormatError(f"{path}/state.json is not a gmm-stream checkpoint")
    ct = meta["covariance_type"]
    best = None
    if meta["best"] is not None:
        best = dict(meta["best"], params=_params_from(arrays, "best_", ct))
    stats = None
    if "stats_N" in arrays:
        stats = SufficientStats.from_arrays({k[len("stats_"):]: v for k, v in arrays.items() if k.startswith("stats_")})
    return EMState(meta["init"], meta["n_iter"], _params_from(arrays, "params_", ct), meta["lower_bounds"],
                   meta["converged"], meta["n_empty"], best, stats)
