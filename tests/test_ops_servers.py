"""ops: child processes (ports, readiness, cleanup), driven through fake servers (small
Python scripts) on the same code paths as the real stack; the real ``prefect server``,
worker and ``mlflow server`` are in test_ops_servers_e2e.py (slow).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ops import deployments, processes, servers
from ops.processes import (
    ManagedProcess,
    ServiceError,
    free_port,
    port_in_use,
    resolve_port,
    wait_for_http,
)
from schemas.home import HomeConfig

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for `prefect server start --host H --port P`: answers `true` on
# /api/health (or crashes / never answers, as told by FAKE_MODE) and writes its
# pid, so a test can check it is gone afterwards.
FAKE_SERVER = r"""
import http.server, os, sys, time
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
open(os.environ["FAKE_PID_FILE"], "w").write(str(os.getpid()))
mode = os.environ.get("FAKE_MODE", "ok")
print("fake server starting", flush=True)
if mode == "crash":
    print("boom: the database is locked", flush=True)
    sys.exit(3)
if mode == "hang":
    time.sleep(600)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"true")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _fake_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str) -> Path:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    pid_file = tmp_path / "fake.pid"
    monkeypatch.setattr(servers, "cli_command", lambda tool: [sys.executable, str(script)])
    monkeypatch.setenv("FAKE_PID_FILE", str(pid_file))
    monkeypatch.setenv("FAKE_MODE", mode)
    return pid_file


# --------------------------------------------------------------------------- fast


def test_free_port_is_free_and_busy_ports_are_refused() -> None:
    port = free_port()
    assert 1024 < port < 65536
    assert not port_in_use("127.0.0.1", port)
    assert resolve_port("127.0.0.1", 0, "x", "--port") != 0
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert port_in_use("127.0.0.1", port)
        with pytest.raises(ServiceError, match=f"port {port} .* already in use.*--prefect-port"):
            resolve_port("127.0.0.1", port, "prefect server", "--prefect-port")


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    # A parent that ignores SIGTERM (like a Prefect worker) with a child in its group
    # and one in a session of its own (like the worker's flow runs), which ignores
    # SIGTERM too.
    sleeper = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "cmd = [sys.executable, '-c', sys.argv[1]]\n"
        "child = subprocess.Popen(cmd)\n"
        "run = subprocess.Popen(cmd, start_new_session=True)\n"
        "print('children', child.pid, run.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    log = tmp_path / "logs" / "stubborn.log"
    process = ManagedProcess.start(
        "stubborn", [sys.executable, "-c", code, sleeper], env=dict(os.environ), log_path=log
    )
    deadline = time.monotonic() + 120  # generous: interpreter start-up on a loaded machine
    while "children" not in process.tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(p) for p in re.search(r"children (\d+) (\d+)", process.tail()).groups()]
    assert os.getpgid(pids[1]) != process.pid
    started = time.monotonic()
    process.stop(grace=0.5)
    # It did not wait for the children's 600 s sleep (bound loose enough for a busy machine).
    assert time.monotonic() - started < 120
    assert not process.running()
    deadline = time.monotonic() + 120
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # orphans are reaped by init
    assert all(_gone(pid) for pid in pids)
    assert process.stop(grace=0.5) is not None  # idempotent
    # A second start appends to the same log under a new header.
    again = ManagedProcess.start(
        "stubborn", [sys.executable, "-c", "print('second')"], env=dict(os.environ), log_path=log
    )
    again.process.wait(10)
    text = log.read_text()
    assert text.count("===== ") == 2 and "child" in text and "second" in text
    assert again.tail() == "second"


def test_wait_for_http_reports_exit_and_timeout_with_the_log_tail(tmp_path: Path) -> None:
    crashed = ManagedProcess.start(
        "crasher",
        [sys.executable, "-c", "print('cannot open database'); raise SystemExit(4)"],
        env=dict(os.environ),
        log_path=tmp_path / "crasher.log",
    )
    url = f"http://127.0.0.1:{free_port()}/health"
    with pytest.raises(ServiceError, match=r"(?s)crasher exited with code 4.*cannot open database"):
        wait_for_http(url, timeout=30, process=crashed)
    started = time.monotonic()
    with pytest.raises(ServiceError, match=r"not ready after 1 s \(ConnectError"):
        wait_for_http(url, timeout=1)
    assert time.monotonic() - started < 120  # gave up; did not hang


def test_server_context_waits_for_health_and_stops_on_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pid_file = _fake_cli(monkeypatch, tmp_path, "ok")
    with pytest.raises(RuntimeError, match="failure inside the block"):
        with servers.prefect_server(log_dir=tmp_path / "logs", port=0) as server:
            assert server.api_url == f"http://127.0.0.1:{server.port}/api"
            assert httpx.get(f"{server.api_url}/health").text == "true"
            raise RuntimeError("failure inside the block")
    assert _gone(int(pid_file.read_text()))
    assert "fake server starting" in (tmp_path / "logs" / "prefect-server.log").read_text()


def test_server_that_crashes_or_hangs_fails_clearly_and_is_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pid_file = _fake_cli(monkeypatch, tmp_path, "crash")
    with pytest.raises(ServiceError, match=r"(?s)exited with code 3.*database is locked"):
        with servers.prefect_server(log_dir=tmp_path / "logs", port=0):
            pytest.fail("must not get here")
    pid_file = _fake_cli(monkeypatch, tmp_path, "hang")
    with pytest.raises(ServiceError, match=r"(?s)not ready after 1 s.*fake server starting"):
        with servers.prefect_server(log_dir=tmp_path / "logs", port=0, startup_timeout=1):
            pytest.fail("must not get here")
    assert _gone(int(pid_file.read_text()))


@contextmanager
def _fake_stack(tmp_path: Path, code: str, **_: object) -> Iterator[servers.LocalStack]:
    process = ManagedProcess.start(
        "prefect server",
        [sys.executable, "-c", code],
        env=dict(os.environ),
        log_path=tmp_path / "fake.log",
    )
    try:
        server = servers.PrefectServer("127.0.0.1", 4999, process, 0.0)
        yield servers.LocalStack(prefect=server, log_dir=tmp_path, deployments=["f/demo"])
    finally:
        process.stop(grace=1)


def test_serve_stops_on_sigterm_and_reports_a_dead_child(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home
) -> None:
    printed: list[str] = []
    sleeper = "import time; time.sleep(600)"
    monkeypatch.setattr(servers, "local_stack", lambda **kw: _fake_stack(tmp_path, sleeper))
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    before = signal.getsignal(signal.SIGTERM)
    servers.serve(print_fn=printed.append)
    timer.join()
    assert signal.getsignal(signal.SIGTERM) is before
    text = "\n".join(printed)
    assert "export PREFECT_API_URL=http://127.0.0.1:4999/api" in text
    assert "prefect deployment run 'f/demo' --watch" in text
    assert printed[-1] == "stopped"

    crasher = "print('database is locked'); raise SystemExit(2)"
    monkeypatch.setattr(servers, "local_stack", lambda **kw: _fake_stack(tmp_path, crasher))
    with pytest.raises(ServiceError, match=r"(?s)prefect server exited with code 2.*locked"):
        servers.serve(print_fn=printed.append)


def test_sqlite_settings_apply_to_a_sqlite_server_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from ops.prefect_api import prefect_env

    everywhere, sqlite = servers.SERVER_SETTINGS, servers.SQLITE_SERVER_SETTINGS
    assert everywhere["PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED"] == "true"  # --watch shows logs
    assert servers.server_settings({}) == {**everywhere, **sqlite}
    assert servers.server_settings({"PREFECT_SERVER_DATABASE_TIMEOUT": "5"}) == {
        k: v for k, v in {**everywhere, **sqlite}.items() if k != "PREFECT_SERVER_DATABASE_TIMEOUT"
    }
    postgres = {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://u:p@db:5432/prefect"
    }
    assert not servers.uses_sqlite(postgres) and servers.server_settings(postgres) == everywhere
    assert servers.uses_sqlite({"PREFECT_API_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:///x.db"})
    # Every client the stack starts retries a busy server's 503s longer; an explicit
    # setting wins.
    monkeypatch.delenv("PREFECT_CLIENT_MAX_RETRIES", raising=False)
    assert prefect_env("http://127.0.0.1:9/api")["PREFECT_CLIENT_MAX_RETRIES"] == "10"
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "3")
    assert prefect_env("http://127.0.0.1:9/api")["PREFECT_CLIENT_MAX_RETRIES"] == "3"


def test_mlflow_server_refuses_a_remote_tracking_uri(tmp_path: Path) -> None:
    home = HomeConfig(root=tmp_path / "home", mlflow_tracking_uri="http://mlflow.example:5000")
    with pytest.raises(ServiceError, match="not a database or file store"):
        with servers.mlflow_server(home, log_dir=tmp_path / "logs", port=0):
            pytest.fail("must not get here")


def test_deploy_needs_the_prefect_file(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="deployments/prefect.yaml"):
        deployments.deploy("http://127.0.0.1:9/api", log_dir=tmp_path, project_dir=tmp_path)


def test_library_modules_do_not_import_prefect() -> None:
    code = "import sys, ops; assert 'prefect' not in sys.modules, 'prefect imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert processes.cli_command("prefect")[:2] == [sys.executable, "-m"]
