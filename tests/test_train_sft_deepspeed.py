"""The SFT recipe under DeepSpeed ZeRO-2 and ZeRO-3, one process on CPU (gloo).

Each run is a subprocess with the environment ``accelerate launch --config_file
deployments/accelerate/deepspeed_zero{2,3}.yaml`` gives one process, so the
DeepSpeed state (process group, transformers' ZeRO-3 reference) never leaks
into the other tests. Compared with the plain run of the same config: weights,
grad norms, the LR schedule, held-out evaluation and greedy answers; then a
resume from the engine's checkpoint must reach the uninterrupted run's weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from job_specs import job_command, sft_job, write_job
from safetensors.torch import load_file

from mmr1.models import load_policy
from mmr1.sft.recipe import run_sft
from schemas.sft import SFTConfig, SFTResult

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed"
    ),
]

ROOT = Path(__file__).resolve().parents[1]


def sft_config(**overrides) -> SFTConfig:
    """Four steps of two accumulated micro-batches: warmup then cosine, decay on matrices,
    clipping active, an evaluation (with greedy answers) and a checkpoint every two steps."""
    base = dict(
        lr=1e-3,
        warmup_ratio=0.25,
        weight_decay=0.1,
        max_grad_norm=0.5,
        micro_batch_size=4,
        grad_accum=2,
        max_steps=4,
        eval_fraction=0.1,
        eval_every=2,
        eval_max_items=2,
        eval_max_new_tokens=8,
        save_every=2,
        keep_last=2,
        log_every=1,
        precision="fp32",
        torch_threads=1,
    )
    return SFTConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def plain(tiny_dir: Path, sft_data: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("plain") / "run"
    result = run_sft(sft_config(), model_path=tiny_dir, dataset_path=sft_data, output_dir=out)
    return out, result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _deepspeed_env(stage: int) -> dict[str, str]:
    """What `accelerate launch --config_file deepspeed_zero{stage}.yaml` sets for one process."""
    ds_config = ROOT / "deployments" / "accelerate" / f"ds_zero{stage}.json"
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_DEEPSPEED": "true",
        "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ds_config),
        "LOCAL_RANK": "0",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }


def _sft_main(
    stage: int, config: SFTConfig, model: Path, data: Path, out: Path, *, processes: int = 1
) -> SFTResult:
    spec = write_job(out.parent / f"{out.name}.json", sft_job(config, model, data, out))
    env = _deepspeed_env(stage)
    launcher = [sys.executable]
    if processes > 1:  # what `accelerate launch` runs for a DeepSpeed config
        launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
        launcher += [f"--master_port={env.pop('MASTER_PORT')}"]
        for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):
            env.pop(name)
    subprocess.run(job_command(spec, launcher), env=env, cwd=ROOT, check=True)
    return SFTResult.model_validate_json((out / "result.json").read_text())


def _gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()  # the same save_pretrained format (ZeRO-3: gathered)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_matches_the_plain_run_and_resumes_exactly(
    stage: int, plain, tiny_dir: Path, sft_data: Path, tmp_path: Path
) -> None:
    plain_dir, expected = plain
    assert max(h["grad_norm"] for h in expected.history) > 0.5  # clipping matters

    out = tmp_path / "ds"
    got = _sft_main(stage, sft_config(), tiny_dir, sft_data, out)
    initial = load_file(tiny_dir / "model.safetensors")
    for name in ("final", "best"):
        want = load_file(plain_dir / name / "model.safetensors")
        moved = max(float((want[k] - initial[k]).abs().max()) for k in want if k in initial)
        gap = _gap(want, load_file(out / name / "model.safetensors"))
        assert moved > 1e-3 and gap < 1e-5, (name, moved, gap)
    assert got.skipped_steps == 0 and got.steps == 4
    for a, b in zip(expected.history, got.history, strict=True):
        assert b["lr"] == a["lr"]  # the recipe's schedule, one step per update
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)  # before clipping
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    assert [e["step"] for e in got.eval_history] == [2, 4]
    for a, b in zip(expected.eval_history, got.eval_history, strict=True):
        assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-5)
        assert b["eval_generated"] == a["eval_generated"] == 2.0
        assert (b["eval_accuracy"], b["eval_format"]) == (a["eval_accuracy"], a["eval_format"])
    step_dir = out / "checkpoints" / "step-000004"
    assert (step_dir / "deepspeed").is_dir() and (step_dir / "scheduler.pt").is_file()
    assert not (step_dir / "optimizer.pt").exists()  # partitioned: the engine saved it
    assert load_policy(out / "final", device="cpu").is_vlm

    # Stop after the step-2 checkpoint (what a crash during step 3 or 4 leaves), resume.
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    for leftover in ("checkpoints/step-000004", "final"):
        shutil.rmtree(resumed / leftover)
    (resumed / "result.json").unlink()
    again = _sft_main(stage, sft_config(), tiny_dir, sft_data, resumed)
    whole = load_file(out / "final" / "model.safetensors")
    part = load_file(resumed / "final" / "model.safetensors")
    for name in whole:
        assert torch.equal(whole[name], part[name]), name  # bitwise
    assert [h["loss"] for h in again.history] == [h["loss"] for h in got.history]
    assert again.eval_history == got.eval_history


def test_two_processes_under_zero3_train_like_one(
    plain, tiny_dir: Path, sft_data: Path, tmp_path: Path
) -> None:
    """Two gloo processes, each holding half of every parameter: the same global batch
    (2 x micro 4 instead of 2 x 4 accumulated), evaluation on every process in step,
    weights gathered for save_pretrained."""
    plain_dir, expected = plain
    out = tmp_path / "ds"
    got = _sft_main(3, sft_config(grad_accum=1), tiny_dir, sft_data, out, processes=2)
    gap = _gap(
        load_file(plain_dir / "final" / "model.safetensors"),
        load_file(out / "final" / "model.safetensors"),
    )
    assert gap < 1e-5, gap
    for a, b in zip(expected.history, got.history, strict=True):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    for a, b in zip(expected.eval_history, got.eval_history, strict=True):
        assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-5)
        assert b["eval_generated"] == a["eval_generated"] == 2.0
    step_dir = out / "checkpoints" / "step-000004"
    assert {"rng_state_rank0.pt", "rng_state_rank1.pt"} <= {p.name for p in step_dir.iterdir()}


_SKIP_DRIVER = """
import json, sys
from pathlib import Path

import deepspeed
import torch

from mmr1.sft.recipe import SFTRecipe
from schemas.sft import SFTConfig

config, model, data, out = sys.argv[1:]
recipe = SFTRecipe(SFTConfig.model_validate_json(Path(config).read_text()), Path(model),
                   Path(data), Path(out))
recipe.setup(resume=False)
weight = recipe.policy.model.model.language_model.norm.weight
# Under ZeRO-3 the parameter is a shard: gather it, write, re-partition.
with deepspeed.zero.GatheredParameters([weight], modifier_rank=0), torch.no_grad():
    weight[0] = float("inf")
result = recipe.train()
norms = [h["grad_norm"] for h in result.history]
print(json.dumps({"skipped": result.skipped_steps, "norms": norms}))
"""


@pytest.mark.parametrize("stage", [2, 3])
def test_a_non_finite_gradient_is_skipped_by_the_engine(
    stage: int, tiny_dir: Path, sft_data: Path, tmp_path: Path
) -> None:
    config_path = tmp_path / "config.json"
    config = sft_config(max_steps=2, eval_fraction=0.0, eval_max_items=0, save_every=1000)
    config_path.write_text(config.model_dump_json())
    driver = tmp_path / "driver.py"
    driver.write_text(_SKIP_DRIVER)
    out = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, str(driver), str(config_path), str(tiny_dir), str(sft_data), str(out)],
        env=_deepspeed_env(stage),
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["skipped"] == 2
    assert all(not torch.isfinite(torch.tensor(n)) for n in report["norms"])
    initial = load_file(tiny_dir / "model.safetensors")
    final = load_file(out / "final" / "model.safetensors")
    changed = [k for k in initial if not torch.equal(initial[k], final[k])]
    assert changed == ["model.norm.weight"]  # only the poisoned weight; no update applied
