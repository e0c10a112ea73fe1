"""The ``estimate_vps`` flow: a VPS table version for (RL pool, checkpoint).

Scheduled as a deployment with bare refs (``dataset: synthetic-rl``,
``checkpoint: tiny-grpo``), it re-estimates against whatever versions are latest
when it runs, so a long GRPO run elsewhere can pick fresh scores from the
catalog.
"""

from typing import Any

from prefect import flow

from schemas.vas import VPSEstimateConfig
from tasks.context import flow_tracking
from tasks.observe import run_name
from tasks.parameters import stage_config
from tasks.vps import estimate_vps_table


@flow(
    name="estimate_vps",
    log_prints=True,
    flow_run_name=run_name("estimate_vps", "dataset", "synthetic-rl"),
)
def estimate_vps(
    config: VPSEstimateConfig | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Roll out N answers per prompt, score them, register the VPS table; return its ref.

    Args:
        config: The whole VPS estimation config. A deployment fills it from its preset.
        preset: A preset name (schemas/presets/) or YAML path to use instead of config.
        overrides: Fields to change, merged over the preset (or config), keeping the rest:
            {"a.b": 1} or {"a": {"b": 1}}, like --set on the command line.
    """
    config = stage_config(VPSEstimateConfig, config, preset, overrides)
    with flow_tracking("estimate_vps", config) as run:
        ref = estimate_vps_table(config, run.run_id)
        print(f"VPS table: {ref}")
        return ref
