"""Every field of every preset is used: validated by its stage's model and carried to the
config the flow runs, never dropped or silently replaced.

Unknown keys already fail (``extra="forbid"``); these tests add that each value a preset
gives survives validation unchanged, and that the pipeline hands each stage its recipe
whole, changing only the input refs it sets itself (which a pipeline config must leave
unset: ``PipelineConfig`` refuses them).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from schemas.curation import CurateRLConfig, CurateSFTConfig
from schemas.eval import EvaluateConfig
from schemas.grpo import GRPOStageConfig
from schemas.pipeline import STAGE_IO, PipelineConfig
from schemas.presets import available_presets, load_config, read_preset
from schemas.sft_flow import SFTStageConfig
from schemas.synthetic import SyntheticTasks
from schemas.vas import VPSEstimateConfig

#: Preset name prefix -> the config it is for (one per flow, plus the synthetic tasks).
MODELS: dict[str, type[BaseModel]] = {
    "curate-rl-": CurateRLConfig,
    "curate-sft-": CurateSFTConfig,
    "sft-": SFTStageConfig,
    "vps-": VPSEstimateConfig,
    "grpo-": GRPOStageConfig,
    "eval-": EvaluateConfig,
    "synthetic-": SyntheticTasks,
    "pipeline-": PipelineConfig,
    "demo": PipelineConfig,
}


def _model(preset: str) -> type[BaseModel]:
    for prefix, model in MODELS.items():
        if preset.startswith(prefix):
            return model
    raise AssertionError(f"preset {preset!r}: no config model for it in MODELS")


def _leaves(data: Any, path: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every scalar or list in nested mappings."""
    if isinstance(data, dict):
        found: dict[str, Any] = {}
        for key, value in data.items():
            found.update(_leaves(value, f"{path}.{key}" if path else str(key)))
        return found
    return {path: data}


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


@pytest.mark.parametrize("preset", available_presets())
def test_every_value_a_preset_gives_is_the_value_the_config_holds(preset: str) -> None:
    config = load_config(_model(preset), preset)
    dumped = config.model_dump(mode="json", by_alias=True)
    given = _leaves(read_preset(preset))
    assert given, f"{preset} is empty"
    for path, value in given.items():
        held = _get(dumped, path)
        if isinstance(value, float | int) and not isinstance(value, bool):
            assert held == pytest.approx(value), (preset, path)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            # A list of sections (sources, benchmarks): each given key, item by item.
            for i, item in enumerate(value):
                for key, leaf in _leaves(item).items():
                    assert _get(held[i], key) == leaf, (preset, f"{path}[{i}].{key}")
        else:
            assert held == value, (preset, path, held, value)


@pytest.mark.parametrize("preset", [p for p in available_presets() if _model(p) is PipelineConfig])
def test_the_pipeline_hands_each_stage_its_whole_recipe(preset: str) -> None:
    from flows.pipeline import STAGE_FLOWS

    config = load_config(PipelineConfig, preset)
    refs = {name: f"ref-of-{name}" for name in ("base_model", "benchmark")}
    refs |= {io.writes: f"ref-of-{io.writes}" for io in STAGE_IO.values()}
    for stage, io in STAGE_IO.items():
        built = STAGE_FLOWS[stage].config(config, refs)
        recipe = getattr(config, io.section)
        assert type(built) is type(recipe), stage
        # Only the refs the pipeline sets differ (and, for a stage that defines it, what the
        # flow documents: the ablation's sampling mode, the base model as rater, the
        # evaluation's baseline and the pipeline's benchmark).
        documented = {
            "grpo_uniform": {"train", "output_name"},
            "curate_rl": {"difficulty"},
            "curate_sft": {"difficulty"},
            "evaluate": {"baseline", "benchmarks"},
        }.get(stage, set())
        changed = {
            name
            for name in type(recipe).model_fields
            if getattr(built, name) != getattr(recipe, name)
        }
        assert changed <= set(io.fills) | documented, (stage, changed)
        for name in io.fills:
            assert getattr(built, name) not in (None, []), (stage, name)
