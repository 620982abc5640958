"""Prefect isolation for the flow tests: a private PREFECT_HOME and one temporary server per session.

PREFECT_HOME must be set before Prefect is imported; this conftest runs before any
test module of this directory imports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="gmm-stream-flows-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"  # Prefect's client-side telemetry
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILES_PATH", None)


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """Prefect's real temporary server (``prefect_test_harness``) for the session; its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)
