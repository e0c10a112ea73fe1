"""Files in the released MMR1-SFT layout (ShareGPT ``conversations`` + ``images``), for tests.

Rows: two good single-exchange rows (one with two images), a CoT without the
``<think>``/``<answer>`` format, a gpt turn with no final answer, a conversation
that is not one human turn then one gpt turn, and a text-only row.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

TURN = pa.struct([("from", pa.string()), ("value", pa.string())])
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SFT_LAYOUT = pa.schema([("conversations", pa.list_(TURN)), ("images", pa.list_(IMAGE))])


def png(colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> bytes:
    image = Image.new("RGB", (112, 112), colour)
    ImageDraw.Draw(image).rectangle(box, fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def cot(reasoning: str, answer: str) -> str:
    return f"<think>{reasoning}</think><answer>The answer is \\boxed{{{answer}}}.</answer>"


def sft_rows() -> list[dict[str, Any]]:
    red = {"bytes": png((200, 30, 30), (5, 5, 40, 90)), "path": "red.png"}
    blue = {"bytes": png((30, 30, 200), (50, 10, 90, 30)), "path": "blue.png"}
    green = {"bytes": png((30, 160, 30), (10, 60, 60, 90)), "path": "green.png"}

    def row(human: str, gpt: str, images: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}],
            "images": images,
        }

    return [
        row(
            "<image>\nWhat is the colour of the large rectangle's background in the picture?",
            cot("The background around the white rectangle is red.", "red"),
            [red],
        ),
        row(
            "<image>\n<image>\nHow many white rectangles are there in the two pictures together?",
            cot("Each picture shows exactly one white rectangle, so 1 + 1 = 2.", "2"),
            [blue, green],
        ),
        row(  # a CoT without the think/answer format: quarantined by the existing teacher
            "<image>\nWhich colour fills most of this image apart from the white box?",
            "It is mostly green, so the answer is \\boxed{green}.",
            [green],
        ),
        row(  # no final answer anywhere, and no answer column: quarantined at ingest
            "<image>\nDescribe the picture in a few words please, briefly and clearly.",
            "A blue picture with a white rectangle near the top right corner of it.",
            [blue],
        ),
        {  # two human turns: not a single exchange
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is this?"},
                {"from": "human", "value": "Answer please."},
            ],
            "images": [red],
        },
        row(
            "Compute 12 + 30 and give the result as a single whole number please.",
            cot("12 + 30 = 42.", "42"),
            [],
        ),
    ]


def write_sft_layout_parquet(path: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    """``rows`` (default :func:`sft_rows`) as parquet in the exact released column types."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows if rows is not None else sft_rows(), schema=SFT_LAYOUT)
    pq.write_table(table, path)
    return path
