"""Talking to a Prefect server without importing Prefect: child environments and HTTP calls.

Every Prefect client this package starts (worker, ``prefect deploy``,
``prefect deployment run``) needs ``PREFECT_API_URL``, or it talks to a
throwaway ephemeral server and "succeeds" (docs/STACK.md): :func:`prefect_env`
builds that environment. :func:`api_client` and :func:`request` reach the REST
API directly, retrying the statuses a freshly started server answers while busy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

# Settings every child gets unless the caller's environment says otherwise:
# no telemetry (no internet here), no warnings for logs outside a flow run, and
# clients (worker, flow runs, CLI) that retry a busy server's 503s longer (SQLite
# under load, ops.servers.SQLITE_SERVER_SETTINGS; Prefect's default is 5
# retries with exponential backoff and jitter).
QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "PREFECT_CLIENT_MAX_RETRIES": "10",
}


def prefect_env(
    api_url: str,
    *,
    prefect_home: Path | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a Prefect client (worker, CLI call) talking to ``api_url``.

    Starts from ``os.environ`` (so ``MMR1_HOME``, offline switches and the like
    pass through), adds the quiet defaults unless set, then ``extra``.
    """
    env = dict(os.environ)
    for key, value in QUIET_DEFAULTS.items():
        env.setdefault(key, value)
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    env["PREFECT_API_URL"] = api_url
    env.update(extra or {})
    return env


def api_client(api_url: str) -> httpx.Client:
    """An HTTP client for the REST API at ``api_url`` (ignores proxy settings)."""
    return httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30.0, trust_env=False)


#: Statuses a freshly started Prefect server answers while it is busy (SQLite locked, ...).
_TRANSIENT = {429, 502, 503, 504}


def request(
    client: httpx.Client, method: str, url: str, *, attempts: int = 6, **kwargs: Any
) -> httpx.Response:
    """``client.request`` retried with backoff (0.5 s, doubling) on transient statuses."""
    delay = 0.5
    for attempt in range(attempts):
        response = client.request(method, url, **kwargs)
        if response.status_code not in _TRANSIENT or attempt == attempts - 1:
            return response
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")
