"""Rows of the catalog: what the DuckDB manifest returns and what callers hand it.

A catalog entry is addressed by a *ref*, ``name@version`` (optionally prefixed
with its kind: ``dataset:``, ``checkpoint:``, ``vps:``). Entries are immutable
records: the catalog creates them, nothing edits them afterwards. Timestamps
are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC (that is how the catalog stores them)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class _Entry(BaseModel):
    """Common base: frozen records, UTC timestamps."""

    model_config = ConfigDict(frozen=True)

    @field_validator("created_at", mode="after", check_fields=False)
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)


class _Versioned(_Entry):
    """An entry with a name and a version: datasets, checkpoints, VPS tables."""

    id: str = Field(description="Opaque unique id of this entry.")
    name: str = Field(min_length=1, description="Name shared by all versions.")
    version: int = Field(ge=1, description="1, 2, ... per name; a new content hash bumps it.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ref(self) -> str:
        """``name@version``: how every other stage refers to this entry."""
        return f"{self.name}@{self.version}"


class DatasetEntry(_Versioned):
    """One version of a dataset (RL pool, SFT set, benchmark, rollouts, raw source)."""

    kind: str = Field(
        description='What the data is for: "rl", "sft", "benchmark", "rollouts", "source", ...'
    )
    uri: str = Field(description="Where the data lives (a directory or file path, or a URI).")
    row_count: int = Field(ge=0, description="Number of rows (records) in this version.")
    content_hash: str = Field(
        min_length=1, description="Hash of the content; the version's identity."
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="Column name -> type, as written by the producer."
    )
    created_at: datetime = Field(description="When this version was registered (UTC).")
    prefect_flow_run_id: str | None = Field(
        default=None, description="Prefect flow run that wrote it."
    )
    mlflow_run_id: str | None = Field(default=None, description="MLflow run that wrote it.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form producer notes.")
    parents: list[str] = Field(
        default_factory=list, description="Kind-prefixed refs this version was derived from."
    )


class CheckpointEntry(_Versioned):
    """One version of a model checkpoint."""

    stage: str = Field(description='Training stage: "base", "sft", "rl", or another label.')
    uri: str = Field(description="Checkpoint directory (loadable by the model loader).")
    content_hash: str = Field(min_length=1, description="Hash of the checkpoint files.")
    step: int | None = Field(default=None, ge=0, description="Optimiser step it was saved at.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Metrics at save time.")
    config: dict[str, Any] = Field(default_factory=dict, description="Config that produced it.")
    created_at: datetime = Field(description="When this version was registered (UTC).")
    prefect_flow_run_id: str | None = Field(
        default=None, description="Prefect flow run that wrote it."
    )
    mlflow_run_id: str | None = Field(default=None, description="MLflow run that wrote it.")
    parents: list[str] = Field(
        default_factory=list, description="Kind-prefixed refs (base model, training data...)."
    )


class VPSTableEntry(_Versioned):
    """One version of a Variance Promotion Score table: per-prompt pass rates of a
    checkpoint on a dataset, which the mixed-variance sampler reads."""

    dataset_ref: str = Field(description="The dataset (name@version) the scores are about.")
    checkpoint_ref: str = Field(description="The checkpoint (name@version) that was rolled out.")
    uri: str = Field(description="Where the table lives.")
    content_hash: str = Field(min_length=1, description="Hash of the table's content.")
    row_count: int = Field(ge=0, description="Number of prompts scored.")
    stats: dict[str, Any] = Field(default_factory=dict, description="Summary statistics.")
    created_at: datetime = Field(description="When this version was registered (UTC).")
    prefect_flow_run_id: str | None = Field(
        default=None, description="Prefect flow run that wrote it."
    )
    mlflow_run_id: str | None = Field(default=None, description="MLflow run that wrote it.")


class EvalResultEntry(_Entry):
    """Scores of one checkpoint on one benchmark split with one scorer."""

    id: str = Field(description="Opaque unique id of this result.")
    checkpoint_ref: str = Field(description="The checkpoint evaluated (name@version).")
    benchmark: str = Field(min_length=1, description="Benchmark name (or dataset ref).")
    split: str = Field(description='Split evaluated, e.g. "test".')
    scorer: str = Field(description="Scorer that produced the metrics.")
    n_items: int = Field(ge=0, description="Number of items scored.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Headline metrics.")
    breakdown: dict[str, Any] = Field(
        default_factory=dict, description="Per-category / per-family metrics."
    )
    predictions_uri: str | None = Field(default=None, description="Where predictions were saved.")
    created_at: datetime = Field(description="When the result was recorded (UTC).")
    prefect_flow_run_id: str | None = Field(
        default=None, description="Prefect flow run that wrote it."
    )
    mlflow_run_id: str | None = Field(default=None, description="MLflow run that wrote it.")


class StageRunEntry(_Entry):
    """One attempt of a pipeline stage: its identity (key), outcome and output.

    ``key`` hashes the stage name, its resolved config (including the pinned
    versions of its inputs) and the code version: a later attempt with the same
    key may reuse a ``completed`` one's output instead of recomputing it.
    """

    id: str
    stage: str = Field(description='Stage name: "curate_rl", "sft", "grpo_vas", ...')
    key: str = Field(description="Hash of stage, resolved config and code version.")
    status: str = Field(description='"completed", "failed" or "reused".')
    output_ref: str | None = Field(default=None, description="Kind-prefixed ref it produced.")
    inputs: dict[str, Any] = Field(default_factory=dict, description="Input refs, by role.")
    code_version: str = Field(description="Hash of the pipeline's source at run time.")
    error: str | None = Field(default=None, description="Why a failed attempt failed.")
    created_at: datetime
    prefect_flow_run_id: str | None = None
    mlflow_run_id: str | None = None


class QuarantinedRow(BaseModel):
    """A row kept out of a dataset version, with the reason: curation never drops silently."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(min_length=1, description="Where the row came from (source name or ref).")
    source_row_id: str = Field(description="Id of the row within its source.")
    reason: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^\S+$",
        description='Short code: "empty_problem", "image_decode_error", "duplicate", ...',
    )
    detail: str = Field(default="", description="Human-readable explanation.")
    duplicate_of: str | None = Field(
        default=None,
        description="For duplicates: the row_id of the row that was kept (globally unique "
        "'source/source_row_id'; the kept row may come from another source).",
    )
    payload: dict[str, Any] | None = Field(
        default=None, description="The offending content (JSON-serialisable), for inspection."
    )


class LineageNode(BaseModel):
    """A catalog entry and, recursively, the entries it was derived from."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description='"dataset", "checkpoint" or "vps".')
    ref: str = Field(description="name@version")
    parents: list[LineageNode] = Field(default_factory=list)

    @property
    def qualified_ref(self) -> str:
        """``kind:name@version``."""
        return f"{self.kind}:{self.ref}"
