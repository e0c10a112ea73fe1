"""The SFT recipe on the tiny VLM: updates, freezing, resume equivalence, artefacts, schedules."""

from __future__ import annotations

import json
import math

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from mmr1.data.io import read_sft_dataset
from mmr1.generation.hf import HFBackend
from mmr1.models import load_policy
from mmr1.sft.data import SFTEncoder
from mmr1.sft.recipe import SFTRecipe, read_result, run_sft
from mmr1.sft.sampling import SampleStream
from mmr1.sft.schedule import build_scheduler, lr_multiplier, warmup_steps
from mmr1.trainer.job import vision_tower
from schemas.generation import GenerationRequest, HFBackendConfig, SamplingParams
from schemas.sft import SFTConfig


def config(**overrides) -> SFTConfig:
    base = dict(
        lr=1e-3,
        micro_batch_size=4,
        grad_accum=2,
        max_steps=2,
        warmup_ratio=0.0,
        eval_fraction=0.0,
        eval_every=1000,
        eval_max_items=0,
        save_every=1000,
        log_every=1,
        torch_threads=1,
    )
    return SFTConfig(**{**base, **overrides})


# ------------------------------------------------------------------------- schedule


def test_warmup_then_cosine_values_at_known_steps() -> None:
    assert warmup_steps(100, 0.1) == 10 and warmup_steps(30, 0.1) == 3 and warmup_steps(5, 0) == 0
    f = lambda s, **kw: lr_multiplier(s, total_steps=100, warmup=10, **kw)  # noqa: E731
    assert f(0) == pytest.approx(1 / 11) and f(9) == pytest.approx(10 / 11)  # never lr 0
    assert f(10) == pytest.approx(1.0)  # peak right after warmup
    assert f(55) == pytest.approx(0.5)  # half-way through the decay: cos(pi/2)
    assert f(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert f(55, min_lr_ratio=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert f(55, kind="linear") == pytest.approx(0.5)
    assert f(99, kind="constant") == 1.0

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=2.0)
    scheduler = build_scheduler(optimizer, total_steps=100, warmup_ratio=0.1)
    seen = []
    for _ in range(100):
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(2 / 11) and seen[10] == pytest.approx(2.0)
    assert seen[55] == pytest.approx(1.0) and min(seen) > 0


def test_config_validation_is_explicit() -> None:
    assert SFTConfig().global_batch_size(1) == 32  # paper: micro 1 x accum 32
    assert SFTConfig(micro_batch_size=2, grad_accum=2).global_batch_size(4) == 16
    with pytest.raises(ValidationError, match="betas"):
        SFTConfig(betas=(0.9, 1.0))
    with pytest.raises(ValidationError, match="eval_max_items > 0"):
        SFTConfig(best_metric="eval_accuracy", eval_max_items=0)
    with pytest.raises(ValidationError, match="extra"):
        SFTConfig(packing=True)  # not offered (see schemas/sft.py)
    with pytest.raises(ValidationError):
        SFTConfig(too_long="truncate")
    assert all(field.description for field in SFTConfig.model_fields.values())


# --------------------------------------------------------------------- one step


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_one_step_changes_every_trainable_parameter(tiny_dir, sft_data, tmp_path) -> None:
    recipe = SFTRecipe(config(max_steps=1), tiny_dir, sft_data, tmp_path / "run")
    recipe.setup()
    before = parameters(recipe.policy.model)
    result = recipe.train()
    after = parameters(recipe.policy.model)
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert unchanged == []
    assert result.steps == 1 and result.history[0]["grad_norm"] > 0
    assert result.best_checkpoint == result.final_checkpoint  # no eval split


def test_vision_lr_scale_gives_the_tower_its_own_rate(tiny_dir, sft_data, tmp_path) -> None:
    recipe = SFTRecipe(
        config(max_steps=2, lr=1e-3, vision_lr_scale=4.0), tiny_dir, sft_data, tmp_path / "r"
    )
    recipe.setup()
    model = recipe.policy.model
    tower = {id(p) for p in vision_tower(model).parameters()}
    rates = {id(p): g["lr"] for g in recipe.optimizer.param_groups for p in g["params"]}
    decays = {id(p): g["weight_decay"] for g in recipe.optimizer.param_groups for p in g["params"]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(rates) == len(trainable) and tower  # every parameter in exactly one group
    # The schedule's warm-up scales every group's rate by the same factor.
    factor = next(rates[id(p)] for p in trainable if id(p) not in tower) / 1e-3
    assert factor > 0
    for param in trainable:
        expected = 4e-3 if id(param) in tower else 1e-3
        assert rates[id(param)] == pytest.approx(expected * factor)
        assert (decays[id(param)] > 0) == (param.ndim >= 2) or config().weight_decay == 0


def test_freeze_vision_keeps_the_tower_out_of_the_optimizer(tiny_dir, sft_data, tmp_path) -> None:
    recipe = SFTRecipe(config(max_steps=1, freeze_vision=True), tiny_dir, sft_data, tmp_path / "r")
    recipe.setup()
    model = recipe.policy.model
    tower_ids = {id(p) for p in vision_tower(model).parameters()}
    assert tower_ids and model.model.visual is vision_tower(model)
    in_optimizer = {id(p) for group in recipe.optimizer.param_groups for p in group["params"]}
    assert not tower_ids & in_optimizer
    before = parameters(model)
    recipe.train()
    after = parameters(model)
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        assert changed != name.startswith("model.visual."), name


def test_non_finite_gradient_skips_the_update(tiny_dir, sft_data, tmp_path) -> None:
    recipe = SFTRecipe(config(max_steps=2), tiny_dir, sft_data, tmp_path / "run")
    recipe.setup()
    model = recipe.policy.model
    with torch.no_grad():
        model.model.language_model.norm.weight[0] = float("inf")
    before = parameters(model)
    result = recipe.train()
    assert result.skipped_steps == 2 and result.history[-1]["skipped_steps"] == 2
    after = parameters(model)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_gradient_checkpointing_gives_the_same_step(tiny_dir, sft_data, tmp_path) -> None:
    plain = run_sft(
        config(max_steps=1), model_path=tiny_dir, dataset_path=sft_data, output_dir=tmp_path / "a"
    )
    ckpt = run_sft(
        config(max_steps=1, gradient_checkpointing=True),
        model_path=tiny_dir,
        dataset_path=sft_data,
        output_dir=tmp_path / "b",
    )
    assert ckpt.history[0]["loss"] == pytest.approx(plain.history[0]["loss"], rel=1e-6)
    assert ckpt.history[0]["grad_norm"] == pytest.approx(plain.history[0]["grad_norm"], rel=1e-4)


# ------------------------------------------------------------------ resume, artefacts


class Interrupt(RuntimeError):
    pass


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tiny_dir, sft_data, tmp_path) -> None:
    cfg = config(
        max_steps=12,
        save_every=5,
        keep_last=2,
        warmup_ratio=0.2,
        eval_fraction=0.1,
        eval_every=6,
        eval_max_items=4,
        eval_max_new_tokens=16,
        best_metric="eval_accuracy",
    )
    whole = run_sft(cfg, model_path=tiny_dir, dataset_path=sft_data, output_dir=tmp_path / "a")

    def stop_at_7(metrics: dict[str, float], step: int) -> None:
        if step == 7 and "loss" in metrics:
            raise Interrupt("simulated crash")

    out = tmp_path / "b"
    with pytest.raises(Interrupt):
        run_sft(
            cfg,
            model_path=tiny_dir,
            dataset_path=sft_data,
            output_dir=out,
            metrics_callback=stop_at_7,
        )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000005"]
    seen: list[int] = []
    resumed = run_sft(
        cfg,
        model_path=tiny_dir,
        dataset_path=sft_data,
        output_dir=out,
        metrics_callback=lambda m, s: seen.append(s),
    )
    assert seen[0] == 5 and seen[-1] == 12  # continued from the step-5 checkpoint

    a = load_file(tmp_path / "a" / "final" / "model.safetensors")
    b = load_file(out / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bitwise, not just allclose
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.eval_history == whole.eval_history
    assert resumed.steps == whole.steps == 12

    # What a run leaves behind.
    run = tmp_path / "a"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-000010",
        "step-000012",
    ]
    step_dir = run / "checkpoints" / "step-000012"
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state_rank0.pt"):
        assert (step_dir / name).is_file()
    state = json.loads((step_dir / "trainer_state.json").read_text())
    assert state["step"] == 12 and state["samples_seen"] == 96
    assert (state["epoch"], state["epoch_offset"]) == divmod(96, whole.train_samples)
    assert read_result(run) == whole
    assert [e["step"] for e in whole.eval_history] == [6, 12]
    assert {"eval_loss", "eval_accuracy", "eval_format"} <= whole.eval_history[0].keys()
    assert whole.best_checkpoint == str(run / "best") and whole.best_metric is not None
    assert whole.train_samples == 36 and whole.eval_samples == 4
    assert whole.history[0]["lr"] < whole.history[3]["lr"]  # warmup

    # Every saved directory reloads offline and generates.
    policy = load_policy(run / "best", device="cpu")
    backend = HFBackend(HFBackendConfig(model=str(run / "best")), policy=policy)
    request = GenerationRequest(prompt="Say something.")
    completion = backend.generate([request], SamplingParams(temperature=0, max_new_tokens=4))
    assert completion[0].samples[0].token_ids
    assert load_policy(step_dir, device="cpu").is_vlm


def test_too_long_everything_is_a_clear_error(tiny_dir, sft_data, tmp_path) -> None:
    with pytest.raises(ValueError, match="no training sample fits cutoff_len=40"):
        run_sft(
            config(cutoff_len=40),
            model_path=tiny_dir,
            dataset_path=sft_data,
            output_dir=tmp_path / "run",
        )


def test_small_cutoff_drops_when_drawn_and_counts_each_sample_once(
    tiny_dir, sft_data, tmp_path
) -> None:
    policy = load_policy(tiny_dir, device="cpu")
    encoder = SFTEncoder(policy.processor, is_vlm=True)
    lengths = [encoder.encode(r).num_tokens for r in read_sft_dataset(sft_data)]
    cutoff = sorted(lengths)[len(lengths) // 2]
    too_long = {row for row, n in enumerate(lengths) if n > cutoff}
    # 40 rows, 8 a step: steps 1-5 are epoch 0 (every row once), 6-10 epoch 1.
    result = run_sft(
        config(cutoff_len=cutoff, max_steps=10),
        model_path=tiny_dir,
        dataset_path=sft_data,
        output_dir=tmp_path / "run",
    )
    order = SampleStream(40, seed=0).indices(0, 40)
    expected = [len(too_long & set(order[: 8 * step])) for step in range(1, 6)]
    assert 0 < expected[0] < expected[-1] == len(too_long)
    drops = [h["dropped_too_long"] for h in result.history]
    assert drops == expected + [len(too_long)] * 5  # met once, never counted again
    assert result.dropped_too_long == len(too_long) and result.train_samples == 40


def test_bf16_autocast_after_an_fp32_run_in_the_same_process(tiny_dir, sft_data, tmp_path) -> None:
    # Accelerate's process-wide state would refuse a second precision without the recipe's reset.
    fp32 = run_sft(
        config(max_steps=1), model_path=tiny_dir, dataset_path=sft_data, output_dir=tmp_path / "a"
    )
    bf16 = run_sft(
        config(max_steps=1, precision="bf16"),
        model_path=tiny_dir,
        dataset_path=sft_data,
        output_dir=tmp_path / "b",
    )
    assert bf16.history[0]["loss"] == pytest.approx(fp32.history[0]["loss"], rel=1e-2)
    weights = load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values())  # fp32 master weights
