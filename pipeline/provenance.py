"""The provenance stamp written on every output.

A stamp records the gmm-stream version, a SHA-256 of the configuration (canonical
JSON: sorted keys, no spaces), a SHA-256 of the input's identity (path, selection,
shape, dtype, modification time) together with that identity, and the UTC time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from pipeline.formats import FORMATS, jsonable

__all__ = ["ENCODING_TYPE", "ENCODING_VERSION", "canonical_json", "gmm_stream_version", "make_provenance"]

#: Encoding type and version stamped on every result written by :mod:`pipeline.sinks`
#: (the ``result`` entry of :data:`pipeline.formats.FORMATS`).
ENCODING_TYPE: str = FORMATS["result"].name
ENCODING_VERSION: str = str(FORMATS["result"].version)  # a semver string


def canonical_json(obj: Any) -> str:
    """JSON text with sorted keys and no whitespace, NumPy values converted (:func:`~pipeline.formats.jsonable`)."""
    return json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=True)


def _sha256(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def gmm_stream_version() -> str:
    """The installed gmm-stream version."""
    import gmm_stream

    version = getattr(gmm_stream, "__version__", None)
    if version is None:  # package __init__ not importable: fall back on the version module
        from gmm_stream._version import __version__ as version
    return str(version)


def make_provenance(config: Mapping[str, Any] | None, source_identity: Mapping[str, Any]) -> dict[str, Any]:
    """Build the provenance stamp of one output.

    Parameters
    ----------
    config : mapping or None
        The job's settings (JSON-able); ``None`` hashes as JSON ``null``.
    source_identity : mapping
        What :meth:`pipeline.sources.Source.identity` returned for the input.

    Returns
    -------
    dict
        ``{"gmm_stream_version", "config_sha256", "input_sha256", "input", "created"}``,
        JSON-able; ``created`` is the UTC time in ISO 8601.
    """
    identity = json.loads(canonical_json(dict(source_identity)))
    return {
        "gmm_stream_version": gmm_stream_version(),
        "config_sha256": _sha256(None if config is None else dict(config)),
        "input_sha256": _sha256(identity),
        "input": identity,
        "created": datetime.now(timezone.utc).isoformat(),
    }
