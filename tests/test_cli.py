"""The ``mmr1`` console script as a user runs it (subprocesses, real catalog)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mmr1.catalog import Catalog


def _mmr1(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MMR1_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _seed_catalog(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(home / "catalog.duckdb")
    catalog.register_dataset(
        name="raw",
        kind="source",
        uri="/data/raw",
        content_hash="a" * 64,
        row_count=10,
        columns={"problem": "string"},
    )
    catalog.register_dataset(
        name="pool",
        kind="rl",
        uri="/data/pool",
        content_hash="b" * 64,
        row_count=7,
        columns={"problem": "string"},
        parents=["raw@1"],
    )
    catalog.register_checkpoint(name="tiny", stage="base", uri="/ckpt/tiny", content_hash="c" * 64)


def test_catalog_list_json_and_text(tmp_path: Path) -> None:
    _seed_catalog(tmp_path)
    out = _mmr1("catalog", "list", "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {(r["type"], r["ref"]) for r in rows} == {
        ("dataset", "raw@1"),
        ("dataset", "pool@1"),
        ("checkpoint", "tiny@1"),
    }
    text = _mmr1("catalog", "list", home=tmp_path)
    assert "pool@1" in text.stdout and "tiny@1" in text.stdout


def test_catalog_show_and_lineage(tmp_path: Path) -> None:
    _seed_catalog(tmp_path)
    show = _mmr1("catalog", "show", "pool", "--json", home=tmp_path)
    assert show.returncode == 0, show.stderr
    data = json.loads(show.stdout)
    assert data["ref"] == "pool@1" and data["row_count"] == 7
    lineage = _mmr1("catalog", "lineage", "pool@1", "--json", home=tmp_path)
    tree = json.loads(lineage.stdout)
    assert tree["ref"] == "pool@1" and [p["ref"] for p in tree["parents"]] == ["raw@1"]
    text = _mmr1("catalog", "lineage", "pool", home=tmp_path)
    assert "raw@1" in text.stdout


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    _seed_catalog(tmp_path)
    missing = _mmr1("catalog", "show", "nope@3", home=tmp_path)
    assert missing.returncode == 2
    assert "nope" in missing.stderr and "Traceback" not in missing.stderr
    bad_ref = _mmr1("catalog", "show", "pool@x", home=tmp_path)
    assert bad_ref.returncode == 2 and "Traceback" not in bad_ref.stderr
    empty = _mmr1("catalog", "list", home=tmp_path / "fresh")
    assert empty.returncode == 2 and "no catalog" in empty.stderr
    bad_config = _mmr1("demo", "--set", "benchmark_items=0", home=tmp_path)
    assert bad_config.returncode == 2
    assert "benchmark_items" in bad_config.stderr and "Traceback" not in bad_config.stderr
    typo = _mmr1("curate", "rl", "--set", "difficulty.rollout=3", home=tmp_path)
    assert typo.returncode == 2
    assert "difficulty.rollout" in typo.stderr and "Extra inputs" in typo.stderr


def test_home_prints_every_location(tmp_path: Path) -> None:
    out = _mmr1("home", "--json", home=tmp_path)
    data = json.loads(out.stdout)
    assert data["catalog"] == str(tmp_path / "catalog.duckdb")
    assert data["mlflow_tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_eval_compare_prints_the_leaderboard_from_the_catalog(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.duckdb")
    catalog.register_checkpoint(name="m", stage="rl", uri="/m", content_hash="h")
    for bench, accuracy in (("synthetic", 0.25), ("chartqa", 0.5)):
        catalog.record_eval_result(
            checkpoint_ref="m@1",
            benchmark=bench,
            split="test",
            scorer="rule",
            n_items=4,
            metrics={"accuracy": accuracy},
        )
    done = _mmr1("eval", "compare", "m", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "m@1" in done.stdout and "MMR1-7B-RL" in done.stdout
    assert "25.0" in done.stdout and "50.0" in done.stdout
    done = _mmr1("eval", "compare", "m@1", "--no-reference", home=tmp_path)
    assert "MMR1-7B-RL" not in done.stdout
    done = _mmr1("eval", "compare", "missing", home=tmp_path)
    assert done.returncode == 2 and "missing" in done.stderr
