"""Seeded synthetic image + question + answer tasks, and the teacher that solves them.

Each task family (``mmr1.data.families``) draws a small PIL image and a
question about it; the item becomes an ``RLRecord`` in the MMR1-RL schema (one
``<image>`` placeholder at the start of ``problem``, PNG bytes in ``images``).
Multiple-choice items shuffle their options with the item's RNG and answer with
the option letter; free-form items answer with a short canonical string
(``"red"``, ``"7"``, ``"B"``).

Determinism: item ``i`` of seed ``s`` uses ``random.Random`` seeded from
``sha256("mmr1-synthetic/<stream>/<s>/<i>")``, so it does not depend on
``n_items`` or on the items before it, and PIL writes PNGs with fixed settings
(no timestamps), so the bytes are identical across runs and machines running
the same Pillow.

Held-out benchmark: training items and benchmark items come from different
streams (``train`` / ``bench`` in the RNG key, ``syn-`` / ``synbench-`` ids),
but distinct seeds alone cannot stop two streams from drawing the same small
picture by chance. So the content space is partitioned: an item belongs to the
benchmark side iff ``sha256(problem, image size, pixels) mod 8 == 0``. Each
stream redraws (from its own RNG, deterministically) until the item falls on its
side. An exact duplicate (same problem text, same image) between any training
config and any benchmark is therefore impossible, whatever the seeds; training
loses one eighth of the draw space.

The teacher (``solve``) writes a short trace from the facts the drawer recorded:
what is in the image, the one computation, and for multiple choice which option
matches, then ``<answer>\\boxed{gold}</answer>``.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import re
from collections.abc import Iterator
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from mmr1.data.families import FAMILIES, TaskFamily, register_family
from mmr1.prompts import CHOICE_LETTERS, evaluation_prompt, training_prompt
from schemas.records import IMAGE_PLACEHOLDER, ChatTurn, ImageData, RLRecord, SFTRecord
from schemas.synthetic import SyntheticConfig

__all__ = [
    "FAMILIES",
    "SyntheticItem",
    "TaskFamily",
    "encode_png",
    "generate_benchmark",
    "generate_items",
    "is_benchmark_content",
    "item_from_id",
    "iter_items",
    "iter_records",
    "register_family",
    "solve",
    "text_corpus",
    "to_sft_record",
]

SOURCE = "synthetic"
BENCHMARK_SOURCE = "synthetic-benchmark"
TRAIN_STREAM, BENCHMARK_STREAM = "train", "bench"
ID_PREFIX = {TRAIN_STREAM: "syn", BENCHMARK_STREAM: "synbench"}
#: One content hash in BENCHMARK_SHARE belongs to the benchmark side.
BENCHMARK_SHARE = 8
#: Draws before giving up (a config whose task space is a handful of images).
MAX_PARTITION_DRAWS = 1000

PNG_SETTINGS: dict[str, Any] = {"format": "PNG", "compress_level": 6, "optimize": False}


# --------------------------------------------------------------------------- items


class SyntheticItem(BaseModel):
    """One generated item: the RL record plus the facts the teacher needs."""

    model_config = ConfigDict(frozen=True)

    record: RLRecord = Field(description="The item in the MMR1-RL schema.")
    family: str = Field(description="Task family name (also ``record.type``).")
    value: str = Field(description="Canonical free-form answer, e.g. 'red' (even for MC items).")
    facts: dict[str, Any] = Field(
        description="What the drawer put in the image (JSON-friendly), read by ``solve``."
    )


# ----------------------------------------------------------------------- generation


def _item_rng(stream: str, seed: int, index: int) -> random.Random:
    key = hashlib.sha256(f"mmr1-synthetic/{stream}/{seed}/{index}".encode()).digest()
    return random.Random(int.from_bytes(key[:8], "big"))


def is_benchmark_content(problem: str, image: Image.Image) -> bool:
    """Whether (problem, pixels) lies on the benchmark side of the content partition."""
    digest = hashlib.sha256()
    digest.update(problem.encode())
    digest.update(f"\0{image.mode}{image.size}\0".encode())
    digest.update(image.tobytes())
    return int.from_bytes(digest.digest()[:8], "big") % BENCHMARK_SHARE == 0


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with fixed settings and no metadata chunks: same pixels, same bytes."""
    buffer = io.BytesIO()
    image.save(buffer, **PNG_SETTINGS)
    return buffer.getvalue()


def _make_item(config: SyntheticConfig, index: int, stream: str, encode: bool) -> SyntheticItem:
    family = FAMILIES[config.families[index % len(config.families)]]
    rng = _item_rng(stream, config.seed, index)
    for _ in range(MAX_PARTITION_DRAWS):  # redraw until the item lies on this stream's side
        difficulty = rng.choice(config.difficulties)
        multiple_choice = rng.random() < config.multiple_choice_ratio
        drawing = family.draw(rng, difficulty, config.image_size)
        problem = f"{IMAGE_PLACEHOLDER}\n{drawing.question}"
        if not multiple_choice:
            problem = f"{problem} {drawing.hint}"
        if is_benchmark_content(problem, drawing.image) == (stream == BENCHMARK_STREAM):
            break
    else:
        raise RuntimeError(
            f"item {index} of the {stream} stream: no draw fell on its side of the benchmark "
            f"partition in {MAX_PARTITION_DRAWS} tries; the configured task space is too small"
        )

    choices: list[str] | None = None
    answer = drawing.value
    if multiple_choice:
        correct = drawing.option or drawing.value
        choices = [correct, *drawing.distractors[: config.n_choices - 1]]
        rng.shuffle(choices)
        answer = CHOICE_LETTERS[choices.index(correct)]

    record_id = f"{ID_PREFIX[stream]}-{family.name}-{config.seed}-{index}"
    record = RLRecord(
        id=record_id,
        problem=problem,
        answer=answer,
        images=[
            ImageData(bytes=encode_png(drawing.image) if encode else None, path=f"{record_id}.png")
        ],
        choices=choices,
        type=family.name,
        source=SOURCE if stream == TRAIN_STREAM else BENCHMARK_SOURCE,
        difficulty=difficulty,
    )
    return SyntheticItem(
        record=record, family=family.name, value=drawing.value, facts=drawing.facts
    )


def iter_items(config: SyntheticConfig) -> Iterator[SyntheticItem]:
    """Lazily generate ``config.n_items`` training items, in index order."""
    for index in range(config.n_items):
        yield _make_item(config, index, TRAIN_STREAM, encode=True)


def generate_items(config: SyntheticConfig) -> list[SyntheticItem]:
    """All ``config.n_items`` training items (families round-robin by index)."""
    return list(iter_items(config))


def iter_records(config: SyntheticConfig) -> Iterator[RLRecord]:
    """The training items as MMR1-RL records, lazily."""
    for item in iter_items(config):
        yield item.record


_ITEM_ID = re.compile(r"^(?P<prefix>[a-z]+)-(?P<family>[a-z0-9_]+)-(?P<seed>\d+)-(?P<index>\d+)$")


def item_from_id(record_id: str, template: SyntheticConfig | None = None) -> SyntheticItem:
    """Regenerate the training or benchmark item whose id is ``record_id``.

    The id (``syn-<family>-<seed>-<index>``, ``synbench-...`` for the benchmark)
    fixes family, seed and index, and item ``i`` depends on nothing else but
    the distribution fields (difficulties, multiple-choice ratio, image size,
    options), taken from ``template`` (default: ``SyntheticConfig`` defaults).
    A template other than the one the item was made with gives a different
    item under the same id, so callers compare the result with what they hold.
    Raises ``ValueError`` for an id this generator does not produce.
    """
    match = _ITEM_ID.match(record_id)
    streams = {prefix: stream for stream, prefix in ID_PREFIX.items()}
    if match is None or match["prefix"] not in streams or match["family"] not in FAMILIES:
        raise ValueError(
            f"{record_id!r} is not a synthetic item id "
            f"(expected syn-<family>-<seed>-<index>, family one of {sorted(FAMILIES)})"
        )
    base = template or SyntheticConfig(n_items=1)
    index = int(match["index"])
    config = SyntheticConfig.model_validate(
        {
            **base.model_dump(),
            "n_items": index + 1,
            "seed": int(match["seed"]),
            # With one family, index % 1 == 0 picks it; the item RNG ignores the family list.
            "families": [match["family"]],
        }
    )
    return _make_item(config, index, streams[match["prefix"]], encode=True)


def generate_benchmark(
    seed: int = 0, n_items: int = 100, *, template: SyntheticConfig | None = None
) -> list[SyntheticItem]:
    """The built-in held-out benchmark: ``n_items`` items from the benchmark stream.

    ``template`` sets the task distribution (families, difficulties, ratio, image
    size, options; its ``n_items`` and ``seed`` are ignored); by default every
    family at every difficulty, half multiple choice, 56 px. Ids start with
    ``synbench-`` and no item can equal a training item (module docstring).
    """
    base = template or SyntheticConfig(n_items=1)
    config = base.model_copy(update={"n_items": n_items, "seed": seed})
    config = SyntheticConfig.model_validate(config.model_dump())
    return [_make_item(config, i, BENCHMARK_STREAM, encode=True) for i in range(n_items)]


# -------------------------------------------------------------------------- teacher


def solve(item: SyntheticItem) -> str:
    """The programmatic teacher's trace, ending in the gold answer.

    Format: ``<think>\\n<steps, one per line>\\n</think>\\n<answer>\\boxed{ANSWER}</answer>``
    where ANSWER is ``item.record.answer`` (the option letter for multiple choice).
    """
    record = item.record
    steps = FAMILIES[item.family].explain(item.facts)
    if record.choices:
        letter = record.answer
        steps.append(
            f"Option ({letter}) is {record.choices[CHOICE_LETTERS.index(letter)]}, "
            f"so the answer is {letter}."
        )
    else:
        steps.append(f"So the answer is {record.answer}.")
    body = "\n".join(steps)
    return f"<think>\n{body}\n</think>\n<answer>\\boxed{{{record.answer}}}</answer>"


def to_sft_record(item: SyntheticItem) -> SFTRecord:
    """An SFT row: the training prompt as the human turn, the teacher trace as the reply."""
    record = item.record
    return SFTRecord(
        id=record.id,
        conversations=[
            ChatTurn.model_validate(
                {"from": "human", "value": training_prompt(record.problem, record.choices)}
            ),
            ChatTurn.model_validate({"from": "gpt", "value": solve(item)}),
        ],
        images=record.images,
        answer=record.answer,
        type=record.type,
        source=record.source,
    )


def text_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` representative texts to train a tiny tokenizer on.

    Cycles through training prompts (instruction, question, options), evaluation
    prompts and teacher traces of training-stream items (images are drawn for
    the partition check but not encoded).
    """
    if n < 1:
        raise ValueError(f"text_corpus needs n >= 1, got {n}")
    config = SyntheticConfig(n_items=math.ceil(n / 3), seed=seed)
    texts: list[str] = []
    for index in range(config.n_items):
        item = _make_item(config, index, TRAIN_STREAM, encode=False)
        record = item.record
        texts.append(training_prompt(record.problem, record.choices))
        texts.append(evaluation_prompt(record.problem, record.choices))
        texts.append(solve(item))
    return texts[:n]
