"""``mmr1 eval compare --json``: intervals and paired tests from a catalog the test prepares."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from scipy import stats as scipy_stats

from cli.main import main
from mmr1.catalog import Catalog
from mmr1.eval.stats import mean_interval, wilson_interval

N = 20
K = 4
IDS = [f"item-{i:02d}" for i in range(N)]

# Baseline "sft": right on items 0-9. "rl": also right on 10-14 (b=0, c=5). "base": right on
# 0 and 10-18 only (b=9, c=1 against sft). "other" has no samples and half of the items.
GREEDY = {
    "sft": [i < 10 for i in range(N)],
    "rl": [i < 15 for i in range(N)],
    "base": [i == 0 or 10 <= i < 19 for i in range(N)],
}
SAMPLED = {  # samples right per item, out of K
    "sft": [2 if i < 10 else 1 for i in range(N)],
    "rl": [3 if i < 10 else 1 + i % 2 for i in range(N)],
    "base": [i % 3 for i in range(N)],
}


def _predictions(path: Path, ids: list[str], greedy: list[bool], right: list[int] | None) -> str:
    frame = pl.DataFrame(
        {
            "item_id": ids,
            "correct": greedy,
            "sampled_correct": [[j < r for j in range(K)] for r in right]
            if right is not None
            else [[] for _ in ids],
        },
        schema={
            "item_id": pl.String,
            "correct": pl.Boolean,
            "sampled_correct": pl.List(pl.Boolean),
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return str(path)


@pytest.fixture
def compare_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MMR1_HOME", str(home))
    home.mkdir()
    catalog = Catalog(home / "catalog.duckdb")
    for name in ("base", "sft", "rl", "other"):
        catalog.register_checkpoint(name=name, stage="x", uri=f"/{name}", content_hash=name)
    for name in ("base", "sft", "rl"):
        uri = _predictions(tmp_path / name / "p.parquet", IDS, GREEDY[name], SAMPLED[name])
        catalog.record_eval_result(
            checkpoint_ref=f"{name}@1",
            benchmark="synthetic",
            split="test",
            scorer="rule",
            n_items=N,
            metrics={"accuracy": sum(GREEDY[name]) / N, "n_correct": float(sum(GREEDY[name]))},
            predictions_uri=uri,
        )
    uri = _predictions(tmp_path / "other" / "p.parquet", IDS[::2], [True] * (N // 2), None)
    catalog.record_eval_result(
        checkpoint_ref="other@1",
        benchmark="synthetic",
        split="test",
        scorer="rule",
        n_items=N // 2,
        metrics={"accuracy": 1.0, "n_correct": float(N // 2)},
        predictions_uri=uri,
    )
    return home


def _rows(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["eval", "compare", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_rows_carry_intervals_and_paired_tests(compare_home, capsys) -> None:
    rows = _rows(capsys, "base", "sft", "rl", "other", "--baseline", "sft")
    assert [row["checkpoint"] for row in rows] == ["base@1", "sft@1", "rl@1", "other@1"]
    required = {
        "checkpoint",
        "benchmark",
        "n_items",
        "accuracy",
        "accuracy_ci95",
        "sampled_accuracy",
        "sampled_k",
        "p_value",
        "sampled_p_value",
    }
    assert all(required <= set(row) for row in rows)
    base, sft, rl, other = rows

    assert sft["baseline"] is None and sft["p_value"] is None and sft["sampled_p_value"] is None
    assert sft["accuracy"] == 0.5 and sft["n_items"] == N and sft["sampled_k"] == K
    assert sft["accuracy_ci95"] == pytest.approx(list(wilson_interval(10, N)))
    sft_sampled = [s / K for s in SAMPLED["sft"]]
    assert sft["sampled_accuracy"] == pytest.approx(0.375)
    assert sft["sampled_accuracy_ci95"] == pytest.approx(list(mean_interval(sft_sampled)))

    # rl gains items 10-14 and loses none: exact McNemar b=0, c=5 -> 0.0625.
    assert rl["baseline"] == "sft@1" and rl["n_paired"] == N
    assert rl["discordant"] == {"baseline_only": 0, "model_only": 5}
    assert rl["p_value"] == pytest.approx(0.0625)
    rl_sampled = [s / K for s in SAMPLED["rl"]]
    expected = scipy_stats.ttest_rel(rl_sampled, sft_sampled).pvalue
    assert rl["sampled_p_value"] == pytest.approx(expected, rel=1e-9)
    assert rl["sampled_accuracy"] == pytest.approx(0.5625) and rl["note"] is None

    # base against sft: b=9 (items 1-9), c=9 (10-18) -> p = 1.
    assert base["discordant"] == {"baseline_only": 9, "model_only": 9}
    assert base["p_value"] == pytest.approx(1.0)

    # No samples, half the items: no sampled figures, the tests on the 10 common items.
    assert other["sampled_k"] == 0 and other["sampled_accuracy"] is None
    assert other["sampled_p_value"] is None and other["n_paired"] == N // 2
    # Common items 0, 2, ..., 18: sft is wrong on 10-18 (5 items) where other is right.
    assert other["discordant"] == {"baseline_only": 0, "model_only": 5}
    assert "items differ" in other["note"]


def test_baseline_defaults_to_the_first_and_is_added_when_not_listed(compare_home, capsys) -> None:
    rows = _rows(capsys, "sft", "rl")
    assert rows[0]["p_value"] is None and rows[1]["baseline"] == "sft@1"
    rows = _rows(capsys, "rl", "--baseline", "sft@1")
    assert [row["checkpoint"] for row in rows] == ["sft@1", "rl@1"]
    assert rows[1]["p_value"] == pytest.approx(0.0625)


def test_text_output_shows_intervals_and_p_values(compare_home, capsys) -> None:
    capsys.readouterr()
    assert main(["eval", "compare", "sft", "rl", "--baseline", "sft", "--no-reference"]) == 0
    text = capsys.readouterr().out
    low, high = wilson_interval(15, N)
    assert f"75.0 [{100 * low:.1f}, {100 * high:.1f}]" in text
    assert "0.062" in text and "baseline" in text and "(k=4)" in text
    assert "exact McNemar" in text
    assert main(["eval", "compare", "rl", "--baseline", "missing", "--json"]) == 2
