"""Prefect's SQLite server under concurrent clients: Prefect defaults vs `mmr1 serve` settings.

    .venv/bin/python bench/bench_prefect_server.py                 # ~3-4 min on 2 cores
    .venv/bin/python bench/bench_prefect_server.py --clients 16 --seconds 60

For each variant a fresh ``prefect server`` (its own PREFECT_HOME, so its own
SQLite file) is started through :func:`ops.prefect_server`, then
``--clients`` threads drive the REST API for ``--seconds`` seconds the way
flow runs do: create a flow run, move it to Running, create a task run and
move it through Running to Completed, post a batch of 20 log lines, complete
the flow run. Clients do **not** retry, so every lock conflict the server
answers with HTTP 503 is counted; ``PREFECT_SERVER_LOG_RETRYABLE_ERRORS=true``
makes the server log them too ("database is locked" lines). Variants:

- ``prefect-defaults``: Prefect 3.9's own values for the settings below;
- ``mmr1-serve``: :data:`ops.servers.SQLITE_SERVER_SETTINGS`.

Prints one line per variant (requests/s, 503s, lock lines in the server log);
``--json PATH`` writes them. Numbers depend on the machine's load: compare
variants of one invocation only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.servers import SQLITE_SERVER_SETTINGS, prefect_server  # noqa: E402

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_DATABASE_TIMEOUT": "10",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "20",
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _state(kind: str) -> dict:
    return {"state": {"type": kind, "name": kind.title()}, "force": True}


def _client_loop(api: str, flow_id: str, stop: float, counts: Counter, lock: threading.Lock):
    local: Counter = Counter()
    with httpx.Client(base_url=api + "/", timeout=120.0, trust_env=False) as http:

        def call(method: str, url: str, body: object) -> dict | list | None:
            try:
                response = http.request(method, url, json=body)
            except httpx.TransportError:  # the server dropped the connection
                local["transport"] += 1
                return None
            local[response.status_code] += 1
            return response.json() if response.is_success and response.content else None

        while time.monotonic() < stop:
            run = call("POST", "flow_runs/", {"flow_id": flow_id, "name": uuid.uuid4().hex[:8]})
            if not isinstance(run, dict):
                continue
            call("POST", f"flow_runs/{run['id']}/set_state", _state("RUNNING"))
            task = call(
                "POST",
                "task_runs/",
                {"flow_run_id": run["id"], "task_key": "t", "dynamic_key": uuid.uuid4().hex},
            )
            if isinstance(task, dict):
                for kind in ("RUNNING", "COMPLETED"):
                    call("POST", f"task_runs/{task['id']}/set_state", _state(kind))
            logs = [
                {
                    "name": "bench",
                    "level": 20,
                    "message": f"line {i}",
                    "timestamp": _now(),
                    "flow_run_id": run["id"],
                }
                for i in range(20)
            ]
            call("POST", "logs/", logs)
            call("POST", f"flow_runs/{run['id']}/set_state", _state("COMPLETED"))
    with lock:
        counts.update(local)


def run_variant(name: str, settings: dict[str, str], clients: int, seconds: float, root: Path):
    env = {**settings, "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true"}
    log_dir = root / name
    with prefect_server(log_dir=log_dir, port=0, prefect_home=root / name, env=env) as server:
        api = server.api_url
        flow = httpx.post(f"{api}/flows/", json={"name": "bench"}, timeout=60).json()
        counts: Counter = Counter()
        lock = threading.Lock()
        stop = time.monotonic() + seconds
        threads = [
            threading.Thread(target=_client_loop, args=(api, flow["id"], stop, counts, lock))
            for _ in range(clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    log = (log_dir / "prefect-server.log").read_text(errors="replace")
    total = sum(counts.values())
    return {
        "variant": name,
        "requests": total,
        "requests_per_s": round(total / elapsed, 1),
        "http_503": counts.get(503, 0),
        "other_errors": sum(
            v for k, v in counts.items() if k != "transport" and k >= 400 and k != 503
        ),
        "connection_errors": counts.get("transport", 0),
        "locked_lines_in_server_log": log.count("database is locked"),
        "settings": settings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-prefect-") as tmp:
        for name, settings in (
            ("prefect-defaults", PREFECT_DEFAULTS),
            (
                "mmr1-serve",
                {**SQLITE_SERVER_SETTINGS, "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true"},
            ),
        ):
            result = run_variant(name, settings, args.clients, args.seconds, Path(tmp))
            results.append(result)
            print(
                f"{name:17s} {result['requests']:6d} requests ({result['requests_per_s']}/s), "
                f"{result['http_503']} HTTP 503, {result['other_errors']} other errors, "
                f"{result['connection_errors']} dropped connections, "
                f"{result['locked_lines_in_server_log']} 'database is locked' in the server log",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
