"""Real SIGKILLs at the moments that used to leave the catalog wrong, then a rerun:
the catalog must end as an uninterrupted run leaves it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rl_fixtures import register_pool, register_tiny

from mmr1.catalog import Catalog
from schemas.grpo import GRPOConfig

TESTS = Path(__file__).parent
ROOT = TESTS.parent

GRPO_CHILD = """
import os, signal, sys
from pathlib import Path
from mmr1.rl.grpo import run_grpo
from mmr1.rl.snapshot import CatalogHooks, snapshot
from schemas.grpo import GRPOConfig

config_path, model, pool, out, catalog_path, root, die_at = sys.argv[1:8]
config = GRPOConfig.model_validate_json(Path(config_path).read_text())
hooks = CatalogHooks(
    catalog_path=Path(catalog_path), checkpoints_root=Path(root), name="rl",
    dataset_ref="pool@1", init_ref="tiny@1",
)

def callback(step_dir, step):
    if step == int(die_at):
        snapshot(step_dir, Path(root), "rl")  # the copy is on disk...
        os.kill(os.getpid(), signal.SIGKILL)  # ...and the process dies before registering it
    hooks.register(step_dir, step)

run_grpo(config, model_path=Path(model), dataset_path=Path(pool), output_dir=Path(out),
         checkpoint_callback=callback)
"""


def _grpo_config() -> GRPOConfig:
    return GRPOConfig.model_validate(
        {
            "steps": 4,
            "prompts_per_step": 2,
            "group_size": 2,
            "micro_batch_size": 4,
            "rollout_batch_size": 2,
            "sampling": {"temperature": 1.0, "max_new_tokens": 8},
            "lr": 1e-3,
            "save_every": 2,
            "samples_every": 100,
            "torch_threads": 1,
            "rewards": {"num_workers": 0},
            "reward_function": "rl_fixtures:length_reward",
        }
    )


def _run_child(script: str, *args: str, log: Path) -> int:
    """Run ``script`` in a fresh interpreter of its own process group; its exit code.

    Output goes to ``log``, not to pipes: a child killed with SIGKILL leaves its own
    children (an embedded Prefect server) behind, holding inherited pipes open. The
    group is killed at the end, so nothing it started outlives the test.
    """
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    with log.open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = child.wait(timeout=1500)
        finally:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if code not in (0, -signal.SIGKILL):
        raise AssertionError(log.read_text()[-3000:])
    return code


def _checkpoints(catalog: Catalog) -> list[tuple[str, int, int | None, str]]:
    return [
        (e.name, e.version, e.step, e.content_hash) for e in catalog.list_checkpoints(name="rl")
    ]


@pytest.mark.timeout(1200)
def test_grpo_killed_between_snapshot_and_registration(tmp_path: Path) -> None:
    config_path = tmp_path / "grpo.json"
    config_path.write_text(_grpo_config().model_dump_json())
    log = tmp_path / "children.log"

    def home(name: str) -> tuple[Catalog, list[str]]:
        root = tmp_path / name
        catalog = Catalog(root / "catalog.duckdb")
        tiny = register_tiny(catalog, root / "tiny")
        pool = register_pool(catalog, root / "pool", n_items=6)
        args = [str(config_path), tiny.uri, pool.uri, str(root / "run"), str(catalog.path)]
        return catalog, [*args, str(root / "checkpoints")]

    straight, straight_args = home("straight")
    assert _run_child(GRPO_CHILD, *straight_args, "-1", log=log) == 0
    crashed, crashed_args = home("crashed")
    assert _run_child(GRPO_CHILD, *crashed_args, "2", log=log) == -signal.SIGKILL
    orphan = list((tmp_path / "crashed" / "checkpoints" / "rl").iterdir())
    assert len(orphan) == 1 and crashed.list_checkpoints(name="rl") == []  # copied, unregistered
    assert _run_child(GRPO_CHILD, *crashed_args, "-1", log=log) == 0
    expected = _checkpoints(straight)
    assert [(n, v, s) for n, v, s, _ in expected] == [("rl", 1, 2), ("rl", 2, 4)]
    assert _checkpoints(crashed) == expected
    assert Path(crashed.get_checkpoint("rl@1").uri) == orphan[0]  # the orphan is the entry


EVAL_CHILD = """
import os, signal, sys
from mmr1.catalog import Catalog
from schemas.eval import EvaluateConfig

config_json, die_after = sys.argv[1:3]
original = Catalog.record_eval_result

def record_then_die(self, **kwargs):
    entry = original(self, **kwargs)
    if kwargs["checkpoint_ref"].startswith(die_after):
        os.kill(os.getpid(), signal.SIGKILL)  # the first model's result is in; the next is not
    return entry

Catalog.record_eval_result = record_then_die
from flows.evaluate import evaluate

evaluate(EvaluateConfig.model_validate_json(config_json))
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two embedded Prefect servers and two models on a loaded machine
def test_evaluation_killed_mid_run_records_each_result_once(
    prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.evaluate import evaluate
    from mmr1.data.io import write_rl_dataset
    from mmr1.data.synthetic import generate_benchmark
    from schemas.eval import EvaluateConfig

    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "home"))
    catalog = Catalog(tmp_path / "home" / "catalog.duckdb")
    register_tiny(catalog, tmp_path / "a", name="model-a")
    register_tiny(catalog, tmp_path / "b", name="model-b")
    bench = tmp_path / "bench"
    write_rl_dataset([item.record for item in generate_benchmark(seed=0, n_items=6)], bench)
    config = EvaluateConfig.model_validate(
        {
            "checkpoints": ["model-a", "model-b"],
            "benchmarks": [{"name": "synthetic", "source": str(bench)}],
            "sampling": {"n": 1, "temperature": 0.0, "max_new_tokens": 8},
            "score_workers": 0,
        }
    )
    log = tmp_path / "child.log"
    assert _run_child(EVAL_CHILD, config.model_dump_json(), "model-a", log=log) == -signal.SIGKILL
    assert [r.checkpoint_ref for r in catalog.eval_results()] == ["model-a@1"]
    out = {"mlflow_run_id": catalog.get_dataset(evaluate(config)).mlflow_run_id}
    recorded = sorted((r.checkpoint_ref, r.benchmark) for r in catalog.eval_results())
    assert recorded == [("model-a@1", "synthetic"), ("model-b@1", "synthetic")]
    # The killed run's MLflow run does not stay RUNNING: closed, naming its successor.
    from mmr1.tracking import find_runs
    from mmr1.tracking.liveness import TAG_NOTE, TAG_RESUMED_BY
    from schemas.home import HomeConfig

    runs = {r.info.run_id: r for r in find_runs(HomeConfig(), "evaluate")}
    [dead] = [r for r in runs.values() if r.info.run_id != out["mlflow_run_id"]]
    assert dead.info.status == "KILLED" and runs[out["mlflow_run_id"]].info.status == "FINISHED"
    assert dead.data.tags[TAG_RESUMED_BY] == out["mlflow_run_id"]
    assert "died" in dead.data.tags[TAG_NOTE]


def test_dead_flow_runs_are_marked_crashed(prefect_harness) -> None:
    from uuid import uuid4

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from mmr1.tracking.liveness import DeadRun
    from mmr1.tracking.runs import TrackedRun
    from tasks.context import crash_dead_flow_runs

    @flow(name="left-running")
    def left_running() -> None:
        return None

    with get_client(sync_client=True) as client:
        stale = client.create_flow_run(left_running, state=Running())
    run = TrackedRun(client=None, run_id="resuming")  # type: ignore[arg-type]
    run.reaped = [
        DeadRun(run_id="r1", host="h", pid="1", prefect_flow_run_id=str(stale.id)),
        DeadRun(run_id="r2", host="h", pid="2", prefect_flow_run_id=str(uuid4())),  # unknown
    ]

    @flow(name="resumer")
    def resumer() -> None:
        crash_dead_flow_runs(run)

    resumer()
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(stale.id).state
    assert state is not None and state.type.value == "CRASHED"
    assert "process 1 on h died; resumed by flow run" in (state.message or "")
