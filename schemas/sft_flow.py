"""The ``sft`` flow: which data and model to train, how to launch, and the recipe settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import ConfigModel
from schemas.sft import SFTConfig


class LaunchConfig(ConfigModel):
    """Where training runs: in the flow's process, or as an ``accelerate launch`` subprocess.

    The subprocess path is how GPU clusters run (the trainer environment may lack
    Prefect); on CPU it runs DDP over gloo with the same code.
    """

    kind: Literal["inprocess", "accelerate"] = "inprocess"
    num_processes: int = Field(default=1, ge=1, description="Processes for accelerate launch.")
    accelerate_config: str | None = Field(
        default=None,
        description="Accelerate config file, e.g. deployments/accelerate/deepspeed_zero3.yaml.",
    )
    python: str | None = Field(
        default=None,
        description="Python of the trainer environment (default: this interpreter).",
    )
    timeout_s: float | None = Field(default=None, gt=0, description="Kill the job after this.")


class SFTStageConfig(ConfigModel):
    """Parameters of the ``sft`` flow (rendered as a form in the Prefect UI)."""

    dataset: str = Field(
        default="synthetic-sft", description="Catalog ref of the SFT dataset (NAME[@VERSION])."
    )
    base_model: str = Field(
        default="tiny-qwen2.5-vl", description="Catalog ref of the checkpoint to fine-tune."
    )
    output_name: str = Field(default="sft", description="Catalog name of the SFT checkpoint.")
    train: SFTConfig = Field(default_factory=SFTConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
