"""A flow's model directory: the model, its preprocessing, the training record and the job.

Layout (written as one atomic directory; see :func:`pipeline.atomic.atomic_output`)::

    model/
      model.json, model.npz               the fitted mixture (pipeline.model_files)
      preprocessing.json, preprocessing-<sha>.npz
      training.json                       the training record: rows, sizes, log-likelihood,
                                          BIC/AIC/ICL, log-density quantiles, label matching,
                                          provenance (the ``training`` format of pipeline.formats)
      job.json                            the job's settings
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pipeline.formats as formats
import pipeline.model_files as model_files
from gmm_stream import GaussianMixture
from gmm_stream.exceptions import ModelFormatError
from pipeline.atomic import atomic_output
from pipeline.preprocess import Preprocessor
from pipeline.scoring import Scores

__all__ = ["TRAINING_FILE", "JOB_FILE", "SavedModel", "training_record", "write_model_directory",
           "read_model_directory"]

TRAINING_FILE = "training.json"
JOB_FILE = "job.json"


@dataclass
class SavedModel:
    """A model directory read back."""

    path: Path
    model: GaussianMixture
    preprocessor: Preprocessor
    training: dict[str, Any]


def training_record(scores: Scores, *, labels: dict[str, Any] | None, provenance: dict[str, Any]) -> dict[str, Any]:
    """The training record of a fitted model: what a later predict run needs (the log-density
    quantiles for its anomaly threshold) and what the report shows."""
    return {
        **formats.stamp("training"),
        "n_rows": scores.n_rows,
        "n_empty": scores.n_empty,
        "sizes": scores.sizes,
        "loglik": scores.loglik,
        "bic": scores.bic,
        "aic": scores.aic,
        "icl": scores.icl,
        "logdens_quantiles": {"levels": scores.quantile_levels, "values": scores.quantiles},
        "labels": labels,
        "provenance": provenance,
    }


def write_model_directory(path: str | os.PathLike[str], model: GaussianMixture, preprocessor: Preprocessor,
                          training: dict[str, Any], settings: dict[str, Any]) -> Path:
    """Write the whole directory at ``path`` atomically (an existing one is replaced whole)."""
    with atomic_output(path, overwrite=True) as tmp:
        model_files.save_model(model, tmp)
        preprocessor.save(tmp)
        (tmp / TRAINING_FILE).write_text(formats.json_text(training))
        (tmp / JOB_FILE).write_text(formats.json_text(settings))
    return Path(path)


def read_model_directory(path: str | os.PathLike[str]) -> SavedModel:
    """Read a model directory back, every file checked.

    Raises
    ------
    FileNotFoundError
        No ``model.json`` at ``path``.
    ModelFormatError
        A file is missing, damaged or of another format.
    """
    directory = Path(path)
    if not (directory / "model.json").exists():
        raise FileNotFoundError(f"no saved model at {directory} (model.json missing)")
    if not os.path.lexists(directory / TRAINING_FILE):
        raise ModelFormatError(f"{directory} has no {TRAINING_FILE}; it was not written by a gmm-stream flow")
    src = model_files.SavedFile(directory, TRAINING_FILE)
    training = model_files.read_json(src)
    formats.check_format(training, "training", src.path)
    return SavedModel(directory, model_files.load_model(directory), Preprocessor.load(directory), training)
