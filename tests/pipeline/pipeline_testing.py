"""Test data and source cases for the pipeline tests: real files written by zarr, pyarrow, anndata.

Each :class:`SourceCase` writes a matrix (with NaN, sample ids and feature names) in its
format with that library's own writer and returns the :class:`pipeline.sources.Source`
that should read it back. The round-trip tests and the fit tests share these cases.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import xarray as xr
import zarr

from pipeline.sources import AnnDataSource, ParquetSource, Source, ZarrSource

N_ROWS = 480
N_FEATURES = 4
STORED_ROWS = 32  # row chunk / row group length written to disk where the format allows it


@dataclass(frozen=True)
class Matrix:
    """A test matrix with its sample ids and feature names."""

    X: np.ndarray  # (n, d) float64 with NaN
    ids: np.ndarray  # (n,) str
    names: np.ndarray  # (d,) str


def make_matrix(seed: int = 0, n: int = N_ROWS, d: int = N_FEATURES, nan_fraction: float = 0.02,
                zeros: bool = False) -> Matrix:
    """Two well-separated clusters in ``d`` dimensions, a few NaN (never a whole row)."""
    rng = np.random.default_rng(seed)
    centres = np.array([np.full(d, -2.0), np.full(d, 2.0)])
    X = centres[rng.integers(0, 2, n)] + rng.standard_normal((n, d))
    if zeros:
        X[np.abs(X) < 1.5] = 0.0
    mask = rng.random((n, d)) < nan_fraction
    mask[:, 0] &= ~mask[:, 1:].all(axis=1)  # keep at least one observed value per row
    X[mask] = np.nan
    ids = np.asarray([f"cell{i:04d}" for i in range(n)])
    names = np.asarray([f"gene{j}" for j in range(d)])
    return Matrix(X, ids, names)


class SourceCase:
    """One way of storing a matrix; ``write`` stores it and returns the Source to read it."""

    name = ""
    has_ids = True
    has_names = True
    zeros = False  # the case needs many exact zeros (sparse storage)
    #: rows per chunk for chunk_bytes = 2 * STORED_ROWS rows: byte sizes are rounded to the stored chunk
    byte_chunk_rows = 2 * STORED_ROWS

    def write(self, directory: Path, m: Matrix, **source_options: object) -> Source:
        raise NotImplementedError

    def expected(self, m: Matrix) -> np.ndarray:
        return m.X

    def __repr__(self) -> str:
        return self.name


# ------------------------------------------------------------------------------- Zarr


class ZarrArrayCase(SourceCase):
    """A plain 2-D array; ids and names are sibling arrays named by its dimension names."""

    zarr_format = 3

    def __init__(self, zarr_format: int = 3, url: bool = False) -> None:
        self.zarr_format = zarr_format
        self.url = url
        self.name = f"zarr-v{zarr_format}{'-url' if url else ''}"

    def write(self, directory: Path, m: Matrix, **options: object) -> Source:
        path = directory / "data.zarr"
        group = zarr.open_group(str(path), mode="w", zarr_format=self.zarr_format)
        dims = {"dimension_names": ["cell", "gene"]} if self.zarr_format == 3 else {}
        X = group.create_array("X", shape=m.X.shape, dtype="f8", chunks=(STORED_ROWS, m.X.shape[1]), **dims)
        X[...] = m.X
        cell = group.create_array("cell", shape=m.ids.shape, dtype=str, chunks=(STORED_ROWS,))
        cell[...] = m.ids
        gene = group.create_array("gene", shape=m.names.shape, dtype=str, chunks=m.names.shape)
        gene[...] = m.names
        if self.zarr_format == 2:
            X.attrs["_ARRAY_DIMENSIONS"] = ["cell", "gene"]
        where = f"file://{path}" if self.url else path
        return ZarrSource(where, "X", **options)


class ZarrGroupCase(SourceCase):
    """An array inside a nested group, ids and names named explicitly."""

    name = "zarr-group"

    def write(self, directory: Path, m: Matrix, **options: object) -> Source:
        path = directory / "nested.zarr"
        root = zarr.open_group(str(path), mode="w")
        group = root.require_group("experiments/run1")
        group.create_array("values", data=m.X, chunks=(STORED_ROWS, m.X.shape[1]))
        ids = group.create_array("ids", shape=m.ids.shape, dtype=str, chunks=(STORED_ROWS,))
        ids[...] = m.ids
        names = group.create_array("names", shape=m.names.shape, dtype=str)
        names[...] = m.names
        return ZarrSource(path, "values", group="experiments/run1", sample_ids="ids", feature_names="names",
                          **options)


class XarrayZarrCase(SourceCase):
    """A variable of an xarray Dataset written with ``Dataset.to_zarr``."""

    name = "xarray-zarr"

    def write(self, directory: Path, m: Matrix, **options: object) -> Source:
        path = directory / "dataset.zarr"
        ds = xr.Dataset(
            {"expression": (("cell", "gene"), m.X), "other": ("cell", np.arange(len(m.ids)))},
            coords={"cell": m.ids.astype(object), "gene": m.names.astype(object)},
        )
        encoding = {"expression": {"chunks": (STORED_ROWS, m.X.shape[1])}}
        ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
        return ZarrSource(path, variable="expression", **options)


# ---------------------------------------------------------------------------- Parquet


def _table(m: Matrix, rows: slice) -> pa.Table:
    """Features as nullable float columns (NaN written as Parquet nulls), plus id and a text column."""
    columns = {"cell_id": pa.array(m.ids[rows])}
    for j, name in enumerate(m.names):
        values = m.X[rows, j]
        columns[str(name)] = pa.array(values, mask=np.isnan(values), type=pa.float64())
    columns["note"] = pa.array(["x"] * len(m.ids[rows]))
    return pa.table(columns)


class ParquetFileCase(SourceCase):
    """One file with several row groups; default columns (all numeric ones)."""

    name = "parquet-file"

    def write(self, directory: Path, m: Matrix, **options: object) -> Source:
        path = directory / "data.parquet"
        pq.write_table(_table(m, slice(None)), path, row_group_size=STORED_ROWS, use_dictionary=False)
        return ParquetSource(path, id_column="cell_id", **options)


class ParquetDirectoryCase(SourceCase):
    """Three files of unequal lengths in a directory (plus a hidden file to ignore)."""

    name = "parquet-dir"
    bounds = (0, 150, 350)

    def write(self, directory: Path, m: Matrix, **options: object) -> Source:
        path = directory / "dataset"
        path.mkdir(exist_ok=True)
        edges = list(self.bounds) + [len(m.ids)]
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            pq.write_table(_table(m, slice(a, b)), path / f"part-{i}.parquet", row_group_size=45,
                           use_dictionary=False)
        (path / "_SUCCESS").write_text("")
        return ParquetSource(path, columns=[str(n) for n in m.names], id_column="cell_id", **options)


class ParquetGlobCase(ParquetDirectoryCase):
    """The same files chosen by a glob, with a column subset in another order."""

    name = "parquet-glob"
    subset = (2, 0)

    def write(self, directory: Path, m: Matrix, **options: object) -> Source:
        source = super().write(directory, m)
        columns = [str(m.names[j]) for j in self.subset]
        return ParquetSource(f"{source.path}/part-*.parquet", columns=columns, id_column="cell_id", **options)

    def expected(self, m: Matrix) -> np.ndarray:
        return m.X[:, list(self.subset)]


# ---------------------------------------------------------------------------- AnnData


def _anndata(m: Matrix, X: object) -> ad.AnnData:
    return ad.AnnData(X=X, obs=pd.DataFrame(index=m.ids.tolist()), var=pd.DataFrame(index=m.names.tolist()))


class AnnDataCase(SourceCase):
    """``X`` (or a layer / ``obsm``) of an ``.h5ad`` file or an AnnData Zarr store."""

    def __init__(self, store: str = "h5ad", where: str = "X", zarr_format: int = 3, sparse: bool = False) -> None:
        self.store, self.where, self.zarr_format, self.sparse = store, where, zarr_format, sparse
        self.has_names = where != "obsm"
        self.zeros = sparse
        if store == "zarr" and where == "obsm":  # anndata stores this small obsm as one chunk
            self.byte_chunk_rows = N_ROWS
        fmt = f"-v{zarr_format}" if store == "zarr" else ""
        self.name = f"anndata-{store}{fmt}-{where}{'-sparse' if sparse else ''}"

    def _adata(self, m: Matrix) -> ad.AnnData:
        matrix = sp.csr_matrix(m.X) if self.sparse else m.X
        if self.where == "X":
            return _anndata(m, matrix)
        filler = np.zeros_like(m.X)
        adata = _anndata(m, filler)
        if self.where == "layer":
            adata.layers["counts"] = matrix
        else:
            adata.obsm["X_pca"] = matrix
        return adata

    def write(self, directory: Path, m: Matrix, **options: object) -> Source:
        adata = self._adata(m)
        if self.store == "h5ad":
            path = directory / "data.h5ad"
            adata.write_h5ad(path)
        else:
            path = directory / "data.zarr"
            with warnings.catch_warnings(), ad.settings.override(zarr_write_format=self.zarr_format):
                warnings.simplefilter("ignore")
                adata.write_zarr(path, chunks=(STORED_ROWS, m.X.shape[1]))
        selection = {"X": {}, "layer": {"layer": "counts"}, "obsm": {"obsm": "X_pca"}}[self.where]
        return AnnDataSource(path, **selection, **options)


ALL_CASES: list[SourceCase] = [
    ZarrArrayCase(3),
    ZarrArrayCase(2),
    ZarrArrayCase(3, url=True),
    ZarrGroupCase(),
    XarrayZarrCase(),
    ParquetFileCase(),
    ParquetDirectoryCase(),
    ParquetGlobCase(),
    AnnDataCase("h5ad", "X"),
    AnnDataCase("h5ad", "obsm"),
    AnnDataCase("h5ad", "layer"),
    AnnDataCase("h5ad", "X", sparse=True),
    AnnDataCase("zarr", "X", zarr_format=3),
    AnnDataCase("zarr", "obsm", zarr_format=2),
    AnnDataCase("zarr", "layer", zarr_format=3, sparse=True),
]
