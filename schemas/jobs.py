"""Training jobs: what one runs (:data:`JobSpec`); where it runs is ``schemas.launch``.

A job spec names everything a training job needs: the recipe's config, the
model, data and output locations, where metrics go and (GRPO) how it talks to
the catalog. The same spec runs in the flow's process or, written to a JSON
file, as ``python -m mmr1.jobs SPEC.json`` under ``accelerate launch``
(``mmr1.jobs.run_job`` both ways), so the two paths cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from schemas.base import ConfigModel
from schemas.grpo import GRPOConfig
from schemas.sft import SFTConfig


class TrackingSpec(ConfigModel):
    """The MLflow run a job logs its metrics to (by id: the run belongs to the flow)."""

    run_id: str = Field(description="MLflow run id the job logs metrics to.")
    tracking_uri: str | None = Field(
        default=None,
        description="Tracking URI (an HTTP server from trainer machines); None: MLflow's default.",
    )


class CatalogSpec(ConfigModel):
    """How a GRPO job talks to the catalog: registers saved checkpoints, reads VPS tables."""

    catalog_path: Path = Field(description="The DuckDB catalog file.")
    checkpoints_root: Path = Field(description="Where snapshots of saved checkpoints go.")
    name: str | None = Field(
        default=None, description="Catalog name of saved checkpoints; None: do not register them."
    )
    dataset_ref: str | None = Field(
        default=None, description="Catalog ref of the RL pool (lineage; VPS tables to read)."
    )
    init_ref: str | None = Field(default=None, description="Catalog ref of the starting model.")
    prefect_flow_run_id: str | None = Field(
        default=None, description="Prefect flow run recorded on registered checkpoints."
    )


class _Job(ConfigModel):
    model_path: Path = Field(description="Checkpoint directory to start from.")
    dataset_path: Path = Field(description="Dataset directory (SFT data or RL pool).")
    output_dir: Path = Field(description="Run directory: checkpoints, result.json, logs.")
    resume: bool = Field(default=True, description="Continue from the newest checkpoint there.")
    tracking: TrackingSpec | None = Field(
        default=None, description="MLflow run to log to (None: no tracking)."
    )


class SFTJob(_Job):
    """A cold-start SFT job (``mmr1.sft.recipe.run_sft``)."""

    kind: Literal["sft"] = Field(default="sft", description="The recipe: supervised fine-tuning.")
    config: SFTConfig = Field(description="The SFT recipe settings.")


class GRPOJob(_Job):
    """A GRPO-with-VAS job (``mmr1.rl.grpo.run_grpo``)."""

    kind: Literal["grpo"] = Field(default="grpo", description="The recipe: GRPO with VAS.")
    config: GRPOConfig = Field(description="The GRPO recipe settings.")
    vps_table: tuple[str, Path] | None = Field(
        default=None, description="(catalog ref, directory) of the initial VPS table."
    )
    catalog: CatalogSpec | None = Field(
        default=None, description="Catalog access for checkpoint registration and VPS lookups."
    )


JobSpec = Annotated[SFTJob | GRPOJob, Field(discriminator="kind")]
