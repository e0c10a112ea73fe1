"""The ``estimate_vps`` flow: a VPS table version for (RL pool, checkpoint).

Scheduled as a deployment with bare refs (``dataset: synthetic-rl``,
``checkpoint: tiny-grpo``), it re-estimates against whatever versions are latest
when it runs, so a long GRPO run elsewhere can pick fresh scores from the
catalog.
"""

from prefect import flow

from schemas.vas import VPSEstimateConfig
from tasks.context import flow_tracking
from tasks.observe import run_name
from tasks.vps import estimate_vps_table


@flow(
    name="estimate_vps",
    log_prints=True,
    flow_run_name=run_name("estimate_vps", "dataset", "synthetic-rl"),
)
def estimate_vps(
    config: VPSEstimateConfig | None = None, parent_mlflow_run_id: str | None = None
) -> str:
    """Roll out N answers per prompt, score them, register the VPS table; return its ref."""
    config = config or VPSEstimateConfig()
    with flow_tracking("estimate_vps", config, parent_mlflow_run_id) as run:
        ref = estimate_vps_table(config, run.run_id)
        print(f"VPS table: {ref}")
        return ref
