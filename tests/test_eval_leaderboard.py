"""The leaderboard: one cell per (checkpoint, benchmark), avg5 only over the paper's full splits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mmr1.eval.leaderboard import (
    PAPER_BENCHMARKS,
    PAPER_REFERENCE,
    PAPER_SPLITS,
    average5,
    build_leaderboard,
    comparability_note,
    render_leaderboard,
    render_leaderboard_markdown,
)
from schemas.catalog import EvalResultEntry

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def result(
    checkpoint: str,
    benchmark: str,
    accuracy: float,
    minute: int = 0,
    split: str | None = None,
    n_items: int | None = None,
) -> EvalResultEntry:
    """A result; by default on the paper's split, complete (synthetic: ``test``, 10 items)."""
    paper = PAPER_SPLITS.get(benchmark)
    return EvalResultEntry(
        id=f"{checkpoint}-{benchmark}-{minute}",
        checkpoint_ref=checkpoint,
        benchmark=benchmark,
        split=split or (paper.split if paper else "test"),
        scorer="rule",
        n_items=n_items if n_items is not None else (paper.n_items if paper else 10),
        metrics={"accuracy": accuracy, "n_correct": 10 * accuracy},
        created_at=T0 + timedelta(minutes=minute),
    )


def full_five(checkpoint: str, accuracies: list[float], minute: int = 0) -> list[EvalResultEntry]:
    return [
        result(checkpoint, b, a, minute=minute + i)
        for i, (b, a) in enumerate(zip(PAPER_BENCHMARKS, accuracies, strict=True))
    ]


def test_paper_reference_matches_method_section_9() -> None:
    seven, three, qwen, *ablation = PAPER_REFERENCE
    assert [seven[b] for b in PAPER_BENCHMARKS] == [55.4, 72.0, 31.8, 48.9, 83.7]
    assert [three[b] for b in PAPER_BENCHMARKS] == [47.9, 67.1, 25.4, 42.0, 81.2]
    # The published averages are the means of the published scores, to 0.1.
    assert average5(seven) == pytest.approx(58.4, abs=0.05)
    assert average5(three) == pytest.approx(52.7, abs=0.05)
    assert qwen["avg5"] == 55.0 and all(b not in qwen for b in PAPER_BENCHMARKS)
    # Table 3 (3B ablation): averages only.
    assert [row["avg5"] for row in ablation] == [48.7, 48.7, 51.8, 52.9]
    assert all(b not in row for row in ablation for b in PAPER_BENCHMARKS)


def test_paper_splits_are_the_papers() -> None:
    assert {b: tuple(s) for b, s in PAPER_SPLITS.items()} == {
        "mathverse": ("testmini", 3940),
        "mathvista": ("testmini", 1000),
        "mathvision": ("test", 3040),
        "logicvista": ("test", 448),
        "chartqa": ("test", 2500),
    }
    assert comparability_note(result("m@1", "mathvision", 0.3)) is None
    assert comparability_note(result("m@1", "synthetic", 0.3, split="val", n_items=3)) is None
    other = comparability_note(result("m@1", "mathvision", 0.3, split="testmini", n_items=304))
    assert other == "split testmini, 304 items (paper: test)"
    partial = comparability_note(result("m@1", "chartqa", 0.3, n_items=100))
    assert partial == "test, 100 of 2500 items"


def test_one_row_per_checkpoint_latest_result_wins() -> None:
    results = [
        result("sft@1", "synthetic", 0.25, minute=0),
        result("rl@1", "synthetic", 0.5, minute=1),
        result("sft@1", "synthetic", 0.75, minute=2),  # a re-evaluation replaces the first
        result("sft@1", "mathvista", 0.6, minute=3),
        result("sft@1", "mathvista", 0.65, minute=4),  # a complete rerun replaces a complete run
    ]
    rows = build_leaderboard(results, include_reference=False)
    assert [r["checkpoint"] for r in rows] == ["sft@1", "rl@1"]
    sft, rl = rows
    assert sft["synthetic"] == pytest.approx(75.0) and sft["mathvista"] == pytest.approx(65.0)
    assert rl["synthetic"] == pytest.approx(50.0) and rl["mathvista"] is None
    # Paper benchmarks first, then the others; avg5, notes and invalid last.
    assert list(sft) == [
        "checkpoint", "source", "mathvista", "synthetic", "avg5", "notes", "invalid"
    ]  # fmt: skip
    assert sft["avg5"] is None and sft["source"] == "catalog" and sft["notes"] == {}
    assert sft["invalid"] == {}


def test_avg5_needs_all_five_benchmarks() -> None:
    full = full_five("rl@2", [0.5, 0.7, 0.3, 0.4, 0.8])
    partial = full_five("sft@1", [0.5, 0.7, 0.3, 0.4, 0.8])[:4]
    rows = build_leaderboard(full + partial + [result("rl@2", "synthetic", 0.1)], False)
    by_ref = {row["checkpoint"]: row for row in rows}
    assert by_ref["rl@2"]["avg5"] == pytest.approx(54.0)  # synthetic does not count
    assert by_ref["sft@1"]["avg5"] is None
    assert average5({"mathverse": 1.0}) is None


def test_other_split_or_limited_run_never_replaces_the_full_paper_split() -> None:
    full = full_five("rl@1", [0.5, 0.7, 0.3, 0.4, 0.8])
    later = [
        result("rl@1", "mathvision", 0.9, minute=10, split="testmini", n_items=304),
        result("rl@1", "chartqa", 0.1, minute=11, n_items=100),  # limit=100 on the paper split
    ]
    (row,) = build_leaderboard(full + later, include_reference=False)
    assert row["mathvision"] == pytest.approx(30.0) and row["chartqa"] == pytest.approx(80.0)
    assert row["avg5"] == pytest.approx(54.0) and row["notes"] == {}


def test_only_other_split_or_partial_results_are_marked_and_left_out_of_avg5() -> None:
    results = full_five("rl@1", [0.5, 0.7, 0.3, 0.4, 0.8])
    results = [r for r in results if r.benchmark not in ("mathvision", "chartqa")] + [
        result("rl@1", "mathvision", 0.9, minute=10, split="testmini", n_items=304),
        result("rl@1", "chartqa", 0.6, minute=11, n_items=100),
    ]
    (row,) = build_leaderboard(results, include_reference=False)
    # The cells are shown, but flagged, and the five-benchmark average is not given.
    assert row["mathvision"] == pytest.approx(90.0) and row["chartqa"] == pytest.approx(60.0)
    assert row["avg5"] is None
    assert row["notes"] == {
        "mathvision": "split testmini, 304 items (paper: test)",
        "chartqa": "test, 100 of 2500 items",
    }
    # A complete paper-split run recorded later takes over and clears the mark.
    later = result("rl@1", "mathvision", 0.3, minute=20)
    (row,) = build_leaderboard([*results, later], include_reference=False)
    assert row["mathvision"] == pytest.approx(30.0) and set(row["notes"]) == {"chartqa"}
    assert row["avg5"] is None
    fixed = result("rl@1", "chartqa", 0.8, minute=21)
    (row,) = build_leaderboard([*results, later, fixed], include_reference=False)
    assert row["notes"] == {} and row["avg5"] == pytest.approx(54.0)


def test_marked_cells_render_with_a_footnote() -> None:
    rows = build_leaderboard(
        [
            result("rl@1", "mathvision", 0.9, split="testmini", n_items=304),
            result("rl@1", "mathvista", 0.5),
        ],
        include_reference=False,
    )
    text = render_leaderboard(rows).splitlines()
    assert text[2].split() == ["rl@1", "50.0", "90.0*", "-"]
    assert text[3] == ""
    assert text[4].startswith("* not comparable with the paper")
    assert text[5].split() == ["rl@1", "MathVision:", "split", "testmini,", "304", "items"] + [
        "(paper:",
        "test)",
    ]
    markdown = render_leaderboard_markdown(rows).splitlines()
    assert markdown[2] == "| rl@1 | 50.0 | 90.0\\* | - |"
    assert markdown[4].startswith("\\* not comparable")
    assert markdown[6] == "- rl@1 MathVision: split testmini, 304 items (paper: test)"
    # Nothing marked: no footnote.
    clean = build_leaderboard([result("rl@1", "mathvista", 0.5)], include_reference=False)
    assert "*" not in render_leaderboard(clean) and "*" not in render_leaderboard_markdown(clean)


def test_unreadable_rows_are_footnoted_but_stay_comparable() -> None:
    results = full_five("rl@1", [0.5, 0.7, 0.3, 0.4, 0.8])
    logicvista = results[3]
    assert logicvista.benchmark == "logicvista"
    results[3] = logicvista.model_copy(update={"metrics": {**logicvista.metrics, "n_invalid": 1.0}})
    (row,) = build_leaderboard(results, include_reference=False)
    assert row["invalid"] == {"logicvista": "1 of 448 rows"} and row["notes"] == {}
    assert row["avg5"] == pytest.approx(54.0)  # still in the average: the paper scores it wrong
    text = render_leaderboard([row]).splitlines()
    assert text[2].split() == ["rl@1", "50.0", "70.0", "30.0", "40.0\u2020", "80.0", "54.0"]
    assert text[3:] == [
        "",
        "\u2020 rows that could not be read, scored wrong as the official scripts do "
        "(still comparable):",
        "  rl@1 LogicVista: 1 of 448 rows",
    ]
    markdown = render_leaderboard_markdown([row]).splitlines()
    assert markdown[2] == "| rl@1 | 50.0 | 70.0 | 30.0 | 40.0\u2020 | 80.0 | 54.0 |"
    assert markdown[-1] == "- rl@1 LogicVista: 1 of 448 rows"
    # Both marks on one cell: another split and an unreadable row.
    other = result("rl@1", "mathvision", 0.9, minute=5, split="testmini", n_items=304)
    other = other.model_copy(update={"metrics": {**other.metrics, "n_invalid": 2.0}})
    (row,) = build_leaderboard([other], include_reference=False)
    assert render_leaderboard([row]).splitlines()[2].split() == ["rl@1", "90.0*\u2020", "-"]
    assert row["invalid"] == {"mathvision": "2 of 304 rows"}
    # n_invalid 0 (or absent, for results recorded before it existed): no mark.
    zero = result("rl@1", "mathvista", 0.5)
    zero = zero.model_copy(update={"metrics": {**zero.metrics, "n_invalid": 0.0}})
    (row,) = build_leaderboard([zero], include_reference=False)
    assert row["invalid"] == {} and "\u2020" not in render_leaderboard([row])


def test_reference_rows_follow_the_checkpoints() -> None:
    rows = build_leaderboard([result("sft@1", "synthetic", 0.5)], include_reference=True)
    assert [r["source"] for r in rows] == ["catalog"] + ["paper"] * len(PAPER_REFERENCE)
    seven, three, qwen, *ablation = rows[1:]
    assert seven["checkpoint"] == "MMR1-7B-RL (paper)" and seven["avg5"] == 58.4
    assert three["chartqa"] == 81.2 and three["avg5"] == 52.7
    assert qwen["avg5"] == 55.0 and qwen["mathverse"] is None and qwen["synthetic"] is None
    assert [r["avg5"] for r in ablation] == [48.7, 48.7, 51.8, 52.9]
    assert all(r["mathvista"] is None and r["notes"] == {} for r in ablation)
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
    assert lines[-1].startswith("3B + VAS (paper ablation)") and lines[-1].endswith("52.9")
    # Fixed width: numbers are right-aligned under their headers.
    assert len({len(line) for line in lines[:2]}) == 1
    assert lines[0].index("Avg-5") + len("Avg-5") == len(lines[4])

    markdown = render_leaderboard_markdown(rows).splitlines()
    assert markdown[0].startswith("| Checkpoint | MathVerse |")
    assert markdown[1] == "| :-- | --: | --: | --: | --: | --: | --: | --: |"
    assert markdown[2] == "| tiny-sft@1 | - | - | - | - | - | 12.5 | - |"
    assert render_leaderboard([]) == "no evaluation results"
