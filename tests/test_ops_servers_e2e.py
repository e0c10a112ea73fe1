"""ops, end to end: the real local stack (``prefect server``, a process worker, ``mlflow
server``) running a flow through the ``prefect`` CLI. The fast tests of the same code paths,
on fake servers, are in test_ops_servers.py."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from ops import deployments, servers
from ops.processes import (
    ManagedProcess,
    port_in_use,
)
from schemas.home import HomeConfig

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _curate_params(model: Path) -> dict:
    """A tiny curate_rl: 24 synthetic items, 2 rollouts of 8 tokens by the tiny model."""
    return {
        "config": {
            "output_name": "ops-rl",
            "sources": [{"kind": "synthetic", "name": "syn", "synthetic": {"n_items": 24}}],
            "difficulty": {
                "model": str(model),
                "rollouts": 2,
                "sampling": {"temperature": 1.0, "max_new_tokens": 8},
                "keep": ["easy", "medium", "hard"],
                "balance_by": [],
                "shard_size": 12,
            },
        }
    }


# Each flow run may take its full watch timeout on a slow machine; the stack's start-up
# and the deploy come on top. The test's own clear errors (with the worker's log) must
# fire before pytest's timeout would kill it.
WATCH_TIMEOUT_S = 420
STACK_BUDGET_S = 300  # server + worker start-up, prefect deploy, inspect, teardown


def _prefect_cli(api_url: str, prefect_home: Path, *args: str) -> str:
    """Stdout of ``prefect ARGS`` against the test's server (fails the test on an error)."""
    env = {**os.environ, **OFFLINE, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(prefect_home)}
    command = [sys.executable, "-m", "prefect", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _scheduled_runs(api_url: str, deployment_id: str, timeout: float = 120) -> list[dict]:
    """The SCHEDULED flow runs of a deployment, once the server's scheduler has made some."""
    deadline = time.monotonic() + timeout
    query = {
        "flow_runs": {
            "deployment_id": {"any_": [deployment_id]},
            "state": {"type": {"any_": ["SCHEDULED"]}},
        },
        "sort": "EXPECTED_START_TIME_ASC",
        "limit": 10,
    }
    while True:
        response = httpx.post(f"{api_url}/flow_runs/filter", json=query, timeout=30)
        response.raise_for_status()
        if response.json() or time.monotonic() > deadline:
            return response.json()
        time.sleep(1.0)


def _flow_run_logs(api_url: str, flow_run_id: str, *, tasks: bool = True) -> list[str]:
    """Log messages of the flow run, oldest first (``tasks`` False: the flow's own only)."""
    query = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC"}
    response = httpx.post(f"{api_url}/logs/filter", json={**query, "limit": 200}, timeout=30)
    response.raise_for_status()
    return [log["message"] for log in response.json() if tasks or not log["task_run_id"]]


T = TypeVar("T")


def _poll(probe: Callable[[], T | None], failure: Callable[[], str], interval: float) -> T:
    """``probe()``'s first value that is not None, tried every ``interval`` seconds;
    fails with ``failure()`` after :data:`WATCH_TIMEOUT_S` (no wall-clock budget below that)."""
    deadline = time.monotonic() + WATCH_TIMEOUT_S
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(failure())
        time.sleep(interval)


def _flow_run_id(cli_output: str) -> str:
    """The flow run id that ``prefect deployment run`` printed."""
    return re.search(r"UUID: ([0-9a-f-]{36})", cli_output).group(1)


def _wait_for_log(api_url: str, flow_run_id: str, match, worker: ManagedProcess) -> str:
    """The first log line of the flow run that ``match`` accepts, once it has been written."""
    return _poll(
        lambda: next((m for m in _flow_run_logs(api_url, flow_run_id) if match(m)), None),
        lambda: (
            "no such log line; the run's log:\n"
            + "\n".join(_flow_run_logs(api_url, flow_run_id))
            + f"\n--- worker:\n{worker.tail(120)}"
        ),
        interval=1.0,
    )


def _wait_for_process_exit(api_url: str, flow_run_id: str, worker: ManagedProcess) -> None:
    """Return once the process that the worker started for the flow run has exited."""
    response = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=30)
    response.raise_for_status()
    pid = int(str(response.json()["infrastructure_pid"]).rsplit(":", 1)[-1])

    def exited() -> bool | None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return None

    _poll(exited, lambda: f"flow run process {pid} still alive; worker:\n{worker.tail(120)}", 0.5)


def _wait_for_final_state(api_url: str, flow_run_id: str) -> dict:
    final_types = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

    def state() -> dict:
        response = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=30)
        response.raise_for_status()
        return response.json()["state"]

    def final() -> dict | None:
        current = state()
        return current if current["type"] in final_types else None

    return _poll(final, lambda: f"flow run {flow_run_id} not finished: {state()}", 0.5)


@pytest.mark.slow
@pytest.mark.timeout(4 * WATCH_TIMEOUT_S + STACK_BUDGET_S)
def test_curate_rl_runs_on_a_real_server_and_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from mmr1.catalog import Catalog
    from mmr1.hashing import hash_directory
    from mmr1.models import build_tiny_model
    from mmr1.tracking import find_runs
    from schemas.models import TinyVLMConfig
    from schemas.presets import load_config
    from schemas.vas import VPSEstimateConfig
    from tasks.parameters import stage_config

    # The server's scheduler makes scheduled runs within a second (default: every 60 s).
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "1")
    home = HomeConfig(root=tmp_path / "home").ensure()
    model = build_tiny_model(TinyVLMConfig(), tmp_path / "tiny-model")
    log_dir = tmp_path / "logs"
    timings: dict[str, float] = {}
    started = time.monotonic()
    with servers.local_stack(
        prefect_port=0,
        mlflow_port=0,
        deploy_names=["curate_rl", "estimate_vps", "scheduled"],
        home=home,
        prefect_home=tmp_path / "prefect",
        log_dir=log_dir,
        env=OFFLINE,
        worker_query_seconds=1,
    ) as stack:
        timings["stack up"] = time.monotonic() - started
        timings["prefect server"] = stack.prefect.startup_s
        assert stack.worker is not None
        timings["worker"] = stack.worker.startup_s
        # Prefect keeps its SQLite database in WAL mode (readers never block the writer).
        with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as database:
            assert database.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert "curate_rl/curate_rl" in stack.deployments
        run_started = time.monotonic()
        result = deployments.run_deployment(
            "curate_rl/curate_rl",
            stack.prefect.api_url,
            log_dir=log_dir,
            params=_curate_params(model),
            watch_timeout=WATCH_TIMEOUT_S,
            env={"PREFECT_HOME": str(tmp_path / "prefect")},
            check=False,
        )
        timings["flow run"] = time.monotonic() - run_started
        worker_log = stack.worker.process.tail(60)
        assert result.returncode == 0, f"{result.stdout}\n--- worker log:\n{worker_log}"
        assert "Completed" in result.stdout
        # With the MLflow server up, the flow run links its MLflow run's page by a tag.
        assert stack.mlflow is not None
        flow_run_id = _flow_run_id(result.stdout)
        flow_run = httpx.get(f"{stack.prefect.api_url}/flow_runs/{flow_run_id}", timeout=30)
        flow_run.raise_for_status()
        url_tags = [t for t in flow_run.json()["tags"] if t.startswith("mlflow-url:")]
        assert url_tags and url_tags[0].startswith(f"mlflow-url:{stack.mlflow.url}/#/experiments/")
        assert url_tags[0].endswith("?workflowType=machine_learning")  # the training view
        # Scheduled re-estimation with the GRPO policy survives toggling its schedule
        # with the CLI (Prefect 3.9 resets a schedule's own parameters on each update).
        api, prefect_home = stack.prefect.api_url, tmp_path / "prefect"
        listed = _prefect_cli(
            api,
            prefect_home,
            "deployment",
            "schedule",
            "ls",
            "estimate_vps/scheduled",
            "-o",
            "json",
        )
        [schedule] = json.loads(listed)
        assert schedule["active"] is False and schedule["schedule"] == "cron: 0 */6 * * *"
        for action in ("resume", "pause", "resume"):
            _prefect_cli(
                api,
                prefect_home,
                "deployment",
                "schedule",
                action,
                "estimate_vps/scheduled",
                schedule["id"],
            )
        deployed = json.loads(
            _prefect_cli(
                api, prefect_home, "deployment", "inspect", "estimate_vps/scheduled", "-o", "json"
            )
        )
        [toggled] = deployed["schedules"]
        assert toggled["active"] is True and not toggled["parameters"]
        upcoming = _scheduled_runs(api, deployed["id"])
        assert upcoming, "the scheduler made no run for the resumed schedule"
        policy_config = load_config(VPSEstimateConfig, "vps-demo", {"checkpoint": "tiny-grpo"})
        for run in upcoming:
            params = run["parameters"]
            resolved = stage_config(
                VPSEstimateConfig,
                params.get("config"),
                params.get("preset"),
                params.get("overrides"),
            )
            assert resolved.checkpoint == "tiny-grpo", params
            assert resolved == policy_config
        # Paused again (which deletes its scheduled runs), so that a 6-hourly run cannot
        # fall due, and reach the worker, during the rest of the test.
        _prefect_cli(
            api,
            prefect_home,
            "deployment",
            "schedule",
            "pause",
            "estimate_vps/scheduled",
            schedule["id"],
        )
        assert not _scheduled_runs(api, deployed["id"], timeout=0)
        # Runs by hand keep the SFT model of the estimate_vps deployment's preset.
        manual = json.loads(
            _prefect_cli(
                api,
                prefect_home,
                "deployment",
                "inspect",
                "estimate_vps/estimate_vps",
                "-o",
                "json",
            )
        )
        assert manual["parameters"]["config"]["checkpoint"] == "tiny-sft"
        assert not manual["schedules"]
        policy = Catalog(home.catalog)
        for seed in (0, 1):
            directory = build_tiny_model(TinyVLMConfig(seed=seed), tmp_path / f"policy-{seed}")
            policy.register_checkpoint(
                name="ops-policy",
                stage="rl",
                uri=str(directory),
                content_hash=hash_directory(directory),
            )
        # A partial override: the deployment's preset (vps-demo) keeps its other values.
        vps_run_overrides = {
            "dataset": "ops-rl",
            "checkpoint": "ops-policy",
            "rollouts": 2,
            "rewards.num_workers": 0,
        }
        vps_run = deployments.run_deployment(
            "estimate_vps/estimate_vps",
            stack.prefect.api_url,
            log_dir=log_dir,
            params={"overrides": vps_run_overrides},
            watch_timeout=WATCH_TIMEOUT_S,
            env={"PREFECT_HOME": str(tmp_path / "prefect")},
            check=False,
        )
        assert vps_run.returncode == 0, f"{vps_run.stdout}\n{stack.worker.process.tail(60)}"
        # The watch (what a CI job prints) streams the run's log lines, not only events.
        assert "VPS: " in vps_run.stdout and "registered vps:" in vps_run.stdout
        vps_run_id = _flow_run_id(vps_run.stdout)
        # Cancelling a run: it ends Cancelled, and its log says so (not "Running()").
        long_vps = {"rollouts": 64, "sampling.max_new_tokens": 256, "restart": True}
        params = {"overrides": {**vps_run_overrides, **long_vps}}
        started = _prefect_cli(
            api,
            prefect_home,
            "deployment",
            "run",
            "estimate_vps/estimate_vps",
            "--params",
            json.dumps(params),
        )
        cancelled_id = _flow_run_id(started)
        worker = stack.worker.process
        _wait_for_log(api, cancelled_id, lambda m: m.startswith("VPS: "), worker)
        asked = time.monotonic()
        _prefect_cli(api, prefect_home, "flow-run", "cancel", cancelled_id)
        state = _wait_for_final_state(api, cancelled_id)
        timings["cancel settled"] = time.monotonic() - asked
        assert state["type"] == "CANCELLED", state
        # The flow's own last line (its task's says Crashed: aborted by the signal). Prefect
        # sends log lines in batches, the last ones as the process exits (best effort), so
        # the line is read once the run's process is gone. A flow that did not handle the
        # signal would have been killed: its MLflow run would not end KILLED (checked below).
        _wait_for_process_exit(api, cancelled_id, worker)
        finished = [
            m
            for m in _flow_run_logs(api, cancelled_id, tasks=False)
            if m.startswith("Finished in state")
        ]
        assert finished, _flow_run_logs(api, cancelled_id)
        assert finished[-1].startswith("Finished in state Cancelled"), finished
    assert not worker.running()
    assert not port_in_use("127.0.0.1", stack.prefect.port)
    print(f"\ntimings: {json.dumps({k: round(v, 1) for k, v in timings.items()})}")

    # The worker wrote to the test's home: catalog ...
    catalog = Catalog(home.catalog)
    [pool] = catalog.list_datasets(name="ops-rl")
    assert pool.kind == "rl" and pool.prefect_flow_run_id == flow_run_id
    assert pool.row_count > 0
    assert pool.row_count + sum(catalog.quarantine_summary(pool.ref).values()) == 24
    # ... and MLflow store: one finished run tagged with the Prefect flow run.
    [run] = find_runs(home, "curate_rl")
    assert run.info.status == "FINISHED"
    assert run.data.tags["mmr1.prefect_flow_run_id"] == flow_run_id
    assert run.data.params["difficulty.rollouts"] == "2"
    assert MlflowClient(home.tracking_uri).get_run(run.info.run_id).info.end_time
    table = catalog.latest_vps_table("ops-rl")
    assert table is not None
    assert (table.dataset_ref, table.checkpoint_ref) == (pool.ref, "ops-policy@2")
    # Two estimate_vps runs: the partial override, then the cancelled one (KILLED).
    by_flow_run = {
        r.data.tags.get("mmr1.prefect_flow_run_id"): r for r in find_runs(home, "estimate_vps")
    }
    cancelled, vps = by_flow_run[cancelled_id], by_flow_run[vps_run_id]
    assert (cancelled.info.status, vps.info.status) == ("KILLED", "FINISHED")
    assert vps.data.params["rollouts"] == "2"
    # vps-demo's, not the schema's (the partial override kept the preset's other values).
    from schemas.presets import load_config
    from schemas.vas import VPSEstimateConfig

    preset = load_config(VPSEstimateConfig, "vps-demo")
    assert preset.sampling.max_new_tokens != VPSEstimateConfig().sampling.max_new_tokens
    assert vps.data.params["sampling.max_new_tokens"] == str(preset.sampling.max_new_tokens)
    assert vps.data.params["sampling.temperature"] == str(preset.sampling.temperature)
    assert vps.data.params["batch_size"] == str(preset.batch_size)
    assert [d.dataset.name for d in vps.inputs.dataset_inputs] == [pool.ref]


@pytest.mark.slow  # 8-11 s measured (the server alone starts in 5-6 s)
def test_mlflow_server_shows_runs_logged_without_it(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from mmr1.tracking import start_run

    home = HomeConfig(root=tmp_path / "home").ensure()
    with start_run(home, "ops-check", run_name="before-the-server") as run:
        run.log_metrics({"accuracy": 0.5})
        run.log_text("hello", "notes/hello.txt")
    with servers.mlflow_server(home, log_dir=tmp_path / "logs", port=0) as server:
        print(f"\nmlflow server up in {server.startup_s:.1f} s")
        response = httpx.post(
            f"{server.url}/api/2.0/mlflow/experiments/search", json={"max_results": 100}
        )
        response.raise_for_status()
        experiment = next(
            e for e in response.json()["experiments"] if e["name"] == "mmr1/ops-check"
        )
        response = httpx.post(
            f"{server.url}/api/2.0/mlflow/runs/search",
            json={"experiment_ids": [experiment["experiment_id"]], "max_results": 10},
        )
        response.raise_for_status()
        [found] = response.json()["runs"]
        assert found["info"]["run_id"] == run.run_id
        assert found["info"]["status"] == "FINISHED"
        assert found["data"]["metrics"][0]["value"] == 0.5
        # The client against the http URI sees the same run and its artifacts.
        client = MlflowClient(server.url)
        assert client.get_run(run.run_id).info.run_name == "before-the-server"
        assert [a.path for a in client.list_artifacts(run.run_id, "notes")] == ["notes/hello.txt"]
        # What the UI's artifact view fetches: the server reads the file store itself.
        artifact = httpx.get(
            f"{server.url}/get-artifact",
            params={"path": "notes/hello.txt", "run_uuid": run.run_id},
        )
        assert artifact.status_code == 200 and artifact.text == "hello"
        port = server.port
    assert not port_in_use("127.0.0.1", port)
    assert not (tmp_path / "mlartifacts").exists()  # nothing written outside the home
