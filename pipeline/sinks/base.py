"""The writer contract that every results sink fulfils."""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import pipeline.formats as formats
from pipeline._executor import active_client, compute_all
from pipeline._paths import input_paths
from pipeline.atomic import check_not_input
from pipeline.exceptions import SinkError
from pipeline.options import Options
from pipeline.results import Results
from pipeline.sinks._atomic import atomic_output

__all__ = ["Sink", "Plan", "WriteContext", "str_block", "write_results"]

logger = logging.getLogger(__name__)


def str_block(block: Any) -> np.ndarray:
    """A 1-D block of ids as an object array of Python ``str`` (any NumPy string dtype in)."""
    return np.asarray([str(v) for v in np.asarray(block).tolist()], dtype=object)


@dataclass
class WriteContext:
    """What a sink's :meth:`Sink._plan` may use while a write is planned.

    Attributes
    ----------
    stack : contextlib.ExitStack
        Closed (in reverse order) before the outputs are committed or removed: register
        resources to close and temporaries to remove on it.
    distributed : bool
        The chunk writes run on the workers of a ``distributed`` cluster (they must not
        hold handles of this process, such as an open HDF5 file).
    """

    stack: ExitStack
    distributed: bool


@dataclass
class Plan:
    """A planned write: the per-chunk write tasks (``dask.delayed``, one per row chunk, each
    writing that chunk of every array) and lazy values the sink needs back for
    :meth:`Sink._finish` (checks, or the whole results for a writer that cannot write by
    chunks)."""

    writes: list[Any] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)


class Sink(abc.ABC):
    """Writes :class:`~pipeline.results.Results` to a local path, chunk by chunk, atomically.

    The writer contract
    -------------------
    - a write is planned (:meth:`_plan`: containers created in the temporary output,
      one write task per row chunk), computed, then finished (:meth:`_finish`:
      metadata, consolidation); :func:`write_results` computes the chunk writes of
      several sinks and any other lazy values in **one** graph, so each row chunk is
      read and goes through the E-step once, whatever the number of sinks;
    - no whole column is gathered in memory; on Dask's threads the chunks are written
      by a private pool of this process, joined before any cleanup; with a
      ``distributed`` client they are written by the workers themselves (the output
      must be on a file system they share), and the call returns only when every chunk
      task has ended, so that no worker writes after a cleanup;
    - the output is built in a hidden temporary sibling (``.<name>.tmp-<random>``) and
      renamed into place only when complete, so a crash leaves either the old output
      or the new one (a killed process may leave the hidden temporary behind);
    - an existing output raises :class:`~pipeline.exceptions.OutputExistsError` unless
      ``overwrite=True``; the input is never written: an output that equals, lies inside
      or contains (all resolved: symlinks, ``..``, every file of a glob or directory) the
      input named in ``provenance["input"]["path"]``, or any input a source opened in
      this process, raises :class:`~pipeline.exceptions.InputOverlapError`;
    - every output carries the stamp ``{"encoding-type": "gmm_stream_result",
      "encoding-version", "provenance", "settings"}`` (the ``result`` format of
      :data:`pipeline.formats.FORMATS`; see :func:`pipeline.provenance.make_provenance`),
      and ``anomaly_threshold`` when the results flag anomalies.

    Each sink class declares its options in ``options_model`` (a
    :class:`pipeline.options.Options` model: what the constructor takes beyond ``path`` and
    ``overwrite``, and their rules); the constructor validates them through it and raises
    :class:`~pipeline.exceptions.SinkError` naming the sink and each problem.

    Parameters
    ----------
    path : str or os.PathLike
        Local output path.
    overwrite : bool, default False
        Replace an existing output (it survives until the new one is complete).
    """

    kind: ClassVar[str] = ""
    #: The options of this kind of sink, and their rules (see :mod:`pipeline.options`).
    options_model: ClassVar[type[Options]] = Options

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.path = Path(path).expanduser().absolute()
        self.overwrite = bool(overwrite)

    def _checked_options(self, **options: Any) -> Any:
        """``options`` validated by :attr:`options_model`, or a SinkError naming the sink."""
        return self.options_model.checked(f"{self.kind} sink {str(self.path)!r}", SinkError, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, overwrite={self.overwrite})"

    def write(
        self,
        results: Results,
        *,
        provenance: Mapping[str, Any],
        settings: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``results`` and the stamp; return the output path.

        Parameters
        ----------
        results : Results
            Lazy labels (n,), proba (n, K) and logdens (n,), with sample ids.
        provenance : mapping
            From :func:`pipeline.provenance.make_provenance`.
        settings : mapping, optional
            The job's settings (JSON-able), stored with the stamp.
        params : mapping, optional
            Fitted parameters (:func:`pipeline.results.model_params`); stored by sinks
            that have a place for them (AnnData ``uns``).
        """
        write_results([self], results, provenance=provenance, settings=settings, params=params)
        return self.path

    def _check(self, provenance: Mapping[str, Any]) -> None:
        """Checks before anything is created (the input is never an output)."""
        self._check_not_input(provenance)

    @abc.abstractmethod
    def _plan(self, tmp: Path, results: Results, stamp: dict[str, Any], params: dict[str, Any],
              context: WriteContext) -> Plan:
        """Create the containers in ``tmp`` (which does not exist yet); return the chunk writes."""

    def _finish(self, tmp: Path, results: Results, stamp: dict[str, Any], params: dict[str, Any],  # noqa: B027
                values: list[Any]) -> None:  # (an optional hook: a no-op unless a sink overrides it)
        """After every chunk is written (``values``: the plan's values, computed)."""

    def _check_not_input(self, provenance: Mapping[str, Any]) -> None:
        """Refuse an output that overlaps the input named in the provenance or any opened input.

        Paths are compared resolved (symlinks, ``..``), against every file a glob or a
        directory input matches (see :func:`pipeline._paths.input_paths`).
        """
        source = (provenance.get("input") or {}).get("path")
        inputs = (input_paths(source) if source else []) + self._inputs()
        check_not_input(self.path, inputs)

    def _inputs(self) -> list[str]:
        """Inputs the sink itself reads (resolved); none by default."""
        return []


def make_stamp(provenance: Mapping[str, Any], settings: Mapping[str, Any] | None,
               results: Results) -> dict[str, Any]:
    """The stamp every output of ``results`` carries."""
    stamp: dict[str, Any] = {
        **formats.stamp("result"),
        "provenance": dict(provenance),
        "settings": dict(settings or {}),
    }
    if results.anomaly_threshold is not None:
        stamp["anomaly_threshold"] = float(results.anomaly_threshold)
    return stamp


def write_results(
    sinks: Sequence[Sink],
    results: Results,
    *,
    provenance: Mapping[str, Any],
    settings: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    values: Sequence[Any] = (),
) -> list[Any]:
    """Write ``results`` to every sink, and compute ``values``, in one pass over the data.

    The chunk writes of all sinks and the lazy ``values`` (e.g. the scores of
    :func:`pipeline.scoring.score_values`) form one graph: each row chunk of the input
    is read, transformed and goes through the E-step once. Each sink's output is built
    in its own temporary sibling and renamed into place when everything is written; if
    anything fails, every temporary is removed and no output is changed.

    Returns
    -------
    list
        ``values``, computed.
    """
    for sink in sinks:
        sink._check(provenance)
    aligned = results.aligned()
    stamp = make_stamp(provenance, settings, results)
    extra = dict(params or {})
    with ExitStack() as stack:
        tmps = [stack.enter_context(atomic_output(sink.path, overwrite=sink.overwrite)) for sink in sinks]
        context = WriteContext(stack, distributed=active_client() is not None)
        plans = [sink._plan(tmp, aligned, stamp, extra, context) for sink, tmp in zip(sinks, tmps, strict=True)]
        writes = [task for plan in plans for task in plan.writes]
        wanted = [value for plan in plans for value in plan.values] + list(values)
        computed = compute_all(writes, wanted) if (writes or wanted) else []
        offset = 0
        for sink, tmp, plan in zip(sinks, tmps, plans, strict=True):
            sink._finish(tmp, aligned, stamp, extra, computed[offset:offset + len(plan.values)])
            offset += len(plan.values)
            logger.info("%r: wrote %d rows x %d components", sink, results.n_samples, results.n_components)
    return computed[offset:]
