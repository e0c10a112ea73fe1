"""Presets compose, and the paper presets chain: every ref a stage reads is written by an
earlier stage of the same chain, or registered by ``mmr1 model register``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from mmr1.models.hub import default_name
from schemas.curation import CurateRLConfig, CurateSFTConfig
from schemas.eval import EvaluateConfig
from schemas.grpo import GRPOStageConfig
from schemas.presets import ConfigError, load_config, read_preset
from schemas.refs import parse_ref, ref_fields
from schemas.sft_flow import SFTStageConfig
from schemas.vas import VPSEstimateConfig


def _chain(size: str) -> list[tuple[str, type[BaseModel]]]:
    return [
        ("curate-rl-paper", CurateRLConfig),
        ("curate-sft-paper", CurateSFTConfig),
        (f"sft-paper-{size}", SFTStageConfig),
        (f"vps-paper-{size}", VPSEstimateConfig),
        (f"grpo-paper-{size}", GRPOStageConfig),
        (f"eval-paper-{size}", EvaluateConfig),
    ]


def _name(ref: str) -> str:
    return parse_ref(ref).name


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_paper_presets_chain(size: str) -> None:
    # What `mmr1 model register Qwen/Qwen2.5-VL-<N>B-Instruct` registers, by default name.
    written = {default_name(f"Qwen/Qwen2.5-VL-{size.upper()}-Instruct")}
    for preset, model in _chain(size):
        config = load_config(model, preset)
        fields = list(ref_fields(config))
        for found in fields:
            if found.role == "input":
                assert _name(found.value) in written, (
                    f"{preset}: {found.path} reads {found.value!r}, which no earlier stage of "
                    f"the {size} chain writes (written: {sorted(written)})"
                )
        for found in fields:
            if found.role == "output":
                written.add(found.value)
        if isinstance(config, VPSEstimateConfig) and config.output_name is None:
            written.add(f"{_name(config.dataset)}-vps")  # the flow's default table name
    assert {f"mmr1-{size}-sft", f"mmr1-{size}-rl", "mmr1-rl", "mmr1-sft"} <= written


def test_presets_compose_instead_of_copying() -> None:
    seven = load_config(SFTStageConfig, "sft-paper-7b")
    three = load_config(SFTStageConfig, "sft-paper-3b")
    assert (three.base_model, three.output_name) == ("qwen2.5-vl-3b-instruct", "mmr1-3b-sft")
    assert three.train == seven.train and three.launch == seven.launch
    assert "preset" not in read_preset("sft-paper-3b")


def test_composition_merges_sections_and_applies_overrides_last(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("train: {lr: 0.5, max_steps: 10}\noutput_name: a\n")
    (tmp_path / "child.yaml").write_text("preset: base.yaml\ntrain: {max_steps: 20}\n")
    config = load_config(SFTStageConfig, tmp_path / "child.yaml", ["train.lr=0.25"])
    assert (config.train.lr, config.train.max_steps, config.output_name) == (0.25, 20, "a")
    (tmp_path / "loop.yaml").write_text("preset: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(SFTStageConfig, tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("preset: no-such-preset\n")
    with pytest.raises(ConfigError, match="no config file or preset named 'no-such-preset'"):
        load_config(SFTStageConfig, tmp_path / "missing.yaml")
