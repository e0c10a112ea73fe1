"""The home layout and config loading (presets, files, overrides, errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from schemas.home import HomeConfig
from schemas.presets import ConfigError, available_presets, load_config


def test_home_derives_every_path_from_root(tmp_path: Path, monkeypatch) -> None:
    for var in ("MMR1_CATALOG", "MMR1_DATASETS_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MMR1_HOME", str(tmp_path))
    home = HomeConfig().ensure()
    assert home.root == tmp_path.resolve()
    assert home.catalog == tmp_path / "catalog.duckdb"
    assert home.datasets == tmp_path / "datasets" and home.datasets.is_dir()
    assert home.checkpoints == tmp_path / "checkpoints"
    assert home.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_each_path_can_move_on_its_own(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "root"))
    monkeypatch.setenv("MMR1_CATALOG", str(tmp_path / "shared" / "cat.duckdb"))
    home = HomeConfig(datasets_dir=tmp_path / "data")
    assert home.catalog == tmp_path / "shared" / "cat.duckdb"
    assert home.datasets == tmp_path / "data"
    assert home.runs == tmp_path / "root" / "runs"


class _Stage(BaseModel):
    n: int = Field(default=1, ge=1)
    inner: dict[str, int] = {}


def test_load_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("n: 3\ninner:\n  a: 1\n")
    config = load_config(_Stage, path, ["inner.b=2", "n=5"])
    assert config == _Stage(n=5, inner={"a": 1, "b": 2})


@pytest.mark.parametrize(
    ("source", "overrides", "message"),
    [
        ("no-such-preset", [], "no config file or preset named 'no-such-preset'"),
        (None, ["n=0"], "n: Input should be greater than or equal to 1"),
        (None, ["novalue"], "expected KEY=VALUE"),
    ],
)
def test_load_config_errors_name_the_problem(source, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_Stage, source, overrides)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("n: [1,\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(_Stage, path)


def test_demo_preset_validates() -> None:
    from schemas.pipeline import PipelineConfig

    assert "demo" in available_presets()
    config = load_config(PipelineConfig, "demo", ["curate_rl.difficulty.rollouts=3"])
    assert config.curate_rl.difficulty.rollouts == 3
    assert config.curate_rl.sources[0].synthetic.n_items == 512
    # One task distribution (synthetic-demo) for the RL pool, the SFT data and the benchmark.
    tasks = config.benchmark_tasks.model_dump()
    for source in (config.curate_rl.sources[0], config.curate_sft.sources[0]):
        assert source.synthetic.model_dump(exclude={"n_items", "seed"}) == tasks
    assert tasks["families"] == ["shape_color", "tallest_bar"] and config.benchmark_items == 500
    # The uniform-sampling ablation and the evaluation of all four models against the SFT.
    assert config.grpo_uniform_name == "tiny-grpo-uniform" and config.evaluate.sampled_k == 8
    assert config.evaluate.baseline is None and config.grpo.train.sampling_mode == "vas"


@pytest.mark.parametrize("preset", ["sft-demo", "sft-paper-3b", "sft-paper-7b"])
def test_sft_presets_validate(preset: str) -> None:
    from schemas.sft_flow import SFTStageConfig

    config = load_config(SFTStageConfig, preset)
    assert config.train.max_grad_norm == 1.0
    if preset.startswith("sft-paper"):
        assert config.train.lr == 1e-5 and config.train.global_batch_size(8) == 32
        assert (Path(__file__).parents[1] / config.launch.accelerate_config).is_file()


@pytest.mark.parametrize("preset", ["vps-demo", "vps-paper-3b", "vps-paper-7b"])
def test_vps_presets_validate(preset: str) -> None:
    from schemas.vas import VPSEstimateConfig

    config = load_config(VPSEstimateConfig, preset)
    assert config.rollouts >= 8
    if preset.startswith("vps-paper"):
        assert config.rollouts == 32 and config.sampling.temperature == 0.6
        assert config.backend is not None and config.backend.kind == "vllm"


@pytest.mark.parametrize("preset", ["grpo-demo", "grpo-paper-3b", "grpo-paper-7b"])
def test_grpo_presets_validate(preset: str) -> None:
    from schemas.grpo import GRPOStageConfig

    config = load_config(GRPOStageConfig, preset)
    assert config.train.sampling_mode == "vas"
    if preset.startswith("grpo-paper"):
        train = config.train
        assert (train.group_size, train.prompts_per_step, train.lr) == (8, 512, 1e-6)
        assert (train.clip_low, train.clip_high, train.kl_coef) == (0.2, 0.2, 0.01)
        assert (train.mix_ratio, train.vps_update_every, train.vps_rollouts) == (0.5, 35, 32)
        assert train.sampling.temperature == 0.6
        assert (Path(__file__).parents[1] / config.launch.accelerate_config).is_file()
