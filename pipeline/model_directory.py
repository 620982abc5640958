"""A flow's model directory: the model, its preprocessing, the training record and the job.

Layout (written as one atomic directory; see :func:`pipeline.atomic.atomic_output`)::

    model/
      model.json, model.npz               the fitted mixture (pipeline.model_files)
      preprocessing.json, preprocessing-<sha>.npz
      training.json                       the training record: rows, sizes, log-likelihood,
                                          BIC/AIC/ICL, log-density quantiles, label matching,
                                          provenance (the ``training`` format of pipeline.formats)
      job.json                            the job's settings
      partitions.json                     the identity of each input partition whose statistics
                                          the model's partition record holds (for refreshes)
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
from pipeline.partitions import PARTITIONS_FILE, check_record
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
    #: the identity of each partition of the model's partition record, by key (None: no record)
    partitions: dict[str, Any] | None = None
    #: the job's settings the model was fitted with
    settings: dict[str, Any] | None = None


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
                          training: dict[str, Any], settings: dict[str, Any],
                          partitions: dict[str, Any] | None = None) -> Path:
    """Write the whole directory at ``path`` atomically (an existing one is replaced whole).

    ``partitions`` (:func:`pipeline.partitions.partition_identities`) goes with a model
    that has a partition record, naming the same partitions."""
    if partitions is not None:
        check_record(partitions["partitions"], model.partitions_, Path(path))
    with atomic_output(path, overwrite=True) as tmp:
        model_files.save_model(model, tmp)
        preprocessor.save(tmp)
        (tmp / TRAINING_FILE).write_text(formats.json_text(training))
        (tmp / JOB_FILE).write_text(formats.json_text(settings))
        if partitions is not None:
            (tmp / PARTITIONS_FILE).write_text(formats.json_text(partitions))
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
    model = model_files.load_model(directory)
    partitions = None
    if os.path.lexists(directory / PARTITIONS_FILE):
        src = model_files.SavedFile(directory, PARTITIONS_FILE)
        record = model_files.read_json(src)
        formats.check_format(record, "partitions", src.path)
        if not isinstance(record.get("partitions"), dict) or "partitions_" not in model.__dict__:
            raise ModelFormatError(f"{src.path}: holds no partition identities, or the model has no partition "
                                   "record; the model directory is damaged: run the fit job again")
        partitions = record["partitions"]
        check_record(partitions, model.partitions_, directory)
    settings = None
    if os.path.lexists(directory / JOB_FILE):
        settings = model_files.read_json(model_files.SavedFile(directory, JOB_FILE))
    return SavedModel(directory, model, Preprocessor.load(directory), training, partitions, settings)
