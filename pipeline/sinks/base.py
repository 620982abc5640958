"""The writer contract that every results sink fulfils."""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline._paths import input_paths
from pipeline.atomic import check_not_input
from pipeline import formats
from pipeline.results import Results
from pipeline.sinks._atomic import atomic_output, private_threads

__all__ = ["Sink", "str_block"]

logger = logging.getLogger(__name__)


def str_block(block: Any) -> np.ndarray:
    """A 1-D block of ids as an object array of Python ``str`` (any NumPy string dtype in)."""
    return np.asarray([str(v) for v in np.asarray(block).tolist()], dtype=object)


class Sink(abc.ABC):
    """Writes :class:`~pipeline.results.Results` to a local path, chunk by chunk, atomically.

    The writer contract
    -------------------
    - ``write`` computes the lazy results one row chunk at a time and never gathers a
      whole column in memory; it computes in the calling process on a private thread
      pool that is joined before any cleanup (see :func:`~pipeline.sinks._atomic.private_threads`);
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
      :data:`pipeline.formats.FORMATS`; see :func:`pipeline.provenance.make_provenance`).

    Parameters
    ----------
    path : str or os.PathLike
        Local output path.
    overwrite : bool, default False
        Replace an existing output (it survives until the new one is complete).
    """

    kind: ClassVar[str] = ""

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.path = Path(path).expanduser().absolute()
        self.overwrite = bool(overwrite)

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
        self._check_not_input(provenance)
        stamp = {
            **formats.stamp("result"),
            "provenance": dict(provenance),
            "settings": dict(settings or {}),
        }
        aligned = results.aligned()
        with atomic_output(self.path, overwrite=self.overwrite) as tmp, private_threads():
            self._write(tmp, aligned, stamp, dict(params or {}))
        logger.info("%r: wrote %d rows x %d components", self, results.n_samples, results.n_components)
        return self.path

    @abc.abstractmethod
    def _write(self, tmp: Path, results: Results, stamp: dict[str, Any], params: dict[str, Any]) -> None:
        """Write everything into ``tmp`` (which does not exist yet)."""

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
