"""Preprocessing fitted out of core: ``log1p``, per-feature standardisation and PCA.

Steps always run in the order ``log1p -> standardize -> pca`` (each is optional); a
:class:`Preprocessor` refuses any other order. Every step is fitted once, in passes
over the row chunks of the training data (nothing larger than ``d x (k + oversamples)``
or ``d x d`` is held in memory), saved beside the model as JSON + ``.npz`` (never
pickle), and re-applied unchanged when a saved model scores new data.

Rules
-----
log1p
    ``log(1 + x)``; values ``<= -1`` are refused when the chunk is computed. NaN stays NaN.
standardize
    ``(x - mean) / scale`` with the mean and the population standard deviation
    (``ddof=0``) of each feature over its observed (non-NaN) values, as scikit-learn's
    ``StandardScaler``; NaN stays NaN. A constant feature (variance within rounding of
    zero, scikit-learn's test) or a feature with no observed value gets scale 1 (mean 0
    for the latter) and a :class:`~pipeline.exceptions.ConstantFeatureWarning`.
pca
    Projection on the first ``n_components`` principal axes of the training data.
    NaN rule: a missing entry is replaced by its feature's mean (0 after centring)
    before fitting and before projecting, so the PCA output has no NaN. The axes come
    from a randomised SVD (Halko et al. 2011, subspace iteration on ``Zc^T Zc``): each
    product with ``Zc^T Zc`` is one Dask pass over the row chunks; when
    ``n_components + n_oversamples >= n_features`` the SVD is exact. Signs follow
    scikit-learn (largest-magnitude loading of each axis positive).
"""

from __future__ import annotations

import abc
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import dask
import dask.array as da
import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from gmm_stream.atomic import atomic_output
from pipeline.exceptions import (
    ConstantFeatureWarning,
    OutputExistsError,
    PreprocessingError,
    PreprocessingFormatError,
    PreprocessingNotFoundError,
)

__all__ = ["Step", "Log1p", "Standardize", "PCA", "Preprocessor", "make_step", "STEPS", "STEP_ORDER"]

logger = logging.getLogger(__name__)

FORMAT = "gmm-stream-preprocessing"
FORMAT_VERSION = 1
JSON_NAME = "preprocessing.json"
NPZ_NAME = "preprocessing.npz"

Data = TypeVar("Data", xr.DataArray, da.Array, np.ndarray)


# -- out-of-core reductions ------------------------------------------------------------


def _compute(tasks: list[Any]) -> tuple[Any, ...]:
    """``dask.compute`` with one BLAS thread per task (Dask threads x BLAS threads <= cores)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return dask.compute(*tasks)


def _block_moments(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NaN-aware (count, mean, sum of squared deviations) of each column of one block."""
    x = np.asarray(block, dtype=np.float64)
    missing = np.isnan(x)
    any_missing = bool(missing.any())
    count = (x.shape[0] - missing.sum(axis=0)).astype(np.float64)
    total = np.where(missing, 0.0, x).sum(axis=0) if any_missing else x.sum(axis=0)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    dev = x - mean  # the one block-sized temporary
    if any_missing:
        dev[missing] = 0.0
    return count, mean, np.einsum("ij,ij->j", dev, dev)


def _merge_moments(
    a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan et al.'s pairwise merge of two (count, mean, M2) summaries."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    delta = mb - ma
    frac = np.divide(nb, n, out=np.zeros_like(n), where=n > 0)
    return n, ma + delta * frac, sa + sb + delta**2 * na * frac


def column_moments(X: da.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature NaN-aware count, mean and population variance, in one pass.

    Parameters
    ----------
    X : dask array of shape (n_samples, n_features)

    Returns
    -------
    count, mean, var : ndarray of shape (n_features,)
        ``mean`` and ``var`` are NaN where ``count == 0``.
    """
    parts = _compute([dask.delayed(_block_moments)(b) for b in X.to_delayed().ravel()])
    count, mean, m2 = parts[0]
    for part in parts[1:]:
        count, mean, m2 = _merge_moments((count, mean, m2), part)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = m2 / count
    mean = np.where(count > 0, mean, np.nan)
    return count, mean, var


def _block_gram_times(block: np.ndarray, mean: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """``Zc^T Zc @ basis`` for one block (``Zc^T Zc`` when ``basis`` is None); NaN -> mean."""
    z = np.asarray(block, dtype=np.float64) - mean
    np.nan_to_num(z, copy=False, nan=0.0)
    if basis is None:
        return z.T @ z
    return z.T @ (z @ basis)


def gram_times(X: da.Array, mean: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """One pass: ``Zc^T Zc @ basis`` with ``Zc = X - mean`` and NaN set to 0.

    Returns an array of shape (n_features, n_features) when ``basis`` is None, else
    (n_features, basis.shape[1]).
    """
    blocks = X.to_delayed().ravel()
    parts = _compute([dask.delayed(_block_gram_times)(b, mean, basis) for b in blocks])
    return np.sum(parts, axis=0)


# -- steps -----------------------------------------------------------------------------


class Step(abc.ABC):
    """One preprocessing step: ``fit`` on a Dask array out of core, ``transform`` lazily.

    A step's constructor arguments (``get_params``) and its fitted arrays
    (``get_arrays``) are everything needed to rebuild it; both are saved by
    :meth:`Preprocessor.save`.
    """

    name: ClassVar[str]
    _fitted_arrays: ClassVar[tuple[str, ...]] = ()

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able)."""
        return {}

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Fitted arrays, by name."""
        self._check_fitted()
        return {k: np.asarray(getattr(self, k + "_")) for k in self._fitted_arrays}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore fitted arrays saved by :meth:`get_arrays`."""
        missing = [k for k in self._fitted_arrays if k not in arrays]
        if missing:
            raise PreprocessingFormatError(f"step {self.name!r}: saved arrays {missing} are missing")
        for key in self._fitted_arrays:
            setattr(self, key + "_", np.asarray(arrays[key]))

    @property
    def is_fitted(self) -> bool:
        return all(hasattr(self, k + "_") for k in self._fitted_arrays)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise PreprocessingError(f"step {self.name!r} is not fitted; call Preprocessor.fit first")

    @abc.abstractmethod
    def fit(self, X: da.Array) -> Step:
        """Fit on ``X`` of shape (n_samples, n_features), one chunk of features; return self."""

    @abc.abstractmethod
    def transform(self, X: da.Array) -> da.Array:
        """Lazy transform of ``X`` of shape (n_samples, n_features)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _log1p_block(block: np.ndarray) -> np.ndarray:
    low = np.nanmin(block) if block.size and not np.all(np.isnan(block)) else 0.0
    if low <= -1:
        raise PreprocessingError(
            f"log1p needs values > -1, got a minimum of {low} in a chunk; drop the log1p step "
            "or shift the data"
        )
    return np.log1p(block)


class Log1p(Step):
    """``log(1 + x)``, element-wise; nothing to fit."""

    name = "log1p"

    def fit(self, X: da.Array) -> Log1p:
        return self

    def transform(self, X: da.Array) -> da.Array:
        return X.map_blocks(_log1p_block, dtype=X.dtype)


def _standardize_block(block: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    out = np.subtract(block, mean, dtype=block.dtype)
    out /= scale
    return out


def _constant_mask(count: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """scikit-learn's test for a feature whose variance is zero up to rounding."""
    eps = np.finfo(np.float64).eps
    with np.errstate(invalid="ignore"):
        bound = count * eps * var + (count * mean * eps) ** 2
        return ~(var > bound)


class Standardize(Step):
    """Per-feature ``(x - mean_) / scale_`` with NaN-aware statistics (``ddof=0``).

    Fitted attributes
    -----------------
    mean_ : ndarray of shape (n_features,)
    scale_ : ndarray of shape (n_features,)
        Standard deviation; 1 for constant features and features with no observed value.
    var_ : ndarray of shape (n_features,)
    n_samples_seen_ : ndarray of shape (n_features,)
        Number of observed (non-NaN) values of each feature.
    """

    name = "standardize"
    _fitted_arrays = ("mean", "scale", "var", "n_samples_seen")

    def fit(self, X: da.Array) -> Standardize:
        count, mean, var = column_moments(X)
        if np.any(np.isinf(mean) | np.isinf(var)):
            bad = np.flatnonzero(np.isinf(mean) | np.isinf(var))[:10].tolist()
            raise PreprocessingError(f"features {bad} hold infinite values; remove or clip them before fitting")
        empty = count == 0
        constant = _constant_mask(count, mean, var) & ~empty
        _warn_constant(constant, empty)
        self.mean_ = np.where(empty, 0.0, mean)
        self.var_ = np.where(empty, 0.0, var)
        self.scale_ = np.where(constant | empty, 1.0, np.sqrt(self.var_))
        self.n_samples_seen_ = count.astype(np.int64)
        return self

    def transform(self, X: da.Array) -> da.Array:
        self._check_fitted()
        mean, scale = self.mean_.astype(X.dtype), self.scale_.astype(X.dtype)
        return X.map_blocks(_standardize_block, mean, scale, dtype=X.dtype)


def _warn_constant(constant: np.ndarray, empty: np.ndarray) -> None:
    for mask, what in ((constant, "are constant"), (empty, "have no observed value")):
        if mask.any():
            idx = np.flatnonzero(mask)
            shown = idx[:10].tolist()
            more = f" and {idx.size - 10} more" if idx.size > 10 else ""
            warnings.warn(
                f"features {shown}{more} {what}; they are left unscaled (scale 1). "
                "Consider dropping them.",
                ConstantFeatureWarning,
                stacklevel=3,
            )


def _project_block(block: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    z = np.asarray(block, dtype=np.float64) - mean
    np.nan_to_num(z, copy=False, nan=0.0)
    return (z @ components.T).astype(block.dtype, copy=False)


def _orthonormal(Y: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(Y)
    return q


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude loading of each row positive (scikit-learn's svd_flip)."""
    rows = np.arange(components.shape[0])
    signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


class PCA(Step):
    """Projection on the first principal axes, fitted by randomised SVD over Dask chunks.

    Parameters
    ----------
    n_components : int
        Number of axes kept, ``1 <= n_components <= n_features``.
    n_oversamples : int, default 10
        Extra random directions of the sketch.
    n_power_iter : int, default 4
        Subspace iterations; each costs one pass over the data.
    random_state : int, default 0
        Seed of the random sketch.

    Fitted attributes
    -----------------
    mean_ : ndarray of shape (n_features,)
        NaN-aware feature means (the value a missing entry takes).
    components_ : ndarray of shape (n_components, n_features)
    explained_variance_ : ndarray of shape (n_components,)
        Eigenvalues of the covariance (``ddof=1``), as scikit-learn's ``PCA``.
    singular_values_ : ndarray of shape (n_components,)
    """

    name = "pca"
    _fitted_arrays = ("mean", "components", "explained_variance", "singular_values")

    def __init__(self, n_components: int, *, n_oversamples: int = 10, n_power_iter: int = 4,
                 random_state: int = 0) -> None:
        if int(n_components) < 1:
            raise PreprocessingError(f"pca n_components must be >= 1, got {n_components!r}")
        if int(n_oversamples) < 0 or int(n_power_iter) < 0:
            raise PreprocessingError(
                f"pca n_oversamples and n_power_iter must be >= 0, got {n_oversamples!r}, {n_power_iter!r}"
            )
        self.n_components = int(n_components)
        self.n_oversamples = int(n_oversamples)
        self.n_power_iter = int(n_power_iter)
        self.random_state = int(random_state)

    def get_params(self) -> dict[str, Any]:
        return {"n_components": self.n_components, "n_oversamples": self.n_oversamples,
                "n_power_iter": self.n_power_iter, "random_state": self.random_state}

    def fit(self, X: da.Array) -> PCA:
        n_samples, n_features = X.shape
        if self.n_components > min(n_samples, n_features):
            raise PreprocessingError(
                f"pca n_components={self.n_components} exceeds min(n_samples, n_features) = "
                f"{min(n_samples, n_features)}; choose fewer components"
            )
        count, mean, _ = column_moments(X)
        self.mean_ = np.where(count > 0, mean, 0.0)
        basis, gram_basis = self._range(X)
        evals, vecs = np.linalg.eigh(basis.T @ gram_basis)  # small (c, c) problem
        order = np.argsort(evals)[::-1][: self.n_components]
        evals = np.clip(evals[order], 0.0, None)
        self.components_ = _flip_signs((basis @ vecs[:, order]).T)
        self.explained_variance_ = evals / max(n_samples - 1, 1)
        self.singular_values_ = np.sqrt(evals)
        return self

    def _range(self, X: da.Array) -> tuple[np.ndarray, np.ndarray]:
        """An orthonormal basis Q (d, c) of the dominant subspace and ``Zc^T Zc @ Q``."""
        n_features = X.shape[1]
        width = self.n_components + self.n_oversamples
        if width >= n_features:
            return np.eye(n_features), gram_times(X, self.mean_, None)
        rng = np.random.default_rng(self.random_state)
        product = gram_times(X, self.mean_, rng.standard_normal((n_features, width)))
        for _ in range(self.n_power_iter):
            product = gram_times(X, self.mean_, _orthonormal(product))
        basis = _orthonormal(product)
        return basis, gram_times(X, self.mean_, basis)

    def transform(self, X: da.Array) -> da.Array:
        self._check_fitted()
        out_chunks = (X.chunks[0], (self.n_components,))
        return X.map_blocks(_project_block, self.mean_, self.components_, dtype=X.dtype, chunks=out_chunks)


#: Registry of steps, and the one order in which they run.
STEPS: dict[str, type[Step]] = {"log1p": Log1p, "standardize": Standardize, "pca": PCA}
STEP_ORDER: tuple[str, ...] = ("log1p", "standardize", "pca")


def make_step(spec: Step | str | Mapping[str, Any]) -> Step:
    """A step from a name (``"log1p"``) or a mapping (``{"name": "pca", "n_components": 10}``)."""
    if isinstance(spec, Step):
        return spec
    if isinstance(spec, str):
        name, params = spec, {}
    else:
        params = dict(spec)
        name = params.pop("name", None)
    if name not in STEPS:
        raise PreprocessingError(f"unknown preprocessing step {name!r}; use one of {list(STEP_ORDER)}")
    try:
        return STEPS[name](**params)
    except TypeError as err:
        raise PreprocessingError(f"bad arguments {params} for step {name!r}: {err}") from err


# -- the pipeline of steps -------------------------------------------------------------


def _as_dask(X: xr.DataArray | da.Array | np.ndarray) -> da.Array:
    data = X.data if isinstance(X, xr.DataArray) else X
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(-1, -1))
    if data.ndim != 2:
        raise PreprocessingError(f"preprocessing needs 2-D (samples, features) data, got shape {data.shape}")
    if data.dtype.kind not in "f":
        data = data.astype(np.float64)
    return data.rechunk({1: -1}) if len(data.chunks[1]) > 1 else data


def _feature_names(X: Any) -> list[str] | None:
    if isinstance(X, xr.DataArray) and X.dims[1] in X.coords:
        return [str(v) for v in np.asarray(X[X.dims[1]].values).tolist()]
    return None


class Preprocessor:
    """An ordered list of preprocessing steps, fitted out of core and saved beside the model.

    Parameters
    ----------
    steps : sequence of Step, str or mapping
        E.g. ``["log1p", "standardize", {"name": "pca", "n_components": 30}]``. Each
        name at most once, in the order ``log1p, standardize, pca``.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen by :meth:`fit`.
    feature_names_in_ : list of str or None
        Feature names seen by :meth:`fit` (from a DataArray's feature coordinate).

    Examples
    --------
    >>> pre = Preprocessor(["standardize", {"name": "pca", "n_components": 10}])  # doctest: +SKIP
    >>> Z = pre.fit(X).transform(X)                  # lazy                      # doctest: +SKIP
    >>> pre.save("model-dir"); Preprocessor.load("model-dir").transform(X_new)  # doctest: +SKIP
    """

    def __init__(self, steps: Sequence[Step | str | Mapping[str, Any]] = ()) -> None:
        self.steps: list[Step] = [make_step(s) for s in steps]
        names = [s.name for s in self.steps]
        ranks = [STEP_ORDER.index(n) for n in names]
        if ranks != sorted(set(ranks)):
            raise PreprocessingError(
                f"preprocessing steps {names} must each appear once, in the order {list(STEP_ORDER)}"
            )

    def __repr__(self) -> str:
        return f"Preprocessor({self.steps!r})"

    def get_config(self) -> list[dict[str, Any]]:
        """The step specs, as :class:`Preprocessor` accepts them (JSON-able)."""
        return [{"name": s.name, **s.get_params()} for s in self.steps]

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "n_features_in_") and all(s.is_fitted for s in self.steps)

    def fit(self, X: xr.DataArray | da.Array | np.ndarray) -> Preprocessor:
        """Fit every step in order, each on the output of the previous ones.

        Parameters
        ----------
        X : DataArray, dask array or ndarray of shape (n_samples, n_features)
            Read once per pass: standardize takes one pass, pca ``n_power_iter + 3``
            (``2`` when exact).

        Returns
        -------
        self
        """
        data = _as_dask(X)
        self.n_features_in_ = int(data.shape[1])
        self.feature_names_in_ = _feature_names(X)
        for step in self.steps:
            logger.info("fitting preprocessing step %r on %s rows", step, data.shape[0])
            step.fit(data)
            data = step.transform(data)
        return self

    def transform(self, X: Data) -> Data:
        """Apply the fitted steps lazily.

        Parameters
        ----------
        X : DataArray, dask array or ndarray of shape (n_samples, n_features)

        Returns
        -------
        Same type as ``X`` (NumPy in, NumPy out), of shape (n_samples, n_features_out).
        A DataArray keeps its sample coordinates; after ``pca`` its features are
        named ``PC1 ... PCk``.
        """
        if not self.is_fitted:
            raise PreprocessingError("this Preprocessor is not fitted; call fit first or load a saved one")
        data = _as_dask(X)
        self._check_features(data, X)
        for step in self.steps:
            data = step.transform(data)
        if isinstance(X, np.ndarray):
            return data.compute()
        if isinstance(X, xr.DataArray):
            return self._wrap(X, data)
        return data

    def fit_transform(self, X: Data) -> Data:
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    def _check_features(self, data: da.Array, X: Any) -> None:
        if data.shape[1] != self.n_features_in_:
            raise PreprocessingError(
                f"data have {data.shape[1]} features, the preprocessing was fitted on {self.n_features_in_}"
            )
        names = _feature_names(X)
        if names is not None and self.feature_names_in_ is not None and names != self.feature_names_in_:
            diff = [(a, b) for a, b in zip(names, self.feature_names_in_, strict=True) if a != b][:5]
            raise PreprocessingError(
                f"feature names differ from those seen in fit (first differences, got vs fitted: {diff}); "
                "select the same features in the same order"
            )

    def _wrap(self, X: xr.DataArray, data: da.Array) -> xr.DataArray:
        row_dim, col_dim = X.dims
        kept = X.drop_vars([k for k, v in X.coords.items() if col_dim in v.dims]).coords  # keeps lazy ids lazy
        out = xr.DataArray(data, dims=(row_dim, col_dim), coords=kept, name=X.name, attrs=dict(X.attrs))
        if self.steps and self.steps[-1].name == "pca":
            return out.assign_coords({col_dim: [f"PC{i + 1}" for i in range(data.shape[1])]})
        if col_dim in X.coords:
            return out.assign_coords({col_dim: X[col_dim].values})
        return out

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``preprocessing.json`` and ``preprocessing.npz`` into the directory ``path``.

        The directory may be the model's own (the names do not clash): save the model
        first (``GaussianMixture.save`` creates the directory and refuses an existing
        one), then the preprocessing. Each file is written to a temporary sibling and
        renamed into place.

        Raises
        ------
        OutputExistsError
            If a saved preprocessing is already there and ``overwrite`` is False.
        """
        if not self.is_fitted:
            raise PreprocessingError("cannot save a Preprocessor that is not fitted; call fit first")
        directory = Path(path)
        target_json = directory / JSON_NAME
        if target_json.exists() and not overwrite:
            raise OutputExistsError(f"{target_json} exists; pass overwrite=True to replace it")
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"{i}.{s.name}.{k}": v for i, s in enumerate(self.steps) for k, v in s.get_arrays().items()}
        _replace_file(directory / NPZ_NAME, lambda fh: np.savez(fh, **arrays))
        _replace_file(target_json, lambda fh: fh.write(json.dumps(self._header(), indent=2).encode()))
        logger.info("saved preprocessing %r to %s", self, directory)
        return directory

    def _header(self) -> dict[str, Any]:
        from pipeline.provenance import gmm_stream_version

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gmm_stream_version": gmm_stream_version(),
            "n_features_in": self.n_features_in_,
            "feature_names_in": self.feature_names_in_,
            "steps": self.get_config(),
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Preprocessor:
        """Read a preprocessing saved by :meth:`save` (no pickle involved)."""
        directory = Path(path)
        header = _read_header(directory)
        pre = cls(header["steps"])
        try:
            with np.load(directory / NPZ_NAME, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as err:
            raise PreprocessingFormatError(f"{directory / NPZ_NAME} cannot be read: {err}") from err
        for i, step in enumerate(pre.steps):
            prefix = f"{i}.{step.name}."
            step.set_arrays({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        pre.n_features_in_ = int(header["n_features_in"])
        pre.feature_names_in_ = header.get("feature_names_in")
        return pre


def _replace_file(target: Path, write: Any) -> None:
    with atomic_output(target, overwrite=True) as tmp, open(tmp, "wb") as fh:
        write(fh)


def _read_header(directory: Path) -> dict[str, Any]:
    target = directory / JSON_NAME
    if not target.exists():
        raise PreprocessingNotFoundError(
            f"no saved preprocessing at {directory} ({JSON_NAME} missing); save one with Preprocessor.save"
        )
    try:
        header = json.loads(target.read_text())
    except json.JSONDecodeError as err:
        raise PreprocessingFormatError(f"{target} is not valid JSON: {err}") from err
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise PreprocessingFormatError(
            f"{target} has format {header.get('format')!r} version {header.get('format_version')!r}; "
            f"expected {FORMAT!r} version {FORMAT_VERSION}"
        )
    return header
