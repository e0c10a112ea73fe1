"""Benchmark decontamination (mmr1.data.decontam)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import pytest

from mmr1.data.decontam import BenchmarkIndex, decontaminate
from mmr1.data.frame import QUARANTINE_SCHEMA
from schemas.curation import DecontaminationConfig

BENCH_QUESTION = (
    "in the figure below the radius of the circle is five centimetres "
    "what is the area of the shaded sector in square centimetres"
)
PHASH = 0x9F3A_5C21_77E0_1B4D


def _frame(rows: Sequence[dict], source: str = "train") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row_id": [f"{source}/{r.get('id', i)}" for i, r in enumerate(rows)],
            "source": [source] * len(rows),
            "source_row_id": [str(r.get("id", i)) for i, r in enumerate(rows)],
            "problem_norm": [r["problem_norm"] for r in rows],
            "image_sha256": pl.Series([r.get("sha", []) for r in rows], dtype=pl.List(pl.String)),
            "image_phash": pl.Series([r.get("phash", []) for r in rows], dtype=pl.List(pl.UInt64)),
        }
    )


BENCHMARK = _frame(
    [
        {"problem_norm": BENCH_QUESTION, "sha": ["bench-img"], "phash": [PHASH], "id": "q1"},
        {"problem_norm": "how many cats are there", "id": "q2"},  # shorter than 8 words
        {"problem_norm": "which bar is the tallest", "sha": ["chart"], "phash": [7], "id": "q3"},
    ],
    source="mathvista",
)


def _run(rows: Sequence[dict], config: DecontaminationConfig | None = None, **kwargs):
    config = config or DecontaminationConfig(**kwargs)
    frame = _frame(rows)
    result = decontaminate(frame, BenchmarkIndex.build([BENCHMARK], config), config)
    assert result.kept.height + result.quarantined.height == frame.height
    assert result.quarantined.schema == pl.Schema(QUARANTINE_SCHEMA)
    return result


def _reasons(result) -> dict[str, tuple[str, str]]:
    return {
        row["source_row_id"]: (row["reason"], row["detail"])
        for row in result.quarantined.iter_rows(named=True)
    }


def test_eight_shared_words_contaminate_by_ngram_overlap() -> None:
    span = " ".join(BENCH_QUESTION.split()[3:11])  # exactly one shared 8-gram
    result = _run(
        [
            {"problem_norm": f"look at the picture {span} and answer briefly"},
            {"problem_norm": " ".join(BENCH_QUESTION.split()[3:10]) + " nothing else"},  # 7 words
        ]
    )
    reasons = _reasons(result)
    assert set(reasons) == {"0"}
    reason, detail = reasons["0"]
    assert reason == "contaminated_text"
    assert detail == "shares 1 word 8-grams with benchmark row mathvista/q1"


def test_min_overlap_counts_distinct_shared_ngrams() -> None:
    words = BENCH_QUESTION.split()
    rows = [
        {"problem_norm": " ".join(words[:8])},  # 1 shared 8-gram
        {"problem_norm": " ".join(words[:10])},  # 3 shared 8-grams
    ]
    assert set(_reasons(_run(rows, min_overlap=3))) == {"1"}
    assert set(_reasons(_run(rows, min_overlap=1))) == {"0", "1"}


def test_short_question_contaminates_only_by_exact_match() -> None:
    result = _run(
        [
            {"problem_norm": "how many cats are there"},
            {"problem_norm": "how many cats are there in the garden"},
            {"problem_norm": BENCH_QUESTION},  # a long one matched whole
        ]
    )
    reasons = _reasons(result)
    assert reasons["0"] == (
        "contaminated_text",
        "same normalised question as benchmark row mathvista/q2",
    )
    assert "1" not in reasons
    assert reasons["2"][1] == "same normalised question as benchmark row mathvista/q1"


def test_identical_image_hash_contaminates_whatever_the_question() -> None:
    result = _run(
        [
            {
                "problem_norm": "describe this picture",
                "sha": ["mine", "bench-img"],
                "phash": [1, 2],
            },
        ]
    )
    assert _reasons(result)["0"] == (
        "contaminated_image",
        "image sha256 identical to an image of benchmark row mathvista/q1",
    )


def test_perceptual_hash_within_the_configured_distance() -> None:
    rows = [
        {"problem_norm": "a new question", "sha": ["re-encoded"], "phash": [PHASH ^ 0b11]},
        {"problem_norm": "another question", "sha": ["other"], "phash": [PHASH ^ 0b111]},
        {"problem_norm": "a third question", "sha": ["same-hash"], "phash": [PHASH]},
    ]
    near = _reasons(_run(rows, image_hamming=2))
    assert set(near) == {"0", "2"}
    assert near["0"] == (
        "contaminated_image",
        "image phash within 2 bits of an image of benchmark row mathvista/q1",
    )
    assert set(_reasons(_run(rows, image_hamming=0))) == {"2"}


def test_clean_rows_are_kept_in_order() -> None:
    rows = [
        {"problem_norm": "a clean question about triangles", "sha": ["x"], "phash": [PHASH ^ 0xFF]},
        {"problem_norm": BENCH_QUESTION},
        {"problem_norm": "what is shown"},
        {"problem_norm": "the area of the shaded sector in a different figure"},
    ]
    result = _run(rows)
    assert result.kept["source_row_id"].to_list() == ["0", "2", "3"]
    assert result.kept.columns == _frame(rows).columns


def test_text_evidence_wins_over_image_evidence() -> None:
    result = _run([{"problem_norm": BENCH_QUESTION, "sha": ["bench-img"], "phash": [PHASH]}])
    assert _reasons(result)["0"][0] == "contaminated_text"


def test_every_benchmark_frame_counts_and_is_named() -> None:
    config = DecontaminationConfig()
    other = _frame([{"problem_norm": "name the largest planet", "id": "p"}], source="mmmu")
    index = BenchmarkIndex.build([BENCHMARK, other], config)
    assert len(index) == 4
    result = decontaminate(_frame([{"problem_norm": "name the largest planet"}]), index, config)
    assert result.quarantined["detail"].to_list() == [
        "same normalised question as benchmark row mmmu/p"
    ]


def test_disabled_empty_and_mismatched_configs() -> None:
    frame = _frame([{"problem_norm": BENCH_QUESTION}])
    config = DecontaminationConfig()
    index = BenchmarkIndex.build([BENCHMARK], config)
    assert decontaminate(frame, index, DecontaminationConfig(enabled=False)).kept.equals(frame)
    no_benchmarks = BenchmarkIndex.build([], config)
    assert decontaminate(frame, no_benchmarks, config).kept.equals(frame)
    with pytest.raises(ValueError, match="rebuild it"):
        decontaminate(frame, index, DecontaminationConfig(ngram=5))
    with pytest.raises(ValueError, match="benchmark frame 0"):
        BenchmarkIndex.build([BENCHMARK.drop("image_phash")], config)
    with pytest.raises(ValueError, match="problem_norm"):
        decontaminate(frame.drop("problem_norm"), index, config)
