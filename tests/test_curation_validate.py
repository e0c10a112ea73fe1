"""Validation: each reason code, image normalisation, hashes, and ingest -> validate accounting."""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import mmr1.data.validate as validate_module
from mmr1.data.frame import RAW_SCHEMA, VALIDATED_COLUMNS, ensure_raw_schema
from mmr1.data.sources import read_source
from mmr1.data.validate import (
    hamming,
    normalise_image,
    phash,
    target_size,
    validate_frame,
)
from schemas.curation import LocalSource, ValidationConfig

SMALL = ValidationConfig(min_pixels=1_024, max_pixels=16_384, workers=2)


def _pattern(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth picture (blobs and gradients): perceptual hashes are stable on it."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    canvas = np.zeros((height, width, 3))
    for _ in range(4):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.3)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r**2))
        canvas += blob[..., None] * rng.uniform(40, 200, 3)
    canvas += (x[..., None] * rng.uniform(0, 80, 3)).clip(0, 255)
    return Image.fromarray(canvas.clip(0, 255).astype(np.uint8))


def _encode(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 8x8 PNG whose IHDR claims ``width x height`` (CRC fixed up)."""
    data = bytearray(_encode(Image.new("RGB", (8, 8), (1, 2, 3))))
    # signature (8) | length (4) | b"IHDR" (4) | width, height (8) ... | CRC over type + data
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _frame(rows: list[dict]) -> pl.DataFrame:
    """A RAW_SCHEMA frame; rows give problem/answer and optionally images/choices."""
    records = [
        {
            "row_id": f"t/{i}",
            "source": "t",
            "source_row_id": str(i),
            "problem": row.get("problem"),
            "answer": row.get("answer"),
            "images": [{"bytes": b, "path": f"{i}-{j}.png"} for j, b in enumerate(row["images"])]
            if row.get("images")
            else [],
            "choices": row.get("choices"),
            "type": "unknown",
            "difficulty": None,
        }
        for i, row in enumerate(rows)
    ]
    return pl.DataFrame(records, schema=RAW_SCHEMA)


def _reasons(result) -> dict[str, str]:
    q = result.quarantined
    return dict(zip(q["source_row_id"].to_list(), q["reason"].to_list(), strict=True))


# ----------------------------------------------------------------------- text checks


def test_text_checks_quarantine_with_reasons_and_details() -> None:
    png = _encode(_pattern((40, 40)))
    config = SMALL.model_copy(
        update={"max_problem_chars": 50, "max_answer_chars": 5, "max_images_per_row": 2}
    )
    rows = [
        {"problem": "<image> What is shown?", "answer": " $12$. ", "images": [png]},  # 0 kept
        {"problem": "   ", "answer": "a"},  # 1
        {"problem": "<image>", "answer": "a", "images": [png]},  # 2 only a placeholder
        {"problem": "What?", "answer": "  "},  # 3
        {"problem": "x" * 51, "answer": "a"},  # 4
        {"problem": "What?", "answer": "abcdef"},  # 5
        {"problem": "<image> vs <image>?", "answer": "A", "images": [png]},  # 6
        {"problem": "Pick.", "answer": "A", "choices": ["cat", " "]},  # 7
        {"problem": "Pick.", "answer": "A", "choices": ["cat", "cat "]},  # 8
        {"problem": "<image>" * 3 + "?", "answer": "A", "images": [png] * 3},  # 9
        {"problem": "caf\ufffd?", "answer": "a"},  # 10
        {"problem": "Pick.", "answer": "A", "choices": ["a\ufffd", "b"]},  # 11
        {"problem": None, "answer": None},  # 12
        {"problem": "Pick one.", "answer": "B.", "choices": [" cat", "dog "]},  # 13 kept
        {"problem": "What?", "answer": "$$"},  # 14: nothing left after the $ pair
    ]
    result = validate_frame(_frame(rows), config)
    assert result.kept.height + result.quarantined.height == len(rows)
    assert _reasons(result) == {
        "1": "empty_problem",
        "2": "empty_problem",
        "3": "empty_answer",
        "4": "problem_too_long",
        "5": "answer_too_long",
        "6": "placeholder_mismatch",
        "7": "invalid_choices",
        "8": "invalid_choices",
        "9": "too_many_images",
        "10": "invalid_utf8",
        "11": "invalid_utf8",
        "12": "empty_problem",
        "14": "empty_answer",
    }
    details = dict(
        zip(result.quarantined["source_row_id"], result.quarantined["detail"], strict=True)
    )
    assert details["6"] == "field 'problem' has 2 <image> placeholders but 1 image(s)"
    assert details["4"] == "field 'problem' has 51 characters (max 50)"
    assert details["9"] == "field 'images' has 3 images (max 2)"
    assert "field 'choices'" in details["8"] and "field 'answer'" in details["5"]
    kept = result.kept
    assert kept["source_row_id"].to_list() == ["0", "13"]
    assert kept["answer"].to_list() == ["12", "B"]
    assert kept["problem"].to_list() == ["<image> What is shown?", "Pick one."]
    assert kept["choices"].to_list() == [None, ["cat", "dog"]]
    assert kept["problem_norm"].to_list() == ["what is shown", "pick one"]
    assert list(kept.schema) == [*RAW_SCHEMA, *VALIDATED_COLUMNS]


def test_answer_and_problem_normalisation() -> None:
    answers = [
        "$x^2$",
        "  a   b \n c ",
        "3.",
        "1.5",
        "$5 and $6",
        "Yes",
        "...",
        "$$\\frac12$$",
        "$12.$",
    ]
    rows = [{"problem": f"Q{i}: It's  (a) _test_!", "answer": a} for i, a in enumerate(answers)]
    kept = validate_frame(_frame(rows), SMALL).kept
    assert kept["answer"].to_list() == [
        "x^2",
        "a b c",
        "3",
        "1.5",
        "$5 and $6",
        "Yes",
        "...",
        "\\frac12",
        "12",
    ]
    assert kept["problem_norm"][0] == "q0 it s a test"


def test_text_checks_are_columnar_on_200k_rows() -> None:
    n = 200_000
    problems = [f"Question {i}: how many apples?" for i in range(n)]
    problems[7] = ""
    answers = [str(i % 97) for i in range(n)]
    answers[11] = " "
    frame = ensure_raw_schema(
        pl.DataFrame(
            {
                "row_id": [f"big/{i}" for i in range(n)],
                "source": ["big"] * n,
                "source_row_id": [str(i) for i in range(n)],
                "problem": problems,
                "answer": answers,
            }
        )
    )
    result = validate_frame(frame, ValidationConfig())
    assert result.counts() == {"kept": n - 2, "quarantined": 2}
    assert result.reasons() == {"empty_answer": 1, "empty_problem": 1}


# ---------------------------------------------------------------------- image checks


def test_image_checks() -> None:
    good = _encode(_pattern((60, 40)))
    noisy = _encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    )
    rows = [
        {"problem": "<image>ok", "answer": "a", "images": [good]},
        {"problem": "<image>random", "answer": "a", "images": [random.Random(0).randbytes(500)]},
        {"problem": "<image>truncated", "answer": "a", "images": [noisy[: len(noisy) // 2]]},
        {"problem": "<image>bomb", "answer": "a", "images": [_bomb_png()]},
        {"problem": "<image><image>second bad", "answer": "a", "images": [good, b"\x89PNG"]},
        {"problem": "<image>big", "answer": "a", "images": [noisy]},
        {"problem": "<image>bomb 2", "answer": "a", "images": [_bomb_png(9_000, 9_000)]},
    ]
    config = SMALL.model_copy(update={"max_image_bytes": len(noisy) - 1})
    result = validate_frame(_frame(rows), config)
    assert result.kept.height + result.quarantined.height == len(rows)
    assert _reasons(result) == {
        "1": "image_decode_error",
        "2": "image_decode_error",
        "3": "image_bomb",
        "4": "image_decode_error",
        "5": "image_too_large_bytes",
        "6": "image_bomb",
    }
    details = dict(
        zip(result.quarantined["source_row_id"], result.quarantined["detail"], strict=True)
    )
    # 20000x20000 trips PIL's own guard in Image.open; 9000x9000 (81M) only ours (64M)
    assert details["3"].startswith("field 'images'[0] (image 1 of 1): PIL refused it")
    assert details["6"] == (
        "field 'images'[0] (image 1 of 1): header claims 9000x9000 = 81000000 pixels "
        "(max_decoded_pixels 64000000)"
    )
    assert details["4"].startswith("field 'images'[1] (image 2 of 2): cannot decode")
    assert "truncated" in details["2"]


def test_bomb_below_pil_limit_and_missing_bytes() -> None:
    config = SMALL.model_copy(update={"max_decoded_pixels": 50 * 50})
    big = _encode(_pattern((60, 60)))
    frame = _frame([{"problem": "<image>q", "answer": "a", "images": [big]}] * 2)
    frame = frame.with_columns(
        images=pl.when(pl.col("source_row_id") == "1")
        .then(pl.lit([{"bytes": None, "path": "lost.png"}], dtype=RAW_SCHEMA["images"]))
        .otherwise(pl.col("images"))
    )
    result = validate_frame(frame, config)
    assert _reasons(result) == {"0": "image_bomb", "1": "image_missing"}


# ----------------------------------------------------------------- image normalisation


@pytest.mark.parametrize(
    ("size", "mode"),
    [((20, 10), "RGB"), ((400, 300), "RGB"), ((1000, 5), "L"), ((64, 64), "RGBA"), ((50, 50), "P")],
)
def test_normalised_images_are_rgb_within_bounds(size: tuple[int, int], mode: str) -> None:
    img = _pattern(size).convert(mode)
    out = normalise_image(_encode(img), SMALL)
    assert out.reason is None
    decoded = Image.open(io.BytesIO(out.png))
    assert decoded.format == "PNG" and decoded.mode == "RGB"
    width, height = decoded.size
    assert SMALL.min_pixels <= width * height <= SMALL.max_pixels
    ratio = size[0] / size[1]
    assert abs(width / height - ratio) <= 0.05 * ratio


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (10, 10, 30, 30))
    out = normalise_image(_encode(rgba), ValidationConfig(min_pixels=1_600, max_pixels=1_600))
    decoded = Image.open(io.BytesIO(out.png))
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((20, 20)) == (0, 0, 255)


def test_target_size_bounds() -> None:
    rng = random.Random(0)
    for _ in range(2_000):
        w, h = rng.randint(1, 5_000), rng.randint(1, 5_000)
        new_w, new_h = target_size(w, h, 7_056, 1_048_576)
        assert 7_056 <= new_w * new_h <= 1_048_576, (w, h, new_w, new_h)
        if 7_056 <= w * h <= 1_048_576:
            assert (new_w, new_h) == (w, h)
    assert target_size(1, 1, 7_056, 1_048_576) == (84, 84)
    assert target_size(4096, 4096, 7_056, 1_048_576) == (1024, 1024)


def test_normalisation_is_deterministic_and_decodes_each_image_once(monkeypatch) -> None:
    images = [_encode(_pattern((300, 200), seed)) for seed in range(4)]
    rows = [
        {
            "problem": "<image><image>q",
            "answer": "a",
            "images": [images[i % 4], images[(i + 1) % 4]],
        }
        for i in range(12)
    ]
    calls = []
    real = validate_module.normalise_image

    def counting(data, config):
        calls.append(data)
        return real(data, config)

    monkeypatch.setattr(validate_module, "normalise_image", counting)
    one = validate_frame(_frame(rows), SMALL.model_copy(update={"workers": 1})).kept
    assert len(calls) == 4
    many = validate_frame(_frame(rows), SMALL.model_copy(update={"workers": 4})).kept
    assert one.equals(many)
    pngs = [image["bytes"] for row in one["images"].to_list() for image in row]
    assert [image["path"] for image in one["images"][0]] == ["0-0.png", "0-1.png"]
    assert one["image_sha256"].explode().to_list() == [hashlib.sha256(p).hexdigest() for p in pngs]
    assert one["image_sha256"][0].to_list() == one["image_sha256"][4].to_list()
    assert len(set(one["image_sha256"].explode().to_list())) == 4


# ---------------------------------------------------------------------- perceptual hash


def test_phash_is_robust_to_resizing_and_reencoding() -> None:
    base = _pattern((320, 240), seed=1)
    h = phash(base)
    assert 0 <= h < 2**64
    resized = base.resize((160, 120), Image.Resampling.BICUBIC)
    assert hamming(h, phash(resized)) <= 4
    jpeg = Image.open(io.BytesIO(_encode(base, "JPEG", quality=70)))
    assert hamming(h, phash(jpeg)) <= 4
    others = [phash(_pattern((320, 240), seed=s)) for s in range(2, 8)]
    assert min(hamming(h, other) for other in others) > 10
    assert phash(Image.new("RGB", (10, 10), "red")) == phash(Image.new("RGB", (50, 20), "blue"))


def test_hamming() -> None:
    assert hamming(0, 0) == 0
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64


# ------------------------------------------------------------- ingest -> validate, end to end


def test_fixture_sources_account_for_every_row(tmp_path: Path) -> None:
    """MMR1-RL parquet and a jsonl with image paths, through ingest and validation."""
    good, other = _encode(_pattern((120, 90), 3)), _encode(_pattern((90, 120), 4))
    noisy = _encode(
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48, 3), np.uint8))
    )
    struct_list = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    rl = tmp_path / "rl.parquet"
    pq.write_table(
        pa.table(
            {
                "problem": [
                    "<image>Area?",
                    "<image><image>Same?",
                    "<image>Broken?",
                    "<image>Bomb?",
                ],
                "answer": ["12", "", "x", "y"],
                "images": pa.array(
                    [
                        [{"bytes": good, "path": "a.png"}],
                        [{"bytes": good, "path": None}],
                        [{"bytes": noisy[:200], "path": None}],
                        [{"bytes": _bomb_png(), "path": None}],
                    ],
                    struct_list,
                ),
            }
        ),
        rl,
    )
    (tmp_path / "b.png").write_bytes(other)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    lines = [
        json.dumps(row).encode()
        for row in [
            {"id": "j1", "problem": "<image>Colour?", "answer": "red", "images": ["b.png"]},
            {"id": "j2", "problem": "<image> and <image>?", "answer": "2", "images": ["b.png"]},
            {"id": "j3", "problem": "<image>What?", "answer": "x", "images": ["corrupt.png"]},
            {"id": "j4", "problem": "<image>What?", "answer": "x", "images": ["absent.png"]},
        ]
    ]
    lines += [b'{"id": "j5", "problem": "\xff\xfe", "answer": "1"}', b'{"id": "j6", "prob']
    jsonl = tmp_path / "rl.jsonl"
    jsonl.write_bytes(b"\n".join(lines))

    expected = {
        "parquet": ({"1": "empty_answer", "2": "image_decode_error", "3": "image_bomb"}, 4),
        "jsonl": (
            {
                "j2": "placeholder_mismatch",
                "j3": "image_decode_error",
                "j4": "image_missing",
                "4": "invalid_utf8",
                "5": "malformed_json",
            },
            6,
        ),
    }
    for name, path in (("parquet", rl), ("jsonl", jsonl)):
        ingest = read_source(LocalSource(name=name, path=str(path)))
        checked = validate_frame(ingest.kept, ValidationConfig())
        reasons = {**_reasons(ingest), **_reasons(checked)}
        want, n_read = expected[name]
        assert reasons == want, name
        total = ingest.quarantined.height + checked.quarantined.height + checked.kept.height
        assert total == n_read, name
        for row in checked.kept["images"].to_list():
            for image in row:
                img = Image.open(io.BytesIO(image["bytes"]))
                assert img.mode == "RGB" and 7_056 <= img.width * img.height <= 1_048_576
