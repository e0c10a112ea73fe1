"""Child processes for local services: free ports, process groups, logs, readiness.

A service runs in its own session (process group) with stdout and stderr
appended to a log file; stopping it signals the whole group, then kills what
is left after a grace period, so nothing it started outlives it. Waiting for
readiness polls an HTTP endpoint and, on failure, quotes the tail of the log.
POSIX only.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A child service failed to start, died, or a CLI call failed (message quotes its log)."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it; racy by nature, fine locally)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((client_host(host), port)) == 0


def resolve_port(host: str, port: int | None, what: str, flag: str) -> int:
    """``None`` or 0 picks a free port; a busy explicit port fails before anything starts."""
    if not port:
        return free_port(client_host(host))
    if port_in_use(host, port):
        raise ServiceError(
            f"{what}: port {port} on {host} is already in use (another server running?); "
            f"stop it or pass a different {flag} (0 picks a free port)"
        )
    return port


def client_host(host: str) -> str:
    """Where local clients reach a server bound to ``host`` (0.0.0.0 is not an address)."""
    return LOOPBACK if host in ("0.0.0.0", "", "::") else host


def cli_command(tool: Literal["prefect", "mlflow"]) -> list[str]:
    """The command line prefix of a tool in the caller's environment."""
    return [sys.executable, "-m", tool]


def log_tail(path: Path, lines: int = 40, *, since: int = 0) -> str:
    """The last ``lines`` lines of a log file written after byte offset ``since``."""
    try:
        with path.open("rb") as handle:
            handle.seek(since)
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


@dataclass
class ManagedProcess:
    """A child process in its own process group, logging to a file.

    Use :meth:`start`, then :meth:`stop` (idempotent) in a ``finally``.
    """

    name: str
    args: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int
    started_at: float = field(default_factory=time.monotonic)

    @classmethod
    def start(
        cls,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """Start ``args`` with stdout and stderr appended to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            stamp = datetime.now().isoformat(timespec="seconds")
            log.write(f"\n===== {stamp} {name}: {shlex.join(args)}\n".encode())
            log.flush()
            offset = log.tell()
            process = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                # Own session: Ctrl-C in the terminal reaches only us, and we stop
                # the children in order; stop() can signal the whole group.
                start_new_session=True,
            )
        return cls(name, list(args), process, log_path, offset)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        """This run's last log lines."""
        return log_tail(self.log_path, lines, since=self.log_offset)

    def stop(self, grace: float = 10.0) -> int | None:
        """Stop the process, its group and its descendants; return the leader's exit code.

        SIGTERM first, SIGKILL for whatever is left after ``grace`` seconds.
        Descendants that left the group are found before any signal and stopped
        too: a Prefect process worker starts each flow run in a session of its
        own, and a run must not outlive its worker. Safe to call more than once.
        """
        pgid = self.process.pid  # leader of its own session, so pgid == pid
        strays = _descendants_outside_group(pgid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _signal_group(pgid, sig)
            _signal_processes(strays, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self._anything_left(pgid, strays):
                self.process.poll()  # reap the leader so the group can empty
                time.sleep(0.1)
            if not self._anything_left(pgid, strays):
                break
        try:
            return self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:  # pragma: no cover - only if SIGKILL failed
            return None

    @staticmethod
    def _anything_left(pgid: int, strays: list[Any]) -> bool:
        return _signal_group(pgid, 0) or any(_alive(p) for p in strays)


def _descendants_outside_group(pgid: int) -> list[Any]:
    """Descendants of ``pgid``'s leader in other process groups (psutil ``Process`` objects).

    psutil comes with accelerate (a core dependency); without it, only the
    group is stopped.
    """
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return []
    try:
        children = psutil.Process(pgid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    strays = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            if os.getpgid(child.pid) != pgid:
                strays.append(child)
    return strays


def _signal_processes(processes: list[Any], sig: int) -> None:
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.send_signal(sig)


def _alive(process: Any) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group (0: only test that it exists); False if it is gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_for_http(
    url: str,
    *,
    timeout: float,
    process: ManagedProcess | None = None,
    ready: Callable[[httpx.Response], bool] | None = None,
    interval: float = 0.2,
) -> float:
    """Poll ``url`` until it answers 2xx (and ``ready(response)``); return the seconds waited.

    Raises :class:`ServiceError`, quoting the tail of ``process``'s log, when the
    process exits first or ``timeout`` passes.
    """
    start = time.monotonic()
    last_error = "no answer yet"
    what = process.name if process else url
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            if process is not None and not process.running():
                raise ServiceError(
                    f"{what} exited with code {process.process.returncode} before {url} "
                    f"answered; log {process.log_path}:\n{process.tail()}"
                )
            try:
                response = client.get(url)
                if response.is_success and (ready is None or ready(response)):
                    return time.monotonic() - start
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            except (httpx.HTTPError, ValueError) as exc:  # ValueError: a body that is not JSON
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() - start > timeout:
                log = f"; log {process.log_path}:\n{process.tail()}" if process else ""
                raise ServiceError(
                    f"{what}: {url} not ready after {timeout:.0f} s ({last_error}){log}"
                )
            time.sleep(interval)


def run_cli(
    name: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
    timeout: float = 600.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a short CLI call, append its output to ``log_path``; raise on failure if ``check``."""
    stamp = datetime.now().isoformat(timespec="seconds")
    completed = subprocess.run(
        list(args),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"\n===== {stamp} {name}: {shlex.join(args)} (exit {completed.returncode})\n")
        log.write(completed.stdout)
    if check and completed.returncode != 0:
        tail = "\n".join(completed.stdout.splitlines()[-40:])
        raise ServiceError(
            f"{name} failed with exit code {completed.returncode}: {shlex.join(args)}\n{tail}"
        )
    return completed
