"""gmm-stream's data layer: open sources lazily, preprocess out of core, write results safely.

It knows files, formats and preprocessing, and nothing of orchestration: it imports
:mod:`gmm_stream`, never ``flows`` or Prefect.

- :mod:`pipeline.sources` -- Zarr, Parquet and AnnData as ``(sample, feature)`` DataArrays;
- :mod:`pipeline.preprocess` -- ``log1p``, standardisation and PCA fitted out of core;
- :mod:`pipeline.results` -- lazy labels / probabilities / log-densities of a model;
- :mod:`pipeline.dataset` -- one run's data: the source opened once, and its preprocessing;
- :mod:`pipeline.sinks` -- Zarr, Parquet and AnnData outputs, atomic and stamped, all
  written from one pass (:func:`~pipeline.sinks.write_results`), by the workers on a cluster;
- :mod:`pipeline.scoring` -- sizes, BIC/AIC/ICL, log-density quantiles, from that same pass;
- :mod:`pipeline.model_files` -- a fitted model saved to a directory and loaded back, checked;
- :mod:`pipeline.checkpoints` -- EM checkpoints and the fingerprint of the job they belong to;
- :mod:`pipeline.atomic` -- outputs replaced whole, inputs never written;
- :mod:`pipeline.formats` -- every format's name and version, and the one check of a stamp;
- :mod:`pipeline.provenance` -- the stamp (version, config hash, input identity, time);
- :mod:`pipeline.options` -- the options each source and sink declares, with their rules.
"""

from __future__ import annotations

from pipeline.checkpoints import load_state, save_state
from pipeline.dataset import Dataset
from pipeline.exceptions import DiskFullError, InputOverlapError, OutputExistsError
from pipeline.model_files import load_model, save_model
from pipeline.preprocess import PCA, Log1p, Preprocessor, Standardize
from pipeline.provenance import make_provenance
from pipeline.results import Results, model_params, predict_results
from pipeline.scoring import Scores, score_values, scores_from
from pipeline.sinks import AnnDataSink, ParquetSink, Sink, ZarrSink, make_sink, write_results
from pipeline.sources import (
    AnnDataSource,
    IntegerColumnWarning,
    ParquetSource,
    Source,
    ZarrSource,
    make_source,
    open_source,
)

__all__ = [
    "Source",
    "ZarrSource",
    "ParquetSource",
    "IntegerColumnWarning",
    "AnnDataSource",
    "make_source",
    "open_source",
    "Preprocessor",
    "Log1p",
    "Standardize",
    "PCA",
    "Results",
    "predict_results",
    "model_params",
    "Sink",
    "ZarrSink",
    "ParquetSink",
    "AnnDataSink",
    "make_sink",
    "write_results",
    "Dataset",
    "Scores",
    "score_values",
    "scores_from",
    "make_provenance",
    "save_model",
    "load_model",
    "save_state",
    "load_state",
    "OutputExistsError",
    "InputOverlapError",
    "DiskFullError",
]
