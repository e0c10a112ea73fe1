"""The GRPO trainer on the tiny VLM: log-prob parity, what a step updates, kill-and-resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rl_fixtures import write_pool
from safetensors.torch import load_file

from mmr1.data.requests import build_requests
from mmr1.generation.hf import HFBackend
from mmr1.models import build_tiny_model
from mmr1.rl.batch import Rollout, collate, encode_prompt, response_logprobs
from mmr1.rl.grpo import GRPOTrainer, run_grpo
from mmr1.vas.estimate import read_pool_frame
from schemas.generation import HFBackendConfig, SamplingParams
from schemas.grpo import GRPOConfig
from schemas.models import TinyVLMConfig


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(TinyVLMConfig(), tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pool(tmp_path_factory.mktemp("pool"), n_items=12)


def grpo_config(**update) -> GRPOConfig:
    """A few-second run whose rewards vary within groups (see ``length_reward``)."""
    return GRPOConfig.model_validate(
        {
            "steps": 4,
            "prompts_per_step": 4,
            "group_size": 4,
            "micro_batch_size": 6,
            "rollout_batch_size": 2,
            "sampling": {"temperature": 1.0, "max_new_tokens": 16},
            "lr": 1e-3,
            "weight_decay": 0.0,
            "kl_coef": 0.01,
            "vps_update_every": 3,
            "vps_rollouts": 2,
            "save_every": 2,
            "samples_every": 2,
            "rewards": {"num_workers": 0},
            "reward_function": "rl_fixtures:length_reward",
            **update,
        }
    )


def test_rescored_logprobs_match_generation(tiny_dir: Path, pool_dir: Path) -> None:
    backend = HFBackend(HFBackendConfig(model=str(tiny_dir), device="cpu"))
    rows = read_pool_frame(pool_dir).head(3)
    requests = build_requests(rows)
    assert all(r.images for r in requests)
    sampling = SamplingParams(n=2, temperature=0.7, top_p=0.9, max_new_tokens=20, seed=5)
    completions = backend.generate(requests, sampling)
    policy = backend.policy
    prompts = [encode_prompt(policy, r) for r in requests]
    # Prefixes of unequal lengths: a prefix keeps its log-probs, and rows get padded.
    cut = [20, 17, 9, 20, 4, 12]
    samples = [s for c in completions for s in c.samples]
    rollouts = [
        Rollout(prompt=k // 2, response_ids=s.token_ids[: cut[k]], advantage=0.0)
        for k, s in enumerate(samples)
    ]
    batch = collate(prompts, rollouts, policy.tokenizer.pad_token_id, is_vlm=True)
    with torch.no_grad():
        logp, entropy = response_logprobs(
            policy.model,
            batch,
            temperature=0.7,
            suppress_ids=backend._suppress_ids,
            with_entropy=True,
        )
    generated = [s.logprobs[: cut[k]] for k, s in enumerate(samples)]
    assert len({len(g) for g in generated}) > 1, "want unequal response lengths"
    for row, expected in enumerate(generated):
        got = logp[row, : len(expected)]
        assert (got - torch.tensor(expected)).abs().max() < 1e-4
        assert batch["response_mask"][row].sum() == len(expected)
    assert entropy is not None and bool((entropy >= 0).all())
    backend.close()


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_one_step_updates_every_trainable_parameter_and_no_frozen_one(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path
) -> None:
    trainer = GRPOTrainer(
        grpo_config(freeze_vision=True, kl_coef=0.0), tiny_dir, pool_dir, tmp_path
    )
    trainer.setup(resume=False)
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = _params(model)
    metrics = trainer.step()
    assert metrics["zero_variance_frac"] < 1.0 and metrics["grad_norm"] > 0
    after = _params(model)
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], after[name])
        if param.requires_grad:
            assert changed, f"trainable {name} did not change"
        else:
            assert name.startswith("model.visual"), name
            assert not changed, f"frozen {name} changed"
    assert any(not p.requires_grad for p in model.parameters())
    for key in (
        "reward/mean",
        "reward/std",
        "reward/accuracy",
        "reward/format",
        "loss/clip_frac",
        "loss/kl",
        "entropy",
        "response/length_mean",
        "response/length_max",
        "response/truncated_frac",
        "vps/sampled_mean",
        "vps/pool_mean",
        "time/generate_s",
        "time/score_s",
        "time/logprobs_s",
        "time/update_s",
        "tokens_per_s",
    ):
        assert key in metrics, key


def test_online_vps_updates_only_the_sampled_prompts(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path
) -> None:
    trainer = GRPOTrainer(grpo_config(mix_ratio=0.5), tiny_dir, pool_dir, tmp_path)
    trainer.setup(resume=False)
    assert not bool(trainer.sampler._known.any())
    state = trainer.sampler.state_dict()
    batch = trainer.sampler.next_batch()
    trainer.sampler.load_state_dict(state)
    trainer.step()
    known = set(torch.nonzero(trainer.sampler._known).flatten().tolist())
    assert known == set(batch)


def test_mini_batches_and_epochs_recompute_old_logprobs(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path
) -> None:
    config = grpo_config(steps=1, mini_batch_prompts=2, ppo_epochs=2, kl_coef=0.0)
    result = run_grpo(config, model_path=tiny_dir, dataset_path=pool_dir, output_dir=tmp_path)
    (record,) = result.history
    assert record["updates"] == 4.0
    # Later updates see a moved policy: the ratio departs from 1.
    assert record["loss/approx_kl"] > 0.0


def _main_command(tiny_dir: Path, pool_dir: Path, out: Path, config_path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mmr1.rl.grpo_main",
        "--config",
        str(config_path),
        "--model",
        str(tiny_dir),
        "--dataset",
        str(pool_dir),
        "--output",
        str(out),
    ]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final" / "model.safetensors")


def test_killed_run_resumes_to_the_same_weights(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path
) -> None:
    config = grpo_config(steps=6, save_every=2, vps_update_every=3, torch_threads=1)
    config_path = tmp_path / "grpo.json"
    config_path.write_text(config.model_dump_json())
    tests_dir = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": tests_dir}

    straight = tmp_path / "straight"
    subprocess.run(_main_command(tiny_dir, pool_dir, straight, config_path), env=env, check=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _main_command(tiny_dir, pool_dir, killed, config_path),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = killed / "checkpoints" / "step-000002" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert marker.exists() and not (killed / "result.json").exists(), "not killed mid-run"

    subprocess.run(_main_command(tiny_dir, pool_dir, killed, config_path), env=env, check=True)
    expected, got = _weights(straight), _weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    initial = load_file(tiny_dir / "model.safetensors")
    assert any(not torch.equal(initial[k], expected[k]) for k in expected if k in initial)
