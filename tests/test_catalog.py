"""Catalog behaviour in one process: versions, refs, lineage, quarantine, evals, reports."""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import UTC
from pathlib import Path

import pytest

from mmr1.catalog import (
    Catalog,
    CatalogAmbiguousRefError,
    CatalogError,
    CatalogNotFoundError,
    parse_ref,
)
from mmr1.catalog.report import (
    lineage_json,
    list_json,
    render_lineage,
    render_list,
    render_show,
    show_json,
)
from schemas.catalog import DatasetEntry, LineageNode, QuarantinedRow
from schemas.refs import Ref


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    return Catalog(tmp_path / "nested" / "catalog.duckdb", lock_timeout_s=10)


def _dataset(catalog: Catalog, name: str, digest: str, **kwargs) -> DatasetEntry:
    defaults = dict(
        kind="rl",
        uri=f"/data/{name}/{digest}",
        row_count=10,
        columns={"id": "str", "image": "bytes"},
    )
    return catalog.register_dataset(name=name, content_hash=digest, **{**defaults, **kwargs})


def _pipeline(catalog: Catalog):
    """raw -> rl pool and sft set -> sft checkpoint -> VPS table, as in the demo."""
    raw = _dataset(catalog, "raw", "h-raw", kind="source", row_count=100)
    rl = _dataset(catalog, "rl-pool", "h-rl", parents=["raw@1"], row_count=80)
    sft_data = _dataset(catalog, "sft-set", "h-sft", kind="sft", parents=["dataset:raw"])
    base = catalog.register_checkpoint(
        name="base", stage="base", uri="/ckpt/base", content_hash="c0"
    )
    sft = catalog.register_checkpoint(
        name="sft",
        stage="sft",
        uri="/ckpt/sft",
        content_hash="c1",
        step=500,
        metrics={"loss": 0.25},
        config={"lr": 1e-4, "layers": [1, 2]},
        parents=["checkpoint:base@1", "sft-set@1"],
    )
    vps = catalog.register_vps_table(
        name="vps-rl-pool",
        dataset_ref="rl-pool@1",
        checkpoint_ref="sft",
        uri="/vps/1",
        content_hash="v1",
        row_count=80,
        stats={"mean_pass_rate": 0.4},
    )
    return raw, rl, sft_data, base, sft, vps


# ---------------------------------------------------------------- refs


def test_parse_ref_forms():
    assert parse_ref("rl-pool") == Ref(None, "rl-pool", None)
    assert parse_ref("rl-pool@3") == Ref(None, "rl-pool", 3)
    assert parse_ref("checkpoint:org/model.v2@12") == Ref("checkpoint", "org/model.v2", 12)
    assert str(parse_ref("vps:t@1")) == "vps:t@1"


@pytest.mark.parametrize("bad", ["", "a b", "a@", "a@0", "a@x", "model:a@1", "@1", "a@1@2", ":a"])
def test_parse_ref_rejects_malformed_naming_the_ref(bad):
    with pytest.raises(ValueError, match="ref"):
        parse_ref(bad)
    try:
        parse_ref(bad)
    except ValueError as exc:
        assert repr(bad) in str(exc)


def test_get_with_bad_ref_raises_value_error(catalog):
    with pytest.raises(ValueError, match="'bad ref'"):
        catalog.get_dataset("bad ref")
    with pytest.raises(ValueError, match="names a checkpoint, not a dataset"):
        catalog.get_dataset("checkpoint:x@1")


# ---------------------------------------------------------------- versioning


def test_same_content_same_version_new_content_new_version(catalog):
    first = _dataset(catalog, "rl-pool", "aaa", metadata={"seed": 1})
    again = _dataset(catalog, "rl-pool", "aaa", uri="/elsewhere", metadata={"seed": 2})
    second = _dataset(catalog, "rl-pool", "bbb")
    other = _dataset(catalog, "other", "aaa")  # the same content under another name

    assert first.version == 1 and first.ref == "rl-pool@1"
    assert again == first  # unchanged: not even uri or metadata
    assert second.version == 2
    assert other.version == 1
    assert [e.ref for e in catalog.list_datasets(name="rl-pool")] == ["rl-pool@1", "rl-pool@2"]
    # Registering old content again does not create version 3.
    assert _dataset(catalog, "rl-pool", "aaa").version == 1
    assert len(catalog.list_datasets()) == 3


def test_get_latest_and_pinned(catalog):
    _dataset(catalog, "rl-pool", "aaa")
    _dataset(catalog, "rl-pool", "bbb", row_count=42)
    assert catalog.get_dataset("rl-pool").version == 2
    assert catalog.get_dataset("rl-pool@1").content_hash == "aaa"
    assert catalog.get_dataset("dataset:rl-pool@2").row_count == 42


def test_round_trip_of_fields(catalog):
    entry = _dataset(
        catalog,
        "rl-pool",
        "aaa",
        prefect_flow_run_id="flow-1",
        mlflow_run_id="ml-1",
        metadata={"nested": {"a": [1, 2.5, None]}, "text": "é"},
    )
    loaded = catalog.get_dataset("rl-pool@1")
    assert loaded == entry
    assert loaded.columns == {"id": "str", "image": "bytes"}
    assert loaded.metadata == {"nested": {"a": [1, 2.5, None]}, "text": "é"}
    assert loaded.created_at.tzinfo is UTC
    assert abs(time.time() - loaded.created_at.timestamp()) < 60
    assert (loaded.prefect_flow_run_id, loaded.mlflow_run_id) == ("flow-1", "ml-1")


def test_versions_are_per_kind_and_checkpoints_version_too(catalog):
    a = catalog.register_checkpoint(name="sft", stage="sft", uri="/a", content_hash="x")
    b = catalog.register_checkpoint(name="sft", stage="sft", uri="/b", content_hash="y", step=3)
    assert (a.version, b.version) == (1, 2)
    assert catalog.register_checkpoint(name="sft", stage="sft", uri="/c", content_hash="x") == a
    assert catalog.get_checkpoint("sft").step == 3
    assert [c.ref for c in catalog.list_checkpoints(stage="sft")] == ["sft@1", "sft@2"]
    assert catalog.list_checkpoints(stage="rl") == []


def test_invalid_registration_inputs(catalog):
    with pytest.raises(ValueError, match="invalid catalog name"):
        _dataset(catalog, "has@at", "h")
    with pytest.raises(ValueError, match="row_count"):
        _dataset(catalog, "ok", "h", row_count=-1)
    with pytest.raises(ValueError, match="'metadata' is not JSON-serialisable"):
        _dataset(catalog, "ok", "h", metadata={"x": object()})
    with pytest.raises(ValueError, match="list of refs"):
        _dataset(catalog, "ok", "h", parents="raw@1")
    with pytest.raises(ValueError, match="'loss' is not a number"):
        catalog.register_checkpoint(
            name="c", stage="sft", uri="/c", content_hash="c", metrics={"loss": "low"}
        )
    with pytest.raises(ValueError, match="step"):
        catalog.register_checkpoint(name="c", stage="sft", uri="/c", content_hash="c", step=-1)
    assert catalog.list_datasets() == [] and catalog.list_checkpoints() == []


# ---------------------------------------------------------------- not found / ambiguity


def test_not_found_lists_known_versions(catalog):
    _dataset(catalog, "rl-pool", "aaa")
    _dataset(catalog, "rl-pool", "bbb")
    with pytest.raises(CatalogNotFoundError) as info:
        catalog.get_dataset("rl-pool@7")
    message = str(info.value)
    assert "'rl-pool@7'" in message and "known versions of 'rl-pool' are 1, 2" in message
    assert str(catalog.path) in message


def test_not_found_suggests_similar_names(catalog):
    _dataset(catalog, "rl-pool", "aaa")
    with pytest.raises(
        CatalogNotFoundError, match="no dataset named 'rl-pol'.*similar names: rl-pool"
    ):
        catalog.get_dataset("rl-pol")
    with pytest.raises(CatalogNotFoundError, match="known names: rl-pool"):
        catalog.get_dataset("zzzzzz")
    with pytest.raises(CatalogNotFoundError, match="no checkpoint entries yet"):
        catalog.get_checkpoint("rl-pool")
    assert isinstance(CatalogNotFoundError("x"), CatalogError | LookupError)


def test_missing_parent_is_named_and_nothing_is_written(catalog):
    with pytest.raises(CatalogNotFoundError, match="'ghost'"):
        _dataset(catalog, "child", "h", parents=["ghost@1"])
    assert catalog.list_datasets() == []


def test_resolve_and_ambiguity(catalog):
    _dataset(catalog, "shared", "h")
    catalog.register_checkpoint(name="shared", stage="sft", uri="/c", content_hash="c")
    catalog.register_checkpoint(name="model", stage="sft", uri="/m", content_hash="m")

    kind, entry = catalog.resolve("model")
    assert kind == "checkpoint" and entry.ref == "model@1"
    assert catalog.resolve("dataset:shared@1")[0] == "dataset"
    assert catalog.resolve("checkpoint:shared")[0] == "checkpoint"
    with pytest.raises(CatalogAmbiguousRefError, match="dataset:shared, checkpoint:shared"):
        catalog.resolve("shared@1")
    # The same rule applies to unprefixed parents.
    with pytest.raises(CatalogAmbiguousRefError, match="prefix"):
        _dataset(catalog, "child", "h", parents=["shared@1"])
    child = _dataset(catalog, "child", "h", parents=["checkpoint:shared@1", "model"])
    assert child.parents == ["checkpoint:model@1", "checkpoint:shared@1"]
    with pytest.raises(CatalogNotFoundError, match="no dataset, checkpoint or VPS table"):
        catalog.resolve("nope")


# ---------------------------------------------------------------- lineage, VPS, evals


def test_lineage_across_dataset_checkpoint_vps(catalog):
    raw, rl, sft_data, base, sft, vps = _pipeline(catalog)
    assert rl.parents == ["dataset:raw@1"]
    assert sft.parents == ["dataset:sft-set@1", "checkpoint:base@1"]
    assert (vps.dataset_ref, vps.checkpoint_ref) == ("rl-pool@1", "sft@1")

    tree = catalog.lineage("vps-rl-pool", kind="vps")
    assert tree == catalog.lineage("vps:vps-rl-pool@1")
    raw_node = LineageNode(kind="dataset", ref="raw@1")
    assert tree == LineageNode(
        kind="vps",
        ref="vps-rl-pool@1",
        parents=[
            LineageNode(kind="dataset", ref="rl-pool@1", parents=[raw_node]),
            LineageNode(
                kind="checkpoint",
                ref="sft@1",
                parents=[
                    LineageNode(kind="dataset", ref="sft-set@1", parents=[raw_node]),
                    LineageNode(kind="checkpoint", ref="base@1"),
                ],
            ),
        ],
    )
    assert catalog.lineage("raw") == raw_node
    assert catalog.lineage("sft", kind="checkpoint").parents[1].ref == "base@1"
    with pytest.raises(ValueError, match="unknown lineage kind"):
        catalog.lineage("raw", kind="table")


def test_parents_pin_the_latest_version_at_registration(catalog):
    _dataset(catalog, "raw", "h1")
    child = _dataset(catalog, "child", "c1", parents=["raw"])
    _dataset(catalog, "raw", "h2")
    assert child.parents == ["dataset:raw@1"]
    assert _dataset(catalog, "child", "c2", parents=["raw"]).parents == ["dataset:raw@2"]


def test_vps_versions_and_latest_for_dataset(catalog):
    _pipeline(catalog)
    assert catalog.latest_vps_table("rl-pool").ref == "vps-rl-pool@1"
    rl2 = _dataset(catalog, "rl-pool", "h-rl-2", parents=["raw@1"])
    # A bare name means the latest dataset version, which has no VPS table yet.
    assert catalog.latest_vps_table("rl-pool") is None
    assert catalog.latest_vps_table("rl-pool@1").ref == "vps-rl-pool@1"
    refreshed = catalog.register_vps_table(
        name="vps-rl-pool",
        dataset_ref=rl2.ref,
        checkpoint_ref="sft@1",
        uri="/vps/2",
        content_hash="v2",
        row_count=80,
    )
    assert refreshed.version == 2
    assert catalog.latest_vps_table("rl-pool") == refreshed
    assert [v.ref for v in catalog.list_vps_tables()] == ["vps-rl-pool@1", "vps-rl-pool@2"]
    assert catalog.list_vps_tables(name="other") == []
    assert catalog.get_vps_table("vps-rl-pool@1").stats == {"mean_pass_rate": 0.4}
    with pytest.raises(CatalogNotFoundError, match="'missing'"):
        catalog.latest_vps_table("missing")
    with pytest.raises(CatalogNotFoundError, match="checkpoint 'sft@9'"):
        catalog.register_vps_table(
            name="v",
            dataset_ref="rl-pool",
            checkpoint_ref="sft@9",
            uri="/x",
            content_hash="x",
            row_count=1,
        )


def test_eval_results(catalog):
    _pipeline(catalog)
    first = catalog.record_eval_result(
        checkpoint_ref="sft",
        benchmark="mathvista",
        split="testmini",
        scorer="math_verify",
        n_items=100,
        metrics={"accuracy": 0.5, "format": 1},
        breakdown={"geometry": {"accuracy": 0.25, "n": 40}},
        predictions_uri="/preds/a.jsonl",
        mlflow_run_id="ml-9",
    )
    catalog.record_eval_result(
        checkpoint_ref="checkpoint:base@1",
        benchmark="mathvista",
        split="testmini",
        scorer="math_verify",
        n_items=100,
        metrics={"accuracy": float("nan")},
    )
    catalog.record_eval_result(
        checkpoint_ref="sft@1",
        benchmark="mmmu",
        split="val",
        scorer="choice",
        n_items=5,
        metrics={"accuracy": 0.2},
    )
    assert first.checkpoint_ref == "sft@1" and first.metrics == {"accuracy": 0.5, "format": 1.0}
    assert first.breakdown == {"geometry": {"accuracy": 0.25, "n": 40}}
    sft_results = catalog.eval_results(checkpoint_ref="sft")
    assert [r.benchmark for r in sft_results] == ["mathvista", "mmmu"]
    assert sft_results[0] == first
    mathvista = catalog.eval_results(benchmark="mathvista")
    assert {r.checkpoint_ref for r in mathvista} == {"sft@1", "base@1"}
    base = catalog.eval_results(checkpoint_ref="base", benchmark="mathvista")
    assert len(base) == 1 and base[0].metrics["accuracy"] != base[0].metrics["accuracy"]  # NaN
    assert len(catalog.eval_results()) == 3
    with pytest.raises(CatalogNotFoundError):
        catalog.record_eval_result(
            checkpoint_ref="ghost", benchmark="b", split="s", scorer="x", n_items=1, metrics={}
        )


# ---------------------------------------------------------------- quarantine


def _rejects(n: int, source: str = "hub:set") -> list[QuarantinedRow]:
    reasons = ["empty_problem", "image_decode_error", "duplicate"]
    return [
        QuarantinedRow(
            source=source,
            source_row_id=f"row-{i}",
            reason=reasons[i % 3],
            detail=f"row {i} rejected",
            duplicate_of=f"row-{i - 1}" if i % 3 == 2 else None,
            payload={"problem": "", "i": i} if i % 3 == 0 else None,
        )
        for i in range(n)
    ]


def test_quarantine_round_trip_and_summary(catalog):
    _dataset(catalog, "rl-pool", "aaa")
    _dataset(catalog, "rl-pool", "bbb")
    rows = _rejects(10)
    assert catalog.add_quarantined("rl-pool@1", rows) == 10
    assert catalog.quarantined("rl-pool@1") == rows
    assert catalog.quarantine_summary("dataset:rl-pool@1") == {
        "empty_problem": 4,
        "duplicate": 3,
        "image_decode_error": 3,
    }
    assert catalog.quarantined("rl-pool@1", reason="duplicate", limit=2) == [rows[2], rows[5]]
    # Quarantine belongs to a version: the latest version has none.
    assert catalog.quarantine_summary("rl-pool") == {}
    assert catalog.quarantined("rl-pool@2") == []
    with pytest.raises(CatalogNotFoundError):
        catalog.add_quarantined("rl-pool@3", rows)


def test_quarantine_is_idempotent_per_row(catalog):
    _dataset(catalog, "rl-pool", "aaa")
    rows = _rejects(6)
    assert catalog.add_quarantined("rl-pool@1", rows[:4]) == 4
    # A retried task re-sends rows: only the new ones count; order is kept.
    assert catalog.add_quarantined("rl-pool@1", rows) == 2
    assert catalog.add_quarantined("rl-pool@1", [rows[0], rows[0]]) == 0
    assert catalog.quarantined("rl-pool@1") == rows
    assert catalog.add_quarantined("rl-pool@1", []) == 0
    # The same source row with another reason is another quarantine row.
    other = rows[0].model_copy(update={"reason": "too_long"})
    assert catalog.add_quarantined("rl-pool@1", [other]) == 1


def test_quarantine_rejects_bad_rows(catalog):
    _dataset(catalog, "rl-pool", "aaa")
    with pytest.raises(ValueError, match="row-1: payload is not JSON-serialisable"):
        catalog.add_quarantined(
            "rl-pool@1",
            [QuarantinedRow(source="s", source_row_id="row-1", reason="x", payload={"b": b"x"})],
        )
    with pytest.raises(ValueError):
        QuarantinedRow(source="s", source_row_id="1", reason="has space")


def test_quarantine_100k_rows_is_fast(catalog):
    _dataset(catalog, "rl-pool", "aaa")
    rows = _rejects(100_000)
    start = time.perf_counter()
    assert catalog.add_quarantined("rl-pool@1", rows) == 100_000
    elapsed = time.perf_counter() - start
    # One batched insert, not 100k round trips (those take minutes); the speed itself is
    # measured by bench/, so the bound is loose enough for a busy machine.
    assert elapsed < 60.0, f"100k quarantine rows took {elapsed:.2f}s"
    assert sum(catalog.quarantine_summary("rl-pool@1").values()) == 100_000


# ---------------------------------------------------------------- reports


def test_render_list_tables(catalog):
    raw, rl, sft_data, base, sft, vps = _pipeline(catalog)
    text = render_list(catalog.list_datasets())
    lines = text.splitlines()
    assert lines[0].split() == ["REF", "KIND", "ROWS", "HASH", "CREATED", "URI"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + 3
    assert any(line.startswith("rl-pool@1") and "/data/rl-pool/h-rl" in line for line in lines)
    assert "STAGE" in render_list(catalog.list_checkpoints())
    mixed = render_list([raw, sft, vps])
    assert "[dataset]" in mixed and "[checkpoint]" in mixed and "[vps]" in mixed
    assert "rl-pool@1" in mixed and "sft@1" in mixed
    assert render_list([]) == "(no entries)"
    evals = [
        catalog.record_eval_result(
            checkpoint_ref="sft",
            benchmark="mathvista",
            split="test",
            scorer="mv",
            n_items=7,
            metrics={"accuracy": 0.123456},
        )
    ]
    assert "accuracy=0.1235" in render_list(evals)


def test_render_show_with_quarantine(catalog):
    _pipeline(catalog)
    catalog.add_quarantined("rl-pool@1", _rejects(5))
    entry = catalog.get_dataset("rl-pool@1")
    text = render_show(entry, catalog.quarantine_summary("rl-pool@1"))
    assert text.splitlines()[0] == "dataset:rl-pool@1"
    assert "dataset:raw@1" in text
    assert re.search(r"^  quarantined +5 rows$", text, re.MULTILINE)
    assert "empty_problem" in text and "image_decode_error" in text
    assert "image  bytes" in text  # columns, flat dict
    assert "quarantined" not in render_show(entry)
    ckpt_text = render_show(catalog.get_checkpoint("sft"))
    assert ckpt_text.startswith("checkpoint:sft@1\n")
    assert '"layers": [' in ckpt_text  # nested config as JSON
    assert "loss  0.25" in ckpt_text


def test_render_lineage_tree(catalog):
    _pipeline(catalog)
    assert render_lineage(catalog.lineage("vps:vps-rl-pool")) == "\n".join(
        [
            "vps:vps-rl-pool@1",
            "├── dataset:rl-pool@1",
            "│   └── dataset:raw@1",
            "└── checkpoint:sft@1",
            "    ├── dataset:sft-set@1",
            "    │   └── dataset:raw@1",
            "    └── checkpoint:base@1",
        ]
    )


def test_json_forms_serialise(catalog):
    raw, rl, sft_data, base, sft, vps = _pipeline(catalog)
    listed = list_json([raw, sft, vps])
    assert [item["type"] for item in listed] == ["dataset", "checkpoint", "vps"]
    assert listed[0]["ref"] == "raw@1" and listed[0]["created_at"].endswith("Z")
    shown = show_json(rl, {"duplicate": 2})
    assert shown["quarantine"] == {"total": 2, "by_reason": {"duplicate": 2}}
    tree = lineage_json(catalog.lineage("checkpoint:sft"))
    assert tree["ref"] == "sft@1" and tree["parents"][0]["parents"][0]["ref"] == "raw@1"
    json.dumps([listed, shown, tree])
    assert LineageNode.model_validate(tree) == catalog.lineage("checkpoint:sft")
    assert DatasetEntry.model_validate(listed[0]) == raw


def test_stage_runs_find_the_newest_completed_attempt_with_a_live_output(tmp_path) -> None:
    catalog = Catalog(tmp_path / "c.duckdb")
    catalog.register_checkpoint(name="m", stage="sft", uri="/m1", content_hash="h1")
    common = {"stage": "sft", "key": "k1", "code_version": "abc"}
    catalog.record_stage_run(**common, status="failed", error="boom")
    assert catalog.find_completed_stage("k1") is None
    done = catalog.record_stage_run(
        **common, status="completed", output_ref="checkpoint:m@1", inputs={"data": "d@1"}
    )
    assert catalog.find_completed_stage("k1") == done
    assert catalog.find_completed_stage("other") is None
    assert done.inputs == {"data": "d@1"}
    assert [r.status for r in catalog.stage_runs(stage="sft")] == ["failed", "completed"]
    with pytest.raises(ValueError, match="completed|failed|reused"):
        catalog.record_stage_run(**common, status="done", output_ref="checkpoint:m@1")
    with pytest.raises(CatalogError):
        catalog.record_stage_run(**common, status="completed", output_ref="checkpoint:nope@1")


def test_a_home_can_be_moved_or_copied_whole(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "datasets" / "pool").mkdir(parents=True)
    catalog = Catalog(home / "catalog.duckdb")
    inside = catalog.register_dataset(
        name="pool",
        kind="rl",
        uri=str(home / "datasets" / "pool"),
        content_hash="a" * 64,
        row_count=1,
        columns={},
    )
    catalog.register_dataset(
        name="source-hub",
        kind="source",
        uri="hf://datasets/MMR1/MMR1-RL#train",
        content_hash="b" * 64,
        row_count=1,
        columns={},
    )
    catalog.register_checkpoint(name="outside", stage="base", uri="/models/qwen", content_hash="c")
    catalog.record_eval_result(
        checkpoint_ref="outside",
        benchmark="synthetic",
        split="test",
        scorer="rule",
        n_items=1,
        metrics={"accuracy": 1.0},
        predictions_uri=str(home / "runs" / "eval" / "predictions.parquet"),
    )
    assert inside.uri == str(home / "datasets" / "pool")
    moved = tmp_path / "elsewhere" / "home"
    shutil.copytree(home, moved)
    shutil.rmtree(home)
    again = Catalog(moved / "catalog.duckdb")
    assert again.get_dataset("pool").uri == str(moved / "datasets" / "pool")
    assert again.get_dataset("source-hub").uri == "hf://datasets/MMR1/MMR1-RL#train"
    assert again.get_checkpoint("outside").uri == "/models/qwen"
    [result] = again.eval_results()
    assert result.predictions_uri == str(moved / "runs" / "eval" / "predictions.parquet")


def test_eval_results_with_a_key_are_recorded_once(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.duckdb")
    catalog.register_checkpoint(name="m", stage="sft", uri="/m", content_hash="c")

    def record(key: str | None, accuracy: float):
        return catalog.record_eval_result(
            checkpoint_ref="m",
            benchmark="synthetic",
            split="test",
            scorer="rule",
            n_items=10,
            metrics={"accuracy": accuracy},
            result_key=key,
        )

    first = record("k1", 0.5)
    assert record("k1", 0.9) == first  # a resumed evaluation: the same result, unchanged
    second = record("k2", 0.6)  # another scorer or code version: a new result
    record(None, 0.7)
    record(None, 0.7)  # without a key every call adds one, as before
    accuracies = [r.metrics["accuracy"] for r in catalog.eval_results()]
    assert accuracies == [0.5, 0.6, 0.7, 0.7] and second.id != first.id
