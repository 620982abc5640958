"""One run's data: the source opened once, with its fitted preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import xarray as xr

from pipeline.preprocess import Preprocessor
from pipeline.sources import Source

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """A source opened once per run, and what every stage reads from it.

    Every stage of a run (preprocessing, EM, predictions and scores) takes the same
    handle, so the input is opened (and its chunk keys listed) once, and its identity
    read once.

    Attributes
    ----------
    source : Source
    data : DataArray
        The selected matrix, lazy (``source.open()``).
    identity : dict
        The input's identity (``source.identity()``), for provenance and fingerprints.
    preprocessor : Preprocessor or None
        The fitted preprocessing, once there is one.
    model_input : DataArray
        ``preprocessor.transform(data)`` (``data`` without preprocessing): what the model sees.
    """

    source: Source
    data: xr.DataArray
    identity: dict[str, Any]
    preprocessor: Preprocessor | None = None
    model_input: xr.DataArray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.model_input is None:
            model_input = self.data if self.preprocessor is None else self.preprocessor.transform(self.data)
            object.__setattr__(self, "model_input", model_input)

    @classmethod
    def open(cls, source: Source) -> Dataset:
        """Open ``source`` (lazily: no chunk is read) and take its identity."""
        data = source.open()
        return cls(source, data, source.identity(data))

    def with_preprocessor(self, preprocessor: Preprocessor) -> Dataset:
        """The same data, seen through the fitted ``preprocessor``."""
        return type(self)(self.source, self.data, self.identity, preprocessor)  # model_input: computed again
