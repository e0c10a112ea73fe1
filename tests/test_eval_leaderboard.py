"""The leaderboard: latest result per (checkpoint, benchmark), avg5 only over all five."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mmr1.eval.leaderboard import (
    PAPER_BENCHMARKS,
    PAPER_REFERENCE,
    average5,
    build_leaderboard,
    render_leaderboard,
    render_leaderboard_markdown,
)
from schemas.catalog import EvalResultEntry

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def result(checkpoint: str, benchmark: str, accuracy: float, minute: int = 0) -> EvalResultEntry:
    return EvalResultEntry(
        id=f"{checkpoint}-{benchmark}-{minute}",
        checkpoint_ref=checkpoint,
        benchmark=benchmark,
        split="test",
        scorer="rule",
        n_items=10,
        metrics={"accuracy": accuracy, "n_correct": 10 * accuracy},
        created_at=T0 + timedelta(minutes=minute),
    )


def test_paper_reference_matches_method_section_9() -> None:
    seven, three, qwen = PAPER_REFERENCE
    assert [seven[b] for b in PAPER_BENCHMARKS] == [55.4, 72.0, 31.8, 48.9, 83.7]
    assert [three[b] for b in PAPER_BENCHMARKS] == [47.9, 67.1, 25.4, 42.0, 81.2]
    # The published averages are the means of the published scores, to 0.1.
    assert average5(seven) == pytest.approx(58.4, abs=0.05)
    assert average5(three) == pytest.approx(52.7, abs=0.05)
    assert qwen["avg5"] == 55.0 and all(b not in qwen for b in PAPER_BENCHMARKS)


def test_one_row_per_checkpoint_latest_result_wins() -> None:
    results = [
        result("sft@1", "synthetic", 0.25, minute=0),
        result("rl@1", "synthetic", 0.5, minute=1),
        result("sft@1", "synthetic", 0.75, minute=2),  # a re-evaluation replaces the first
        result("sft@1", "mathvista", 0.6, minute=3),
    ]
    rows = build_leaderboard(results, include_reference=False)
    assert [r["checkpoint"] for r in rows] == ["sft@1", "rl@1"]
    sft, rl = rows
    assert sft["synthetic"] == pytest.approx(75.0) and sft["mathvista"] == pytest.approx(60.0)
    assert rl["synthetic"] == pytest.approx(50.0) and rl["mathvista"] is None
    # Paper benchmarks first, then the others; avg5 last.
    assert list(sft) == ["checkpoint", "source", "mathvista", "synthetic", "avg5"]
    assert sft["avg5"] is None and sft["source"] == "catalog"


def test_avg5_needs_all_five_benchmarks() -> None:
    accuracies = dict(zip(PAPER_BENCHMARKS, [0.5, 0.7, 0.3, 0.4, 0.8], strict=True))
    full = [result("rl@2", b, a, minute=i) for i, (b, a) in enumerate(accuracies.items())]
    partial = [result("sft@1", b, a) for b, a in list(accuracies.items())[:4]]
    rows = build_leaderboard(full + partial + [result("rl@2", "synthetic", 0.1)], False)
    by_ref = {row["checkpoint"]: row for row in rows}
    assert by_ref["rl@2"]["avg5"] == pytest.approx(54.0)  # synthetic does not count
    assert by_ref["sft@1"]["avg5"] is None
    assert average5({"mathverse": 1.0}) is None


def test_reference_rows_follow_the_checkpoints() -> None:
    rows = build_leaderboard([result("sft@1", "synthetic", 0.5)], include_reference=True)
    assert [r["source"] for r in rows] == ["catalog", "paper", "paper", "paper"]
    seven, three, qwen = rows[1:]
    assert seven["checkpoint"] == "MMR1-7B-RL (paper)" and seven["avg5"] == 58.4
    assert three["chartqa"] == 81.2 and three["avg5"] == 52.7
    assert qwen["avg5"] == 55.0 and qwen["mathverse"] is None and qwen["synthetic"] is None
    # Every row has the same columns, so the table renders without holes.
    assert len({tuple(row) for row in rows}) == 1
    assert build_leaderboard([], include_reference=False) == []


def test_text_and_markdown_rendering() -> None:
    rows = build_leaderboard(
        [result("tiny-sft@1", "synthetic", 0.125), result("tiny-grpo@3", "synthetic", 0.5)],
        include_reference=True,
    )
    text = render_leaderboard(rows)
    lines = text.splitlines()
    assert lines[0].split() == [
        "Checkpoint",
        "MathVerse",
        "MathVista",
        "MathVision",
        "LogicVista",
        "ChartQA",
        "Synthetic",
        "Avg-5",
    ]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["tiny-sft@1", "-", "-", "-", "-", "-", "12.5", "-"]
    assert lines[3].split()[-2:] == ["50.0", "-"]
    assert lines[4].startswith("MMR1-7B-RL (paper)") and lines[4].split()[-2:] == ["-", "58.4"]
    assert "Qwen2.5-VL-7B (paper)" in lines[6] and lines[6].endswith("55.0")
    # Fixed width: numbers are right-aligned under their headers.
    assert len({len(line) for line in lines[:2]}) == 1
    assert lines[0].index("Avg-5") + len("Avg-5") == len(lines[4])

    markdown = render_leaderboard_markdown(rows).splitlines()
    assert markdown[0].startswith("| Checkpoint | MathVerse |")
    assert markdown[1] == "| :-- | --: | --: | --: | --: | --: | --: | --: |"
    assert markdown[2] == "| tiny-sft@1 | - | - | - | - | - | 12.5 | - |"
    assert render_leaderboard([]) == "no evaluation results"
