"""Resumable sharded processing: interrupted runs resume and equal uninterrupted ones."""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest

from mmr1.data.shards import (
    MANIFEST,
    ShardManifestError,
    derive_seed,
    read_shard_keys,
    run_sharded,
    shard_path,
    step_fingerprint,
)

ITEMS = [f"item-{i}" for i in range(23)]  # 5 shards of 5, the last one short
SHARD = 5
FINGERPRINT = step_fingerprint({"step": "test", "scale": 2}, ITEMS)


class Interrupted(RuntimeError):
    pass


def make_process(calls: Path, fail_at: int | None = None):
    """A process that appends the keys it handles to ``calls`` and may fail at a shard."""

    def process(items: Sequence[str], shard: int) -> pl.DataFrame:
        if shard == fail_at:
            raise Interrupted(f"killed at shard {shard}")
        with calls.open("a") as handle:
            handle.writelines(f"{item}\n" for item in items)
        rng = random.Random(derive_seed(7, "test", shard))
        return pl.DataFrame(
            {"key": list(items), "draw": [rng.random() for _ in items], "shard": shard},
            schema={"key": pl.String, "draw": pl.Float64, "shard": pl.Int64},
        )

    return process


def run(out_dir: Path, calls: Path, fail_at: int | None = None, **kwargs) -> pl.DataFrame:
    kwargs.setdefault("fingerprint", FINGERPRINT)
    kwargs.setdefault("shard_size", SHARD)
    return run_sharded(
        ITEMS, key=str, process=make_process(calls, fail_at), out_dir=out_dir, **kwargs
    )


def calls_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_interrupted_run_resumes_and_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        run(out, calls, fail_at=2)
    assert sorted(p.name for p in out.glob("shard-*")) == [
        "shard-00000.parquet",
        "shard-00001.parquet",
    ]
    assert calls_of(calls) == ITEMS[:10]

    resumed = run(out, calls)
    assert sorted(calls_of(calls)) == sorted(ITEMS)  # every item processed exactly once
    assert resumed["key"].to_list() == ITEMS

    fresh_calls = tmp_path / "fresh-calls.txt"
    uninterrupted = run(tmp_path / "fresh", fresh_calls)
    assert resumed.equals(uninterrupted)
    assert calls_of(fresh_calls) == ITEMS

    again = run(out, calls)  # everything on disk: nothing recomputed
    assert again.equals(uninterrupted)
    assert len(calls_of(calls)) == len(ITEMS)
    assert not list(out.glob(".*"))  # no temp files left behind


def test_manifest_records_the_run(tmp_path: Path) -> None:
    run(tmp_path / "run", tmp_path / "calls.txt")
    manifest = json.loads((tmp_path / "run" / MANIFEST).read_text())
    assert manifest["fingerprint"] == FINGERPRINT
    assert (manifest["shard_size"], manifest["item_count"], manifest["shards"]) == (5, 23, 5)
    assert read_shard_keys(shard_path(tmp_path / "run", 4)) == ITEMS[20:]


@pytest.mark.parametrize(
    "change", [{"fingerprint": "other"}, {"shard_size": 4}], ids=["params", "shard_size"]
)
def test_a_different_run_is_refused_unless_restarted(tmp_path: Path, change: dict) -> None:
    calls = tmp_path / "calls.txt"
    out = tmp_path / "run"
    run(out, calls)
    with pytest.raises(ShardManifestError, match="new output directory.*restart=True"):
        run(out, calls, **change)
    assert len(calls_of(calls)) == len(ITEMS)
    result = run(out, calls, restart=True, **change)
    assert len(calls_of(calls)) == 2 * len(ITEMS)
    assert result["key"].to_list() == ITEMS


def test_other_inputs_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(out, tmp_path / "calls.txt")
    with pytest.raises(ShardManifestError, match="keys"):
        run_sharded(
            ITEMS[::-1],
            key=str,
            process=make_process(tmp_path / "calls.txt"),
            out_dir=out,
            shard_size=SHARD,
            fingerprint=FINGERPRINT,
        )


def test_foreign_or_corrupt_shard_is_recomputed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = tmp_path / "calls.txt"
    out = tmp_path / "run"
    expected = run(out, calls)
    shutil.copy(shard_path(out, 0), shard_path(out, 1))  # shard 1 now holds shard 0's items
    shard_path(out, 3).write_bytes(b"not parquet")
    caplog.set_level(logging.WARNING, logger="mmr1.data.shards")
    result = run(out, calls)
    assert result.equals(expected)
    assert calls_of(calls)[len(ITEMS) :] == ITEMS[5:10] + ITEMS[15:20]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("shard-00001.parquet does not hold the expected items" in w for w in warnings)
    assert any("shard-00003.parquet" in w and "unreadable" in w for w in warnings)


def test_stray_shards_without_manifest_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(out, tmp_path / "calls.txt")
    (out / MANIFEST).unlink()
    with pytest.raises(ShardManifestError, match="no manifest.json"):
        run(out, tmp_path / "calls.txt")


def test_empty_input_and_duplicate_keys(tmp_path: Path) -> None:
    def process(items: Sequence[str], shard: int) -> pl.DataFrame:
        return pl.DataFrame({"key": list(items)}, schema={"key": pl.String})

    empty = run_sharded([], str, process, tmp_path / "empty", 4, "fp")
    assert empty.schema == pl.Schema({"key": pl.String})
    assert not list((tmp_path / "empty").glob("shard-*"))
    with pytest.raises(ValueError, match="'a' repeats"):
        run_sharded(["a", "b", "a"], str, process, tmp_path / "dup", 2, "fp")


def test_fingerprint_and_seed_helpers() -> None:
    assert step_fingerprint({"a": 1, "b": 2}, ["x"]) == step_fingerprint({"b": 2, "a": 1}, ["x"])
    assert step_fingerprint({"a": 1}, ["x", "y"]) != step_fingerprint({"a": 1}, ["y", "x"])
    assert step_fingerprint({"a": 1}, ["xy"]) != step_fingerprint({"a": 1}, ["x", "y"])
    assert derive_seed(0, "cot", 1) != derive_seed(1, "cot", 0)
    assert 0 <= derive_seed(123, "x") < 2**31
