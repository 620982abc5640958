"""Synthetic data for the demo job: generated on first run, nothing to download.

:func:`ensure_synthetic` writes a seeded Gaussian-mixture sample where a job's
``source.path`` does not exist yet, in the job's source format, in the layout the
pipeline's sources read:

- Zarr: a group with ``X`` (sample, feature) float64, and sibling 1-D arrays ``sample``
  (ids ``s000000`` ...), ``feature`` (names ``x0`` ...) and ``component`` (the true cluster);
- Parquet: one file with a string ``sample_id`` column, float columns ``x0 ...`` and a
  string ``true_component`` column (not numeric, so not read as a feature).

A job whose preprocessing starts with ``log1p`` gets non-negative data whose ``log1p`` is
the mixture (:func:`as_counts_like`).

The output is written to a hidden temporary sibling and renamed into place, so two jobs
generating the same data at once cannot leave a half-written store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.config import Job, SyntheticConfig
from flows.exceptions import JobNotFoundError

__all__ = ["SyntheticData", "make_synthetic", "as_counts_like", "ensure_synthetic", "write_zarr", "write_parquet",
           "demo_job_path"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticData:
    """A sample of a Gaussian mixture.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
        float64; NaN where ``missing_fraction`` removed an entry (never a whole row).
    component : ndarray of shape (n_samples,)
        The cluster each row was drawn from.
    ids : ndarray of shape (n_samples,)
        Row ids ``s000000 ...``.
    names : ndarray of shape (n_features,)
        Feature names ``x0 ...``.
    """

    X: np.ndarray
    component: np.ndarray
    ids: np.ndarray
    names: np.ndarray


def make_synthetic(cfg: SyntheticConfig) -> SyntheticData:
    """Draw ``cfg.n_samples`` rows from a random mixture of ``cfg.n_components`` Gaussians.

    Centres are spread on a grid of spacing ``cfg.separation`` (in units of the cluster
    standard deviation, about 1), shuffled and jittered; each cluster has a random
    covariance with eigenvalues in [0.3, 1.5]; weights are Dirichlet(8) draws.
    """
    rng = np.random.default_rng(cfg.seed)
    k, d, n = cfg.n_components, cfg.n_features, cfg.n_samples
    side = int(np.ceil(k ** (1.0 / d))) if d > 1 else k
    grid = np.stack(np.meshgrid(*[np.arange(side)] * d, indexing="ij"), axis=-1).reshape(-1, d)
    centres = grid[rng.permutation(len(grid))[:k]] * cfg.separation + rng.normal(0, 0.3, (k, d))
    weights = rng.dirichlet(np.full(k, 8.0))
    component = rng.choice(k, size=n, p=weights)
    X = np.empty((n, d))
    for j in range(k):
        rows = np.flatnonzero(component == j)
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        scale = q * np.sqrt(rng.uniform(0.3, 1.5, d))
        X[rows] = centres[j] + rng.standard_normal((rows.size, d)) @ scale.T
    if cfg.missing_fraction > 0:
        mask = rng.random((n, d)) < cfg.missing_fraction
        full = mask.all(axis=1)
        mask[full, rng.integers(0, d, full.sum())] = False  # keep one observed value per row
        X[mask] = np.nan
    ids = np.asarray([f"s{i:06d}" for i in range(n)])
    names = np.asarray([f"x{j}" for j in range(d)])
    return SyntheticData(X, component, ids, names)


def as_counts_like(data: SyntheticData) -> SyntheticData:
    """The sample as non-negative, right-skewed values whose ``log1p`` is the Gaussian mixture.

    Jobs that preprocess with ``log1p`` (which refuses values <= -1) get these: each
    feature is shifted to start at 0, then ``expm1`` is applied, so ``log1p`` recovers
    the shifted blobs exactly.
    """
    shifted = data.X - np.nanmin(data.X, axis=0)
    return SyntheticData(np.expm1(shifted), data.component, data.ids, data.names)


def write_zarr(path: Path, data: SyntheticData, chunk_rows: int = 10_000) -> None:
    """Write ``data`` as a Zarr v3 group at ``path`` (which must not exist)."""
    import zarr

    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    rows = max(1, min(chunk_rows, data.X.shape[0]))
    x = group.create_array("X", shape=data.X.shape, chunks=(rows, data.X.shape[1]), dtype="float64",
                           dimension_names=["sample", "feature"])
    x[...] = data.X
    ids = group.create_array("sample", shape=data.ids.shape, chunks=(rows,), dtype=str, dimension_names=["sample"])
    ids[...] = data.ids.astype(object)
    names = group.create_array("feature", shape=data.names.shape, dtype=str, dimension_names=["feature"])
    names[...] = data.names.astype(object)
    comp = group.create_array("component", shape=data.component.shape, chunks=(rows,), dtype="int64",
                              dimension_names=["sample"])
    comp[...] = data.component


def write_parquet(path: Path, data: SyntheticData, row_group_rows: int = 10_000) -> None:
    """Write ``data`` as one Parquet file at ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"sample_id": pa.array(data.ids.tolist(), type=pa.string())}
    for j, name in enumerate(data.names):
        columns[str(name)] = pa.array(data.X[:, j], type=pa.float64(), from_pandas=True)
    columns["true_component"] = pa.array([str(c) for c in data.component], type=pa.string())
    pq.write_table(pa.table(columns), path, row_group_size=row_group_rows, use_dictionary=["sample_id"])


def ensure_synthetic(job: Job) -> bool:
    """Write the job's synthetic data at ``source.path`` if it is configured and missing.

    Returns
    -------
    bool
        True when data were generated, False when the path existed (or no synthetic data
        is configured).
    """
    from pipeline.atomic import atomic_output
    from pipeline.exceptions import OutputExistsError

    cfg = getattr(job.source, "synthetic", None)
    path = Path(job.source.path)
    if cfg is None or path.exists():
        return False
    logger.info("generating synthetic data (%d x %d, %d clusters) at %s",
                cfg.n_samples, cfg.n_features, cfg.n_components, path)
    data = make_synthetic(cfg)
    if any(step.name == "log1p" for step in job.preprocessing):
        data = as_counts_like(data)
    write = write_zarr if job.source.format == "zarr" else write_parquet
    try:
        with atomic_output(path, overwrite=False) as tmp:
            write(tmp, data)
    except OutputExistsError:  # another run generated it meanwhile (same seed, same data)
        return False
    return True


def demo_job_path() -> Path:
    """``configs/demo.yaml`` of the source tree (the package is installed editable)."""
    path = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
    if not path.exists():
        raise JobNotFoundError(
            f"the demo job {path} is not there; run `gmm-stream demo` from a source checkout "
            "installed with `pip install -e .` (or `make demo`)"
        )
    return path
