"""Benchmark decontamination (mmr1.data.decontam)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import pytest

from mmr1.data.benchmark_index import BenchmarkIndex
from mmr1.data.decontam import decontaminate
from mmr1.data.frame import QUARANTINE_SCHEMA
from schemas.curation import DecontaminationConfig

BENCH_QUESTION = (
    "in the figure below the radius of the circle is five centimetres "
    "what is the area of the shaded sector in square centimetres"
)
PHASH = 0x9F3A_5C21_77E0_1B4D
SHAPE = "what colour is the big shape"  # a templated short question (6 words)
LAYOUT_A, LAYOUT_B = 0x0123_4567_89AB_CDEF, 0x7E57_0000_FFFF_1234
# A templated long question (13 words) asked about three different figures.
TEMPLATE = "as shown in the figure find the measure of angle x in degrees"
FIGURES = (0x1111_2222_3333_4444, 0x5555_6666_7777_8888, 0x9999_AAAA_BBBB_CCCC)


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
        {"problem_norm": SHAPE, "sha": ["shape-a"], "phash": [LAYOUT_A], "id": "q4"},
        {"problem_norm": SHAPE, "sha": ["shape-b"], "phash": [LAYOUT_B], "id": "q5"},
        *(
            {"problem_norm": TEMPLATE, "sha": [f"figure-{i}"], "phash": [h], "id": f"t{i}"}
            for i, h in enumerate(FIGURES, start=1)
        ),
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
    assert detail == "1 rare 8-grams shared with benchmark row mathvista/q1"


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
        "short question (under 8 words) + no images on one side: "
        "same normalised question as benchmark row mathvista/q2",
    )
    assert "1" not in reasons
    assert (
        reasons["2"][1] == "unique question: same normalised question as benchmark row mathvista/q1"
    )


def test_templated_short_question_on_a_different_image_is_kept() -> None:
    rows = [
        {"problem_norm": SHAPE, "sha": ["mine"], "phash": [PHASH ^ 0xFFFF_0000]},
        {"problem_norm": "which bar is the tallest", "sha": ["my-chart"], "phash": [1 << 40]},
    ]
    assert _run(rows).quarantined.is_empty()
    # From 64 bits on every image is "near": the question alone decides.
    assert set(_reasons(_run(rows, image_hamming=64))) == {"0", "1"}


def test_short_question_with_the_same_image_is_contaminated() -> None:
    # The second benchmark row with the question holds the image: every row is searched.
    result = _run([{"problem_norm": SHAPE, "sha": ["shape-b"], "phash": [LAYOUT_B]}])
    assert _reasons(result)["0"] == (
        "contaminated_text",
        "short question (under 8 words) + identical image: "
        "same normalised question as benchmark row mathvista/q5",
    )


def test_short_text_only_question_is_contaminated_whichever_side_has_no_images() -> None:
    result = _run(
        [
            {"problem_norm": "how many cats are there"},  # neither has images
            {"problem_norm": "how many cats are there", "sha": ["cats"], "phash": [3]},
            {"problem_norm": "which bar is the tallest"},  # the benchmark row has an image
            {"problem_norm": SHAPE},
        ]
    )
    reasons = _reasons(result)
    assert set(reasons) == {"0", "1", "2", "3"}
    assert {reason for reason, _ in reasons.values()} == {"contaminated_text"}
    for row, bench in (("1", "q2"), ("2", "q3"), ("3", "q4")):
        assert reasons[row][1] == (
            "short question (under 8 words) + no images on one side: "
            f"same normalised question as benchmark row mathvista/{bench}"
        )


def test_near_image_with_an_unrelated_question_is_kept() -> None:
    rows = [
        {"problem_norm": "a new question", "sha": ["re-encoded"], "phash": [PHASH ^ 0b11]},
        {"problem_norm": "another question", "sha": ["recoloured"], "phash": [PHASH]},
        {"problem_norm": "which bar is the shortest", "sha": ["recoloured-chart"], "phash": [7]},
    ]
    assert _run(rows, image_hamming=2).quarantined.is_empty()
    assert _run(rows, image_hamming=0).quarantined.is_empty()


def test_near_image_with_the_same_question_is_contaminated() -> None:
    rows = [
        {"problem_norm": SHAPE, "sha": ["recoloured"], "phash": [LAYOUT_A ^ 0b11]},
        {"problem_norm": SHAPE, "sha": ["far"], "phash": [LAYOUT_A ^ 0b111]},
        {"problem_norm": BENCH_QUESTION, "sha": ["re-encoded"], "phash": [PHASH ^ 0b1]},
    ]
    reasons = _reasons(_run(rows, image_hamming=2))
    assert set(reasons) == {"0", "2"}
    assert reasons["0"] == (
        "contaminated_text",
        "short question (under 8 words) + image phash within 2 bits: "
        "same normalised question as benchmark row mathvista/q4",
    )
    assert reasons["2"] == (
        "contaminated_text",
        "unique question: same normalised question as benchmark row mathvista/q1",
    )
    # Identical hashes (a colour-only variant of the layout) with the same short question.
    exact = _reasons(_run([{"problem_norm": SHAPE, "sha": ["x"], "phash": [LAYOUT_B]}]))
    assert exact["0"][1] == (
        "short question (under 8 words) + image phash within 0 bits: "
        "same normalised question as benchmark row mathvista/q5"
    )


def test_identical_image_contaminates_whatever_the_question() -> None:
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
        "identical image (sha256) to an image of benchmark row mathvista/q1",
    )


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
    assert len(index) == BENCHMARK.height + 1
    result = decontaminate(_frame([{"problem_norm": "name the largest planet"}]), index, config)
    assert result.quarantined["detail"].to_list() == [
        "short question (under 8 words) + no images on one side: "
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
    with pytest.raises(ValueError, match="max_template_count=1 but the config"):
        decontaminate(frame, index, DecontaminationConfig(max_template_count=2))
    with pytest.raises(ValueError, match="benchmark frame 0"):
        BenchmarkIndex.build([BENCHMARK.drop("image_phash")], config)
    with pytest.raises(ValueError, match="problem_norm"):
        decontaminate(frame.drop("problem_norm"), index, config)


# ------------------------------------------------------------- templated benchmark text

ELSEWHERE = {"sha": ["my-figure"], "phash": [0x0F0F_0F0F_0F0F_0F0F]}  # no benchmark image near


def test_templated_long_question_on_a_different_image_is_kept() -> None:
    assert _run([{"problem_norm": TEMPLATE, **ELSEWHERE}]).quarantined.is_empty()
    # From 64 bits on every image is near: the question alone decides.
    everywhere = _run([{"problem_norm": TEMPLATE, **ELSEWHERE}], image_hamming=64)
    distance = bin(ELSEWHERE["phash"][0] ^ FIGURES[0]).count("1")
    assert _reasons(everywhere)["0"][1] == (
        f"templated question (asked in 3 benchmark items) + image phash within {distance} bits: "
        "same normalised question as benchmark row mathvista/t1"
    )


def test_templated_long_question_with_the_same_image_is_contaminated() -> None:
    rows = [
        {"problem_norm": TEMPLATE, "sha": ["figure-2"], "phash": [FIGURES[1]]},
        {"problem_norm": TEMPLATE, "sha": ["recoloured"], "phash": [FIGURES[2] ^ 0b101]},
    ]
    reasons = _reasons(_run(rows, image_hamming=2))
    assert reasons["0"] == (
        "contaminated_text",
        "templated question (asked in 3 benchmark items) + identical image: "
        "same normalised question as benchmark row mathvista/t2",
    )
    assert reasons["1"] == (
        "contaminated_text",
        "templated question (asked in 3 benchmark items) + image phash within 2 bits: "
        "same normalised question as benchmark row mathvista/t3",
    )


def test_unique_long_question_on_a_different_image_is_contaminated() -> None:
    assert _reasons(_run([{"problem_norm": BENCH_QUESTION, **ELSEWHERE}]))["0"] == (
        "contaminated_text",
        "unique question: same normalised question as benchmark row mathvista/q1",
    )


def test_text_only_templated_question_is_contaminated() -> None:
    assert _reasons(_run([{"problem_norm": TEMPLATE}]))["0"] == (
        "contaminated_text",
        "templated question (asked in 3 benchmark items) + no images on one side: "
        "same normalised question as benchmark row mathvista/t1",
    )


def test_template_ngrams_count_only_with_image_evidence() -> None:
    # Shares the 8-grams of "as shown ... angle" with all three templated rows.
    variant = "as shown in the figure find the measure of angle y"
    rows = [
        {"problem_norm": variant, **ELSEWHERE},
        {"problem_norm": variant},  # text-only: template phrases are no evidence
        {"problem_norm": variant, "sha": ["other"], "phash": [FIGURES[0]]},  # recoloured t1
        {"problem_norm": variant, "sha": ["figure-3"], "phash": [1]},
    ]
    reasons = _reasons(_run(rows))
    assert set(reasons) == {"2", "3"}
    assert reasons["2"] == (
        "contaminated_text",
        "templated text (3 shared 8-grams) + image phash within 0 bits "
        "shared with benchmark row mathvista/t1",
    )
    assert reasons["3"] == (
        "contaminated_text",
        "templated text (3 shared 8-grams) + identical image "
        "shared with benchmark row mathvista/t3",
    )
    # From 64 bits on every two images are near.
    assert set(_reasons(_run(rows, image_hamming=64))) == {"0", "2", "3"}
    # min_overlap counts all shared n-grams on the image-matched pair; the identical
    # image alone is still contamination.
    assert {k: v[0] for k, v in _reasons(_run(rows, min_overlap=4)).items()} == {
        "3": "contaminated_image"
    }


def test_rare_ngrams_count_even_next_to_template_ngrams() -> None:
    span = " ".join(BENCH_QUESTION.split()[3:13])  # 3 rare 8-grams
    result = _run([{"problem_norm": f"as shown in the figure find the measure of {span}"}])
    assert _reasons(result)["0"] == (
        "contaminated_text",
        "3 rare 8-grams shared with benchmark row mathvista/q1",
    )


def test_max_template_count_sets_what_is_specific() -> None:
    variant = "as shown in the figure find the measure of angle y"
    rows = [{"problem_norm": TEMPLATE, **ELSEWHERE}, {"problem_norm": variant, **ELSEWHERE}]
    reasons = _reasons(_run(rows, max_template_count=3))
    assert reasons["0"][1] == (
        "rare question (asked in 3 benchmark items): "
        "same normalised question as benchmark row mathvista/t1"
    )
    assert reasons["1"][1] == "3 rare 8-grams shared with benchmark row mathvista/t1"
    assert _run(rows, max_template_count=2).quarantined.is_empty()


def test_repeated_benchmark_rows_count_as_one_item() -> None:
    """A benchmark registered twice (two versions) does not make its questions templated."""
    config = DecontaminationConfig()
    again = BENCHMARK.with_columns(row_id="v2/" + pl.col("row_id"))
    index = BenchmarkIndex.build([BENCHMARK, again], config)
    span = " ".join(BENCH_QUESTION.split()[3:11])
    frame = _frame(
        [
            {"problem_norm": BENCH_QUESTION, **ELSEWHERE},
            {"problem_norm": f"look at the picture {span}", **ELSEWHERE},
            {"problem_norm": TEMPLATE, **ELSEWHERE},
        ]
    )
    details = decontaminate(frame, index, config).quarantined["detail"].to_list()
    assert details == [
        "unique question: same normalised question as benchmark row mathvista/q1",
        "1 rare 8-grams shared with benchmark row mathvista/q1",
    ]
