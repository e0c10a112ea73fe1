"""The released MMR1-SFT layout (ShareGPT conversations) as a curation source, and the
``existing`` teacher that keeps the chains of thought the data already has."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from sft_layout import cot, sft_rows, write_sft_layout_parquet

from mmr1.catalog import Catalog
from mmr1.data.coerce import SourceError
from mmr1.data.sources import read_source
from schemas.curation import CurateSFTConfig, LocalSource
from schemas.home import HomeConfig


def test_ingest_reads_the_released_sft_layout(tmp_path: Path) -> None:
    path = write_sft_layout_parquet(tmp_path / "mmr1-sft.parquet")
    result = read_source(LocalSource(name="mmr1-sft", path=str(path)))
    kept = result.kept
    assert kept["source_row_id"].to_list() == ["0", "1", "2", "5"]
    # The human turn is the whole prompt, kept verbatim; the gpt turn is the CoT; with no
    # answer column the answer is the CoT's final answer.
    rows = sft_rows()
    assert kept["problem"].to_list() == [rows[i]["conversations"][0]["value"] for i in (0, 1, 2, 5)]
    assert kept["response"].to_list() == [
        rows[i]["conversations"][1]["value"] for i in (0, 1, 2, 5)
    ]
    assert kept["answer"].to_list() == ["red", "2", "green", "42"]
    assert kept["problem_is_prompt"].to_list() == [True] * 4
    assert kept["images"].list.len().to_list() == [1, 2, 1, 0]
    reasons = dict(
        zip(result.quarantined["source_row_id"], result.quarantined["reason"], strict=True)
    )
    assert reasons == {"3": "cot_no_answer", "4": "invalid_field"}
    detail = result.quarantined.filter(pl.col("source_row_id") == "4")["detail"].item()
    assert "row 4" in detail and "got [human, human]" in detail and str(path) in detail


def test_ingest_sharegpt_jsonl_with_role_keys_and_a_gold_column(tmp_path: Path) -> None:
    lines = [
        {  # role/content turns, a system turn first, a gold answer column that wins
            "uid": "a",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 6 times 7, as a whole number?"},
                {"role": "assistant", "content": cot("6 * 7 = 42.", "42")},
            ],
            "gt": 42,
        },
        {"uid": "b", "messages": "not a list", "gt": "1"},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    source = LocalSource(
        name="chat",
        path=str(path),
        columns={"conversations": "messages", "answer": "gt", "id": "uid"},
    )
    result = read_source(source)
    assert result.kept["row_id"].to_list() == ["chat/a"]
    assert result.kept["answer"].to_list() == ["42"]  # the gold column, as text
    assert result.kept["problem"].to_list() == ["What is 6 times 7, as a whole number?"]
    [bad] = result.quarantined.to_dicts()
    assert (bad["source_row_id"], bad["reason"]) == ("b", "invalid_field")
    assert "expected a list of turns" in bad["detail"]


def test_an_explicit_layout_names_the_missing_column(tmp_path: Path) -> None:
    path = write_sft_layout_parquet(tmp_path / "sft.parquet")
    with pytest.raises(SourceError, match="no column 'problem' for field 'problem'"):
        read_source(LocalSource(name="x", path=str(path), layout="record"))
    record_layout = tmp_path / "rl.parquet"
    pl.DataFrame({"problem": ["What is 1+1?"], "answer": ["2"]}).write_parquet(record_layout)
    with pytest.raises(SourceError, match="field 'conversations' \\(layout sharegpt\\)"):
        read_source(LocalSource(name="y", path=str(record_layout), layout="sharegpt"))


@pytest.fixture
def curation_home(prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "home"))
    return HomeConfig().ensure()


def _sft_config(path: Path, **updates: object) -> CurateSFTConfig:
    return CurateSFTConfig.model_validate(
        {
            "output_name": "mmr1-sft",
            "sources": [{"kind": "local", "name": "mmr1-sft", "path": str(path)}],
            "difficulty": {"enabled": False},
            "cot": {"teacher": {"kind": "existing"}},
            **updates,
        }
    )


def test_curate_sft_keeps_the_datas_own_chains_of_thought(curation_home, tmp_path: Path) -> None:
    from flows.curate import curate_sft

    path = write_sft_layout_parquet(tmp_path / "mmr1-sft.parquet")
    ref = curate_sft(_sft_config(path))
    catalog = Catalog(curation_home.catalog)
    sft = catalog.get_dataset(ref)
    reasons = catalog.quarantine_summary(sft.ref)
    assert sft.kind == "sft" and sft.row_count == 3
    assert reasons == {"cot_rejected": 1, "cot_no_answer": 1, "invalid_field": 1}
    assert sft.row_count + sum(reasons.values()) == len(sft_rows())
    [rejected] = catalog.quarantined(sft.ref, reason="cot_rejected")
    assert rejected.source_row_id == "2" and rejected.detail == "1 attempt: 1 bad format"
    rows = pl.read_parquet(Path(sft.uri) / "data.parquet")
    source_rows = sft_rows()
    for record, index in zip(rows.to_dicts(), (0, 1, 5), strict=True):
        # Both turns verbatim: no second instruction wrapped around the released prompt.
        assert record["conversations"] == source_rows[index]["conversations"]
        assert len(record["images"]) == len(source_rows[index]["images"])
    assert rows["answer"].to_list() == ["red", "2", "42"]
    [parent] = catalog.lineage(sft.ref).parents
    assert parent.ref == "source-mmr1-sft@1"


def test_the_existing_teacher_verifies_against_a_gold_column(curation_home, tmp_path: Path) -> None:
    from flows.curate import curate_sft

    def exchange(question: str, answer: str) -> list[dict[str, str]]:
        return [
            {"from": "human", "value": question},
            {"from": "gpt", "value": cot("Adding up.", answer)},
        ]

    conversations = [
        exchange("What is 40 + 2, as a whole number? Think it through.", "42"),
        exchange("What is 3 + 4, as a whole number? Think it through.", "7"),
    ]
    table = pl.DataFrame({"conversations": conversations, "answer": ["42", "8"]})
    path = tmp_path / "gold.parquet"
    table.write_parquet(path)
    ref = curate_sft(_sft_config(path, output_name="gold-sft"))
    catalog = Catalog(curation_home.catalog)
    sft = catalog.get_dataset(ref)
    assert sft.row_count == 1
    [wrong] = catalog.quarantined(sft.ref)
    assert (wrong.source_row_id, wrong.reason) == ("1", "cot_rejected")
    assert wrong.detail == "1 attempt: 1 wrong answer"


def test_the_existing_teacher_on_rows_without_a_cot(curation_home, tmp_path: Path) -> None:
    from flows.curate import curate_sft

    path = tmp_path / "rl.jsonl"
    path.write_text(json.dumps({"id": "q", "problem": "What is 2 + 2?", "answer": "4"}) + "\n")
    ref = curate_sft(_sft_config(path, output_name="no-cot"))
    catalog = Catalog(curation_home.catalog)
    [row] = catalog.quarantined(ref)
    assert row.reason == "no_teacher_solution" and "sharegpt layout" in row.detail
