"""Reading a job: the strict YAML loader, ``--set`` overrides, and :func:`load_job`.

A job file is at most :data:`MAX_JOB_BYTES` of UTF-8 text, nested at most :data:`MAX_DEPTH`
levels deep, with no key twice in a mapping and no anchors or aliases (see the package
docstring, :mod:`flows.config`); ``--set`` values follow the same rules.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flows.config.errors import _describe, _Keyed, _problems
from flows.config.schema import Job
from flows.exceptions import ConfigError, JobNotFoundError

__all__ = ["load_job", "parse_job", "apply_overrides", "job_json_schema", "MAX_JOB_BYTES", "MAX_DEPTH",
           "MAX_INT_DIGITS"]

#: The largest job file :func:`load_job` reads (1 MiB): a job describes the data, it does not hold them.
MAX_JOB_BYTES = 1 << 20
#: The deepest nesting of YAML collections in a job file (``precisions_init`` needs 5).
MAX_DEPTH = 32
#: The longest integer literal (in characters) a job file may hold.
MAX_INT_DIGITS = 100


# ------------------------------------------------------------------------ strict YAML


class _YAMLProblem(yaml.YAMLError):
    """A job-file rule broken while reading the YAML, at ``key`` (dotted; "" for the top)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class _JobLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the rules of job files.

    - no anchors or aliases: refused when the parser meets them, before anything is composed
      or expanded (a "billion laughs" document costs nothing);
    - nesting at most :data:`MAX_DEPTH` levels (the composer recurses once per level);
    - no key twice in one mapping (PyYAML keeps the last one silently);
    - integer literals of at most :data:`MAX_INT_DIGITS` characters.

    Problems are :class:`_YAMLProblem` errors naming the dotted key path (``prefix`` first:
    the ``--set`` key a value is read for) and the line, or the column when ``columns``
    (a one-line ``--set`` value).
    """

    def __init__(self, stream: str, *, prefix: Sequence[str] = (), what: str = "job files",
                 columns: bool = False) -> None:
        super().__init__(stream)
        self._keys: list[str | None] = list(prefix)
        self._depth = 0
        self._what = what
        self._one_line = columns
        self._node_keys: dict[int, str] = {}

    def _key(self) -> str:
        return ".".join(k for k in self._keys if k is not None)

    def _at(self, mark: yaml.Mark) -> str:
        return f"column {mark.column + 1}" if self._one_line else f"line {mark.line + 1}"

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        part = index.value if isinstance(index, yaml.ScalarNode) else str(index) if isinstance(index, int) else None
        self._keys.append(part)
        self._depth += 1
        try:
            key, event = self._key(), self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                raise _YAMLProblem(key, f"{self._at(event.start_mark)}: YAML aliases (*{event.anchor}) are not "
                                        f"allowed in {self._what}; write the value out")
            if getattr(event, "anchor", None) is not None:
                raise _YAMLProblem(key, f"{self._at(event.start_mark)}: YAML anchors (&{event.anchor}) are not "
                                        f"allowed in {self._what} (aliases are refused); write the value out")
            if self._depth > MAX_DEPTH:
                raise _YAMLProblem(key, f"{self._at(event.start_mark)}: nested more than {MAX_DEPTH} levels "
                                        f"deep; a job is at most {MAX_DEPTH} levels of mappings and lists")
            node = super().compose_node(parent, index)
            self._node_keys[id(node)] = key
            return node
        finally:
            self._depth -= 1
            self._keys.pop()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class reports it
                    continue
                if first is not None:
                    where = self._node_keys.get(id(node), "")
                    name = str(getattr(key_node, "value", key))
                    marks = (first.start_mark, key_node.start_mark)
                    at = (f"columns {marks[0].column + 1} and {marks[1].column + 1}" if self._one_line
                          else f"lines {marks[0].line + 1} and {marks[1].line + 1}")
                    raise _YAMLProblem(f"{where}.{name}" if where else name, f"duplicate key ({at}); keep one")
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_DIGITS:
            raise _YAMLProblem(self._node_keys.get(id(node), ""),
                               f"{self._at(node.start_mark)}: an integer of {len(node.value)} characters; "
                               f"integers in {self._what} have at most {MAX_INT_DIGITS}")
        return super().construct_yaml_int(node)


_JobLoader.add_constructor("tag:yaml.org,2002:int", _JobLoader.construct_yaml_int)


def _load_yaml(text: str, *, prefix: Sequence[str] = (), what: str = "job files", columns: bool = False) -> Any:
    """Read one YAML document with the :class:`_JobLoader` rules."""
    loader = _JobLoader(text, prefix=prefix, what=what, columns=columns)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- loading


def _set_path(data: Any, keys: list[str], value: Any, option: str) -> None:
    node = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ValueError(f"--set {option}: {'.'.join(keys[:depth + 1])} is not an index of the list")
            index: Any = int(key)
        elif isinstance(node, dict):
            index = key
        else:
            raise ValueError(f"--set {option}: {'.'.join(keys[:depth])} is not a mapping")
        if last:
            node[index] = value
        else:
            if isinstance(node, dict) and node.get(index) is None:
                node[index] = {}
            node = node[index]


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (value read as YAML) to a job mapping, in order.

    ``model.n_components=12`` sets an integer, ``output.sinks.0.path=x.parquet`` an item of a
    list, ``preprocessing=[standardize]`` a list. Missing mappings on the way are created.
    Values follow the rules of job files (no duplicate keys, anchors or aliases).

    Raises
    ------
    ValueError
        If an override is malformed, its value is not valid YAML, or its path does not exist.
        A value breaking a job-file rule raises a ``ValueError`` whose ``problems`` name the key.
    """
    for option in overrides:
        key, sep, text = option.partition("=")
        keys = key.strip().split(".")
        if not sep or not all(keys):
            raise ValueError(f"--set {option!r}: expected KEY.PATH=VALUE, e.g. model.n_components=12")
        try:
            one_line = "\n" not in text.strip()
            value = _load_yaml(text, prefix=keys, what="--set values", columns=one_line) if text.strip() else ""
        except _YAMLProblem as err:
            raise _Keyed([(err.key, f"--set {option!r}: {err.message}")]) from None
        except yaml.YAMLError as err:
            raise ValueError(f"--set {option!r}: the value is not valid YAML ({err.__class__.__name__})") from None
        _set_path(data, keys, value, option)
    return data


def parse_job(
    data: Any,
    *,
    file: str = "<job>",
    overrides: Sequence[str] = (),
    base_dir: str | os.PathLike[str] | None = None,
) -> Job:
    """Validate a job mapping (as ``yaml.safe_load`` returns it); see :func:`load_job`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, [("", f"the job must be a mapping of keys to values, got {_describe(data)}")])
    try:
        data = apply_overrides(data, overrides)
    except _Keyed as err:
        raise ConfigError(file, err.problems) from None
    except ValueError as err:
        raise ConfigError(file, [("", str(err))]) from None
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        return Job.model_validate(data, context={"base_dir": str(base.absolute())})
    except ValidationError as err:
        raise ConfigError(file, _problems(err, Job)) from None


def load_job(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> Job:
    """Read, override and validate a YAML job; no data is read.

    Parameters
    ----------
    path : str or os.PathLike
        The YAML file: UTF-8, at most 1 MiB (:data:`MAX_JOB_BYTES`), read like
        ``yaml.safe_load`` but strictly: a key twice in a mapping, anchors and aliases
        (``&name``, ``*name``), nesting deeper than :data:`MAX_DEPTH` levels are errors.
    overrides : sequence of str
        ``key.path=value`` items applied before validation (the CLI's ``--set``); the values
        are read with the same rules.
    base_dir : path, optional
        Directory that relative input paths are relative to (default: the working directory).

    Returns
    -------
    Job

    Raises
    ------
    JobNotFoundError
        If the file does not exist.
    ConfigError
        With one ``file: key.path: message`` line per problem (size, encoding, YAML syntax,
        duplicate keys, aliases, unknown keys, wrong types, impossible or non-finite values,
        values beyond their bounds or this machine, outputs outside ``output.directory``,
        unset environment variables).
    """
    file = str(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_JOB_BYTES + 1)
    except FileNotFoundError:
        raise JobNotFoundError(f"job file {file} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(file, [("", "is a directory, not a YAML job file")]) from None
    if len(raw) > MAX_JOB_BYTES:
        raise ConfigError(file, [("", f"is larger than {MAX_JOB_BYTES} bytes (1 MiB), the most a job file may be; "
                                      "a job describes the data, it does not hold them")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(file, [("", f"is not UTF-8 text (byte {err.start}); save the job file as UTF-8")]) from None
    try:
        data = _load_yaml(text)
    except _YAMLProblem as err:
        raise ConfigError(file, [(err.key, err.message)]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(file, [("", f"invalid YAML: {where}{problem}")]) from None
    return parse_job(data, file=file, overrides=overrides, base_dir=base_dir)


def job_json_schema() -> dict[str, Any]:
    """The JSON Schema of a job file (for editors that validate YAML)."""
    schema = Job.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
