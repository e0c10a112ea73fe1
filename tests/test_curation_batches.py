"""Bounded-memory curation: every step gives the same rows whatever the batch size.

Batch sizes 1, 7 and "all at once" must agree on ingest (duplicate ids across
batches, bad lines, limits), dedup (first occurrence kept, pointers across
batches), CoT and pass rates run a group of shards at a time, the difficulty
filter applied batch by batch, and the dataset writer (same bytes from a stream
of records); plus the pieces: key sets, re-batching, the step file writer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from curation_rows import records_frame, text_frame
from sft_layout import cot, write_sft_layout_parquet

from mmr1.cot.generate import cot_plan, generate_cot
from mmr1.data.batches import FrameWriter, KeySet, StepWriter, iter_frames, rebatch
from mmr1.data.dedup import deduplicate, deduplicate_batches
from mmr1.data.difficulty import (
    bucket_and_filter,
    estimate_pass_rates,
    filter_batches,
    pass_rate_plan,
    rated_columns,
)
from mmr1.data.frame import StepResult, quarantine_frame
from mmr1.data.io import read_sft_dataset, write_sft_dataset
from mmr1.data.shards import shard_groups
from mmr1.data.sources import read_source
from mmr1.data.synthetic import generate_items
from mmr1.hashing import hash_file
from schemas.curation import (
    CoTConfig,
    DedupConfig,
    DifficultyConfig,
    LocalSource,
    SyntheticSource,
)
from schemas.generation import (
    Completion,
    CompletionSample,
    GenerationRequest,
    HFBackendConfig,
    SamplingParams,
)
from schemas.records import ChatTurn, SFTRecord
from schemas.rewards import RewardConfig
from schemas.synthetic import SyntheticConfig

SIZES = (1, 7, 100_000)
INLINE = RewardConfig(num_workers=0)


def _equal(a: StepResult, b: StepResult) -> None:
    assert a.kept.equals(b.kept), "kept rows differ"
    assert a.quarantined.equals(b.quarantined), "quarantined rows differ"


def _collect(results) -> StepResult:
    results = list(results)
    return StepResult(
        kept=pl.concat([r.kept for r in results], how="vertical"),
        quarantined=pl.concat([r.quarantined for r in results], how="vertical"),
    )


def _batches(frame: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    return [frame.slice(start, size) for start in range(0, max(frame.height, 1), size)]


# ------------------------------------------------------------------------ pieces


class _CollidingKeys(KeySet):
    """Every key hashes to one of three values: lookups must compare the strings."""

    def _hash(self, keys: pl.Series) -> np.ndarray:
        return (keys.str.len_bytes().fill_null(0).to_numpy() % 3).astype(np.uint64)


@pytest.mark.parametrize("kind", [KeySet, _CollidingKeys])
def test_key_set_is_an_exact_set(kind: type[KeySet]) -> None:
    rng = random.Random(0)
    keys, reference = kind(), set()
    for _ in range(40):
        batch = [f"k{rng.randrange(300)}" for _ in range(rng.randrange(0, 12))] + [None]
        series = pl.Series(batch, dtype=pl.String)
        found = keys.contains(series)
        assert found.tolist() == [k is not None and k in reference for k in batch]
        new = sorted({k for k in batch if k is not None and k not in reference})
        keys.add(pl.Series(new, dtype=pl.String))
        reference.update(new)
        assert len(keys) == len(reference)
    assert len(keys._runs) <= len(reference).bit_length()


def test_rebatch_cuts_exact_sizes_and_keeps_an_empty_schema() -> None:
    frame = pl.DataFrame({"x": list(range(10))})
    parts = [frame.slice(0, 3), frame.slice(3, 0), frame.slice(3, 6), frame.slice(9, 1)]
    cut = list(rebatch(parts, 4))
    assert [f.height for f in cut] == [4, 4, 2]
    assert pl.concat(cut)["x"].to_list() == list(range(10))
    [empty] = list(rebatch([frame.clear(), frame.clear()], 4))
    assert empty.height == 0 and empty.schema == frame.schema
    assert list(rebatch([], 4)) == []


def test_step_files_are_written_batch_by_batch(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    writer = FrameWriter(path)
    writer.write(
        pl.DataFrame({"a": [1, 2], "b": [None, None]}, schema={"a": pl.Int64, "b": pl.String})
    )
    with pytest.raises(ValueError, match="columns"):
        writer.write(pl.DataFrame({"a": [3]}))
    writer.write(pl.DataFrame({"a": [3], "b": [None]}))  # an all-null batch: typed as the file
    writer.close()
    assert pl.read_parquet(path)["a"].to_list() == [1, 2, 3]
    assert [f.height for f in iter_frames(path, 2)] == [2, 1]

    empty = tmp_path / "empty.parquet"
    pl.DataFrame({"a": []}, schema={"a": pl.String}).write_parquet(empty)
    [only] = list(iter_frames(empty, 5))
    assert only.height == 0 and only.schema == pl.Schema({"a": pl.String})

    with pytest.raises(RuntimeError), StepWriter(tmp_path / "step") as step:
        step.add(StepResult(pl.DataFrame({"a": [1]})))
        raise RuntimeError("killed")
    assert not any((tmp_path / "step").iterdir())  # nothing half written is left in place
    with StepWriter(tmp_path / "step") as step:
        step.add(StepResult(pl.DataFrame({"a": [1]})))
        quarantined = quarantine_frame([{"source": "s", "source_row_id": 1, "reason": "r"}])
        step.add(StepResult(pl.DataFrame({"a": [2]}), quarantined))
    assert (step.n_kept, step.n_quarantined, dict(step.reasons)) == (2, 1, {"r": 1})


# ------------------------------------------------------------------------ ingest


def _jsonl_source(directory: Path) -> LocalSource:
    """Two files of rows whose ids repeat across batches and files, with unreadable lines.

    Read up to the limit (25 lines): rows 0..20, three cut lines, and one row with
    a bad field whose readable id ``r3`` repeats row 3's.
    """
    directory.mkdir()
    lines = []
    for i in range(23):
        row = {"id": f"r{i % 9}" if i % 4 else f"u{i}", "problem": f"What is {i} + 1?"}
        lines.append(json.dumps(row | {"answer": str(i + 1)}).encode())
        if i % 6 == 5:
            lines.append(b'{"id": "broken", "problem": ')
        if i == 10:
            lines.append(
                json.dumps({"id": "r3", "problem": "x", "answer": "1", "choices": 5}).encode()
            )
    (directory / "a.jsonl").write_bytes(b"\n".join(lines[:15]) + b"\n")
    (directory / "b.jsonl").write_bytes(b"\n".join(lines[15:]) + b"\n")
    return LocalSource(name="lines", path=str(directory), limit=25)


def test_ingest_does_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    lines = _jsonl_source(tmp_path / "jsonl")
    layout = write_sft_layout_parquet(tmp_path / "sft.parquet")
    sources = [
        lines,
        LocalSource(name="sft", path=str(layout), limit=5),
        SyntheticSource(name="syn", synthetic=SyntheticConfig(n_items=9)),
    ]
    for source in sources:
        whole = read_source(source, batch_rows=SIZES[-1])
        for size in SIZES[:-1]:
            _equal(read_source(source, batch_rows=size), whole)

    result = read_source(lines, batch_rows=2)
    assert result.kept.height == 15 and result.reasons() == {
        "duplicate_id": 7,
        "malformed_json": 3,
    }
    assert result.kept["source_row_id"].n_unique() == 15
    repeat = result.quarantined.filter(pl.col("detail").str.contains("line 13:"))
    assert repeat.select("source_row_id", "reason", "duplicate_of").row(0) == (
        "r3",
        "duplicate_id",
        "lines/r3",
    )


# ------------------------------------------------------------------------ dedup


def _validated_rows(seed: int, n: int) -> pl.DataFrame:
    """Validated-looking rows with exact, near-text and near-image duplicates of earlier rows."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(40)]
    rows: list[dict] = []
    for i in range(n):
        base = rows[int(rng.integers(0, len(rows)))] if rows else None
        kind = int(rng.integers(0, 4)) if base else 0
        if kind == 0 or base is None:
            k = int(rng.integers(0, 3))
            text = " ".join(rng.choice(words, size=int(rng.integers(5, 30))).tolist())
            row = {
                "problem_norm": f"{text} n{i}",
                "answer": str(int(rng.integers(0, 4))),
                "sha": [f"img{i}-{j}" for j in range(k)],
                "phash": [int(v) for v in rng.integers(0, 2**63, k)],
            }
        elif kind == 1:
            row = dict(base)
        elif kind == 2:
            row = dict(base, problem_norm=base["problem_norm"] + " please")
        else:
            row = dict(base, sha=[s + "-re" for s in base["sha"]])
        rows.append(row)
    return pl.DataFrame(
        {
            "row_id": [f"src/{i}" for i in range(n)],
            "source": ["src"] * n,
            "source_row_id": [str(i) for i in range(n)],
            "problem_norm": [r["problem_norm"] for r in rows],
            "answer": [r["answer"] for r in rows],
            "image_sha256": pl.Series([r["sha"] for r in rows], dtype=pl.List(pl.String)),
            "image_phash": pl.Series([r["phash"] for r in rows], dtype=pl.List(pl.UInt64)),
        }
    )


def test_dedup_keeps_the_first_row_whatever_the_batch_size(tmp_path: Path) -> None:
    frame = _validated_rows(3, 90)
    whole = deduplicate(frame, DedupConfig())
    assert set(whole.reasons()) == {
        "duplicate_exact",
        "duplicate_near_text",
        "duplicate_near_image",
    }
    for size in SIZES:

        def read(columns: Sequence[str] | None, size: int = size) -> list[pl.DataFrame]:
            chosen = frame if columns is None else frame.select(columns)
            return _batches(chosen, size)

        _equal(_collect(deduplicate_batches(read, frame.height, DedupConfig())), whole)
        # Signatures and band keys spilled to files: the same verdicts.
        spill = tmp_path / f"spill-{size}"
        results = deduplicate_batches(read, frame.height, DedupConfig(), spill=spill)
        _equal(_collect(results), whole)
        assert len(list(spill.glob("band-*.u64"))) == DedupConfig().bands
    # Every pointer names a row kept earlier in source order.
    kept = set(whole.kept["row_id"])
    for row in whole.quarantined.iter_rows(named=True):
        assert row["duplicate_of"] in kept
        assert int(row["duplicate_of"].split("/")[1]) < int(row["source_row_id"])

    with pytest.raises(RuntimeError, match="rows"):
        list(deduplicate_batches(lambda c: _batches(frame, 7), frame.height + 1, DedupConfig()))


# ------------------------------------------------------------------------ sharded steps


def test_cot_in_groups_of_shards_equals_one_run(tmp_path: Path) -> None:
    items = generate_items(SyntheticConfig(n_items=23, seed=2))
    frame = records_frame((item.record for item in items), source="syn")
    config = CoTConfig(shard_size=4, max_attempts=1)
    templates = {"syn": SyntheticConfig(n_items=23, seed=2)}
    whole = generate_cot(frame, config, tmp_path / "one", 0, synthetic_configs=templates)
    for size in (1, 7, 9, 100):
        out = tmp_path / f"groups-{size}"
        plan = cot_plan(frame["row_id"].to_list(), config, 0, synthetic_configs=templates)
        results = [
            generate_cot(rows, config, out, 0, synthetic_configs=templates, plan=group_plan)
            for rows, group_plan in shard_groups(_batches(frame, size), plan, size)
        ]
        _equal(_collect(results), whole)
        shards = sorted(p.name for p in out.glob("shard-*"))
        assert shards == sorted(p.name for p in (tmp_path / "one").glob("shard-*"))
        assert [hash_file(out / n) for n in shards] == [
            hash_file(tmp_path / "one" / n) for n in shards
        ]
        assert (out / "manifest.json").read_text() == (tmp_path / "one/manifest.json").read_text()


class CoinBackend:
    """Right with the probability in the question ("p=0.25"), seeded by the request's seed."""

    name = "coin"

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams):
        out = []
        for request in requests:
            p = float(request.prompt.rsplit("p=", 1)[1].split()[0])
            gold = request.prompt.rsplit("gold=", 1)[1].split()[0]
            samples = []
            for j in range(sampling.n):
                rng = random.Random(f"{sampling.seed}/{request.request_id}/{j}")
                answer = gold if rng.random() < p else "wrong"
                samples.append(
                    CompletionSample(text=f"<think>{j}</think><answer>{answer}</answer>")
                )
            out.append(Completion(request_id=request.request_id, samples=samples))
        return out

    def close(self) -> None:
        pass


def test_pass_rates_in_groups_and_the_filter_in_batches_equal_one_run(tmp_path: Path) -> None:
    questions = [(f"Question {i}: p={(i % 5) / 4} gold={i % 3} ok", str(i % 3)) for i in range(30)]
    frame = text_frame(questions, types=[f"t{i % 3}" for i in range(30)])
    config = DifficultyConfig(rollouts=4, shard_size=4, target_size=9)
    backend = CoinBackend()
    rated = estimate_pass_rates(frame, backend, config, tmp_path / "one", 1, rewards=INLINE)
    whole = bucket_and_filter(rated, config, 1)
    assert whole.kept.height == 9 and whole.quarantined.height == 21
    for size in (1, 7, 100):
        out = tmp_path / f"groups-{size}"
        plan = pass_rate_plan(frame["row_id"].to_list(), backend, config, 1, rewards=INLINE)
        groups = shard_groups(_batches(frame, size), plan, size)
        parts = [
            estimate_pass_rates(rows, backend, config, out, 1, rewards=INLINE, plan=group_plan)
            for rows, group_plan in groups
        ]
        assert pl.concat(parts).equals(rated)
        compact = pl.concat(parts).select(rated_columns(config))
        _equal(_collect(filter_batches(compact, _batches(frame, size), config, 1)), whole)


def test_a_pass_rate_run_names_its_model_by_hash_not_by_directory() -> None:
    """The rating model's directory differs in a moved home; its content hash does not."""

    class LocalModel(CoinBackend):
        def __init__(self, directory: str) -> None:
            self.config = HFBackendConfig(model=directory)

    config = DifficultyConfig(rollouts=2, shard_size=4)

    def fingerprint(directory: str, checkpoint_hash: str | None) -> str:
        backend = LocalModel(directory)
        plan = pass_rate_plan(["a", "b"], backend, config, 1, checkpoint_hash=checkpoint_hash)
        return plan.fingerprint

    assert fingerprint("/home-a/ckpt", "h1") == fingerprint("/home-b/ckpt", "h1")
    assert fingerprint("/home-a/ckpt", "h1") != fingerprint("/home-a/ckpt", "h2")
    assert fingerprint("/home-a/ckpt", None) != fingerprint("/home-b/ckpt", None)


# ------------------------------------------------------------------------ dataset writer


def _records(n: int):
    for i in range(n):
        yield SFTRecord(
            id=f"s/{i}",
            conversations=[
                ChatTurn.model_validate({"from": "human", "value": f"What is {i} + 1?"}),
                ChatTurn.model_validate({"from": "gpt", "value": cot(f"{i} + 1", str(i + 1))}),
            ],
            answer=str(i + 1),
        )


def test_sft_dataset_from_a_stream_of_records(tmp_path: Path) -> None:
    streamed = write_sft_dataset(_records(600), tmp_path / "stream")
    listed = write_sft_dataset(list(_records(600)), tmp_path / "list")
    assert streamed.content_hash == listed.content_hash and streamed.row_count == 600
    assert [r.id for r in read_sft_dataset(tmp_path / "stream")][-1] == "s/599"
    repeated = list(_records(600))
    repeated[400] = repeated[400].model_copy(update={"id": "s/3"})
    with pytest.raises(ValueError, match="row 400: field 'id': duplicate id 's/3'"):
        write_sft_dataset(iter(repeated), tmp_path / "dup")
    assert not (tmp_path / "dup").exists()


# ------------------------------------------------------------------------ the flow


@pytest.fixture
def curation_home(prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from schemas.home import HomeConfig

    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "home"))
    return HomeConfig().ensure()


def _exchange(question: str, answer: str) -> list[dict[str, str]]:
    return [
        {"from": "human", "value": question},
        {"from": "gpt", "value": cot("Working it out step by step.", answer)},
    ]


@pytest.mark.slow
def test_curate_sft_gives_the_same_dataset_at_every_batch_size(
    curation_home, tmp_path: Path
) -> None:
    from flows.curate import curate_sft
    from mmr1.catalog import Catalog
    from mmr1.data.io import write_rl_dataset
    from schemas.curation import CurateSFTConfig
    from schemas.records import RLRecord

    leaked = "What is the total area of the two gardens described in the survey above?"
    question = "What is {} times {}? Give the product as one whole number, without any units."
    rows = [_exchange(question.format(i, i + 3), str(i * (i + 3))) for i in range(9)]
    rows += [
        rows[2],  # exact duplicate of row 2
        _exchange(question.format(4, 7) + " Thanks.", "28"),  # near row 4
        _exchange(leaked, "12"),  # a benchmark question
        [{"from": "human", "value": "What is 1 + 1?"}, {"from": "gpt", "value": "2, \\boxed{2}"}],
        rows[5],
    ]
    source = tmp_path / "sft.parquet"
    pl.DataFrame({"conversations": rows}).write_parquet(source)
    bench = tmp_path / "bench"
    write_rl_dataset([RLRecord(id="b1", problem=leaked, answer="12")], bench)
    catalog = Catalog(curation_home.catalog)
    catalog.register_dataset(
        name="bench",
        kind="benchmark",
        uri=str(bench),
        content_hash="b" * 64,
        row_count=1,
        columns={"problem": "string"},
    )
    refs, quarantines, steps = [], [], []
    for size in SIZES:
        config = CurateSFTConfig.model_validate(
            {
                "output_name": "batched",
                "sources": [{"kind": "local", "name": "sft", "path": str(source)}],
                "difficulty": {"enabled": False},
                "cot": {"teacher": {"kind": "existing"}, "shard_size": 3},
                "batch_rows": size,
            }
        )
        refs.append(curate_sft(config))
        # The catalog records a version's quarantine once: compare each run's step files.
        [work] = (curation_home.runs / "curate_sft").glob("batched-*")
        steps.append(
            {q.parent.name: pl.read_parquet(q) for q in work.glob("*/quarantined.parquet")}
        )
        quarantines.append(
            [(q.source_row_id, q.reason, q.duplicate_of) for q in catalog.quarantined(refs[-1])]
        )
    assert refs[0] == refs[1] == refs[2]  # same content, same version
    assert len(steps[0]) == 7  # ingest, merged, validate, dedup, decontaminate, difficulty, cot
    for other in steps[1:]:
        assert other.keys() == steps[0].keys()
        assert all(other[name].equals(frame) for name, frame in steps[0].items())
    assert (
        quarantines[0]
        == quarantines[1]
        == quarantines[2]
        == [
            ("9", "duplicate_exact", "sft/2"),
            ("10", "duplicate_near_text", "sft/4"),
            ("13", "duplicate_exact", "sft/5"),
            ("11", "contaminated_text", None),
            ("12", "cot_rejected", None),
        ]
    )
    assert catalog.get_dataset(refs[0]).row_count == 9
