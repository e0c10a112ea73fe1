"""The ``grpo_vas`` flow: RL checkpoints in the catalog with lineage, curves in MLflow;
and the same trainer under ``accelerate launch`` with 2 DDP processes (gloo, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from rl_fixtures import register_pool, register_tiny
from safetensors.torch import load_file

from cli.main import main
from mmr1.catalog import Catalog
from mmr1.rl.grpo import run_grpo
from mmr1.tracking import find_runs
from schemas.grpo import GRPOStageConfig
from schemas.vas import VPSEstimateConfig

TRAIN = {
    "steps": 4,
    "prompts_per_step": 4,
    "group_size": 4,
    "micro_batch_size": 8,
    "rollout_batch_size": 2,
    "sampling": {"temperature": 1.0, "max_new_tokens": 12},
    "lr": 1e-3,
    "vps_update_every": 3,
    "vps_refresh": "catalog",
    "save_every": 2,
    "samples_every": 2,
    "rewards": {"num_workers": 0},
    "reward_function": "rl_fixtures:length_reward",
}


@pytest.fixture
def grpo_home(prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from schemas.home import HomeConfig

    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "home"))
    home = HomeConfig().ensure()
    catalog = Catalog(home.catalog)
    register_pool(catalog, tmp_path / "pool", name="pool", n_items=10)
    register_tiny(catalog, tmp_path / "tiny", name="sft")
    return home


def test_flow_trains_registers_and_logs(grpo_home, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.grpo import grpo_vas
    from flows.vps import estimate_vps

    vps_ref = estimate_vps(
        VPSEstimateConfig.model_validate(
            {
                "dataset": "pool",
                "checkpoint": "sft",
                "rollouts": 2,
                "sampling": {"max_new_tokens": 6},
                "rewards": {"num_workers": 0},
            }
        )
    )
    config = GRPOStageConfig.model_validate(
        {"dataset": "pool", "init_model": "sft", "output_name": "rl", "train": TRAIN}
    )
    ref = grpo_vas(config)
    catalog = Catalog(grpo_home.catalog)
    versions = catalog.list_checkpoints(name="rl")
    # Steps 2 and 4 were registered while training; the final weights are step 4's.
    assert [(c.version, c.step) for c in versions] == [(1, 2), (2, 4)]
    assert ref == "checkpoint:rl@2"
    final = catalog.get_checkpoint("rl@2")
    assert final.stage == "rl" and (Path(final.uri) / "model.safetensors").is_file()
    parents = {p.ref for p in catalog.lineage("rl@2", kind="checkpoint").parents}
    assert parents == {"sft@1", "pool@1", vps_ref.removeprefix("vps:")}

    (run,) = find_runs(grpo_home, "grpo_vas")
    assert run.info.status == "FINISHED"
    client = MlflowClient(grpo_home.tracking_uri)
    history = client.get_metric_history(run.info.run_id, "zero_variance_frac")
    assert [m.step for m in history] == [1, 2, 3, 4]

    # Each version carries its run's summary so far and its sampling mode (`catalog show`).
    def logged(key: str) -> list[float]:
        return [m.value for m in client.get_metric_history(run.info.run_id, key)]

    assert catalog.get_checkpoint("rl@1").metrics["run/steps"] == 2
    capsys.readouterr()
    assert main(["catalog", "show", "rl@2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["sampling_mode"] == "vas"
    metrics = shown["metrics"]
    assert metrics["run/steps"] == 4
    zero_acc = logged("zero_accuracy_variance_frac")
    assert metrics["run/zero_accuracy_variance_frac_mean"] == pytest.approx(sum(zero_acc) / 4)
    zero = logged("zero_variance_frac")
    assert metrics["run/zero_variance_frac_mean"] == pytest.approx(sum(zero) / 4)
    accuracy = logged("reward/accuracy")  # 4 steps: the first and last 10% are one step each
    assert metrics["run/accuracy_first_10pct"] == pytest.approx(accuracy[0])
    assert metrics["run/accuracy_last_10pct"] == pytest.approx(accuracy[-1])
    for key in ("reward/mean", "grad_norm", "loss/clip_frac", "loss/kl", "vps_refresh/s"):
        assert key in run.data.metrics, key
    assert "plots/grpo_curves.png" in {
        a.path for a in client.list_artifacts(run.info.run_id, "plots")
    }
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "samples/step-000002" in samples
    assert run.data.tags["mmr1.sampling_mode"] == "vas"

    # The Prefect UI shows a meaningful, progress-bearing name and the MLflow run.
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(UUID(run.data.tags["mmr1.prefect_flow_run_id"]))
    assert flow_run.name == "grpo_vas[rl] step 4/4"
    assert f"mlflow:{run.info.run_id}" in flow_run.tags


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(grpo_home, tmp_path: Path) -> None:
    """accelerate launch --num_processes 2 (DDP over gloo) ends with the weights of one process."""
    import os
    import subprocess

    from job_specs import grpo_job, write_job

    from mmr1.trainer.launch import launch_command
    from schemas.grpo import GRPOConfig
    from schemas.launch import LaunchConfig

    catalog = Catalog(grpo_home.catalog)
    model = Path(catalog.get_checkpoint("sft").uri)
    pool = Path(catalog.get_dataset("pool").uri)
    config = GRPOConfig.model_validate(
        TRAIN | {"steps": 2, "vps_update_every": None, "micro_batch_size": 4, "torch_threads": 1}
    )
    single = run_grpo(config, model_path=model, dataset_path=pool, output_dir=tmp_path / "one")

    spec = write_job(tmp_path / "job.json", grpo_job(config, model, pool, tmp_path / "two"))
    launch = LaunchConfig(kind="accelerate", num_processes=2, main_process_port=29517)
    command = launch_command(spec, launch)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one = load_file(Path(single.final_checkpoint) / "model.safetensors")
    two = load_file(tmp_path / "two" / "final" / "model.safetensors")
    initial = load_file(model / "model.safetensors")
    assert any(not torch.equal(one[k], initial[k]) for k in one if k in initial)
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5, rtol=1e-4), name
