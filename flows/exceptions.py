"""Every exception that :mod:`flows` raises.

Each error derives from :class:`gmm_stream.exceptions.GMMStreamError` (through
:class:`FlowError`) and from the builtin a caller would naturally catch, so
``except ValueError`` or ``except FileNotFoundError`` keeps working. Messages name the
file, key or value at fault.
"""

from __future__ import annotations

from collections.abc import Sequence

from gmm_stream.exceptions import ComponentMatchingError, GMMStreamError

__all__ = [
    "FlowError",
    "ConfigError",
    "JobNotFoundError",
    "OutputsExistError",
    "ModelNotFoundError",
    "ClusterConnectionError",
    "LabelMatchingError",
]


class FlowError(GMMStreamError):
    """Base class of every error raised by the orchestration layer."""


class ConfigError(FlowError, ValueError):
    """A job file is invalid: unknown keys, wrong types, impossible values, bad YAML.

    Parameters
    ----------
    file : str
        The job file (or ``"<string>"``).
    problems : sequence of (key_path, message)
        One entry per problem; ``key_path`` is dotted (``"model.n_components"``) or
        empty for the whole file.

    ``str(error)`` is one ``file: key.path: message`` line per problem.
    """

    def __init__(self, file: str, problems: Sequence[tuple[str, str]]) -> None:
        self.file = str(file)
        self.problems = [(str(k), str(m)) for k, m in problems]
        super().__init__(self._format())

    def _format(self) -> str:
        return "\n".join(f"{self.file}: {key}: {msg}" if key else f"{self.file}: {msg}" for key, msg in self.problems)

    @property
    def lines(self) -> list[str]:
        """The problems, one formatted line each."""
        return self._format().splitlines()


class JobNotFoundError(FlowError, FileNotFoundError):
    """The job file does not exist."""


class OutputsExistError(FlowError, FileExistsError):
    """Outputs of the job exist already and ``output.overwrite`` is false."""


class ModelNotFoundError(FlowError, FileNotFoundError):
    """The saved model a job refers to (``predict.model``, ``labels.reference``) does not exist."""


class ClusterConnectionError(FlowError, ConnectionError):
    """The Dask scheduler named by the job cannot be reached."""


#: A reference model cannot be matched to the new one (e.g. different features). The
#: matching is math and raises from :mod:`gmm_stream.matching`; this is the same class.
LabelMatchingError = ComponentMatchingError
