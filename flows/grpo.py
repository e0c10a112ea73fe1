"""The ``grpo_vas`` flow: GRPO with Variance-Aware Sampling from the SFT checkpoint.

``train.sampling_mode: uniform | vas`` is the paper's ablation (GRPO random vs
VAS) as one parameter.
"""

from typing import Any

from prefect import flow

from schemas.grpo import GRPOStageConfig
from tasks.context import flow_tracking
from tasks.grpo import train_grpo
from tasks.observe import run_name
from tasks.parameters import stage_config


@flow(name="grpo_vas", log_prints=True, flow_run_name=run_name("grpo_vas", "output_name", "grpo"))
def grpo_vas(
    config: GRPOStageConfig | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Train, register the RL checkpoint (and every saved step); return its ref.

    Args:
        config: The whole GRPO config. A deployment fills it from its preset.
        preset: A preset name (schemas/presets/) or YAML path to use instead of config.
        overrides: Fields to change, merged over the preset (or config), keeping the rest:
            {"a.b": 1} or {"a": {"b": 1}}, like --set on the command line.
    """
    config = stage_config(GRPOStageConfig, config, preset, overrides)
    with flow_tracking("grpo_vas", config) as run:
        ref = train_grpo(config, run.run_id)
        print(f"RL checkpoint: {ref}")
        return ref
