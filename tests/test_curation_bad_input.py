"""Input that exported datasets really contain: read it, or refuse it naming the problem."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from mmr1.data.coerce import SourceError
from mmr1.data.sources import read_source
from schemas.curation import LocalSource


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_images_as_base64_strings_and_data_urls(tmp_path: Path) -> None:
    png = _png()
    encoded = base64.b64encode(png).decode()
    rows = [
        {
            "id": "url",
            "problem": "<image> Colour?",
            "answer": "red",
            "images": [f"data:image/png;base64,{encoded}"],
        },
        {"id": "bare", "problem": "<image> Colour?", "answer": "red", "images": [encoded]},
        {"id": "single", "problem": "<image> Colour?", "answer": "red", "images": encoded},
    ]
    result = read_source(LocalSource(name="b64", path=str(_jsonl(tmp_path / "a.jsonl", rows))))
    assert result.quarantined.height == 0
    assert [[image["bytes"] for image in row] for row in result.kept["images"].to_list()] == [
        [png]
    ] * 3
    # The same strings in a parquet string column.
    frame = pl.DataFrame({"problem": ["<image> Colour?"], "answer": ["red"], "images": [[encoded]]})
    frame.write_parquet(tmp_path / "b.parquet")
    result = read_source(LocalSource(name="pq", path=str(tmp_path / "b.parquet")))
    assert result.kept["images"].to_list() == [[{"bytes": png, "path": None}]]
    # A short string is a path, and a missing one is reported as such.
    rows = [{"id": "p", "problem": "<image> Colour?", "answer": "red", "images": ["red.png"]}]
    result = read_source(LocalSource(name="p", path=str(_jsonl(tmp_path / "c.jsonl", rows))))
    [row] = result.quarantined.to_dicts()
    assert row["reason"] == "image_missing" and "red.png not found" in row["detail"]


def test_a_list_answer_reports_the_answer_field(tmp_path: Path) -> None:
    rows = [
        {"id": "list", "problem": "Which years?", "answer": [2014, 2016]},
        {"id": "nested", "problem": "Which pair?", "answer": [{"x": 1}]},
    ]
    result = read_source(LocalSource(name="l", path=str(_jsonl(tmp_path / "a.jsonl", rows))))
    assert result.kept["answer"].to_list() == ["[2014, 2016]"]  # MathVista's list answers
    [row] = result.quarantined.to_dicts()
    assert (row["source_row_id"], row["reason"]) == ("nested", "invalid_field")
    assert "field 'answer': a list answer must hold numbers or text" in row["detail"]


def test_json_errors_name_the_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    good = json.dumps({"id": "ok", "problem": "What is 1 + 1?", "answer": "2"})
    cut = '{"id": "cut", "problem": "What is 2 + 2?", "answer": "4"'  # the closing brace lost
    path.write_text(f"{good}\n{cut}\n")
    result = read_source(LocalSource(name="j", path=str(path)))
    [row] = result.quarantined.to_dicts()
    assert row["reason"] == "malformed_json"
    assert f"line 2: invalid JSON at column {len(cut) + 1}:" in row["detail"]


def test_an_empty_source_is_refused_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(SourceError, match="source 'e' .*has no rows.*allow_empty"):
        read_source(LocalSource(name="e", path=str(path)))
    assert read_source(LocalSource(name="e", path=str(path), allow_empty=True)).kept.height == 0
