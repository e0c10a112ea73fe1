"""The ``sft`` flow: which data and model to train, how to launch, and the recipe settings."""

from __future__ import annotations

from pydantic import Field

from schemas.base import StageConfig
from schemas.launch import LaunchConfig
from schemas.refs import CheckpointInput, CheckpointOutput, DatasetInput
from schemas.sft import SFTConfig


class SFTStageConfig(StageConfig):
    """Parameters of the ``sft`` flow (rendered as a form in the Prefect UI)."""

    REQUIRED = ("dataset", "base_model")

    dataset: DatasetInput | None = Field(
        default=None,
        description="Catalog ref of the SFT dataset (NAME[@VERSION]). "
        "None: set by mmr1-pipeline; required when the flow runs on its own.",
    )
    base_model: CheckpointInput | None = Field(
        default=None,
        description="Checkpoint to fine-tune: catalog ref, local directory or hub id "
        "(registered on the fly). "
        "None: set by mmr1-pipeline; required when the flow runs on its own.",
    )
    output_name: CheckpointOutput = Field(
        default="sft", description="Catalog name of the SFT checkpoint."
    )
    train: SFTConfig = Field(
        default_factory=SFTConfig,
        description="The SFT recipe: schedule, batch sizes, optimiser, evaluation, saves.",
    )
    launch: LaunchConfig = Field(
        default_factory=LaunchConfig,
        description="Where training runs: in the flow's process, or an accelerate launch job.",
    )
