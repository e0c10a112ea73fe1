"""A local ``mlflow server`` over the home's tracking store, as a child process.

``mlflow server`` starts four uvicorn workers and job-execution processes by
default: one worker here, job execution off (docs/STACK.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ops.processes import (
    LOOPBACK,
    ManagedProcess,
    ServiceError,
    cli_command,
    client_host,
    resolve_port,
    wait_for_http,
)
from schemas.home import HomeConfig

_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file")


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server`` over the home's tracking store."""

    host: str
    port: int
    backend_store_uri: str
    process: ManagedProcess
    startup_s: float

    @property
    def url(self) -> str:
        """UI and REST API, as a local client reaches them (a valid tracking URI)."""
        return f"http://{client_host(self.host)}:{self.port}"


@contextmanager
def mlflow_server(
    home: HomeConfig | None = None,
    *,
    log_dir: Path,
    host: str = LOOPBACK,
    port: int | None = None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 90.0,
    stop_grace: float = 10.0,
) -> Iterator[MlflowServer]:
    """Serve the home's MLflow store (the embedded default) until the block exits.

    The backend store is ``home.tracking_uri`` (SQLite under the home unless
    ``MLFLOW_TRACKING_URI`` says otherwise), so runs logged without a server are
    visible; new experiments and proxied artifacts go under ``home.artifacts``.
    Flows keep writing to the store directly; the server is for reading.
    """
    home = (home or HomeConfig()).ensure()
    store = home.tracking_uri
    if store.split(":", 1)[0].split("+", 1)[0] not in _SQL_SCHEMES:
        raise ServiceError(
            f"MLflow tracking URI {store!r} is not a database or file store (already a "
            "server?); unset MLFLOW_TRACKING_URI to serve the home's store"
        )
    port = resolve_port(host, port, "mlflow server", "--mlflow-port")
    args = [
        *cli_command("mlflow"),
        "server",
        "--backend-store-uri",
        store,
        "--default-artifact-root",
        home.artifacts.as_uri(),
        "--artifacts-destination",
        str(home.artifacts),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    child_env = dict(os.environ)
    child_env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    child_env.update(env or {})
    process = ManagedProcess.start(
        "mlflow server",
        args,
        env=child_env,
        log_path=log_dir / "mlflow-server.log",
        cwd=home.root,  # anything MLflow writes relative to its cwd stays in the home
    )
    try:
        waited = wait_for_http(
            f"http://{client_host(host)}:{port}/health",
            timeout=startup_timeout,
            process=process,
        )
        yield MlflowServer(host, port, store, process, waited)
    finally:
        process.stop(stop_grace)
