"""curate_rl / curate_sft end to end through Prefect, on local fixture files.

A jsonl source in the MMR1-RL layout (image paths) holds good rows and every
kind of bad one; the flows must keep the good rows and quarantine each bad one
with its reason, so that kept + quarantined == read.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from PIL import Image, ImageDraw

from mmr1.catalog import Catalog
from mmr1.tracking import find_runs
from schemas.curation import CurateRLConfig, CurateSFTConfig
from schemas.home import HomeConfig


def _png(path: Path, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> None:
    # Different layouts, not just colours: perceptual hashes look at luminance structure.
    image = Image.new("RGB", (96, 96), colour)
    ImageDraw.Draw(image).rectangle(box, fill=(255, 255, 255))
    image.save(path)


def _write_source(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    _png(directory / "red.png", (200, 30, 30), (5, 5, 40, 90))
    _png(directory / "blue.png", (30, 30, 200), (50, 10, 90, 30))
    _png(directory / "green.png", (30, 160, 30), (10, 60, 60, 90))
    (directory / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = [
        {
            "id": "g1",
            "problem": "<image>What colour is the square in the middle of the picture?",
            "answer": "blue",
            "images": ["red.png"],
        },
        {
            "id": "g2",
            "problem": "<image>How many corners does the drawn rectangle have in total?",
            "answer": "4",
            "images": ["blue.png"],
        },
        {
            "id": "g3",
            "problem": "<image>Which option names the background colour of this image?",
            "answer": "B",
            "images": ["green.png"],
            "choices": ["red", "green", "blue"],
        },
    ]
    bad = [
        {"id": "b-empty", "problem": "<image>What is shown?", "answer": "", "images": ["red.png"]},
        {
            "id": "b-mismatch",
            "problem": "<image> and <image>: which is larger?",
            "answer": "A",
            "images": ["red.png"],
        },
        {
            "id": "b-corrupt",
            "problem": "<image>What is this?",
            "answer": "x",
            "images": ["corrupt.png"],
        },
        {
            "id": "b-dup",
            "problem": "<image>What colour is the square in the middle of the picture?",
            "answer": "blue",
            "images": ["red.png"],
        },
    ]
    lines = [json.dumps(row) for row in good + bad]
    path = directory / "rl.jsonl"
    with path.open("wb") as handle:
        for line in lines:
            handle.write(line.encode() + b"\n")
        handle.write(b'{"id": "b-utf8", "problem": "caf\xe9 <image>", "answer": "1"}\n')
        handle.write(b'{"id": "b-trunc", "problem": "<image>What is')  # cut mid-record
    return path


@pytest.fixture
def curation_home(prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "home"))
    return HomeConfig().ensure()


def _config(source: Path, **updates) -> dict:
    return {
        "output_name": "fixture-rl",
        "sources": [{"kind": "local", "name": "fixture", "path": str(source)}],
        "difficulty": {"enabled": False},
        **updates,
    }


def test_curate_rl_quarantines_every_bad_row(curation_home, tmp_path: Path) -> None:
    from flows.curate import curate_rl

    source = _write_source(tmp_path / "src")
    ref = curate_rl(CurateRLConfig.model_validate(_config(source)))
    catalog = Catalog(curation_home.catalog)
    pool = catalog.get_dataset(ref.removeprefix("dataset:"))
    reasons = catalog.quarantine_summary(pool.ref)
    assert pool.row_count == 3
    assert reasons == {
        "empty_answer": 1,
        "placeholder_mismatch": 1,
        "image_decode_error": 1,
        "duplicate_exact": 1,
        "invalid_utf8": 1,
        "malformed_json": 1,
    }
    assert pool.row_count + sum(reasons.values()) == 9
    [dup] = catalog.quarantined(pool.ref, reason="duplicate_exact")
    assert (dup.source_row_id, dup.duplicate_of) == ("b-dup", "fixture/g1")
    rows = pl.read_parquet(Path(pool.uri) / "data.parquet")
    assert rows["id"].to_list() == ["fixture/g1", "fixture/g2", "fixture/g3"]
    [parent] = catalog.lineage(pool.ref).parents
    assert parent.ref == "source-fixture@1"
    [run] = find_runs(curation_home, "curate_rl")
    assert run.data.metrics["funnel/validate/quarantined"] == 3
    assert run.data.metrics["quarantine/duplicate_exact"] == 1


def test_curate_rl_decontaminates_against_registered_benchmarks(
    curation_home, tmp_path: Path
) -> None:
    from flows.curate import curate_rl
    from mmr1.data.io import write_rl_dataset
    from schemas.records import ImageData, RLRecord

    source = _write_source(tmp_path / "src")
    bench_dir = tmp_path / "bench"
    write_rl_dataset(
        [
            RLRecord(
                id="bench-1",
                problem="<image>How many corners does the drawn rectangle have in total?",
                answer="4",
                images=[
                    ImageData(bytes=(tmp_path / "src" / "blue.png").read_bytes(), path="b.png")
                ],
            )
        ],
        bench_dir,
    )
    catalog = Catalog(curation_home.catalog)
    catalog.register_dataset(
        name="tiny-bench",
        kind="benchmark",
        uri=str(bench_dir),
        content_hash="f" * 64,
        row_count=1,
        columns={"problem": "string"},
    )
    ref = curate_rl(CurateRLConfig.model_validate(_config(source)))
    pool = catalog.get_dataset(ref.removeprefix("dataset:"))
    contaminated = [
        row for row in catalog.quarantined(pool.ref) if row.reason.startswith("contaminated")
    ]
    assert [row.source_row_id for row in contaminated] == ["g2"]
    assert pool.row_count == 2


def test_curate_sft_with_the_synthetic_teacher(curation_home) -> None:
    from flows.curate import curate_sft

    config = CurateSFTConfig.model_validate(
        {
            "output_name": "fixture-sft",
            "sources": [{"kind": "synthetic", "name": "syn", "synthetic": {"n_items": 10}}],
            "difficulty": {"enabled": False},
            "cot": {"teacher": {"kind": "synthetic"}, "max_attempts": 1},
        }
    )
    ref = curate_sft(config)
    again = curate_sft(config)
    assert again == ref  # same content, same version
    catalog = Catalog(curation_home.catalog)
    sft = catalog.get_dataset(ref.removeprefix("dataset:"))
    assert sft.kind == "sft"
    assert sft.row_count + sum(catalog.quarantine_summary(sft.ref).values()) == 10
    rows = pl.read_parquet(Path(sft.uri) / "data.parquet")
    [conversation] = rows.head(1)["conversations"].to_list()
    assert [turn["from"] for turn in conversation] == ["human", "gpt"]
    assert "<think>" in conversation[1]["value"] and "\\boxed{" in conversation[1]["value"]
