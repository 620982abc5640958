"""From pydantic's validation errors to one ``key.path: message`` problem each.

:class:`~flows.exceptions.ConfigError` formats the problems as ``file: key.path: message``
lines; this module finds the key path of each error (dropping pydantic's union tags and
validator names) and words its message (``must be >= 1, got 0``, ``unknown key (did you mean
'n_components'?)``). Validators that find several problems raise :class:`_Keyed` (or, in the
sections that are pipeline options models, :class:`pipeline.exceptions.OptionsError`), which
names the key path of each below the model.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from pipeline.exceptions import OptionsError


class _Keyed(ValueError):
    """Problems found by a model validator, each with its key path below the model."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{k}: {m}" for k, m in self.problems))


def _not_finite(value: Any) -> str:
    """The message for an inf or nan ``value`` (a float, or the string it was read from)."""
    return (f"must be a finite number, got {value!r} (.inf, .nan and numbers beyond the float range, "
            "about 1.8e308, are not allowed)")


def _non_finite(value: Any, key: str = "") -> list[tuple[str, float]]:
    """``(key.path, number)`` of every inf or nan float in nested mappings and lists."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(key, value)]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [found for k, v in items for found in _non_finite(v, f"{key}.{k}" if key else str(k))]



def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Annotated:
        return _models_in(get_args(annotation)[0])
    out: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        out += _models_in(arg)
    return out


def _clean_loc(loc: Sequence[str | int], keep_last: bool,
               root: type[BaseModel]) -> tuple[list[str | int], list[type[BaseModel]]]:
    """Drop union tags and validator names from a pydantic location below ``root``; return the models at its end."""
    candidates: list[type[BaseModel]] = [root]
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out.append(part)
            continue
        owners = [m for m in candidates if part in m.model_fields]
        if owners:
            out.append(part)
            candidates = [x for m in owners for x in _models_in(m.model_fields[part].annotation)]
        elif keep_last and i == len(loc) - 1:
            out.append(part)
        else:  # a union tag (e.g. 'parquet'): keep the member it names
            tagged = [m for m in candidates if any(
                get_origin(f.annotation) is Literal and get_args(f.annotation) == (part,)
                for f in m.model_fields.values())]
            candidates = tagged or candidates
    return out, candidates


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping", type(None): "null"}
    kind = kinds.get(type(value), type(value).__name__)
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return kind
    return f"{kind} {value!r}"


def _message(err: Mapping[str, Any], candidates: list[type[BaseModel]]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        known = sorted({f for m in candidates for f in m.model_fields})
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})" if known else ""
        return f"unknown key{hint}"
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
              "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        return f"must be {op} {ctx[key]}, got {value!r}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {_describe(value)}"
    if kind in ("union_tag_invalid",):
        return f"must be one of {ctx['expected_tags']}, got {ctx['tag']!r}"
    if kind == "union_tag_not_found":
        return "required key is missing"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {_describe(value)}"
    if kind == "finite_number":
        return _not_finite(value)
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {_describe(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {_describe(value)}"
    if kind == "string_type":
        return f"must be a string, got {_describe(value)}"
    if kind == "list_type":
        return f"must be a list, got {_describe(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping of keys to values, got {_describe(value)}"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} item(s), got {ctx.get('actual_length', 'more')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx['pattern']}, got {value!r}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


def _problems(exc: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    """``(key.path, message)`` of every error of validating ``root`` (the job), each once."""
    problems: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors():
        loc, candidates = _clean_loc(err["loc"], keep_last=err["type"] == "extra_forbidden", root=root)
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, (_Keyed, OptionsError)):
            items = [(loc + k.split("."), m) for k, m in error.problems]
        else:
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc = loc + [str(err["ctx"]["discriminator"]).strip("'")]
            items = [(loc, _message(err, candidates))]
        for path, message in items:
            key = ".".join(str(p) for p in path)
            if (key, message) not in seen:
                seen.add((key, message))
                problems.append((key, message))
    return problems
