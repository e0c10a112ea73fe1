"""Optional LLM judge for the benchmarks whose official protocol uses one (off by default).

MathVerse's official protocol extracts the answer with an LLM and has an LLM
judge it 0/1 against the gold; MathVista's extracts with an LLM before its
rule-based normalisation. :func:`judge_scores` does both through any generation
backend (in practice ``OpenAIBackend`` against an OpenAI-compatible endpoint),
greedy, one text-only request per item that needs one:

- **mathvista**: the official quick paths first (the response equals a choice
  text, or is an ``int``/``float``): no request. Otherwise the judge is asked for
  the final answer in the item's format; the official normalisation and exact
  match (:func:`mmr1.eval.scoring.mathvista_correct`) then decide.
- **mathverse**: the judge sees ``question_for_eval``, the gold and the end of
  the response, and replies ``Extracted: ...`` then ``Judgement: 1`` or ``0``.

A reply that cannot be parsed falls back to the rule-based scorer for that item,
and the item's ``scorer`` says which one decided (``llm_judge`` or ``rule``), so
``BenchmarkScore.scorer`` reads ``llm_judge+rule`` when both did. The prompts
are ours, not the official ones (which are few-shot GPT-4 prompts), so judged
numbers are comparable to each other, not to the papers' digits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mmr1.eval.benchmarks import get_adapter
from mmr1.eval.scoring.mathvista import mathvista_correct
from mmr1.generation.base import GenerationBackend
from mmr1.prompts import format_choices
from schemas.eval import JUDGED_BENCHMARKS, EvalItem, ItemScore
from schemas.generation import GenerationRequest, SamplingParams
from schemas.records import IMAGE_PLACEHOLDER

JUDGE_SCORER = "llm_judge"
#: Characters of the response shown to the judge (its end, where the answer is).
RESPONSE_TAIL_CHARS = 2000
JUDGE_SAMPLING = SamplingParams(n=1, temperature=0.0, max_new_tokens=256, return_logprobs=False)

_EXTRACTED = re.compile(r"Extracted(?: answer)?\s*:\s*(.*)", re.IGNORECASE)
_JUDGEMENT = re.compile(r"Judge?ment\s*:\s*([01])", re.IGNORECASE)
_FORMATS = {
    "integer": "an integer, e.g. 3",
    "list": "a Python list, e.g. [1, 2]",
    "text": "a short text",
}


def _tail(response: str) -> str:
    return response[-RESPONSE_TAIL_CHARS:].strip()


def mathvista_judge_prompt(item: EvalItem, response: str) -> str:
    """Ask for the final answer of ``response`` in the format the item needs."""
    row = item.row
    if row.get("question_type") == "multi_choice":
        wanted = "the letter of the chosen option, e.g. B"
        options = f"Options:\n{format_choices([str(c) for c in row.get('choices') or []])}\n"
    else:
        answer_type = str(row.get("answer_type"))
        if answer_type == "float":
            wanted = f"a number with {int(row.get('precision') or 2)} decimal places, e.g. 1.25"
        else:
            wanted = _FORMATS.get(answer_type, "a short text")
        options = ""
    return (
        "Read a model's response to a question about an image and extract its final answer.\n"
        f"Question: {row.get('question', '')}\n{options}"
        f"The answer must be {wanted}.\n"
        f"Model response:\n{_tail(response)}\n\n"
        "Reply with one line: 'Extracted answer: <answer>'."
    )


def mathverse_judge_prompt(item: EvalItem, response: str) -> str:
    """Ask whether the final answer of ``response`` is equivalent to the gold."""
    question = item.row.get("question_for_eval") or item.row.get("question") or ""
    return (
        "You grade answers to math questions.\n"
        f"Question: {question}\n"
        f"Reference answer: {item.answer}\n"
        f"Model response (its end):\n{_tail(response)}\n\n"
        "First find the model's final answer, then decide whether it is equivalent to the "
        "reference answer (for multiple choice: the same option). Reply with two lines:\n"
        "Extracted: <the model's final answer>\nJudgement: 1 if equivalent, else 0"
    )


def parse_extracted(text: str) -> str | None:
    """The answer after the last ``Extracted answer:``/``Extracted:``, else None."""
    found = _EXTRACTED.findall(text)
    answer = found[-1].strip() if found else ""
    return answer or None


def parse_judgement(text: str) -> bool | None:
    """The verdict of the last ``Judgement: 0|1`` line, else None."""
    found = _JUDGEMENT.findall(text)
    return found[-1] == "1" if found else None


def _mathvista_quick(item: EvalItem, response: str) -> str | None:
    """The official quick-path extraction, or None when the LLM is needed."""
    text = response.strip()
    row = item.row
    if row.get("question_type") == "multi_choice" and text in [str(c) for c in row["choices"]]:
        return text
    convert = {"integer": int, "float": float}.get(str(row.get("answer_type")))
    if convert is not None and row.get("question_type") == "free_form":
        try:
            return str(convert(text))
        except ValueError:
            pass
    return None


def judge_scores(
    benchmark: str,
    items: Sequence[EvalItem],
    responses: Sequence[str],
    backend: GenerationBackend,
    *,
    sampling: SamplingParams = JUDGE_SAMPLING,
) -> list[ItemScore]:
    """Judge-based scores of ``responses`` (one per item, same order); see the module doc."""
    if benchmark not in JUDGED_BENCHMARKS:
        raise ValueError(f"no LLM judge for {benchmark!r}; judged: {', '.join(JUDGED_BENCHMARKS)}")
    if len(items) != len(responses):
        raise ValueError(f"{len(items)} items but {len(responses)} responses")
    adapter = get_adapter(benchmark)
    scores: list[ItemScore | None] = [None] * len(items)
    pending: list[int] = []
    for index, (item, response) in enumerate(zip(items, responses, strict=True)):
        if item.invalid is not None:  # a row that could not be read: wrong, never judged
            scores[index] = adapter.score(item, response)
            continue
        quick = _mathvista_quick(item, response) if benchmark == "mathvista" else None
        if quick is not None:
            correct = mathvista_correct(quick, item.row)
            scores[index] = ItemScore(
                item_id=item.item_id, correct=correct, extracted=quick, scorer="rule"
            )
        else:
            pending.append(index)
    prompt = mathvista_judge_prompt if benchmark == "mathvista" else mathverse_judge_prompt
    requests = [
        # Text only: a literal <image> in a question or response must not read as a placeholder.
        GenerationRequest(
            prompt=prompt(items[i], responses[i]).replace(IMAGE_PLACEHOLDER, "[image]"),
            request_id=items[i].item_id,
        )
        for i in pending
    ]
    completions = backend.generate(requests, sampling) if requests else []
    for index, completion in zip(pending, completions, strict=True):
        item = items[index]
        text = completion.samples[0].text if completion.samples else ""
        extracted = parse_extracted(text)
        if benchmark == "mathvista":
            correct = mathvista_correct(extracted, item.row) if extracted is not None else None
        else:
            correct = parse_judgement(text)
        if correct is None:  # unparseable reply: the rule-based scorer decides
            scores[index] = adapter.score(item, responses[index])
        else:
            scores[index] = ItemScore(
                item_id=item.item_id,
                correct=correct,
                extracted=extracted or "",
                scorer=JUDGE_SCORER,
            )
    return [score for score in scores if score is not None]
