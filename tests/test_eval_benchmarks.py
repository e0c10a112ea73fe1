"""Benchmark adapters on small local files in each benchmark's schema (no hub)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydantic import ValidationError

from mmr1.data.io import write_rl_dataset
from mmr1.data.synthetic import generate_benchmark
from mmr1.eval.benchmarks import (
    BENCHMARKS,
    BenchmarkAdapter,
    BenchmarkDataError,
    get_adapter,
    iter_rows,
)
from mmr1.eval.benchmarks.base import row_images
from mmr1.eval.benchmarks.mathvision import OFFICIAL_INSTRUCTION
from mmr1.eval.benchmarks.rows import SourceRow
from mmr1.prompts import TRAIN_INSTRUCTION, evaluation_prompt, training_prompt
from schemas.eval import BenchmarkScore, BenchmarkSpec, EvalItem, ItemScore
from schemas.records import ImageData

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]


def png(colour: str = "red", size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(
    adapter: BenchmarkAdapter, items: list[EvalItem], responses: list[str], split: str
) -> tuple[list[ItemScore], BenchmarkScore]:
    scores = [
        adapter.score(item, response) for item, response in zip(items, responses, strict=True)
    ]
    return scores, adapter.aggregate(items, scores, split)


# ------------------------------------------------------------------------ registry, schemas


def test_the_spec_validates_against_the_registry() -> None:
    # One list of names: the adapters registered; the spec accepts exactly those.
    for name in BENCHMARKS:
        assert BenchmarkSpec(name=name, source="x").name == name
    with pytest.raises(ValidationError, match="unknown benchmark 'mmmu'; known: mathvista"):
        BenchmarkSpec(name="mmmu", source="x")
    for name in BENCHMARKS:
        adapter = get_adapter(name)
        assert isinstance(adapter, BenchmarkAdapter)
        assert adapter.name == name
    with pytest.raises(ValueError, match="unknown benchmark 'mmmu'"):
        get_adapter("mmmu")


def test_spec_forbids_unknown_keys_and_defaults() -> None:
    spec = BenchmarkSpec(name="mathvista", source="AI4Math/MathVista")
    assert (spec.split, spec.limit, spec.prompt_style, spec.scorer) == (None, None, "mmr1", "rule")
    with pytest.raises(ValidationError, match="splitt"):
        BenchmarkSpec(name="mathvista", source="x", splitt="testmini")
    with pytest.raises(ValidationError):
        BenchmarkSpec(name="mathvista", source="x", limit=0)


def test_eval_item_round_trips_through_json() -> None:
    item = EvalItem(
        item_id="1",
        question="<image>\nQ?",
        images=[png()],
        answer="7",
        answer_type="integer",
        tags={"skills": ["a", "b"], "language": "english"},
        row={"precision": None},
    )
    assert EvalItem.model_validate_json(item.model_dump_json()) == item


def test_missing_local_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkDataError, match="no such file or directory"):
        list(iter_rows(str(tmp_path / "missing.parquet"), "test"))


def test_pil_images_and_bad_bytes(tmp_path: Path) -> None:
    row = SourceRow("f.parquet", 3, 3, {"image": Image.new("RGB", (4, 4), "blue")}, tmp_path)
    [data] = row_images(row, ["image"])
    assert Image.open(io.BytesIO(data)).size == (4, 4)
    bad = SourceRow("f.parquet", 3, 3, {"image": {"bytes": b"not an image", "path": None}}, None)
    with pytest.raises(BenchmarkDataError, match=r"f\.parquet: row 3: field 'image\[0\]'"):
        row_images(bad, ["image"])


# ------------------------------------------------------------------------ MathVista


def mathvista_rows(tmp_path: Path) -> list[dict[str, Any]]:
    """Four testmini rows in the hub parquet layout; the last has its image only as a path."""
    (tmp_path / "images").mkdir()
    for pid in "123":
        (tmp_path / "images" / f"{pid}.png").write_bytes(png(COLOURS[int(pid)]))
    (tmp_path / "images" / "4.png").write_bytes(png("blue", (5, 5)))

    def row(pid: str, **fields: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "pid": pid,
            "question": f"Question {pid}?",
            "image": f"images/{pid}.png",
            "decoded_image": {"bytes": png(COLOURS[int(pid)]), "path": f"{pid}.png"},
            "choices": None,
            "unit": None,
            "precision": None,
            "answer": "",
            "question_type": "free_form",
            "answer_type": "integer",
            "metadata": {
                "category": "math-targeted-vqa",
                "context": "synthetic scene",
                "grade": "elementary school",
                "img_height": 6,
                "img_width": 8,
                "language": "english",
                "skills": ["arithmetic reasoning"],
                "source": "CLEVR-Math",
                "split": "testmini",
                "task": "math word problem",
            },
            "query": f"Hint: answer.\nQuestion: Question {pid}?",
        }
        base.update(fields)
        return base

    metadata = row("0")["metadata"]
    return [
        row(
            "1",
            question_type="multi_choice",
            answer_type="text",
            choices=["3", "5", "7"],
            answer="7",
            metadata={**metadata, "skills": ["arithmetic reasoning", "algebraic reasoning"]},
        ),
        row("2", answer="12", metadata={**metadata, "language": "chinese"}),
        row("3", answer_type="float", precision=2.0, answer="0.45"),
        row("4", answer_type="list", answer="[2014, 2016]", decoded_image=None),
    ]


def test_mathvista_load_prompts_score_and_breakdowns(tmp_path: Path) -> None:
    rows = mathvista_rows(tmp_path)
    write_parquet(tmp_path / "data" / "testmini-00000-of-00001.parquet", rows)
    adapter = get_adapter("mathvista")
    items = adapter.load(BenchmarkSpec(name="mathvista", source=str(tmp_path / "data")))

    assert [item.item_id for item in items] == ["1", "2", "3", "4"]
    assert items[0].question == "<image>\nQuestion 1?"
    assert items[0].choices == ["3", "5", "7"] and items[1].choices is None
    assert items[0].tags["skills"] == ["arithmetic reasoning", "algebraic reasoning"]
    assert items[3].images == [png("blue", (5, 5))]  # read from images/ next to data/
    assert "decoded_image" not in items[0].row and items[2].row["precision"] == 2.0

    request = adapter.build_request(items[0], "mmr1")
    assert request.prompt == evaluation_prompt("<image>\nQuestion 1?", ["3", "5", "7"])
    assert request.request_id == "1"
    assert [image.mode for image in request.images] == ["RGB"]
    assert request.images[0].getpixel((0, 0)) == (0, 128, 0)  # green, row 1
    official = adapter.build_request(items[0], "official")
    assert official.prompt == "<image>\nHint: answer.\nQuestion: Question 1?"

    responses = ["\\boxed{C}", "\\boxed{13}", "\\boxed{0.449}", "\\boxed{2014, 2016}"]
    scores, result = run(adapter, items, responses, "testmini")
    assert [s.correct for s in scores] == [True, False, True, True]
    assert [s.extracted for s in scores] == ["C", "13", "0.449", "[2014, 2016]"]
    assert (result.n_items, result.n_correct, result.accuracy) == (4, 3, 0.75)
    assert result.macro_over is None and result.scorer == "rule"
    assert result.breakdown["question_type"] == {"free_form": 2 / 3, "multi_choice": 1.0}
    assert result.breakdown["answer_type"] == {
        "float": 1.0, "integer": 0.0, "list": 1.0, "text": 1.0
    }  # fmt: skip
    assert result.breakdown["language"] == {"chinese": 0.0, "english": 1.0}
    assert result.breakdown["skills"] == {"algebraic reasoning": 1.0, "arithmetic reasoning": 0.75}
    assert result.counts["skills"] == {"algebraic reasoning": 1, "arithmetic reasoning": 4}
    assert set(result.breakdown) == {
        "question_type", "answer_type", "language", "source", "category", "task", "context",
        "grade", "skills",
    }  # fmt: skip

    limited = adapter.load(BenchmarkSpec(name="mathvista", source=str(tmp_path / "data"), limit=2))
    assert [item.item_id for item in limited] == ["1", "2"]


def test_mathvista_malformed_row_is_invalid_naming_file_row_and_field(tmp_path: Path) -> None:
    rows = mathvista_rows(tmp_path)
    for row in rows:
        row["decoded_image"] = None  # JSON lines hold image paths only
    del rows[1]["answer"]
    rows[2]["question_type"] = "essay"
    path = write_jsonl(tmp_path / "testmini.jsonl", rows)
    adapter = get_adapter("mathvista")
    items = adapter.load(BenchmarkSpec(name="mathvista", source=str(path)))
    assert [item.item_id for item in items] == ["1", "2", "3", "4"]
    assert [item.invalid is None for item in items] == [True, False, False, True]
    assert str(items[1].invalid).startswith(f"{path}: line 2: field 'answer': missing (columns: [")
    assert items[2].invalid == (
        f"{path}: line 3: field 'question_type': 'essay' is not one of "
        "('multi_choice', 'free_form')"
    )
    # What could be read is kept: the question, the image (by path) and the breakdown tags.
    assert items[1].question == "<image>\nQuestion 2?" and items[1].images == [png(COLOURS[2])]
    assert items[1].tags["language"] == "chinese" and items[2].tags["question_type"] == "essay"
    assert adapter.build_request(items[1], "official").prompt == (
        "<image>\nHint: answer.\nQuestion: Question 2?"
    )
    # Invalid rows score wrong even for the right answer, and are counted.
    responses = ["\\boxed{C}", "\\boxed{12}", "\\boxed{0.45}", "\\boxed{2014, 2016}"]
    scores, result = run(adapter, items, responses, "testmini")
    assert [s.correct for s in scores] == [True, False, False, True]
    assert scores[1].extracted == "" and scores[1].scorer == "rule"
    assert (result.n_items, result.n_correct, result.n_invalid) == (4, 2, 2)
    assert result.invalid == {"2": items[1].invalid, "3": items[2].invalid}
    assert result.counts["language"] == {"chinese": 1, "english": 3}


def test_mathvista_official_prompt_needs_the_query_column(tmp_path: Path) -> None:
    rows = mathvista_rows(tmp_path)
    del rows[0]["query"]
    path = write_jsonl(tmp_path / "testmini.jsonl", [{**r, "decoded_image": None} for r in rows])
    adapter = get_adapter("mathvista")
    mmr1 = adapter.load(BenchmarkSpec(name="mathvista", source=str(path)))
    assert [item.invalid for item in mmr1] == [None] * 4
    spec = BenchmarkSpec(name="mathvista", source=str(path), prompt_style="official")
    first, *others = adapter.load(spec)
    assert str(first.invalid).startswith(f"{path}: line 1: field 'query': missing (columns: [")
    assert [item.invalid for item in others] == [None] * 3
    # Its request falls back to the MMR1 prompt of what was read (choices are not read).
    assert adapter.build_request(first, "official").prompt == evaluation_prompt(
        "<image>\nQuestion 1?", None
    )
    # No row has the query: nothing to evaluate, a clear error.
    write_jsonl(path, [{**r, "decoded_image": None, "query": None} for r in rows])
    with pytest.raises(BenchmarkDataError, match=r"none of the 4 rows is a valid mathvista row"):
        adapter.load(spec)


# ------------------------------------------------------------------------ MathVerse


def test_mathverse_overall_is_the_mean_over_versions(tmp_path: Path) -> None:
    (tmp_path / "img.png").write_bytes(png("green"))
    versions = ["Text Dominant", "Text Dominant", "Text Lite", "Vision Only"]
    rows = [
        {
            "sample_index": str(i + 1),
            "problem_index": "1",
            "problem_version": version,
            "question": "" if version == "Vision Only" else "Find x.\nChoices:\nA:1\nB:2",
            "image": "img.png",
            "answer": "B",
            "question_type": "multi-choice",
            "metadata": {
                "split": "testmini",
                "source": "GeoQA",
                "subject": "Plane Geometry",
                "subfield": "Angle",
            },
            "query_wo": "q",
            "query_cot": "Please answer step by step.",
            "question_for_eval": "Find x.",
        }
        for i, version in enumerate(versions)
    ]
    path = write_jsonl(tmp_path / "testmini.jsonl", rows)
    adapter = get_adapter("mathverse")
    items = adapter.load(BenchmarkSpec(name="mathverse", source=str(path)))
    assert items[3].question.startswith("<image>\n") and "image" in items[3].question.lower()
    assert items[0].question == "<image>\nFind x.\nChoices:\nA:1\nB:2"
    assert adapter.build_request(items[0], "official").prompt == (
        "<image>\nPlease answer step by step."
    )
    responses = ["\\boxed{B}", "\\boxed{A}", "\\boxed{2}", "\\boxed{B}"]
    scores, result = run(adapter, items, responses, "testmini")
    assert [s.correct for s in scores] == [True, False, True, True]
    assert result.breakdown["version"] == {
        "Text Dominant": 0.5,
        "Text Lite": 1.0,
        "Vision Only": 1.0,
    }
    assert result.macro_over == "version"
    assert result.accuracy == pytest.approx(2.5 / 3)  # not the item mean 3/4
    assert result.n_correct == 3


# ------------------------------------------------------------------------ MathVision


def test_mathvision_splits_options_and_scores(tmp_path: Path) -> None:
    def row(i: int, options: list[str], answer: str, level: int, subject: str) -> dict[str, Any]:
        return {
            "id": str(i),
            "question": "<image1>\nHow long is the side?",
            "options": options,
            "image": f"images/{i}.jpg",
            "decoded_image": {"bytes": png(COLOURS[i]), "path": f"{i}.jpg"},
            "answer": answer,
            "solution": None,
            "level": level,
            "subject": subject,
        }

    test_rows = [
        row(1, [], "3.46", 1, "metric geometry - length"),
        row(2, ["A", "B", "C", "D", "E"], "D", 2, "combinatorics"),
        row(3, ["2", "4", "6", "8", "10"], "C", 2, "metric geometry - length"),
    ]
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", test_rows)
    write_parquet(tmp_path / "data" / "testmini-00000-of-00001.parquet", test_rows[:1])
    adapter = get_adapter("mathvision")
    source = str(tmp_path / "data")
    assert len(adapter.load(BenchmarkSpec(name="mathvision", source=source))) == 3  # test
    mini = BenchmarkSpec(name="mathvision", source=source, split="testmini")
    assert len(adapter.load(mini)) == 1
    items = adapter.load(BenchmarkSpec(name="mathvision", source=source, split="test"))

    assert items[0].question == "<image>\nHow long is the side?"
    assert items[1].choices is None  # options drawn in the image: not rendered
    assert items[2].choices == ["2", "4", "6", "8", "10"]
    assert adapter.build_request(items[2], "official").prompt == (
        f"{OFFICIAL_INSTRUCTION}\n<image>\nHow long is the side?\nOptions:\n"
        "(A) 2\n(B) 4\n(C) 6\n(D) 8\n(E) 10"
    )
    responses = ["\\boxed{2\\sqrt{3}}", "\\boxed{C}", "\\boxed{6}"]
    scores, result = run(adapter, items, responses, "test")
    assert [s.correct for s in scores] == [True, False, True]
    assert scores[0].extracted == "2\\sqrt{3}"
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.breakdown == {
        "level": {"1": 1.0, "2": 0.5},
        "subject": {"combinatorics": 0.0, "metric geometry - length": 1.0},
    }


def test_mathvision_letter_answer_outside_the_options_is_an_invalid_row(tmp_path: Path) -> None:
    row = {
        "id": "9",
        "question": "Q",
        "options": ["1", "2"],
        "answer": "E",
        "level": 1,
        "subject": "algebra",
        "image": None,
        "decoded_image": {"bytes": png(), "path": None},
    }
    path = write_parquet(tmp_path / "test.parquet", [row, {**row, "id": "10", "answer": "B"}])
    adapter = get_adapter("mathvision")
    bad, good = adapter.load(BenchmarkSpec(name="mathvision", source=str(path)))
    assert bad.invalid == (
        f"{path}: row 0: field 'answer': 'E' is not an option letter of ['1', '2']"
    )
    assert good.invalid is None and bad.tags == good.tags == {"level": "1", "subject": "algebra"}
    scores, result = run(adapter, [bad, good], ["\\boxed{E}", "\\boxed{B}"], "test")
    assert [s.correct for s in scores] == [False, True]
    assert (result.n_invalid, result.accuracy) == (1, 0.5)
    # A source whose only row is invalid has nothing to evaluate: an error naming that row.
    path = write_parquet(tmp_path / "one.parquet", [row])
    with pytest.raises(BenchmarkDataError, match=r"one\.parquet: row 0: field 'answer'"):
        adapter.load(BenchmarkSpec(name="mathvision", source=str(path)))


# ------------------------------------------------------------------------ LogicVista


def test_logicvista_sets_and_skills(tmp_path: Path) -> None:
    rows = [
        {
            "question": f"Which shapes fit? A. x B. y C. z (q{i})",
            "answer": answer,
            "reasoning": "...",
            "image": png(COLOURS[i]),
            "skill": skill,
            "broad_capability": "b",
            "specific_capability": "s",
            "imagename": f"{i}.jpg",
        }
        for i, (answer, skill) in enumerate(
            [("A, C", "spatial"), ("A, C", "spatial"), ("B", "inductive")]
        )
    ]
    path = write_parquet(tmp_path / "logicvista.parquet", rows)
    adapter = get_adapter("logicvista")
    items = adapter.load(BenchmarkSpec(name="logicvista", source=str(path)))
    assert [item.item_id for item in items] == ["0.jpg", "1.jpg", "2.jpg"]
    assert items[0].images == [png("red")]
    assert adapter.build_request(items[0], "official").prompt == items[0].question
    scores, result = run(adapter, items, ["\\boxed{C, A}", "\\boxed{A}", "\\boxed{b}"], "test")
    assert [s.correct for s in scores] == [True, False, True]
    assert scores[0].extracted == "A, C"
    assert result.breakdown == {"skill": {"inductive": 1.0, "spatial": 0.5}}
    assert result.accuracy == pytest.approx(2 / 3)


def logicvista_row(i: int, answer: str, skill: str = "spatial", **fields: Any) -> dict[str, Any]:
    row = {
        "question": f"Which shape comes next? Select from A, B, C, D. (q{i})",
        "answer": answer,
        "reasoning": "...",
        "image": png(COLOURS[i]),
        "skill": skill,
        "broad_capability": "b",
        "specific_capability": "s",
        "imagename": f"{i}.jpg",
    }
    row.update(fields)
    return row


def test_logicvista_empty_gold_answer_is_scored_wrong_and_counted(tmp_path: Path) -> None:
    # The hub copy of LogicVista has a row with an empty answer: it must not stop the benchmark.
    rows = [logicvista_row(0, "A"), logicvista_row(1, "", "numerical"), logicvista_row(2, "C")]
    path = write_parquet(tmp_path / "test.parquet", rows)
    adapter = get_adapter("logicvista")
    items = adapter.load(BenchmarkSpec(name="logicvista", source=str(path)))
    assert [item.item_id for item in items] == ["0.jpg", "1.jpg", "2.jpg"]
    assert items[1].invalid == f"{path}: row 1: field 'answer': empty"
    assert items[1].images == [png(COLOURS[1])] and items[1].tags == {"skill": "numerical"}
    # It still goes to the model like any row (official prompt: the question).
    assert adapter.build_request(items[1], "official").prompt == items[1].question
    # An empty response to an empty gold is still wrong.
    scores, result = run(adapter, items, ["\\boxed{A}", "\\boxed{}", "\\boxed{C}"], "test")
    assert [s.correct for s in scores] == [True, False, True]
    assert (result.n_items, result.n_correct, result.n_invalid) == (3, 2, 1)
    assert result.invalid == {"1.jpg": f"{path}: row 1: field 'answer': empty"}
    assert result.breakdown["skill"] == {"numerical": 0.0, "spatial": 1.0}
    assert BenchmarkScore.model_validate_json(result.model_dump_json()) == result


def test_unreadable_lines_duplicates_and_missing_images_are_invalid_rows(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ok.png").write_bytes(png("white"))
    good = logicvista_row(0, "A", image="images/ok.png", imagename="a")
    lines = [
        json.dumps(good),
        '{"question": "Q", "answer": "B"',  # cut off
        "[1, 2]",  # not an object
        json.dumps({**good, "answer": "B"}),  # the same id again
        json.dumps({**good, "imagename": "b", "image": "images/gone.png"}),
        json.dumps({**good, "imagename": "c", "skill": "deductive"}),
    ]
    path = tmp_path / "test.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"answer": "\xff"}\n')
    adapter = get_adapter("logicvista")
    items = adapter.load(BenchmarkSpec(name="logicvista", source=str(path)))
    ids = ["a", "logicvista-1", "logicvista-2", "a#row3", "b", "c", "logicvista-6"]
    assert [item.item_id for item in items] == ids
    assert [item.invalid for item in items] == [
        None,
        f"{path}: line 2: not valid JSON: Expecting ',' delimiter at column 32",
        f"{path}: line 3: expected a JSON object, got list",
        f"{path}: line 4: duplicate item id 'a' (first at {path}: line 1)",
        f"{path}: line 5: field 'image[0]': image file 'images/gone.png' not found "
        f"(looked in {tmp_path / 'images/gone.png'}, {tmp_path.parent / 'images/gone.png'})",
        None,
        f"{path}: line 7: not valid UTF-8 at byte 13 of the line",
    ]
    # The row without its image goes to the model as text only.
    request = adapter.build_request(items[4], "mmr1")
    assert request.images == [] and "<image>" not in request.prompt
    assert "Which shape comes next?" in request.prompt
    responses = ["\\boxed{A}"] * len(items)
    scores, result = run(adapter, items, responses, "test")
    assert [s.correct for s in scores] == [True, False, False, False, False, True, False]
    assert result.n_invalid == 5 and result.accuracy == pytest.approx(2 / 7)
    assert result.breakdown["skill"] == {"deductive": 1.0, "spatial": 1 / 3, "unknown": 0.0}
    assert result.counts["skill"] == {"deductive": 1, "spatial": 3, "unknown": 3}


# ------------------------------------------------------------------------ ChartQA


def test_chartqa_huggingfacem4_layout(tmp_path: Path) -> None:
    rows = [
        {
            "image": {"bytes": png(COLOURS[i]), "path": None},
            "query": f"Value {i}?",
            "label": labels,
            "human_or_machine": half,
        }
        for i, (labels, half) in enumerate(
            [(["100"], 0), (["Yes"], 0), (["12", "12.0"], 1), (["0"], 1), (["1,000"], 1)]
        )
    ]
    path = write_parquet(tmp_path / "test.parquet", rows)
    adapter = get_adapter("chartqa")
    items = adapter.load(BenchmarkSpec(name="chartqa", source=str(path)))
    assert [item.tags["type"] for item in items] == ["human"] * 2 + ["augmented"] * 3
    assert items[0].item_id == "chartqa-0" and items[0].answer == "100"
    assert adapter.build_request(items[0], "official").prompt == (
        "<image>\nValue 0?\nAnswer the question using a single word or phrase."
    )
    responses = ["\\boxed{105}", "\\boxed{no}", "\\boxed{12.6}", "\\boxed{0.0}", "1,000"]
    scores, result = run(adapter, items, responses, "test")
    assert [s.correct for s in scores] == [True, False, True, False, True]
    assert result.breakdown["type"] == {"augmented": pytest.approx(2 / 3), "human": 0.5}
    assert result.accuracy == pytest.approx((0.5 + 2 / 3) / 2)
    assert result.macro_over == "type"


def test_chartqa_lmms_layout_from_save_to_disk(tmp_path: Path) -> None:
    import datasets

    data = {
        "type": ["human_test", "augmented_test"],
        "question": ["How many?", "Which is larger?"],
        "answer": ["45%", "Blue"],
        "image": [Image.new("RGB", (6, 4), "red"), Image.new("RGB", (6, 4), "blue")],
    }
    features = datasets.Features(
        {
            "type": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "image": datasets.Image(),
        }
    )
    dataset = datasets.Dataset.from_dict(data, features=features)
    datasets.DatasetDict({"test": dataset}).save_to_disk(str(tmp_path / "chartqa"))
    adapter = get_adapter("chartqa")
    items = adapter.load(BenchmarkSpec(name="chartqa", source=str(tmp_path / "chartqa")))
    assert [item.question for item in items] == ["<image>\nHow many?", "<image>\nWhich is larger?"]
    request = adapter.build_request(items[1], "mmr1")
    assert request.images[0].size == (6, 4) and request.images[0].getpixel((0, 0)) == (0, 0, 255)
    scores, result = run(adapter, items, ["\\boxed{0.46}", "blue"], "test")
    assert [s.correct for s in scores] == [True, True]
    assert result.accuracy == 1.0
    with pytest.raises(BenchmarkDataError, match="no split 'val'"):
        adapter.load(BenchmarkSpec(name="chartqa", source=str(tmp_path / "chartqa"), split="val"))


# ------------------------------------------------------------------------ synthetic


def test_synthetic_benchmark_from_rl_parquet(tmp_path: Path) -> None:
    records = [item.record for item in generate_benchmark(seed=0, n_items=12)]
    write_rl_dataset(records, tmp_path / "bench")
    adapter = get_adapter("synthetic")
    items = adapter.load(BenchmarkSpec(name="synthetic", source=str(tmp_path / "bench")))
    assert [item.item_id for item in items] == [record.id for record in records]
    assert items[0].images == [records[0].images[0].bytes]
    request = adapter.build_request(items[0], "mmr1")
    assert request.prompt == evaluation_prompt(records[0].problem, records[0].choices)
    # The generator's own prompt, the one its training items are posed with.
    official = adapter.build_request(items[0], "official")
    assert official.prompt == training_prompt(records[0].problem, records[0].choices)
    assert official.prompt.startswith(TRAIN_INSTRUCTION) and official.images == request.images

    # Right on even positions, an empty answer on odd ones.
    responses = [
        f"<think>look</think><answer>\\boxed{{{item.answer}}}</answer>" if i % 2 == 0 else "??"
        for i, item in enumerate(items)
    ]
    scores, result = run(adapter, items, responses, "test")
    assert [s.correct for s in scores] == [i % 2 == 0 for i in range(12)]
    assert result.accuracy == 0.5
    expected: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        expected.setdefault(record.type, []).append(int(i % 2 == 0))
    assert result.breakdown["family"] == {k: sum(v) / len(v) for k, v in sorted(expected.items())}
    assert sum(result.counts["difficulty"].values()) == 12

    limited = adapter.load(BenchmarkSpec(name="synthetic", source=str(tmp_path / "bench"), limit=3))
    assert len(limited) == 3


def test_synthetic_missing_image_and_duplicate_id_are_invalid_items(tmp_path: Path) -> None:
    first, second, third = (item.record for item in generate_benchmark(seed=0, n_items=3))
    lost = second.model_copy(update={"images": [ImageData(path="gone.png")]})
    again = third.model_copy(update={"id": first.id})
    # Two parts of one dataset directory; the second repeats an id of the first.
    write_rl_dataset([first, lost], tmp_path / "bench" / "a")
    write_rl_dataset([again], tmp_path / "bench" / "b")
    adapter = get_adapter("synthetic")
    items = adapter.load(BenchmarkSpec(name="synthetic", source=str(tmp_path / "bench")))
    assert [item.item_id for item in items] == [first.id, second.id, f"{first.id}#row2"]
    assert items[0].invalid is None
    missing = str(tmp_path / "bench" / "gone.png")
    assert str(items[1].invalid).endswith(
        f"row 1: field 'images[0]': no bytes and no file at {missing!r}"
    )
    assert str(items[2].invalid).endswith(f"row 2: field 'id': duplicate id {first.id!r}")
    assert items[1].images == [] and "<image>" not in items[1].question
    right = [f"\\boxed{{{item.answer}}}" for item in items]
    scores, result = run(adapter, items, right, "test")
    assert [s.correct for s in scores] == [True, False, False]
    assert (result.n_invalid, result.n_correct) == (2, 1)


def test_aggregate_rejects_scores_that_do_not_match_the_items() -> None:
    adapter = get_adapter("logicvista")
    item = EvalItem(item_id="1", question="q", answer="A", answer_type="letters")
    other = ItemScore(item_id="2", correct=True, extracted="A", scorer="rule")
    with pytest.raises(ValueError, match=r"missing \['1'\], unknown \['2'\]"):
        adapter.aggregate([item], [other], "test")


def test_official_prompt_without_its_query_is_a_clear_error() -> None:
    item = EvalItem(
        item_id="5", question="<image>\nQ?", images=[png()], answer="1", answer_type="x"
    )
    with pytest.raises(ValueError, match="mathverse item 5: no 'query_cot' in its row"):
        get_adapter("mathverse").build_request(item, "official")
    with pytest.raises(ValueError, match="unknown prompt_style 'fancy'"):
        get_adapter("mathverse").build_request(item, "fancy")
