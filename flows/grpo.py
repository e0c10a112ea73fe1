"""The ``grpo_vas`` flow: GRPO with Variance-Aware Sampling from the SFT checkpoint.

``train.sampling_mode: uniform | vas`` is the paper's ablation (GRPO random vs
VAS) as one parameter.
"""

from prefect import flow

from schemas.grpo import GRPOStageConfig
from tasks.context import flow_tracking
from tasks.grpo import train_grpo
from tasks.observe import run_name


@flow(name="grpo_vas", log_prints=True, flow_run_name=run_name("grpo_vas", "output_name", "grpo"))
def grpo_vas(config: GRPOStageConfig | None = None, parent_mlflow_run_id: str | None = None) -> str:
    """Train, register the RL checkpoint (and every saved step); return its ref."""
    config = config or GRPOStageConfig()
    with flow_tracking("grpo_vas", config, parent_mlflow_run_id) as run:
        ref = train_grpo(config, run.run_id)
        print(f"RL checkpoint: {ref}")
        return ref
