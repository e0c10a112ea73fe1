"""Row schemas of the datasets the pipeline reads and writes."""

from __future__ import annotations

import builtins
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IMAGE_PLACEHOLDER = "<image>"


class ImageData(BaseModel):
    """One image as stored in MMR1-style datasets: encoded bytes and/or a path."""

    model_config = ConfigDict(frozen=True)

    # builtins.: the field name shadows the type inside the class body.
    bytes: builtins.bytes | None = Field(
        default=None, description="Encoded image file (PNG/JPEG...)."
    )
    path: str | None = Field(default=None, description="Image file path or original file name.")


class RLRecord(BaseModel):
    """One row of an RL prompt pool, in the MMR1-RL schema plus our metadata.

    ``problem`` holds one ``<image>`` placeholder per entry of ``images``.
    """

    id: str = Field(description="Stable row id, unique within the dataset.")
    problem: str = Field(description="Question text with <image> placeholders.")
    answer: str = Field(description="Short verifiable ground-truth answer.")
    images: list[ImageData] = Field(default_factory=list)
    choices: list[str] | None = Field(
        default=None, description="Option texts for multiple choice, in letter order (A, B, ...)."
    )
    type: str = Field(default="unknown", description="Problem family label, used for balancing.")
    source: str = Field(default="unknown", description="Where the row came from.")
    difficulty: int | None = Field(default=None, description="Generator difficulty knob, if known.")


class ChatTurn(BaseModel):
    """One ShareGPT-style turn of an SFT conversation."""

    model_config = ConfigDict(populate_by_name=True)

    from_: Literal["system", "human", "gpt"] = Field(alias="from")
    value: str


class SFTRecord(BaseModel):
    """One row of an SFT dataset, in the MMR1-SFT (ShareGPT) schema plus our metadata."""

    id: str
    conversations: list[ChatTurn]
    images: list[ImageData] = Field(default_factory=list)
    answer: str = Field(description="Ground truth the final answer was verified against.")
    type: str = "unknown"
    source: str = "unknown"
