"""The optional LLM judge (mmr1.eval.judge) against the local chat-completions server."""

from __future__ import annotations

from typing import Any

import pytest
from chat_server import MODEL, ChatServer, server_fixture  # noqa: F401  (the `server` fixture)
from pydantic import ValidationError

from mmr1.eval.judge import judge_scores, parse_extracted, parse_judgement
from mmr1.generation.openai_compat import OpenAIBackend
from schemas.eval import BenchmarkSpec, EvalItem
from schemas.generation import OpenAIBackendConfig


def _backend(server: ChatServer) -> OpenAIBackend:
    config = OpenAIBackendConfig(
        base_url=server.base_url, model=MODEL, api_key_env=None, max_retries=0
    )
    return OpenAIBackend(config)


def _mathverse_item(item_id: str, answer: str) -> EvalItem:
    row = {
        "question_for_eval": f"Find AB ({item_id}).",
        "answer": answer,
        "question_type": "free-form",
        "question": "Find AB.",
    }
    return EvalItem(
        item_id=item_id,
        question="<image>\nFind AB.",
        answer=answer,
        answer_type="free-form",
        row=row,
    )


def test_mathverse_judge_verdicts_and_rule_fallback(server: ChatServer) -> None:
    def respond(text: str, body: dict[str, Any]) -> list[str]:
        assert "Reference answer: 2" in text and body["temperature"] == 0.0
        if "(1)" in text:
            return ["Extracted: two\nJudgement: 1"]
        if "(2)" in text:
            return ["Extracted: 3\nJudgement: 0"]
        return ["I am not sure."]  # unparseable: the rule scorer decides

    server.state.respond = respond
    items = [_mathverse_item(str(i), "2") for i in (1, 2, 3)]
    responses = ["the length is two", "\\boxed{3}", "\\boxed{2}"]
    with _backend(server) as backend:
        scores = judge_scores("mathverse", items, responses, backend)
    assert [(s.correct, s.extracted, s.scorer) for s in scores] == [
        (True, "two", "llm_judge"),
        (False, "3", "llm_judge"),
        (True, "2", "rule"),
    ]
    assert len(server.state.seen) == 3
    assert all(
        part["type"] == "text" for part in server.state.seen[0]["json"]["messages"][-1]["content"]
    )


def test_invalid_items_are_wrong_and_never_judged(server: ChatServer) -> None:
    server.state.respond = lambda text, body: ["Extracted: 2\nJudgement: 1"]
    valid = _mathverse_item("1", "2")
    broken = _mathverse_item("2", "2").model_copy(
        update={"invalid": "testmini.jsonl: line 2: field 'question_type': missing"}
    )
    with _backend(server) as backend:
        scores = judge_scores("mathverse", [broken, valid], ["\\boxed{2}", "\\boxed{2}"], backend)
    assert [(s.correct, s.extracted, s.scorer) for s in scores] == [
        (False, "", "rule"),
        (True, "2", "llm_judge"),
    ]
    (seen,) = server.state.seen  # only the valid item went to the judge
    assert "(1)" in seen["json"]["messages"][-1]["content"][0]["text"]


def test_mathvista_quick_paths_skip_the_judge(server: ChatServer) -> None:
    server.state.respond = lambda text, body: ["Extracted answer: C"]
    row = {
        "question": "Which one?",
        "question_type": "multi_choice",
        "answer_type": "text",
        "choices": ["3", "5", "7"],
        "answer": "7",
        "precision": None,
    }
    mc = EvalItem(
        item_id="mc",
        question="<image>\nWhich one?",
        choices=["3", "5", "7"],
        answer="7",
        answer_type="multi_choice",
        row=row,
    )
    integer_row = {
        "question": "How many?",
        "question_type": "free_form",
        "answer_type": "integer",
        "choices": None,
        "answer": "4",
        "precision": None,
    }
    integer = EvalItem(
        item_id="int",
        question="<image>\nHow many?",
        answer="4",
        answer_type="integer",
        row=integer_row,
    )
    with _backend(server) as backend:
        scores = judge_scores(
            "mathvista", [mc, integer, mc], ["7", "4", "I think the third option"], backend
        )
    assert [(s.correct, s.extracted, s.scorer) for s in scores] == [
        (True, "7", "rule"),
        (True, "4", "rule"),
        (True, "C", "llm_judge"),
    ]
    (seen,) = server.state.seen  # only the third item needed the judge
    prompt = seen["json"]["messages"][-1]["content"][0]["text"]
    assert "Options:\n(A) 3\n(B) 5\n(C) 7" in prompt and "the letter of the chosen option" in prompt


def test_judge_parsing_and_config_checks() -> None:
    assert parse_judgement("Extracted: 5\nJudgement: 1") is True
    assert parse_judgement("Judgment: 0") is False
    assert parse_judgement("yes") is None
    assert parse_extracted("Extracted answer: [1, 2]") == "[1, 2]"
    assert parse_extracted("Extracted:   ") is None
    with pytest.raises(ValueError, match="no LLM judge for 'chartqa'"):
        judge_scores("chartqa", [], [], None)  # type: ignore[arg-type]
    judge = {"base_url": "http://127.0.0.1:9/v1", "model": MODEL}
    with pytest.raises(ValidationError, match="only for mathverse, mathvista"):
        BenchmarkSpec(name="logicvista", source="x", scorer="llm_judge", judge=judge)
    with pytest.raises(ValidationError, match="needs a 'judge'"):
        BenchmarkSpec(name="mathverse", source="x", scorer="llm_judge")
    with pytest.raises(ValidationError, match="scorer is 'rule'"):
        BenchmarkSpec(name="mathverse", source="x", judge=judge)
