"""Flow parameters: a full config, a preset, and partial overrides merged over either."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from schemas.curation import CurateRLConfig, CurateSFTConfig
from schemas.eval import EvaluateConfig
from schemas.grpo import GRPOStageConfig
from schemas.pipeline import PipelineConfig
from schemas.presets import ConfigError, apply_overrides, load_config
from schemas.sft_flow import SFTStageConfig
from schemas.vas import VPSEstimateConfig
from tasks.parameters import parameter_field, stage_config

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_merge_into_sections_and_keep_the_rest() -> None:
    data = {"a": {"b": 1, "c": 2}, "xs": [1, 2], "s": "x"}
    merged = apply_overrides(data, {"a.b": 5, "a": {"d": 3}, "xs": [9]})
    assert merged == {"a": {"b": 5, "c": 2, "d": 3}, "xs": [9], "s": "x"}
    assert data == {"a": {"b": 1, "c": 2}, "xs": [1, 2], "s": "x"}  # not modified
    # --set strings: a mapping value replaces its section, dotted keys set one field.
    assert apply_overrides(data, ["a.b=7"]) == {**data, "a": {"b": 7, "c": 2}}
    assert apply_overrides(data, ["a={d: 4}"])["a"] == {"d": 4}
    with pytest.raises(ConfigError, match="invalid key 'a..b'"):
        apply_overrides(data, {"a..b": 1})
    with pytest.raises(ConfigError, match=r"'s.t' goes inside 's'"):
        apply_overrides({}, {"s": 1, "s.t": 2})


def test_a_partial_override_keeps_the_presets_other_values() -> None:
    # What `prefect deployment run estimate_vps/estimate_vps --params
    # '{"overrides": {...}}'` gives the flow: the deployment's config (the vps-demo
    # preset) plus the overrides.
    deployed = load_config(VPSEstimateConfig, "vps-demo")
    config = stage_config(
        VPSEstimateConfig, deployed, overrides={"checkpoint": "tiny-grpo", "rollouts": 4}
    )
    assert (config.checkpoint, config.rollouts) == ("tiny-grpo", 4)
    assert config.sampling.max_new_tokens == 48 and config.sampling.temperature == 1.0
    assert config == deployed.model_copy(update={"checkpoint": "tiny-grpo", "rollouts": 4})
    # A nested override changes one field of a section, dotted or as a mapping.
    for overrides in ({"sampling.max_new_tokens": 64}, {"sampling": {"max_new_tokens": 64}}):
        nested = stage_config(VPSEstimateConfig, deployed, overrides=overrides)
        assert nested.sampling.max_new_tokens == 64 and nested.sampling.temperature == 1.0
    # The schema defaults differ (why a replaced config loses the preset's values).
    assert VPSEstimateConfig().sampling.max_new_tokens != 48


def test_a_preset_replaces_the_config_and_takes_overrides() -> None:
    deployed = load_config(VPSEstimateConfig, "vps-demo")
    paper = stage_config(VPSEstimateConfig, deployed, preset="vps-paper-7b")
    assert paper == load_config(VPSEstimateConfig, "vps-paper-7b") != deployed
    pipeline = stage_config(PipelineConfig, preset="demo", overrides={"sft.train.max_steps": 7})
    assert pipeline.sft.train.max_steps == 7
    assert pipeline.sft.train.lr == load_config(PipelineConfig, "demo").sft.train.lr
    # Nothing given: the schema defaults, which leave the input refs to the pipeline, so a
    # run on its own is refused before anything starts, naming them.
    with pytest.raises(ConfigError, match=r"SFTStageConfig: dataset, base_model not set"):
        stage_config(SFTStageConfig)
    given = SFTStageConfig(output_name="mine", dataset="d", base_model="m")
    assert stage_config(SFTStageConfig, given) is given


def test_bad_parameters_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"overrides checkpoint_typo.*checkpoint_typo"):
        stage_config(VPSEstimateConfig, preset="vps-demo", overrides={"checkpoint_typo": "x"})
    with pytest.raises(ConfigError, match="rollouts"):
        stage_config(VPSEstimateConfig, overrides={"rollouts": 0})
    with pytest.raises(ConfigError, match="no config file or preset named 'nope'"):
        stage_config(VPSEstimateConfig, preset="nope")


@pytest.mark.parametrize(
    ("model", "preset"),
    [
        (CurateRLConfig, "curate-rl-demo"),
        (CurateSFTConfig, "curate-sft-demo"),
        (SFTStageConfig, "sft-paper-3b"),
        (VPSEstimateConfig, "vps-demo"),
        (GRPOStageConfig, "grpo-paper-7b"),
        (EvaluateConfig, "eval-paper-3b"),
        (PipelineConfig, "demo"),
    ],
)
def test_overrides_over_a_config_object_round_trip(model, preset) -> None:
    # Overrides over a `config` object go through its JSON dump: nothing may change.
    config = load_config(model, preset)
    field = next(iter(type(config).model_fields))
    same = {field: config.model_dump(mode="json")[field]}
    assert stage_config(model, config, overrides=same) == config


def test_run_names_see_preset_config_and_overrides() -> None:
    assert parameter_field({"preset": "vps-demo"}, "checkpoint") == "tiny-sft"
    assert parameter_field({"config": {"checkpoint": "a"}}, "checkpoint") == "a"
    params = {"preset": "vps-demo", "overrides": {"checkpoint": "tiny-grpo"}}
    assert parameter_field(params, "checkpoint") == "tiny-grpo"
    assert parameter_field({"preset": "demo"}, "sft.output_name") == "tiny-sft"
    assert parameter_field({}, "checkpoint") is None
    assert parameter_field({"preset": "no-such-preset"}, "checkpoint") is None


def test_the_ci_workflow_sends_preset_and_overrides() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pipeline.yml").read_text())
    script = "\n".join(
        step.get("run", "") for step in workflow["jobs"]["run"]["steps"] if "run" in step
    )
    assert '"preset"' in script and '"overrides"' in script
    assert "yaml.safe_load" not in script  # presets compose: the worker resolves them
