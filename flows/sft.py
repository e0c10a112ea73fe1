"""The ``sft`` flow: cold-start fine-tuning of a Qwen2.5-VL-style model on curated long-CoT data."""

from typing import Any

from prefect import flow

from schemas.sft_flow import SFTStageConfig
from tasks.context import flow_tracking
from tasks.observe import run_name
from tasks.parameters import stage_config
from tasks.sft import train_sft


@flow(name="sft", log_prints=True, flow_run_name=run_name("sft", "output_name", "sft"))
def sft(
    config: SFTStageConfig | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Train, keep the best checkpoint by the configured metric, register it; return its ref.

    Args:
        config: The whole SFT config. A deployment fills it from its preset.
        preset: A preset name (schemas/presets/) or YAML path to use instead of config.
        overrides: Fields to change, merged over the preset (or config), keeping the rest:
            {"a.b": 1} or {"a": {"b": 1}}, like --set on the command line.
    """
    config = stage_config(SFTStageConfig, config, preset, overrides)
    with flow_tracking("sft", config) as run:
        ref = train_sft(config, run.run_id)
        print(f"SFT checkpoint: {ref}")
        return ref
