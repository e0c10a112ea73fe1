"""The ``sft`` flow: cold-start fine-tuning of a Qwen2.5-VL-style model on curated long-CoT data."""

from prefect import flow

from schemas.sft_flow import SFTStageConfig
from tasks.context import flow_tracking
from tasks.observe import run_name
from tasks.sft import train_sft


@flow(name="sft", log_prints=True, flow_run_name=run_name("sft", "output_name", "sft"))
def sft(config: SFTStageConfig | None = None, parent_mlflow_run_id: str | None = None) -> str:
    """Train, keep the best checkpoint by the configured metric, register it; return its ref."""
    config = config or SFTStageConfig()
    with flow_tracking("sft", config, parent_mlflow_run_id) as run:
        ref = train_sft(config, run.run_id)
        print(f"SFT checkpoint: {ref}")
        return ref
