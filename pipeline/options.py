"""What each source and sink accepts: one pydantic model per class, holding its rules.

Every :class:`~pipeline.sources.Source` and :class:`~pipeline.sinks.Sink` class names its
options model in ``options_model``: the keyword arguments of its constructor beyond the
path (and beyond the chunking and ``storage_options`` that every source takes, or the
``overwrite`` that every sink takes), with their types, defaults, descriptions and the rules
between them ("``array`` or ``variable``, not both"). The constructor validates through it,
and a layer that configures sources and sinks (the YAML job of :mod:`flows.config`) derives
its sections from these models instead of re-stating them, as xarray's backends declare
their ``open_dataset_parameters``.

>>> from pipeline.sources import ZarrSource
>>> ZarrSource.options_model(array="X").variable is None
True
>>> ZarrSource("store.zarr", "X", variable="v")  # doctest: +SKIP
SelectionError: zarr source '.../store.zarr': variable: give either array or variable, not both
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.exceptions import OptionsError

__all__ = ["Options", "NonEmptyStr"]

#: A name that may not be empty (an array, a column, a key).
NonEmptyStr = Annotated[str, Field(min_length=1)]

OptionsT = TypeVar("OptionsT", bound="Options")


class Options(BaseModel):
    """Base of the options models: unknown keys are errors, floats are finite.

    Validators that find problems raise :class:`~pipeline.exceptions.OptionsError` naming
    the key of each (or a plain ``ValueError`` from a field validator).
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @classmethod
    def checked(cls: type[OptionsT], what: str, error: type[Exception], /, **options: Any) -> OptionsT:
        """``options`` validated, or ``error`` naming ``what`` and every problem.

        E.g. ``error("zarr source '/d.zarr': variable: give either array or variable, not both")``.
        """
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            raise error(f"{what}: " + "; ".join(_problems(exc))) from None


def _problems(exc: ValidationError) -> list[str]:
    """One ``key: message`` per error of ``exc`` (the keys an :class:`OptionsError` names, expanded)."""
    out: list[str] = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, OptionsError):
            out += [f"{'.'.join(filter(None, (key, k)))}: {m}" for k, m in error.problems]
        elif isinstance(error, ValueError):
            out.append(f"{key}: {error}" if key else str(error))
        else:
            out.append(f"{key}: {err['msg']}, got {_shown(err.get('input'))}")
    return out


def _shown(value: Any) -> str:
    return "a mapping" if isinstance(value, Mapping) else repr(value)
