"""``mmr1 plan``: the memory formulas on known sizes, the inputs it reads, the command.

Reference values: Qwen2.5-VL-7B has 8,292,166,656 parameters (7,615,616,512 in
the language model, 676,550,144 in the vision tower) and Qwen2.5-VL-3B
3,754,622,976 (3,085,938,688 + 668,684,288), as transformers counts them on the
meta device with the hub configs. In bf16 the 7B weights are 16.58 GB = 15.45
GiB; the often quoted 15.2 GB is the language model alone (15.23 GB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_fixtures import hub_cache_dir, install_in_hf_cache
from rl_fixtures import register_tiny

from mmr1.catalog import Catalog
from mmr1.models import build_tiny_model
from mmr1.plan import GIB, Layout, model_states
from mmr1.plan_inputs import PlanError, layout_for, make_plan, resolve_shape, shape_from_config
from schemas.launch import LaunchConfig
from schemas.models import TinyVLMConfig

ROOT = Path(__file__).resolve().parents[1]
ACC = ROOT / "deployments" / "accelerate"
GB = 10**9


def known(name: str):
    return resolve_shape(name, None)[0]


def test_parameter_counts_of_known_models() -> None:
    seven, three = known("qwen2.5-vl-7b"), known("qwen2.5-vl-3b")
    assert (seven.language_params, seven.vision_params) == (7_615_616_512, 676_550_144)
    assert seven.params == 8_292_166_656
    assert (three.language_params, three.vision_params) == (3_085_938_688, 668_684_288)
    assert three.params == 3_754_622_976
    assert 2 * seven.params == 16_584_333_312  # bf16 bytes: 15.45 GiB
    assert round(2 * seven.params / GIB, 2) == 15.45
    assert round(2 * seven.language_params / GB, 1) == 15.2
    # Keys and values of 28 layers x 4 KV heads x 128 dims in bf16.
    assert seven.kv_bytes_per_token(2) == 57_344
    assert 256 * 6144 * seven.kv_bytes_per_token(2) == 84 * GIB


@pytest.mark.parametrize("tied", [True, False])
def test_formula_matches_a_real_model(tmp_path: Path, tied: bool) -> None:
    from transformers import AutoModelForImageTextToText

    directory = build_tiny_model(TinyVLMConfig(tie_word_embeddings=tied), tmp_path / "m")
    shape = shape_from_config(json.loads((directory / "config.json").read_text()))
    model = AutoModelForImageTextToText.from_pretrained(str(directory))
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.vision_params == sum(p.numel() for p in model.model.visual.parameters())
    kv = shape.kv_bytes_per_token(4)
    cache = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True).past_key_values
    tensors = [t for layer in cache.layers for t in (layer.keys, layer.values)]
    assert kv * 3 == sum(t.numel() * t.element_size() for t in tensors)


def test_model_states_per_layout() -> None:
    shape = known("qwen2.5-vl-7b")
    psi, n = shape.params, 8
    bf16_zero = {s: Layout("zero", True, s) for s in (0, 1, 2, 3)}
    assert model_states(shape, Layout("ddp", True), n, psi) == (4 * psi, 8 * psi, 8 * psi)
    assert model_states(shape, Layout("ddp", True), 1, psi) == (4 * psi, 4 * psi, 8 * psi)
    assert model_states(shape, bf16_zero[1], n, psi) == (2 * psi, 2 * psi, 12 * psi // n)
    assert model_states(shape, bf16_zero[2], n, psi) == (2 * psi, 2 * psi // n, 12 * psi // n)
    assert model_states(shape, bf16_zero[3], n, psi) == (
        2 * psi // n,
        2 * psi // n,
        12 * psi // n,
    )
    assert model_states(shape, Layout("fsdp", True), n, psi) == (
        4 * psi // n,
        4 * psi // n,
        8 * psi // n,
    )
    offload = Layout("zero", True, 3, offload_optimizer=True, offload_params=True)
    assert model_states(shape, offload, n, psi) == (0, 2 * psi // n, 0)
    # ZeRO-2, 8 GPUs: 15.45 GiB bf16 weights, 11.58 GiB of fp32 master + AdamW shards.
    weights, _, optimizer = model_states(shape, bf16_zero[2], n, psi)
    assert (round(weights / GIB, 2), round(optimizer / GIB, 2)) == (15.45, 11.58)


def test_layouts_of_the_shipped_accelerate_configs(tmp_path: Path) -> None:
    def layout(path: Path | None, precision: str = "bf16") -> Layout:
        launch = LaunchConfig(kind="accelerate", accelerate_config=str(path) if path else None)
        return layout_for(launch, precision)

    zero2, zero3 = layout(ACC / "deepspeed_zero2.yaml"), layout(ACC / "deepspeed_zero3.yaml")
    assert (zero2.kind, zero2.zero_stage, zero2.param_bytes) == ("zero", 2, 2)
    assert (zero3.kind, zero3.zero_stage) == ("zero", 3)
    assert layout(ACC / "ddp_gpu.yaml").kind == "ddp"
    assert layout(ACC / "fsdp.yaml").kind == "fsdp"
    assert layout(None, "fp32") == Layout("ddp", False, source="no accelerate config")
    inline = tmp_path / "zero3_offload.yaml"
    inline.write_text(
        "distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 3\n"
        "  offload_optimizer_device: cpu\n  offload_param_device: none\n"
    )
    offload = layout(inline)
    assert offload.zero_stage == 3 and offload.offload_optimizer and not offload.offload_params
    with pytest.raises(PlanError, match="no file 'missing.yaml'"):
        layout_for(LaunchConfig(kind="accelerate", accelerate_config="missing.yaml"), "bf16")


#: The issue's GRPO scenario: hf rollouts of 32 prompts x 8 at 2,048 + 4,096 tokens.
HF_ROLLOUTS = [
    "train.rollout_backend=hf",
    "train.rollout_batch_size=32",
    "train.generation_batch_size=null",
    "train.max_prompt_length=2048",
    "train.micro_batch_size=4",
    "train.logprob_chunk_size=512",
    "train.compute_entropy=true",
    "train.gradient_checkpointing=true",
    "train.kl_coef=0.01",
    "train.vps_refresh=catalog",
    "launch.accelerate_config=deployments/accelerate/deepspeed_zero2.yaml",
]


def test_grpo_plan_flags_the_rollout_kv_cache() -> None:
    plan = make_plan("grpo-paper-7b", HF_ROLLOUTS, gpus=8, gpu_memory_gib=80)
    rollout, update = plan.phases
    kv = rollout.get("KV cache")
    assert kv is not None and kv.bytes == 256 * 6144 * 57_344  # 84 GiB
    assert kv.detail == "256 sequences x 6144 tokens per generate call"
    assert rollout.get("reference model").bytes == 2 * 8_292_166_656
    # Update: chunked logits, 512 positions x 152,064 x 8 bytes.
    assert update.get("logits chunk").bytes == 512 * 152_064 * 8
    assert update.get("gradients").bytes == 2 * 8_292_166_656 // 8
    assert rollout.total > plan.usable >= update.total
    assert not plan.fits and len(plan.problems) == 1
    assert plan.fields[0] == "train.generation_batch_size"  # the largest term's field first
    free = plan.usable - sum(c.bytes for c in rollout.components[:3])
    assert f"train.generation_batch_size <= {free // (6144 * 57_344)}" in plan.problems[0]
    assert plan.tokens["max_tokens_per_step"] == 512 * 8 * 6144
    assert plan.tokens["max_tokens_per_gpu_per_step"] == 64 * 8 * 6144

    bounded = make_plan("grpo-paper-7b", [*HF_ROLLOUTS, "train.generation_batch_size=64"])
    assert bounded.phases[0].get("KV cache").bytes == 64 * 6144 * 57_344
    assert bounded.fits
    # VPS re-estimation with N = 32 rollouts is a phase of its own (and the largest call).
    vps = make_plan("grpo-paper-7b", [*HF_ROLLOUTS[:-2], "train.vps_refresh=estimate"])
    assert [p.name for p in vps.phases] == ["rollout", "VPS re-estimation", "update"]
    assert vps.phases[1].get("KV cache").bytes == 32 * 32 * 6144 * 57_344


def test_grpo_plan_with_vllm_counts_the_engine_share() -> None:
    overrides = [
        "train.rollout_backend=vllm",
        "train.vllm.gpu_memory_utilization=0.3",
        "train.vllm.max_model_len=6144",
        "train.max_prompt_length=2048",
        "train.vllm.sleep_between_rollouts=false",
    ]
    plan = make_plan("grpo-paper-7b", overrides, gpus=8, gpu_memory_gib=80)
    engine = int(0.3 * 80 * GIB)
    assert plan.phases[0].get("vLLM engine").bytes == engine
    assert plan.phases[-1].get("vLLM engine (awake)").bytes == engine
    asleep = make_plan("grpo-paper-7b", [*overrides[:-1], "train.vllm.sleep_between_rollouts=true"])
    assert asleep.phases[-1].get("vLLM engine (awake)") is None
    starved = make_plan("grpo-paper-7b", [*overrides[:1], "train.vllm.gpu_memory_utilization=0.1"])
    assert any("raise train.vllm.gpu_memory_utilization" in p for p in starved.problems)


def test_sft_plan_of_the_paper_preset() -> None:
    plan = make_plan("sft-paper-7b", gpus=8, gpu_memory_gib=80)
    [step] = plan.phases
    assert step.get("logits chunk").bytes == 1_024 * 152_064 * 6  # loss_chunk_size: 0.87 GiB
    unchunked = make_plan("sft-paper-7b", ["train.loss_chunk_size=null"]).phases[0]
    assert unchunked.get("logits").bytes == 16_384 * 152_064 * 10  # 23.2 GiB
    assert step.get("optimizer states").bytes == 12 * 8_292_166_656 // 8
    assert plan.layout.zero_stage == 3 and plan.fits
    assert plan.tokens["sequences_per_step"] == 32
    assert plan.tokens["max_tokens_per_step"] == 32 * 16_384
    small = make_plan("sft-paper-7b", ["train.gradient_checkpointing=false"], gpu_memory_gib=24)
    assert not small.fits and "train.micro_batch_size" in small.problems[0]


def test_model_sizes_come_from_the_checkpoint_when_reachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = Catalog(tmp_path / "catalog.duckdb")
    entry = register_tiny(catalog, tmp_path / "tiny", name="tiny-7b-sft")
    tiny = shape_from_config(json.loads((Path(entry.uri) / "config.json").read_text()))
    # A catalog entry wins over the size in its name.
    shape, where = resolve_shape("tiny-7b-sft", catalog.path)
    assert shape == tiny and str(Path(entry.uri) / "config.json") in where
    assert resolve_shape(entry.uri, None)[0] == tiny  # a directory
    # Not in the catalog: the known model of the size in the name.
    assert resolve_shape("mmr1-7b-sft", catalog.path)[0] == known("qwen2.5-vl-7b")
    assert "known sizes" in resolve_shape("mmr1-3b-sft", None)[1]
    with pytest.raises(PlanError, match="cannot size model 'tiny-sft'"):
        resolve_shape("tiny-sft", catalog.path)
    # A hub id whose config.json is in the local HF cache (no download).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    install_in_hf_cache(Path(entry.uri), "mmr1-test/plan-tiny", hub_cache_dir())
    assert resolve_shape("mmr1-test/plan-tiny", None)[0] == tiny


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``mmr1 ARGS`` in a fresh interpreter, which must not have imported Prefect."""
    code = (
        "import sys, cli.main\n"
        f"code = cli.main.main({list(args)!r})\n"
        "assert 'prefect' not in sys.modules, 'mmr1 plan imported prefect'\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "MMR1_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_plan_command(tmp_path: Path) -> None:
    sets = [a for s in HF_ROLLOUTS for a in ("--set", s)]
    bad = run_cli("plan", "--config", "grpo-paper-7b", *sets, home=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert "DOES NOT FIT" in bad.stdout and "84.00" in bad.stdout
    assert "train.generation_batch_size" in bad.stderr
    good = run_cli(
        "plan", "--config", "grpo-paper-7b", *sets, "--set", "train.generation_batch_size=64",
        "--gpus", "16", "--json", home=tmp_path,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    data = json.loads(good.stdout)
    assert data["gpus"] == 16 and data["fits"] is True
    assert data["phases"]["rollout"]["KV cache"] == 21.0  # 64 x 6144 x 57,344 bytes
    unknown = run_cli("plan", "--config", "grpo-demo", home=tmp_path)
    assert unknown.returncode == 2 and "--model" in unknown.stderr
    # The demo's tiny model is not in this empty home: size it as a 3B (1 process, no config).
    sized = run_cli("plan", "--config", "grpo-demo", "--model", "qwen2.5-vl-3b", home=tmp_path)
    assert "3.75B parameters" in sized.stdout and "DDP, bf16" in sized.stdout, sized.stderr
