"""The GRPO trainer on the tiny VLM: log-prob parity, what a step updates, the loss
normalisation over micro-batches, masked truncations, the reference's precision, VPS
refreshes, vLLM weight sync (with a stand-in engine), kill-and-resume and DeepSpeed."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from job_specs import grpo_job, job_command, write_job
from rl_fixtures import StandInLLM, length_reward, write_pool, write_vps_file
from safetensors.torch import load_file

from mmr1.data.requests import build_requests
from mmr1.generation.hf import HFBackend
from mmr1.rl.advantages import group_advantages
from mmr1.rl.batch import EncodedPrompt, Rollout, collate, encode_prompt, response_logprobs
from mmr1.rl.grpo import GRPOTrainer, run_grpo
from mmr1.rl.update import UpdateOutcome
from mmr1.vas.estimate import read_pool_frame
from schemas.generation import Completion, CompletionSample, HFBackendConfig, SamplingParams
from schemas.grpo import GRPOConfig


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


@pytest.mark.parametrize("freeze_vision", [False, True], ids=["vision-trained", "vision-frozen"])
def test_one_step_updates_every_trainable_parameter_and_no_frozen_one(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path, freeze_vision: bool
) -> None:
    trainer = GRPOTrainer(
        grpo_config(freeze_vision=freeze_vision, kl_coef=0.0), tiny_dir, pool_dir, tmp_path
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
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    if freeze_vision:
        assert frozen and all(n.startswith("model.visual") for n in frozen)
    else:  # paper default: the vision tower is trained too, and it did change
        assert frozen == []
        assert any(n.startswith("model.visual") for n in before)
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
        "time/weight_sync_s",
        "tokens_per_s",
    ):
        assert key in metrics, key
    assert metrics["time/weight_sync_s"] == 0.0  # the hf backend generates with the policy
    # One update per rollout batch is on-policy: ratio exactly 1, nothing clipped.
    assert metrics["loss/ratio_mean"] == 1.0 and metrics["loss/clip_frac"] == 0.0


# -- the loss over micro-batches, masked truncations ---------------------------------------

MAX_NEW = 16  # grpo_config's sampling.max_new_tokens
LENGTHS = [5, 12, 1, 9, 3, 16, 7, 2, 11, 4, 14, 6, 8, 1, 13, 10]  # 4 prompts x 4 rollouts


def _handmade_rollouts(
    trainer: GRPOTrainer, lengths: list[int], masked: set[int], seed: int = 0
) -> tuple[list[EncodedPrompt], list[Rollout]]:
    """Rollouts of chosen lengths (plain-text tokens) and random advantages for 4 prompts."""
    prompts = [encode_prompt(trainer.policy, r) for r in build_requests(trainer.pool.head(4))]
    vocab = trainer.policy.tokenizer.encode(
        "the answer is A B C red blue", add_special_tokens=False
    )
    generator = torch.Generator().manual_seed(seed)
    g = trainer.config.group_size
    rollouts = []
    for i, n in enumerate(lengths):
        picks = torch.randint(0, len(vocab), (n,), generator=generator).tolist()
        advantage = float(torch.randn(1, generator=generator))
        rollouts.append(
            Rollout(i // g, [vocab[k] for k in picks], advantage, train=i not in masked)
        )
    return prompts, rollouts


def _capture_gradients(trainer: GRPOTrainer) -> dict[str, torch.Tensor]:
    """Replace the optimiser step by a capture of the accumulated gradient (weights stay put)."""
    captured: dict[str, torch.Tensor] = {}
    model = trainer.accelerator.unwrap_model(trainer.model)

    def capture(params: list[torch.nn.Parameter]) -> tuple[float, bool]:
        captured.clear()
        captured.update(
            {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        )
        trainer.optimizer.zero_grad(set_to_none=True)
        return 1.0, True

    trainer.updater.optimizer_step = capture  # type: ignore[method-assign]
    return captured


def _update_gradients(
    trainer: GRPOTrainer, prompts: list[EncodedPrompt], rollouts: list[Rollout]
) -> dict[str, torch.Tensor]:
    captured = _capture_gradients(trainer)
    trainer.updater.update(prompts, rollouts, {}, step=1)
    return dict(captured)


def _assert_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 summation order (relative to the tensor's largest entry)."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * scale + 1e-12)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_accumulate_to_the_whole_mini_batch_gradient(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path, agg: str
) -> None:
    trainer = GRPOTrainer(
        grpo_config(loss_agg=agg, micro_batch_size=16, truncated="mask"),
        tiny_dir,
        pool_dir,
        tmp_path,
    )
    trainer.setup(resume=False)
    # Unequal lengths, a masked row, and a micro-batch (rows 12-14) without any trainable token.
    prompts, rollouts = _handmade_rollouts(trainer, LENGTHS, masked={5, 12, 13, 14})
    whole = _update_gradients(trainer, prompts, rollouts)
    assert whole and any(bool(g.abs().sum() > 0) for g in whole.values())
    # Micro-batches of 3 rows, each padded to its own longest response.
    trainer.updater.config = trainer.updater.config.model_copy(update={"micro_batch_size": 3})
    split = _update_gradients(trainer, prompts, rollouts)
    assert split.keys() == whole.keys()
    for name in whole:
        _assert_close(split[name], whole[name])
    if agg == "seq-mean-token-sum-norm":
        # The constant is sampling.max_new_tokens: doubling it halves the gradient.
        sampling = trainer.updater.config.sampling.model_copy(
            update={"max_new_tokens": 2 * MAX_NEW}
        )
        trainer.updater.config = trainer.updater.config.model_copy(update={"sampling": sampling})
        halved = _update_gradients(trainer, prompts, rollouts)
        for name in whole:
            _assert_close(2 * halved[name], whole[name])


class _ScriptedBackend:
    """Rollouts of scripted lengths: samples 0 and 2 of each group hit max_new_tokens."""

    name = "scripted"

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self.vocab = tokenizer.encode("the answer is A B C red blue", add_special_tokens=False)

    def generate(self, requests: list, sampling: SamplingParams) -> list[Completion]:
        out = []
        for r, _ in enumerate(requests):
            samples = []
            for j in range(sampling.n):
                n = sampling.max_new_tokens if j % 2 == 0 else 2 + r + j
                ids = [self.vocab[(r + j + k) % len(self.vocab)] for k in range(n)]
                samples.append(
                    CompletionSample(
                        text=self.tokenizer.decode(ids),
                        token_ids=ids,
                        finish_reason="length" if n == sampling.max_new_tokens else "stop",
                    )
                )
            out.append(Completion(samples=samples))
        return out

    def close(self) -> None:
        pass


def test_masked_truncations_give_no_gradient_but_count_in_group_stats(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path
) -> None:
    trainer = GRPOTrainer(grpo_config(truncated="mask", kl_coef=0.01), tiny_dir, pool_dir, tmp_path)
    trainer.setup(resume=False)
    trainer.rollouts.backend = _ScriptedBackend(trainer.policy.tokenizer)
    grads = _capture_gradients(trainer)
    seen = []
    update = trainer.updater.update

    def spy(prompts: list, rollouts: list, timings: dict, *, step: int) -> UpdateOutcome:
        seen.append((prompts, rollouts))
        return update(prompts, rollouts, timings, step=step)

    trainer.updater.update = spy  # type: ignore[method-assign]
    metrics = trainer.step()
    step_grads = dict(grads)
    ((prompts, rollouts),) = seen
    truncated = [i for i, r in enumerate(rollouts) if len(r.response_ids) == MAX_NEW]
    assert len(truncated) == len(rollouts) // 2 and metrics["response/truncated_frac"] == 0.5
    assert [r.train for r in rollouts] == [i not in truncated for i in range(len(rollouts))]
    # Group statistics over all G rollouts, truncated ones included (they are the longest,
    # so with the length reward they carry the largest advantages).
    texts = [trainer.policy.tokenizer.decode(r.response_ids) for r in rollouts]
    rewards = torch.tensor([s.overall for s in length_reward(texts, [""] * 16, [None] * 16)])
    expected = group_advantages(rewards, trainer.config.group_size)
    assert [r.advantage for r in rollouts] == pytest.approx(expected.tolist(), abs=1e-6)
    assert all(rollouts[i].advantage > 0.5 for i in truncated)

    # Other tokens and advantages on the truncated rows: the same gradient...
    vocab = trainer.policy.tokenizer.encode("circle square green", add_special_tokens=False)
    altered = [
        Rollout(r.prompt, [vocab[k % len(vocab)] for k in range(MAX_NEW)], -3 * r.advantage, False)
        if i in truncated
        else r
        for i, r in enumerate(rollouts)
    ]
    again = _update_gradients(trainer, prompts, altered)
    for name in step_grads:
        _assert_close(again[name], step_grads[name])
    # ...while training on them ("keep") would have changed it.
    kept = [Rollout(r.prompt, r.response_ids, r.advantage, True) for r in rollouts]
    with_truncated = _update_gradients(trainer, prompts, kept)
    assert any(
        not torch.allclose(with_truncated[n], step_grads[n], rtol=1e-3, atol=1e-6)
        for n in step_grads
    )


# -- the reference model ---------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_reference_computes_like_the_policy_so_kl_starts_at_zero(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path, precision: str
) -> None:
    trainer = GRPOTrainer(
        grpo_config(precision=precision, kl_coef=0.01), tiny_dir, pool_dir, tmp_path
    )
    trainer.setup(resume=False)
    prompts, rollouts = _handmade_rollouts(trainer, LENGTHS, masked=set())
    batch = collate(prompts, rollouts, trainer.pad_id, is_vlm=True)
    mask = batch["response_mask"].bool()
    kwargs = {"temperature": 1.0, "suppress_ids": trainer.suppress_ids}
    with torch.no_grad():
        policy = response_logprobs(trainer.model, batch, **kwargs)[0]
    reference = trainer.updater.reference_logprobs(batch)
    assert torch.equal(policy[mask], reference[mask])
    if precision == "bf16":
        # The policy really runs in bf16: the same weights without autocast differ.
        with torch.no_grad():
            plain = response_logprobs(trainer.reference, batch, **kwargs)[0]
        assert float((plain - policy)[mask].abs().max()) > 1e-3
    metrics = trainer.step()  # its only update sees the starting weights
    assert metrics["loss/kl"] == pytest.approx(0.0, abs=1e-7)


# -- VPS refresh from the catalog --------------------------------------------------------------


def test_catalog_refresh_applies_each_newer_table_once(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path
) -> None:
    ids = read_pool_frame(pool_dir)["row_id"].to_list()
    first = write_vps_file(tmp_path / "t1", {ids[0]: 0.9, ids[1]: 0.1})
    second = write_vps_file(tmp_path / "t2", {ids[0]: 0.2, ids[2]: 0.7})
    newest: dict[str, tuple[str, Path] | None] = {"table": None}
    calls = []

    def lookup() -> tuple[str, Path] | None:
        calls.append(newest["table"])
        return newest["table"]

    trainer = GRPOTrainer(
        grpo_config(vps_refresh="catalog"), tiny_dir, pool_dir, tmp_path / "run", vps_lookup=lookup
    )
    trainer.setup(resume=False)
    assert trainer._refresh_vps()["vps_refresh/new"] == 0.0  # nothing in the catalog yet
    newest["table"] = ("vps@1", first)
    assert trainer._refresh_vps()["vps_refresh/new"] == 1.0
    scores = trainer.sampler.scores
    assert (float(scores[0]), float(scores[1])) == pytest.approx((0.9, 0.1))
    trainer.sampler.update_scores([0], [0.5])  # an online update since
    assert trainer._refresh_vps()["vps_refresh/new"] == 0.0  # the same table: not re-applied
    assert float(trainer.sampler.scores[0]) == pytest.approx(0.5)
    newest["table"] = ("vps@2", second)
    assert trainer._refresh_vps()["vps_refresh/new"] == 1.0
    scores = trainer.sampler.scores
    assert [float(scores[i]) for i in (0, 1, 2)] == pytest.approx([0.2, 0.1, 0.7])
    assert trainer.state.vps_tables == ["vps@1", "vps@2"] and trainer.state.refreshes == 2
    assert len(calls) == 4


# -- vLLM rollouts with weight sync (stand-in engine) -----------------------------------------


def test_vllm_engine_gets_the_new_weights_once_per_changed_step_before_generating(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(LLM=StandInLLM, SamplingParams=dict))
    monkeypatch.setattr(StandInLLM, "events", [])
    config = grpo_config(
        steps=3,
        rollout_backend="vllm",
        ppo_epochs=2,  # two updates per step, still one sync
        vps_update_every=2,  # a re-estimation after step 2 generates too
        vps_rollouts=2,
        kl_coef=0.0,
        save_every=10,
    )
    trainer = GRPOTrainer(config, tiny_dir, pool_dir, tmp_path)
    trainer.setup(resume=False)
    assert trainer.rollouts.backend._llm.kwargs["model"] == str(tiny_dir)
    events = StandInLLM.events
    model = trainer.accelerator.unwrap_model(trainer.model)
    # The engine gets every parameter once (the tied head shares the embedding), no buffers.
    initial = _params(model)
    optimizer_step = trainer.updater.optimizer_step

    def step_and_record(params: list[torch.nn.Parameter]) -> tuple[float, bool]:
        result = optimizer_step(params)
        events.append(("update", _params(model)))
        return result

    trainer.updater.optimizer_step = step_and_record  # type: ignore[method-assign]
    try:
        result = trainer.train()
    finally:
        trainer.close()

    kinds = [k for k, _ in events if k != "reset_prefix_cache"]
    merged = [k for i, k in enumerate(kinds) if i == 0 or k != "generate" or kinds[i - 1] != k]
    assert merged == [
        "generate", "update", "update",  # step 1 starts from the engine's own weights
        "sync", "generate", "update", "update",  # step 2
        "sync", "generate",  # VPS re-estimation after step 2, then step 3's rollouts:
        "update", "update",  # nothing changed since the last sync, so no sync before step 3
    ]  # fmt: skip
    assert [k for k, _ in events].count("reset_prefix_cache") == 2
    latest = initial
    for kind, payload in events:
        if kind == "update":
            latest = payload
        elif kind == "sync":
            assert payload.keys() == latest.keys()
            assert all(torch.equal(payload[n], latest[n]) for n in latest)
            assert any(not torch.equal(payload[n], initial[n]) for n in initial)
    sync_s = [h["time/weight_sync_s"] for h in result.history]
    assert sync_s[0] == 0.0 and sync_s[1] > 0.0 and sync_s[2] == 0.0
    assert result.history[1]["vps_refresh/weight_sync_s"] > 0.0


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


@pytest.mark.parametrize("warmup_steps", [0, 4])
def test_warmup_scales_the_first_steps_lr(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path, warmup_steps: int
) -> None:
    # AdamW's first step moves every parameter with a gradient by lr * factor (m / sqrt(v)
    # is +-1 after bias correction; no weight decay here): the step's lr is what was used.
    config = grpo_config(kl_coef=0.0, warmup_steps=warmup_steps, vps_update_every=None)
    trainer = GRPOTrainer(config, tiny_dir, pool_dir, tmp_path)
    trainer.setup(resume=False)
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = _params(model)
    first = trainer.step()["lr"]
    moved = max((after - before[n]).abs().max().item() for n, after in _params(model).items())
    factors = [0.25, 0.5, 0.75, 1.0] if warmup_steps else [1.0] * 4
    assert moved == pytest.approx(1e-3 * factors[0], rel=0.02)
    lrs = [first, *(trainer.step()["lr"] for _ in range(3))]
    assert lrs == pytest.approx([1e-3 * f for f in factors])


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
    config = GRPOConfig.model_validate_json(config_path.read_text())
    spec = write_job(out.parent / f"{out.name}-job.json", grpo_job(config, tiny_dir, pool_dir, out))
    return job_command(spec)


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


# -- DeepSpeed ZeRO-2 on CPU -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed"
)
def test_deepspeed_zero2_matches_the_plain_run_and_resumes_exactly(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path
) -> None:
    """Two steps of two updates each (3 accumulated micro-batches per update, clipping
    active at lr 1e-3, the first step's lr halved by warmup) under DeepSpeed ZeRO-2, one
    process on CPU, against the plain run."""
    config = grpo_config(
        steps=2,
        mini_batch_prompts=2,
        micro_batch_size=3,
        vps_update_every=None,
        save_every=1,
        warmup_steps=2,
    )
    config = config.model_copy(update={"precision": "fp32", "torch_threads": 1})
    plain = run_grpo(config, model_path=tiny_dir, dataset_path=pool_dir, output_dir=tmp_path / "p")
    assert max(h["grad_norm"] for h in plain.history) > config.max_grad_norm  # clipping matters

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).parent),
        # What `accelerate launch --config_file deepspeed_zero2.yaml` sets for one process.
        "ACCELERATE_USE_DEEPSPEED": "true",
        "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(root / "deployments/accelerate/ds_zero2.json"),
        "LOCAL_RANK": "0",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }

    def launch(cfg: GRPOConfig, out: Path) -> None:
        path = tmp_path / f"{out.name}-{cfg.steps}.json"
        path.write_text(cfg.model_dump_json())
        subprocess.run(_main_command(tiny_dir, pool_dir, out, path), env=env, check=True)

    launch(config, tmp_path / "ds")
    expected, got = _weights(tmp_path / "p"), _weights(tmp_path / "ds")
    initial = load_file(tiny_dir / "model.safetensors")
    moved = max(float((expected[k] - initial[k]).abs().max()) for k in expected if k in initial)
    gap = max(float((expected[k] - got[k]).abs().max()) for k in expected)
    assert moved > 1e-3 and gap < 1e-4, (moved, gap)
    ds_history = json.loads((tmp_path / "ds" / "result.json").read_text())["history"]
    for a, b in zip(plain.history, ds_history, strict=True):
        assert b["updates"] == a["updates"] == 2.0
        assert b["lr"] == a["lr"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert (tmp_path / "ds" / "checkpoints" / "step-000002" / "deepspeed").is_dir()

    # Stop after one step, then resume from the engine's checkpoint: the same weights.
    launch(config.model_copy(update={"steps": 1}), tmp_path / "resumed")
    launch(config, tmp_path / "resumed")
    resumed = _weights(tmp_path / "resumed")
    for name in got:
        assert torch.equal(resumed[name], got[name]), name
