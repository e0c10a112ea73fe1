"""SFT samples: assistant-only labels token by token, length filtering, collation, data order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmr1.data.io import decode_image, write_sft_dataset
from mmr1.data.synthetic import encode_png, generate_items, to_sft_record
from mmr1.models import build_tiny_model, load_policy
from mmr1.sft.data import (
    IGNORE_INDEX,
    MicroBatchCollator,
    SFTCollator,
    SFTEncoder,
    SFTSamples,
    record_messages,
)
from mmr1.sft.loss import token_cross_entropy
from mmr1.sft.rows import SFTRows
from mmr1.sft.sampling import (
    SampleKey,
    SampleStream,
    StepBatchSampler,
    micro_batches_for_step,
    row_hashes,
    split_train_eval,
)
from schemas.models import TinyVLMConfig
from schemas.records import ChatTurn, ImageData, SFTRecord
from schemas.synthetic import SyntheticConfig

EOS = "<|im_end|>"
IMAGE = "<|image_pad|>"


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory):
    path = build_tiny_model(TinyVLMConfig(), tmp_path_factory.mktemp("tiny") / "model")
    return load_policy(path, device="cpu", dtype="float32", for_training=False)


@pytest.fixture(scope="module")
def encoder(policy) -> SFTEncoder:
    return SFTEncoder(policy.processor, is_vlm=True)


def png(size: tuple[int, int], colour: str) -> ImageData:
    return ImageData(bytes=encode_png(Image.new("RGB", size, colour)), path=f"{colour}.png")


def record(turns: list[tuple[str, str]], images: list[ImageData], rid: str = "r") -> SFTRecord:
    return SFTRecord(
        id=rid,
        conversations=[ChatTurn.model_validate({"from": f, "value": v}) for f, v in turns],
        images=images,
        answer="A",
    )


def target_runs(labels: torch.Tensor) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of labelled positions."""
    runs, start = [], None
    for i, value in enumerate(labels.tolist() + [IGNORE_INDEX]):
        if value != IGNORE_INDEX and start is None:
            start = i
        elif value == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


def check_turns(encoder: SFTEncoder, sample, replies: list[str]) -> None:
    """Each labelled run decodes to one reply + <|im_end|>, and is preceded by the header."""
    tok = encoder.tokenizer
    runs = target_runs(sample.labels)
    assert len(runs) == len(replies)
    for (start, end), reply in zip(runs, replies, strict=True):
        ids = sample.input_ids[start:end]
        assert torch.equal(sample.labels[start:end], ids)  # labels are the tokens themselves
        assert tok.decode(ids.tolist(), skip_special_tokens=False) == reply + EOS
        assert tok.convert_ids_to_tokens(int(ids[-1])) == EOS
        header = tok.decode(sample.input_ids[:start].tolist()[-3:], skip_special_tokens=False)
        assert header == "<|im_start|>assistant\n"  # the header itself is not trained on
    image_id = tok.convert_tokens_to_ids(IMAGE)
    image_positions = sample.input_ids == image_id
    assert (sample.labels[image_positions] == IGNORE_INDEX).all()
    assert torch.equal(sample.mm_token_type_ids.bool(), image_positions)


def test_single_turn_labels_token_by_token(encoder: SFTEncoder) -> None:
    item = generate_items(SyntheticConfig(n_items=1))[0]
    rec = to_sft_record(item)
    sample = encoder.encode(rec)
    reply = rec.conversations[1].value
    check_turns(encoder, sample, [reply])
    # Token by token: exactly the reply's tokens (tokenised alone, as at inference) + EOS.
    tok = encoder.tokenizer
    expected = tok(reply, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids(EOS)]
    labelled = sample.labels[sample.labels != IGNORE_INDEX].tolist()
    assert labelled == expected
    # The whole sequence is the chat-templated conversation with the 4 image tokens expanded
    # (minus the newline after the last <|im_end|>: no label could use it).
    rendered = encoder.processor.apply_chat_template(record_messages(rec))
    assert rendered.endswith(EOS + "\n")
    assert tok.decode(sample.input_ids.tolist()) == rendered[:-1].replace(IMAGE, IMAGE * 4)
    assert int(sample.mm_token_type_ids.sum()) == 4
    assert sample.image_grid_thw.tolist() == [[1, 4, 4]]
    assert tok.convert_ids_to_tokens(int(sample.input_ids[-1])) == EOS


def test_multi_turn_each_assistant_turn_is_labelled(encoder: SFTEncoder) -> None:
    replies = ["<think>red</think><answer>\\boxed{A}</answer>", "  It is still \\boxed{A}.\n"]
    rec = record(
        [
            ("system", "Be brief."),
            ("human", "<image>\nWhich colour?"),
            ("gpt", replies[0]),
            ("human", "Are you sure?"),
            ("gpt", replies[1]),
        ],
        [png((56, 56), "red")],
    )
    sample = encoder.encode(rec)
    check_turns(encoder, sample, replies)
    text = encoder.tokenizer.decode(sample.input_ids.tolist())
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")  # no default system turn
    unlabelled = encoder.tokenizer.decode(sample.input_ids[sample.labels == IGNORE_INDEX].tolist())
    assert (
        "Be brief." in unlabelled
        and "Are you sure?" in unlabelled
        and "Which colour?" in unlabelled
    )


def test_two_images_in_order(encoder: SFTEncoder) -> None:
    rec = record(
        [("human", "Left <image> right <image> compare."), ("gpt", "\\boxed{B}")],
        [png((56, 56), "red"), png((112, 56), "blue")],
    )
    sample = encoder.encode(rec)
    check_turns(encoder, sample, ["\\boxed{B}"])
    assert sample.image_grid_thw.tolist() == [[1, 4, 4], [1, 4, 8]]
    assert int(sample.mm_token_type_ids.sum()) == 4 + 8
    assert sample.pixel_values.shape[0] == 16 + 32  # patches per image: t * h * w
    tok = encoder.tokenizer
    text = tok.decode(sample.input_ids.tolist())
    assert text.index(IMAGE * 4 + "<|vision_end|> right") < text.index(IMAGE * 8)


def test_placeholder_mismatch_names_the_record(encoder: SFTEncoder) -> None:
    rec = record([("human", "<image> and <image>"), ("gpt", "x")], [png((56, 56), "red")], "bad-1")
    with pytest.raises(ValueError, match="bad-1.*2 <image> placeholder"):
        encoder.encode(rec)
    with pytest.raises(ValueError, match="no-reply.*no gpt turn"):
        encoder.encode(record([("human", "hi")], [], "no-reply"))


def synthetic_records(n: int) -> list[SFTRecord]:
    return [to_sft_record(item) for item in generate_items(SyntheticConfig(n_items=n))]


def test_too_long_samples_are_dropped_when_drawn_never_cut(
    encoder: SFTEncoder, tmp_path: Path
) -> None:
    records = synthetic_records(24)
    write_sft_dataset(records, tmp_path / "data")
    full = [encoder.encode(r) for r in records]
    lengths = sorted(s.num_tokens for s in full)
    cutoff = lengths[len(lengths) // 2]
    rows = SFTRows(tmp_path / "data")
    every_row = np.arange(len(records))
    data = SFTSamples(rows, every_row, encoder, cutoff_len=cutoff)
    too_long = [i for i, s in enumerate(full) if s.num_tokens > cutoff]
    assert 0 < len(too_long) < len(records)
    for i, s in enumerate(full):
        drawn = data[SampleKey(i, first_epoch=i % 2 == 0)]
        assert drawn.record_id == records[i].id and drawn.num_tokens == s.num_tokens
        if i in too_long:
            assert drawn.sample is None
        else:  # untouched, not truncated
            assert torch.equal(drawn.sample.input_ids, s.input_ids)
            assert int(drawn.sample.mm_token_type_ids.sum()) == 4

    # A micro-batch leaves dropped samples out and counts them (first-epoch ones apart).
    collate = MicroBatchCollator(SFTCollator(encoder.tokenizer.pad_token_id, is_vlm=True))
    keys = [SampleKey(i, first_epoch=i % 2 == 0) for i in range(8)]
    batch = collate([data[k] for k in keys])
    long_here = [i for i in range(8) if i in too_long]
    assert batch.dropped == len(long_here) and batch.samples == 8 - len(long_here)
    assert batch.dropped_first_epoch == sum(1 for i in long_here if i % 2 == 0)
    assert batch.dropped_ids == [records[i].id for i in long_here if i % 2 == 0]
    assert batch.tensors["input_ids"].shape[0] == batch.samples

    # A cutoff inside the image-token run of every sample: all dropped, nothing crashes.
    first_image = int(full[0].mm_token_type_ids.nonzero()[0])
    none_fit = SFTSamples(rows, every_row, encoder, cutoff_len=first_image + 2)
    empty = collate([none_fit[i] for i in range(4)])
    assert empty.tensors is None and empty.samples == 0 and empty.dropped == 4


def test_collator_pads_right_and_mixes_image_and_text_items(policy, encoder: SFTEncoder) -> None:
    with_image = encoder.encode(synthetic_records(1)[0])
    text_only = encoder.encode(record([("human", "What is 2 + 2?"), ("gpt", "\\boxed{4}")], []))
    two_images = encoder.encode(
        record(
            [("human", "<image><image> same?"), ("gpt", "\\boxed{no}")],
            [png((56, 56), "red"), png((56, 56), "blue")],
        )
    )
    samples = [text_only, with_image, two_images]
    pad_id = encoder.tokenizer.pad_token_id
    batch = SFTCollator(pad_id, is_vlm=True)(samples)
    width = max(s.num_tokens for s in samples)
    assert batch["input_ids"].shape == (3, width)
    for row, s in enumerate(samples):
        n = s.num_tokens
        assert torch.equal(batch["input_ids"][row, :n], s.input_ids)
        assert (batch["input_ids"][row, n:] == pad_id).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert torch.equal(batch["mm_token_type_ids"][row, :n], s.mm_token_type_ids)
    assert batch["image_grid_thw"].shape == (3, 3)
    assert batch["pixel_values"].shape[0] == 16 * 3

    # Right padding and batching change nothing: per-sample losses match unbatched ones.
    model = policy.model
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for row, s in enumerate(samples):
            alone = SFTCollator(pad_id, is_vlm=True)([s])
            single = model(**{k: v for k, v in alone.items() if k != "labels"}).logits
            batched_loss, n = token_cross_entropy(
                logits[row : row + 1], batch["labels"][row : row + 1]
            )
            single_loss, m = token_cross_entropy(single, alone["labels"])
            assert n == m and n > 0
            assert torch.allclose(batched_loss, single_loss, rtol=1e-4, atol=1e-4)
    assert SFTCollator(pad_id, is_vlm=True)([text_only]).keys() == {
        "input_ids",
        "attention_mask",
        "labels",
        "mm_token_type_ids",
    }


def test_relative_image_paths_resolve_against_the_root(tmp_path: Path, policy) -> None:
    Image.new("RGB", (56, 56), "green").save(tmp_path / "g.png")
    rec = record([("human", "<image>?"), ("gpt", "\\boxed{C}")], [ImageData(path="g.png")])
    sample = SFTEncoder(policy.processor, is_vlm=True, image_root=tmp_path).encode(rec)
    assert sample.image_grid_thw.tolist() == [[1, 4, 4]]
    assert decode_image(rec.images[0], tmp_path).size == (56, 56)


def test_global_batches_do_not_depend_on_the_process_split() -> None:
    stream = SampleStream(n=10, seed=3)
    for step in range(4):
        one = micro_batches_for_step(
            stream, step, micro_batch_size=2, grad_accum=4, rank=0, world_size=1
        )
        two = [
            mb
            for rank in range(2)
            for mb in micro_batches_for_step(
                stream, step, micro_batch_size=2, grad_accum=2, rank=rank, world_size=2
            )
        ]
        assert one == two
    # Epoch e is a permutation seeded by seed + e; batches run across epoch boundaries.
    assert stream.indices(0, 10) == torch.randperm(10, generator=stream.generator(0)).tolist()
    assert sorted(stream.indices(10, 10)) == list(range(10))
    assert stream.indices(8, 4) == [
        *stream.permutation(0)[8:].tolist(),
        *stream.permutation(1)[:2].tolist(),
    ]
    sampler = StepBatchSampler(
        stream, start_step=0, stop_step=2, micro_batch_size=2, grad_accum=2, rank=1, world_size=2
    )
    keys = list(sampler)
    assert len(sampler) == len(keys) == 4
    assert [k.index for k in keys[2]] == stream.indices(1 * 8 + 4, 2)
    # Positions 4..7 (step 0) are in epoch 0; step 1's are 12..15: epoch 1 (n=10).
    assert [[k.first_epoch for k in mb] for mb in keys] == [[True] * 2] * 2 + [[False] * 2] * 2


def test_eval_split_is_a_seeded_hash_of_the_row_index() -> None:
    train, held = split_train_eval(40, 0.05, seed=0)
    assert len(held) == 2 and sorted([*train, *held]) == list(range(40))
    # The held-out rows are the ones with the smallest hashes: a function of the index only.
    hashes = row_hashes(40, seed=0)
    assert held.tolist() == sorted(np.argsort(hashes)[:2].tolist())
    assert row_hashes(1000, seed=0)[:40].tolist() == hashes.tolist()
    assert len(set(row_hashes(100_000, seed=0).tolist())) == 100_000
    again = split_train_eval(40, 0.05, seed=0)
    assert again[0].tolist() == train.tolist() and again[1].tolist() == held.tolist()
    assert split_train_eval(40, 0.05, seed=1)[1].tolist() != held.tolist()
    assert len(split_train_eval(5, 0.01, seed=0)[1]) == 1  # at least one item
    assert len(split_train_eval(10, 0.5, seed=0)[1]) == 5
    one_train, one_held = split_train_eval(1, 0.5, seed=0)
    assert one_train.tolist() == [0] and one_held.tolist() == []
    assert split_train_eval(10, 0.0, seed=0)[0].tolist() == list(range(10))
    # At a million rows: an exact count, and the held-out rows spread over the file.
    big_train, big_held = split_train_eval(1_000_000, 0.01, seed=0)
    assert len(big_held) == 10_000 and len(big_train) == 990_000
    assert 4_500 < int((big_held < 500_000).sum()) < 5_500  # ~5,000 in each half
