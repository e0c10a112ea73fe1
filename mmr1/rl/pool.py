"""The prompts a GRPO run trains on: the RL pool less the prompts that are too long.

A prompt's length is what the policy sees: the chat-templated prompt with every
image expanded to its LLM tokens, ``grid_t * grid_h * grid_w / merge_size**2``
``<|image_pad|>`` tokens each (about 1,300 for a 1,000 x 1,000 image with
Qwen2.5-VL's defaults). :func:`prompt_token_counts` computes exactly
``len(encode_prompt(policy, request).input_ids)`` without preprocessing any
pixels: texts are tokenized in batches and image sizes are read from the file
headers, then run through the image processor's own resize rule.

Prompts longer than ``max_prompt_length`` are dropped from the pool, never cut
(cutting could split an image's token block, and the answer would no longer
match the question). Every rank computes the same selection, before the sampler
is built, so the sampler only ever sees kept prompts and indices stay aligned
across ranks; VPS tables keyed by prompt id may still name dropped prompts
(they were estimated on the whole pool) and those entries are ignored.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from PIL import Image

from mmr1.generation.messages import to_template_messages
from mmr1.models.loader import Policy
from mmr1.prompts import training_prompt
from schemas.generation import GenerationRequest
from schemas.records import ImageData

PROMPT_TOO_LONG = "prompt_too_long"
"""Reason recorded for a prompt longer than ``max_prompt_length``."""

DROPPED_FILE = "dropped_prompts.parquet"
"""Written into the run directory: ``row_id``, ``reason``, ``prompt_tokens`` of dropped prompts."""


@dataclass
class PoolSelection:
    """The kept pool rows (original order) and the dropped ones with their reasons."""

    pool: pl.DataFrame
    dropped: pl.DataFrame  # row_id, reason, prompt_tokens

    def counts(self) -> dict[str, int]:
        """Dropped prompts by reason."""
        reasons = self.dropped["reason"].to_list()
        return {reason: reasons.count(reason) for reason in sorted(set(reasons))}


def image_size(data: dict[str, Any], *, row_id: str, index: int) -> tuple[int, int]:
    """(width, height) of a stored image, from its header only (no pixel decoding)."""
    image = ImageData(**data)
    try:
        if image.bytes is not None:
            with Image.open(io.BytesIO(image.bytes)) as opened:
                return opened.size
        if image.path:
            with Image.open(Path(image.path)) as opened:
                return opened.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"row {row_id!r}: field 'images'[{index}]: {exc}") from None
    raise ValueError(f"row {row_id!r}: field 'images'[{index}] has neither bytes nor a path")


def prompt_token_counts(policy: Policy, rows: pl.DataFrame, batch_size: int = 256) -> list[int]:
    """Token count of each row's training prompt as the policy encodes it (module docstring).

    ``rows`` has ``row_id``, ``problem``, ``choices`` and ``images`` (an RL pool frame).
    """
    counts: list[int] = []
    columns = rows.select("row_id", "problem", "choices", "images")
    for start in range(0, columns.height, batch_size):
        texts: list[str] = []
        extra: list[int] = []
        for row in columns.slice(start, batch_size).iter_rows(named=True):
            sizes = [
                image_size(image, row_id=row["row_id"], index=j)
                for j, image in enumerate(row["images"] or [])
            ]
            request = GenerationRequest(
                prompt=training_prompt(row["problem"], row["choices"]),
                images=sizes,  # only their number matters to the template
                request_id=row["row_id"],
            )
            if sizes and not policy.is_vlm:
                raise ValueError(f"row {row['row_id']!r} has images; the model is text-only")
            texts.append(
                policy.processor.apply_chat_template(
                    to_template_messages(request), tokenize=False, add_generation_prompt=True
                )
            )
            # Each image's single <|image_pad|> in the text expands to this many tokens.
            extra.append(sum(image_tokens(policy, w, h) - 1 for w, h in sizes))
        encoded = policy.tokenizer(texts)["input_ids"]
        counts.extend(len(ids) + add for ids, add in zip(encoded, extra, strict=True))
    return counts


def image_tokens(policy: Policy, width: int, height: int) -> int:
    """LLM tokens of one image of this size: resized patches / merge_size**2."""
    image_processor = policy.processor.image_processor
    patches = image_processor.get_number_of_image_patches(height, width, {})
    return int(patches) // int(image_processor.merge_size) ** 2


def select_pool(pool: pl.DataFrame, policy: Policy, max_prompt_length: int | None) -> PoolSelection:
    """Drop the prompts longer than ``max_prompt_length`` tokens (None: keep all)."""
    empty = pl.DataFrame(
        schema={"row_id": pl.String, "reason": pl.String, "prompt_tokens": pl.Int64}
    )
    if max_prompt_length is None:
        return PoolSelection(pool=pool, dropped=empty)
    lengths = pl.Series("prompt_tokens", prompt_token_counts(policy, pool), dtype=pl.Int64)
    too_long = lengths > max_prompt_length
    dropped = pl.DataFrame(
        {
            "row_id": pool["row_id"].filter(too_long).cast(pl.String),
            "reason": [PROMPT_TOO_LONG] * int(too_long.sum()),
            "prompt_tokens": lengths.filter(too_long),
        },
        schema=empty.schema,
    )
    return PoolSelection(pool=pool.filter(~too_long), dropped=dropped)
