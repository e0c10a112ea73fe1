"""Local Prefect server, process worker and MLflow server, started as child processes.

Why child processes: ``mmr1/`` never imports Prefect (docs/DESIGN.md), and a server
in its own process group can always be stopped, children included
(``ops.processes``). Each ``prefect`` / ``mlflow`` call runs
``sys.executable -m <tool>``, so it uses the caller's environment.

Every child appends to a log file under a log directory, by default
``MMR1_HOME/logs`` (``prefect-server.log``, ``prefect-worker.log``,
``mlflow-server.log``, ``prefect-deploy.log``, ...); start-up failures quote
the tail of that log in the error. :func:`serve` is the ``mmr1 serve`` entry.

Registering and running deployments is :mod:`ops.deployments`; the
environment and REST calls every Prefect client needs, :mod:`ops.prefect_api`.

Traps handled here (docs/STACK.md):
- ``prefect server start --port P`` alone serves a UI that calls the API on
  port 4200: the server also gets ``PREFECT_SERVER_API_HOST/PORT`` and
  ``PREFECT_API_URL``.
- a Prefect worker ignores its first SIGTERM (it forwards SIGINT to its runs);
  stopping signals the whole process group and kills it after a grace period.
- ``mlflow server`` starts four uvicorn workers and job-execution processes
  by default: one worker, job execution off.
- Prefect's SQLite database under load ("database is locked"): see
  :data:`SQLITE_SERVER_SETTINGS`; several workers on several machines want
  PostgreSQL (``PREFECT_SERVER_DATABASE_CONNECTION_URL``), which these settings
  leave alone.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ops.deployments import PROJECT_ROOT, deploy
from ops.mlflow_server import MlflowServer, mlflow_server
from ops.prefect_api import api_client, prefect_env, request
from ops.processes import (
    LOOPBACK,
    ManagedProcess,
    ServiceError,
    cli_command,
    client_host,
    resolve_port,
    run_cli,
    wait_for_http,
)
from schemas.home import HomeConfig

DEFAULT_POOL = "mmr1-local"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000

#: Server settings always applied (unless set): stream flow-run logs to subscribers, so
#: `prefect deployment run --watch` (a CI job) prints the run's log lines as they come.
#: Prefect 3.9 streams only events by default: the watch shows state changes and
#: heartbeats, no logs.
SERVER_SETTINGS = {
    "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
    "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
}

#: Server settings for its SQLite database with concurrent clients (worker, flow runs,
#: UI, CLI). Prefect 3.9 already opens every SQLite connection in WAL mode (readers do
#: not block the writer) with a 60 s busy timeout. What still fails under load are
#: writes that SQLite refuses without waiting (a transaction that read first and then
#: wants to write while another writes); the server answers those HTTP 503 and clients
#: retry (ops.prefect_api gives every client 10 retries). So: fewer write
#: transactions (events persisted in larger batches), a lock wait as long as the busy
#: timeout from the first connect, and retried conflicts kept out of the log. They do
#: not remove conflicts between many concurrent writers (bench/bench_prefect_server.py:
#: about the same share of 503s with and without them): several workers want
#: PostgreSQL. Explicit settings in the environment win; none apply to PostgreSQL.
SQLITE_SERVER_SETTINGS = {
    "PREFECT_SERVER_DATABASE_TIMEOUT": "60",  # lock wait of each connection, s (default 10)
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",  # events per write (20)
    "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "false",  # 503s that clients retry
}
_DATABASE_URL_SETTINGS = (
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
)


def uses_sqlite(env: Mapping[str, str]) -> bool:
    """Whether a Prefect server with this environment keeps its database in SQLite."""
    url = next((env[k] for k in _DATABASE_URL_SETTINGS if env.get(k)), "")
    driver = env.get("PREFECT_SERVER_DATABASE_DRIVER", "")
    return (not url or url.startswith("sqlite")) and driver in ("", "sqlite+aiosqlite")


def server_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The settings :func:`prefect_server` adds to ``env`` (which wins where it sets one)."""
    wanted = {**SERVER_SETTINGS, **(SQLITE_SERVER_SETTINGS if uses_sqlite(env) else {})}
    return {key: value for key, value in wanted.items() if key not in env}


def default_log_dir(home: HomeConfig | None = None) -> Path:
    """``MMR1_HOME/logs``: where child processes write their logs."""
    return (home or HomeConfig()).root / "logs"


# --------------------------------------------------------------------------- Prefect


@dataclass(frozen=True)
class PrefectServer:
    """A running ``prefect server start``."""

    host: str
    port: int
    process: ManagedProcess
    startup_s: float

    @property
    def url(self) -> str:
        """The UI, as a local browser reaches it."""
        return f"http://{client_host(self.host)}:{self.port}"

    @property
    def api_url(self) -> str:
        """What ``PREFECT_API_URL`` must be for every client of this server."""
        return f"{self.url}/api"


@contextmanager
def prefect_server(
    *,
    log_dir: Path,
    host: str = LOOPBACK,
    port: int | None = None,
    prefect_home: Path | None = None,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 90.0,
    stop_grace: float = 10.0,
) -> Iterator[PrefectServer]:
    """Run a Prefect server (API + UI) until the block exits; stopped even on error.

    ``port`` None or 0 picks a free port. ``prefect_home`` holds its SQLite
    database (default: ``PREFECT_HOME`` or ``~/.prefect``).
    """
    port = resolve_port(host, port, "prefect server", "--prefect-port")
    api_url = f"http://{client_host(host)}:{port}/api"
    child_env = prefect_env(
        api_url,
        prefect_home=prefect_home,
        extra={
            # Without these the UI keeps calling the API on the default port 4200.
            "PREFECT_SERVER_API_HOST": host,
            "PREFECT_SERVER_API_PORT": str(port),
            **(env or {}),
        },
    )
    child_env.update(server_settings(child_env))
    args = [*cli_command("prefect"), "server", "start", "--host", host, "--port", str(port)]
    process = ManagedProcess.start(
        "prefect server", args, env=child_env, log_path=log_dir / "prefect-server.log"
    )
    try:
        waited = wait_for_http(
            f"{api_url}/health",
            timeout=startup_timeout,
            process=process,
            ready=lambda response: response.json() is True,
        )
        yield PrefectServer(host, port, process, waited)
    finally:
        process.stop(stop_grace)


def ensure_work_pool(
    api_url: str,
    pool: str = DEFAULT_POOL,
    *,
    log_dir: Path,
    pool_type: str = "process",
    env: Mapping[str, str] | None = None,
) -> bool:
    """Create the work pool if it does not exist; return whether it was created.

    An existing pool of another type is an error (its workers could not run our flows).
    """
    with api_client(api_url) as client:
        response = request(client, "GET", f"work_pools/{pool}")
    if response.status_code == 200:
        existing = response.json().get("type")
        if existing != pool_type:
            raise ServiceError(
                f"work pool {pool!r} exists with type {existing!r}, expected {pool_type!r}"
            )
        return False
    if response.status_code != 404:
        raise ServiceError(f"reading work pool {pool!r}: HTTP {response.status_code}")
    run_cli(
        "prefect work-pool create",
        [*cli_command("prefect"), "work-pool", "create", pool, "--type", pool_type],
        env=prefect_env(api_url, extra=env),
        log_path=log_dir / "prefect-cli.log",
        timeout=120,
    )
    return True


@dataclass(frozen=True)
class PrefectWorker:
    """A running ``prefect worker start`` polling one work pool."""

    name: str
    pool: str
    process: ManagedProcess
    startup_s: float


def _worker_registered(api_url: str, pool: str, name: str) -> Callable[[httpx.Response], bool]:
    def check(_: httpx.Response) -> bool:
        with api_client(api_url) as client:
            response = client.post(f"work_pools/{pool}/workers/filter", json={})
        return response.is_success and any(w.get("name") == name for w in response.json())

    return check


@contextmanager
def prefect_worker(
    api_url: str,
    pool: str = DEFAULT_POOL,
    *,
    log_dir: Path,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    query_seconds: float | None = None,
    limit: int | None = None,
    cwd: Path | None = None,
    startup_timeout: float = 60.0,
    stop_grace: float = 10.0,
) -> Iterator[PrefectWorker]:
    """Run a process worker on ``pool`` (created if missing) until the block exits.

    The worker, and every flow run it starts, inherits ``os.environ`` plus ``env``:
    put ``MMR1_HOME`` and offline switches there. ``query_seconds`` sets how often
    it polls for runs (Prefect's default is 10 s; 1 s suits tests). It counts as
    started once it has registered with the server.
    """
    ensure_work_pool(api_url, pool, log_dir=log_dir, env=env)
    name = name or f"mmr1-worker-{os.getpid()}-{time.monotonic_ns() % 100_000}"
    extra = dict(env or {})
    if query_seconds is not None:
        extra["PREFECT_WORKER_QUERY_SECONDS"] = str(query_seconds)
    args = [
        *cli_command("prefect"),
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--name",
        name,
    ]
    if limit is not None:
        args += ["--limit", str(limit)]
    process = ManagedProcess.start(
        "prefect worker",
        args,
        env=prefect_env(api_url, extra=extra),
        log_path=log_dir / "prefect-worker.log",
        cwd=cwd,
    )
    try:
        waited = wait_for_http(
            f"{api_url}/health",
            timeout=startup_timeout,
            process=process,
            ready=_worker_registered(api_url, pool, name),
            interval=0.5,
        )
        yield PrefectWorker(name, pool, process, waited)
    finally:
        process.stop(stop_grace)


# --------------------------------------------------------------------------- the stack


@dataclass
class LocalStack:
    """What :func:`local_stack` started."""

    prefect: PrefectServer
    log_dir: Path
    worker: PrefectWorker | None = None
    mlflow: MlflowServer | None = None
    deployments: list[str] = field(default_factory=list)

    def processes(self) -> list[ManagedProcess]:
        services = (self.prefect, self.worker, self.mlflow)
        return [s.process for s in services if s is not None]

    def summary(self) -> str:
        """What a user needs to use the stack: URLs, the variable to export, logs."""
        lines = [
            f"Prefect UI      {self.prefect.url}",
            f"Prefect API     {self.prefect.api_url}",
        ]
        if self.mlflow is not None:
            from mmr1.tracking.runs import MODEL_TRAINING_VIEW  # MLflow's client: import late

            store = self.mlflow.backend_store_uri
            # Opens the "Model training" view (MLflow 3.17 opens its GenAI view otherwise).
            view = f"{self.mlflow.url}/#/experiments?{MODEL_TRAINING_VIEW}"
            lines.append(f"MLflow UI       {view}  (store {store})")
        if self.worker is not None:
            lines.append(f"Worker          {self.worker.name} on pool {self.worker.pool}")
        lines.append(f"Logs            {self.log_dir}")
        if self.deployments:
            lines.append("Deployments     " + ", ".join(self.deployments))
        lines += ["", "In another shell:", f"  export PREFECT_API_URL={self.prefect.api_url}"]
        if self.deployments:
            demos = [d for d in self.deployments if d.endswith("/demo")]
            example = (demos or self.deployments)[0]
            lines.append(f"  prefect deployment run '{example}' --watch")
        return "\n".join(lines)


@contextmanager
def local_stack(
    *,
    host: str = LOOPBACK,
    prefect_port: int | None = DEFAULT_PREFECT_PORT,
    mlflow_port: int | None = DEFAULT_MLFLOW_PORT,
    pool: str = DEFAULT_POOL,
    deploy_names: Sequence[str] | None = None,
    register: bool = True,
    with_worker: bool = True,
    with_mlflow: bool = True,
    home: HomeConfig | None = None,
    prefect_home: Path | None = None,
    log_dir: Path | None = None,
    project_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    worker_query_seconds: float | None = None,
) -> Iterator[LocalStack]:
    """Prefect server, (MLflow server,) work pool, deployments, worker; all stopped on exit.

    ``env`` goes to the worker and so to every flow run (plus ``MMR1_HOME`` of
    ``home`` when given, and ``MMR1_MLFLOW_UI_URL`` when the MLflow server runs).
    ``register`` False skips ``prefect deploy``; ``deploy_names`` limits it to some
    deployments.
    """
    home = home or HomeConfig()
    log_dir = log_dir or default_log_dir(home)
    run_env = {"MMR1_HOME": str(home.root), **(env or {})}
    if prefect_home is not None:
        run_env["PREFECT_HOME"] = str(prefect_home)
    with ExitStack() as stack:
        prefect = stack.enter_context(
            prefect_server(host=host, port=prefect_port, prefect_home=prefect_home, log_dir=log_dir)
        )
        services = LocalStack(prefect=prefect, log_dir=log_dir)
        if with_mlflow:
            services.mlflow = stack.enter_context(
                mlflow_server(home, host=host, port=mlflow_port, log_dir=log_dir)
            )
            # Flow runs keep logging to the store directly; this only tells them where
            # its UI is, so they can tag their Prefect run with the MLflow run's page.
            run_env.setdefault("MMR1_MLFLOW_UI_URL", services.mlflow.url)
        ensure_work_pool(prefect.api_url, pool, log_dir=log_dir, env=run_env)
        if register:
            services.deployments = deploy(
                prefect.api_url,
                log_dir=log_dir,
                names=deploy_names,
                project_dir=project_dir,
                env=run_env,
            )
        if with_worker:
            services.worker = stack.enter_context(
                prefect_worker(
                    prefect.api_url,
                    pool,
                    log_dir=log_dir,
                    env=run_env,
                    query_seconds=worker_query_seconds,
                    cwd=(project_dir or PROJECT_ROOT).resolve(),
                )
            )
        yield services


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(
    host: str = LOOPBACK,
    prefect_port: int = DEFAULT_PREFECT_PORT,
    mlflow_port: int = DEFAULT_MLFLOW_PORT,
    pool: str = DEFAULT_POOL,
    deploy: bool = True,
    with_mlflow: bool = True,
    *,
    with_worker: bool = True,
    deployments: Sequence[str] | None = None,
    prefect_home: Path | None = None,
    log_dir: Path | None = None,
    project_dir: Path | None = None,
    print_fn: Callable[[str], None] = print,
) -> None:
    """Start the local stack, print how to use it, block until Ctrl-C (or SIGTERM).

    Prefect server (UI + API) on ``prefect_port``, MLflow server over the home's
    store on ``mlflow_port`` (if ``with_mlflow``), the process pool ``pool``,
    the deployments of ``deployments/prefect.yaml`` (if ``deploy``; only
    ``deployments`` when given) and a worker (if ``with_worker``). Ports 0 pick
    free ones; a busy port fails before anything starts. If a child dies,
    everything is stopped and :class:`ServiceError` names it with the tail of
    its log; the caller should print that message, not a traceback.

    ``host="0.0.0.0"`` exposes servers that have no authentication; remote
    browsers also need ``PREFECT_UI_API_URL`` set to the API's external URL.
    """
    home = HomeConfig().ensure()
    log_dir = log_dir or default_log_dir(home)
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (systemd, docker stop) must unwind like Ctrl-C so children are stopped.
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    started = time.monotonic()
    try:
        print_fn(f"mmr1 serve: home {home.root}, logs {log_dir}")
        with local_stack(
            host=host,
            prefect_port=prefect_port,
            mlflow_port=mlflow_port,
            pool=pool,
            deploy_names=deployments,
            register=deploy,
            with_worker=with_worker,
            with_mlflow=with_mlflow,
            home=home,
            prefect_home=prefect_home,
            log_dir=log_dir,
            project_dir=project_dir,
        ) as services:
            print_fn(f"ready in {time.monotonic() - started:.1f} s\n\n{services.summary()}")
            print_fn("\nPress Ctrl-C to stop.")
            while True:
                for process in services.processes():
                    if not process.running():
                        raise ServiceError(
                            f"{process.name} exited with code {process.process.returncode}; "
                            f"log {process.log_path}:\n{process.tail()}"
                        )
                time.sleep(1.0)
    except KeyboardInterrupt:
        print_fn("\nstopping...")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print_fn("stopped")
