"""Dataset parquet files: round trips, byte-identical rewrites, errors, HF datasets layout."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmr1.data.io import (
    DATA_FILE,
    decode_image,
    iter_rl_dataset,
    parquet_files,
    read_column,
    read_rl_dataset,
    read_sft_dataset,
    write_rl_dataset,
    write_sft_dataset,
)
from mmr1.data.synthetic import generate_items, to_sft_record
from mmr1.hashing import hash_directory
from schemas.records import ImageData, RLRecord
from schemas.synthetic import SyntheticConfig


@pytest.fixture(scope="module")
def items():
    return generate_items(SyntheticConfig(n_items=30, seed=1))


@pytest.fixture(scope="module")
def records(items):
    return [item.record for item in items]


def test_rl_round_trip(tmp_path, records):
    files = write_rl_dataset(records, tmp_path / "rl")
    assert files.path == tmp_path / "rl"
    assert files.files == [DATA_FILE]
    assert files.row_count == len(records)
    assert list(files.columns) == [
        "id",
        "problem",
        "answer",
        "images",
        "choices",
        "type",
        "source",
        "difficulty",
    ]
    assert files.columns["images"] == "list<item: struct<bytes: binary, path: string>>"
    assert files.columns["choices"] == "list<item: string>"
    assert files.content_hash == hash_directory(tmp_path / "rl")
    back = read_rl_dataset(tmp_path / "rl")
    assert back == records
    assert read_rl_dataset(tmp_path / "rl" / DATA_FILE) == records
    assert list(iter_rl_dataset(tmp_path / "rl", batch_size=7)) == records


def test_nullable_choices_and_difficulty(tmp_path):
    rows = [
        RLRecord(id="a", problem="<image>\nQ?", answer="B", images=[ImageData(path="a.png")],
                 choices=["x", "y"], difficulty=2),
        RLRecord(id="b", problem="Text only?", answer="4"),
    ]  # fmt: skip
    write_rl_dataset(rows, tmp_path)
    table = pq.read_table(tmp_path / DATA_FILE)
    assert table.column("choices").to_pylist() == [["x", "y"], None]
    assert table.column("difficulty").to_pylist() == [2, None]
    assert table.column("images").to_pylist()[1] == []
    assert read_rl_dataset(tmp_path) == rows


def test_same_records_give_byte_identical_files(tmp_path, records):
    first = write_rl_dataset(records, tmp_path / "one")
    second = write_rl_dataset(list(records), tmp_path / "two")
    assert first.content_hash == second.content_hash
    assert (tmp_path / "one" / DATA_FILE).read_bytes() == (
        tmp_path / "two" / DATA_FILE
    ).read_bytes()
    # Rewriting identical content in place leaves the file untouched.
    before = os.stat(tmp_path / "one" / DATA_FILE)
    again = write_rl_dataset(records, tmp_path / "one")
    after = os.stat(tmp_path / "one" / DATA_FILE)
    assert again.content_hash == first.content_hash
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    # Different content replaces it; no temp files are left behind.
    changed = write_rl_dataset(records[:-1], tmp_path / "one")
    assert changed.content_hash != first.content_hash
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [DATA_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def test_writes_into_an_existing_empty_directory(tmp_path, records):
    # The content-addressed store hands writers an empty staging directory.
    (tmp_path / "staging").mkdir()
    files = write_rl_dataset(records, tmp_path / "staging")
    assert files.row_count == len(records)
    assert read_rl_dataset(tmp_path / "staging") == records


def test_extra_columns(tmp_path, records):
    scores = [i / 10 for i in range(len(records))]
    files = write_rl_dataset(records, tmp_path, extra={"vps": scores})
    assert files.columns["vps"] == "double"
    assert read_column(tmp_path, "vps") == scores
    assert read_rl_dataset(tmp_path) == records
    with pytest.raises(ValueError, match="has 1 values for 30 rows"):
        write_rl_dataset(records, tmp_path / "x", extra={"vps": [1.0]})
    with pytest.raises(ValueError, match="clashes"):
        write_rl_dataset(records, tmp_path / "x", extra={"answer": ["a"] * len(records)})


def test_write_rejects_bad_records(tmp_path, records):
    broken = records[1].model_copy(update={"problem": "no placeholder"})
    with pytest.raises(ValueError, match=r"row 1\): field 'problem' has 0 <image> placeholders"):
        write_rl_dataset([records[0], broken], tmp_path / "a")
    with pytest.raises(ValueError, match="duplicate id"):
        write_rl_dataset([records[0], records[0]], tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "other.parquet").write_bytes(b"")
    with pytest.raises(FileExistsError, match="other parquet files"):
        write_rl_dataset(records, tmp_path / "c")


def test_sft_round_trip(tmp_path, items):
    sft = [to_sft_record(item) for item in items]
    files = write_sft_dataset(sft, tmp_path / "sft")
    assert files.columns["conversations"] == "list<item: struct<from: string, value: string>>"
    assert read_sft_dataset(tmp_path / "sft") == sft
    again = write_sft_dataset(sft, tmp_path / "sft2")
    assert again.content_hash == files.content_hash


def test_reading_a_directory_of_files_and_foreign_layouts(tmp_path, records):
    write_rl_dataset(records[:5], tmp_path / "part-0")
    write_rl_dataset(records[5:8], tmp_path / "part-1")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "junk.parquet").write_bytes(b"not parquet")
    assert read_rl_dataset(tmp_path) == records[:8]
    # The public MMR1-RL files: no id, images as paths.
    table = pa.table({"problem": ["<image>\nQ"], "answer": ["3"], "images": [["img/0.png"]]})
    pq.write_table(table, tmp_path / "mmr1.parquet")
    (record,) = read_rl_dataset(tmp_path / "mmr1.parquet")
    assert (record.id, record.images, record.choices) == (
        "mmr1-0",
        [ImageData(path="img/0.png")],
        None,
    )


def test_read_errors_name_file_row_and_field(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_rl_dataset(tmp_path / "missing")
    pq.write_table(pa.table({"problem": ["q"]}), tmp_path / "noanswer.parquet")
    with pytest.raises(
        ValueError, match=r"noanswer.parquet: missing required column\(s\) \['answer'\]"
    ):
        read_rl_dataset(tmp_path / "noanswer.parquet")
    pq.write_table(
        pa.table({"problem": ["q", "r"], "answer": ["1", "2"], "difficulty": ["easy", "hard"]}),
        tmp_path / "bad.parquet",
    )
    with pytest.raises(ValueError, match=r"bad.parquet: row 0: field 'difficulty'"):
        read_rl_dataset(tmp_path / "bad.parquet")


def test_decode_image(tmp_path, records):
    image = decode_image(records[0].images[0])
    assert (image.mode, image.size) == ("RGB", (56, 56))
    (tmp_path / "x.png").write_bytes(records[0].images[0].bytes)
    from_path = decode_image(ImageData(path="x.png"), root=tmp_path)
    assert from_path.tobytes() == image.tobytes()
    with pytest.raises(ValueError, match="neither bytes nor a path"):
        decode_image(ImageData())
    with pytest.raises(ValueError, match="cannot decode"):
        decode_image(ImageData(bytes=b"garbage"))


def test_parquet_files_single_file_and_directory(tmp_path, records):
    write_rl_dataset(records[:2], tmp_path / "d")
    assert parquet_files(tmp_path / "d") == [tmp_path / "d" / DATA_FILE]
    assert parquet_files(tmp_path / "d" / DATA_FILE) == [tmp_path / "d" / DATA_FILE]


def test_hf_datasets_loads_the_local_file_with_image_lists(tmp_path, records, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    files = write_rl_dataset(records, tmp_path / "rl")
    ds = datasets.load_dataset(
        "parquet",
        data_files=str(files.path / DATA_FILE),
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert ds.num_rows == len(records)
    feature = ds.features["images"]
    assert isinstance(feature, datasets.List)
    assert isinstance(feature.feature, datasets.Image)
    first = ds[0]
    assert len(first["images"]) == 1 and first["images"][0].size == (56, 56)
    assert first["id"] == records[0].id
    assert [row["choices"] for row in ds] == [r.choices for r in records]
