"""Labels of a published run read back, and their overlap with a new model's, chunk by chunk."""

from __future__ import annotations

import os
from typing import Any, cast

import dask
import numpy as np
import pandas as pd

from gmm_stream.matching import contingency
from pipeline.results import Results

__all__ = ["read_labels", "label_overlap"]


def read_labels(path: str | os.PathLike[str], kind: str, id_column: str = "sample_id") -> pd.Series | None:
    """The labels a Parquet or Zarr sink wrote, indexed by sample id (as strings); None for
    another kind of output or a missing path."""
    if not os.path.exists(path):
        return None
    if kind == "parquet":
        frame = pd.read_parquet(path, columns=[id_column, "label"])
        return pd.Series(frame["label"].to_numpy(), index=frame[id_column].astype(str).to_numpy())
    if kind == "zarr":
        import zarr

        group = zarr.open_group(str(path), mode="r")
        name = "label" if "label" in group else "labels"  # outputs of earlier versions
        labels, ids = cast(zarr.Array, group[name]), cast(zarr.Array, group["sample"])
        return pd.Series(np.asarray(labels[:]), index=np.asarray(ids[:]).astype(str))
    return None


def _block_overlap(ids: np.ndarray, labels: np.ndarray, index: pd.Index, reference: np.ndarray,
                   k_new: int, k_ref: int) -> np.ndarray:
    where = index.get_indexer(np.asarray(ids).astype(str))
    found = (where >= 0) & (np.asarray(labels) >= 0)
    return contingency(np.asarray(labels)[found], reference[where[found]], k_new, k_ref)


def label_overlap(results: Results, reference: pd.Series) -> np.ndarray | None:
    """Contingency table (K_new, K_ref) of the results' labels against ``reference`` on the
    sample ids they share, computed chunk by chunk (one pass; only the table comes back);
    None when the results have no sample ids or share none with the reference."""
    if results.sample_ids is None or reference.empty:
        return None
    index = pd.Index(reference.index)
    ref = reference.to_numpy()
    k_ref = max(int(ref.max()) + 1, 1)
    block = dask.delayed(_block_overlap, pure=True)
    pieces: list[Any] = [block(i, lab, index, ref, results.n_components, k_ref) for i, lab in zip(
        results.sample_ids.to_delayed().ravel(), results.labels.to_delayed().ravel(), strict=True)]
    (tables,) = dask.compute(pieces)
    total = np.sum(tables, axis=0)
    return total if total.sum() > 0 else None
