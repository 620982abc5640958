"""Checks that run before any work: before the Prefect server starts, before any data is read.

:func:`preflight` resolves every input of a job (the source, with every file a glob or a
directory matches and every file behind a symlink; the model a ``predict`` job reads;
the reference model of label matching) and every path the job's run writes (the lock
file, ``runs/``, ``current`` and the published names: model, report, sinks, anomalies),
with symlinks and ``..`` resolved, and refuses the job if an output equals, lies inside
or contains an input, or if ``output.directory`` lies inside an input. It also checks
that local inputs exist. It reads file-system metadata only.
"""

from __future__ import annotations

import os
from pathlib import Path

from flows.config import Job
from flows.exceptions import ModelNotFoundError
from pipeline._paths import input_paths, is_url
from pipeline.atomic import overlaps, real_path
from pipeline.exceptions import InputOverlapError, SourceNotFoundError
from pipeline.output_set import OutputSet

__all__ = ["preflight", "job_inputs", "output_set", "output_entries"]


def output_entries(job: Job) -> list[str]:
    """The entries a run of ``job`` publishes, relative to ``output.directory``."""
    root = job.output_dir
    names = ["report"] + ([] if job.flow == "predict" else ["model"])
    paths = [Path(s.path) for s in job.output.sinks]
    if job.predict is not None:
        paths.append(Path(job.predict.anomalies))
    names += [os.path.relpath(p, root) for p in paths]
    return names


def output_set(job: Job) -> OutputSet:
    """The :class:`~pipeline.output_set.OutputSet` of the job's output directory."""
    return OutputSet(job.output_dir, output_entries(job))


def job_inputs(job: Job) -> dict[str, list[str]]:
    """Every local input of the job, resolved, keyed by the job key it comes from."""
    found = {"source.path": input_paths(job.source.path)}
    if job.predict is not None:
        found["predict.model"] = input_paths(job.predict.model)
    reference = job.labels.reference
    if reference is not None and reference != "previous":
        found["labels.reference"] = input_paths(reference)
    return found


def _check_exists(job: Job) -> None:
    source = job.source.path
    synthetic = getattr(job.source, "synthetic", None) is not None
    if not is_url(source) and not synthetic and not input_paths_exist(source):
        raise SourceNotFoundError(f"source.path: {source} does not exist (no file matches); check the path")
    if job.predict is not None and not (Path(job.predict.model) / "model.json").exists():
        raise ModelNotFoundError(
            f"predict.model: no saved model at {job.predict.model} (model.json missing); run the fit job first"
        )


def input_paths_exist(path: str) -> bool:
    """Whether a local path exists (a glob: whether it matches something)."""
    return any(os.path.lexists(p) for p in input_paths(path))


def preflight(job: Job) -> None:
    """Refuse a job whose outputs overlap its inputs, or whose inputs are missing.

    Raises
    ------
    InputOverlapError
        An output path (resolved) equals, lies inside or contains an input, or
        ``output.directory`` lies inside an input; the message names both.
    SourceNotFoundError, ModelNotFoundError
        A local input does not exist.
    """
    inputs = job_inputs(job)
    root = real_path(job.output_dir)
    outputs = output_set(job)
    for key, paths in inputs.items():
        for item in paths:
            if overlaps(root, item) and (root == item or root.startswith(item.rstrip(os.sep) + os.sep)):
                raise InputOverlapError(
                    f"output.directory {job.output_dir} (= {root}) is or lies inside the input {item} ({key}); "
                    "the input is never modified: choose an output directory outside it"
                )
            for out in outputs.layout_paths():
                resolved = real_path(out)
                if overlaps(resolved, item):
                    raise InputOverlapError(
                        f"output {out} (= {resolved}) overlaps the input {item} ({key}); the input is never "
                        "modified: choose another output.directory or sink path"
                    )
    _check_exists(job)
