"""SFT samples: ShareGPT records -> chat-templated tokens with assistant-only labels.

A record's turns become chat messages (``human`` -> user, ``gpt`` -> assistant,
``system`` -> system); ``<image>`` placeholders in user text become image
items, consuming ``record.images`` in order across turns. The conversation is
rendered once with the processor's chat template and cut into segments:

    [context][assistant 1 + <|im_end|>][context][assistant 2 + <|im_end|>]...

Each segment is tokenised on its own (images expanded to their
``<|image_pad|>`` runs by the processor) and the pieces are concatenated.
Labels copy the token ids of the assistant segments and are -100 everywhere
else: system and user text, the ``<|im_start|>assistant\\n`` header, image
tokens and padding. Tokenising the assistant text on its own is what happens
at inference time too (the prompt ends with the header, the model writes the
rest), so training sees the reply tokenised exactly as it will generate it.

Segment boundaries come from rendering prefixes of the conversation: the text
of ``messages[:k]`` with the generation prompt ends where assistant turn ``k``
starts, and the text of ``messages[:k+1]`` ends just after its end-of-turn
token. A template for which these renders are not prefixes of the full text is
rejected with an error naming the record.

Nothing is truncated: a sample longer than ``cutoff_len`` tokens (image
tokens expanded) is dropped when it is drawn. :class:`SFTSamples` reads and
encodes one sample per ``__getitem__`` (in DataLoader workers when there are
any): no record, image or encoding outlives its micro-batch. A dropped sample
leaves its slot in the micro-batch empty (:class:`MicroBatch` counts it), so
no pass over the dataset is needed before training and the data of a step
stays a pure function of the step (``mmr1.sft.sampling``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mmr1.data.io import decode_image
from mmr1.sft.rows import SFTRows
from mmr1.sft.sampling import SampleKey
from schemas.records import IMAGE_PLACEHOLDER, SFTRecord

IGNORE_INDEX = -100
_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


@dataclass
class EncodedSample:
    """One tokenised sample (shapes without batch dimension)."""

    input_ids: torch.Tensor  # (seq,) long
    labels: torch.Tensor  # (seq,) long, IGNORE_INDEX outside assistant tokens
    mm_token_type_ids: torch.Tensor | None = None  # (seq,) 1 at <|image_pad|>; VLMs only
    pixel_values: torch.Tensor | None = None  # (patches, patch_dim), all images of the sample
    image_grid_thw: torch.Tensor | None = None  # (images, 3)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def num_targets(self) -> int:
        """Tokens that contribute to the loss (labels shifted by one, as the loss uses them)."""
        return int((self.labels[1:] != IGNORE_INDEX).sum())


def record_messages(record: SFTRecord, *, with_images: bool = True) -> list[dict[str, Any]]:
    """Chat-template messages of a record; user ``<image>`` placeholders become image items.

    ``with_images=False`` (text-only models) renders user content as a plain
    string and raises if the record has images. Raises ``ValueError`` naming
    the record when placeholders and images disagree or a non-user turn holds
    a placeholder.
    """
    messages: list[dict[str, Any]] = []
    n_placeholders = 0
    for index, turn in enumerate(record.conversations):
        role = _ROLES[turn.from_]
        n_here = turn.value.count(IMAGE_PLACEHOLDER)
        if role != "user" or not with_images:
            if n_here:
                what = f"a {turn.from_} turn" if role != "user" else "a text-only model"
                raise ValueError(
                    f"SFT record {record.id!r}: turn {index} holds {IMAGE_PLACEHOLDER} but "
                    f"images are only supported in human turns of a vision-language model "
                    f"(here: {what})"
                )
            messages.append({"role": role, "content": turn.value})
            continue
        pieces = turn.value.split(IMAGE_PLACEHOLDER)
        content: list[dict[str, Any]] = []
        for k, text in enumerate(pieces):
            if k > 0:
                content.append({"type": "image"})
            if text:
                content.append({"type": "text", "text": text})
        n_placeholders += n_here
        messages.append({"role": role, "content": content})
    if n_placeholders != len(record.images):
        raise ValueError(
            f"SFT record {record.id!r}: {n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) in "
            f"human turns but {len(record.images)} image(s)"
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"SFT record {record.id!r}: no gpt turn, so nothing to learn")
    return messages


class SFTEncoder:
    """Tokenises records for a model: see the module docstring.

    ``processor`` is an image processor + tokenizer (``is_vlm=True``, e.g.
    :class:`~mmr1.models.processor.ImageOnlyQwenVLProcessor`) or a bare
    tokenizer for text-only models. ``image_root`` resolves relative image paths.
    """

    def __init__(self, processor: Any, *, is_vlm: bool, image_root: Path | None = None) -> None:
        self.processor = processor
        self.is_vlm = is_vlm
        self.image_root = image_root
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.eos_token = self.tokenizer.eos_token
        self.image_token = getattr(processor, "image_token", None)
        self.image_token_id = getattr(processor, "image_token_id", None)
        if is_vlm and self.image_token is None:
            raise ValueError(f"{type(processor).__name__} has no image_token: not a VLM processor")

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def segments(self, record: SFTRecord) -> list[tuple[str, bool]]:
        """``(text, is_target)`` pieces of the rendered conversation, in order.

        Target pieces are assistant content plus its end-of-turn token; text
        after the last assistant turn is dropped (no label can follow it).
        """
        messages = record_messages(record, with_images=self.is_vlm)
        full = self._render(messages, False)
        pieces: list[tuple[str, bool]] = []
        cursor = 0
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self._render(messages[:k], True)
            through = self._render(messages[: k + 1], False)
            end = through.rfind(self.eos_token) + len(self.eos_token)
            if not (
                full.startswith(through)
                and through.startswith(prompt)
                and len(prompt) >= cursor
                and end > len(prompt)
            ):
                raise ValueError(
                    f"SFT record {record.id!r}: the chat template does not render turn {k} as a "
                    "prefix of the conversation (or the turn lacks its end-of-turn token "
                    f"{self.eos_token!r}); cannot locate the assistant tokens"
                )
            if len(prompt) > cursor:
                pieces.append((full[cursor : len(prompt)], False))
            pieces.append((full[len(prompt) : end], True))
            cursor = end
        return pieces

    def encode(self, record: SFTRecord, images: Sequence[Any] | None = None) -> EncodedSample:
        """Tokenise ``record``; ``images`` (decoded PIL images) default to decoding the record's."""
        pieces = self.segments(record)
        if self.is_vlm and images is None:
            images = [decode_image(image, self.image_root) for image in record.images]
        images = list(images or [])
        ids: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        pixel_values: list[torch.Tensor] = []
        grids: list[torch.Tensor] = []
        next_image = 0
        for text, is_target in pieces:
            if self.is_vlm:
                n_images = text.count(self.image_token)
                if is_target and n_images:
                    raise ValueError(
                        f"SFT record {record.id!r}: an assistant turn contains {self.image_token}"
                    )
                piece_images = images[next_image : next_image + n_images]
                next_image += n_images
                batch = self.processor(
                    text=[text],
                    images=piece_images or None,
                    padding=False,
                    return_tensors="pt",
                    add_special_tokens=False,
                )
                if piece_images:
                    pixel_values.append(batch["pixel_values"])
                    grids.append(batch["image_grid_thw"])
            else:
                batch = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
            piece_ids = batch["input_ids"][0].long()
            ids.append(piece_ids)
            labels.append(piece_ids.clone() if is_target else torch.full_like(piece_ids, -100))
        input_ids = torch.cat(ids)
        sample = EncodedSample(input_ids=input_ids, labels=torch.cat(labels))
        if self.is_vlm:
            sample.mm_token_type_ids = (input_ids == self.image_token_id).long()
            if pixel_values:
                sample.pixel_values = torch.cat(pixel_values)
                sample.image_grid_thw = torch.cat(grids)
        return sample


@dataclass
class Drawn:
    """One drawn sample: encoded, or ``None`` when longer than ``cutoff_len`` (dropped)."""

    key: SampleKey
    record_id: str
    num_tokens: int
    sample: EncodedSample | None


class SFTSamples(Dataset):
    """The samples of one split, read and encoded when drawn (module docstring).

    ``indices`` are the split's dataset rows (sorted): sample ``i`` is row
    ``indices[i]``. ``dataset[key]`` takes a :class:`SampleKey` (or a plain
    index) and returns a :class:`Drawn`; images are decoded for that sample only.
    """

    def __init__(
        self, rows: SFTRows, indices: np.ndarray, encoder: SFTEncoder, *, cutoff_len: int
    ) -> None:
        self.rows = rows
        self.indices = np.asarray(indices, dtype=np.int64)
        self.encoder = encoder
        self.cutoff_len = cutoff_len

    def __len__(self) -> int:
        return len(self.indices)

    def row(self, index: int) -> int:
        """Dataset row of sample ``index``."""
        return int(self.indices[index])

    def record(self, index: int) -> SFTRecord:
        return self.rows.record(self.row(index))

    def records(self) -> Iterable[SFTRecord]:
        """Every record of the split in row order, read lazily."""
        return self.rows.records(self.indices)

    def __getitem__(self, key: SampleKey | int) -> Drawn:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), True)
        record = self.record(key.index)
        sample = self.encoder.encode(record)
        fits = sample.num_tokens <= self.cutoff_len
        return Drawn(key, record.id, sample.num_tokens, sample if fits else None)


class SFTCollator:
    """Right-pads samples into a training batch.

    Returns ``input_ids``, ``attention_mask``, ``labels`` (shape ``(batch, max_len)``)
    and, for VLMs, ``mm_token_type_ids`` plus ``pixel_values`` / ``image_grid_thw``
    concatenated over the samples that have images (omitted when none has).
    Without ``mm_token_type_ids`` Qwen2.5-VL silently falls back to 1-D positions
    for image tokens (docs/STACK.md).
    """

    def __init__(self, pad_token_id: int, *, is_vlm: bool) -> None:
        self.pad_token_id = pad_token_id
        self.is_vlm = is_vlm

    def __call__(self, samples: Sequence[EncodedSample]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        width = max(s.num_tokens for s in samples)
        rows = len(samples)
        input_ids = torch.full((rows, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((rows, width), dtype=torch.long)
        labels = torch.full((rows, width), IGNORE_INDEX, dtype=torch.long)
        for row, sample in enumerate(samples):
            n = sample.num_tokens
            input_ids[row, :n] = sample.input_ids
            attention_mask[row, :n] = 1
            labels[row, :n] = sample.labels
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if self.is_vlm:
            mm = torch.zeros((rows, width), dtype=torch.long)
            for row, sample in enumerate(samples):
                if sample.mm_token_type_ids is not None:
                    mm[row, : sample.num_tokens] = sample.mm_token_type_ids
            batch["mm_token_type_ids"] = mm
            with_images = [s for s in samples if s.pixel_values is not None]
            if with_images:
                batch["pixel_values"] = torch.cat([s.pixel_values for s in with_images])
                batch["image_grid_thw"] = torch.cat([s.image_grid_thw for s in with_images])
        return batch


@dataclass
class MicroBatch:
    """A collated micro-batch of drawn samples, too-long ones left out and counted.

    ``tensors`` is the :class:`SFTCollator` batch of the kept samples, ``None``
    when every sample was too long (the trainer then runs a zero-weight pass so
    that every process still makes its ``grad_accum`` backward calls).
    """

    tensors: dict[str, torch.Tensor] | None
    samples: int
    dropped: int = 0
    """Samples left out as too long."""
    dropped_first_epoch: int = 0
    """Of those, drawn at an epoch-0 stream position: met for the first time."""
    dropped_ids: list[str] = field(default_factory=list)
    """Record ids of the ``dropped_first_epoch`` samples."""


class MicroBatchCollator:
    """``collate_fn`` of the training and evaluation loaders: ``list[Drawn] -> MicroBatch``."""

    def __init__(self, collator: SFTCollator) -> None:
        self.collator = collator

    def __call__(self, drawn: Sequence[Drawn]) -> MicroBatch:
        kept = [d.sample for d in drawn if d.sample is not None]
        dropped = [d for d in drawn if d.sample is None]
        first = [d.record_id for d in dropped if d.key.first_epoch]
        return MicroBatch(
            tensors=self.collator(kept) if kept else None,
            samples=len(kept),
            dropped=len(dropped),
            dropped_first_epoch=len(first),
            dropped_ids=first,
        )
