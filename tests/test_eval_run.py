"""evaluate_benchmark with a scripted backend: scoring, resumable shards, worker scoring, judge."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from mmr1.data.io import write_rl_dataset
from mmr1.data.shards import ShardManifestError
from mmr1.data.synthetic import generate_benchmark
from mmr1.eval.benchmarks import get_adapter
from mmr1.eval.run import PREDICTIONS_SCHEMA, evaluate_benchmark, score_responses
from schemas.eval import BenchmarkSpec, EvalItem
from schemas.generation import Completion, CompletionSample, GenerationRequest, SamplingParams

GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=16, return_logprobs=False)


class ScriptedBackend:
    """Answers from a dict (request id -> text); records which ids it was asked for.

    ``with_images``: whether requests must carry images (the model) or none (a judge).
    """

    name = "scripted"

    def __init__(self, answers: dict[str, str], with_images: bool = True) -> None:
        self.answers = answers
        self.with_images = with_images
        self.asked: list[str] = []

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingParams
    ) -> list[Completion]:
        out = []
        for request in requests:
            assert bool(request.images) == self.with_images
            assert request.request_id is not None
            self.asked.append(request.request_id)
            text = self.answers[request.request_id]
            sample = CompletionSample(text=text, finish_reason="stop")
            out.append(Completion(request_id=request.request_id, samples=[sample]))
        return out

    def close(self) -> None:
        pass


@pytest.fixture
def synthetic_items(tmp_path: Path) -> list[EvalItem]:
    records = [item.record for item in generate_benchmark(seed=3, n_items=7)]
    write_rl_dataset(records, tmp_path / "bench")
    spec = BenchmarkSpec(name="synthetic", source=str(tmp_path / "bench"))
    return get_adapter("synthetic").load(spec)


def _half_right(items: Sequence[EvalItem]) -> dict[str, str]:
    """Even items answered with the gold (boxed), odd items with nonsense."""
    return {
        item.item_id: f"<think>ok</think><answer>\\boxed{{{item.answer}}}</answer>"
        if i % 2 == 0
        else "no idea"
        for i, item in enumerate(items)
    }


def test_scores_every_item_and_resumes_from_shards(synthetic_items, tmp_path: Path) -> None:
    adapter = get_adapter("synthetic")
    backend = ScriptedBackend(_half_right(synthetic_items))
    out_dir = tmp_path / "work"
    run = evaluate_benchmark(
        synthetic_items, adapter, backend, GREEDY, out_dir, shard_size=3, score_workers=0
    )
    ids = [item.item_id for item in synthetic_items]
    assert run.predictions.columns == list(PREDICTIONS_SCHEMA)
    assert run.predictions["item_id"].to_list() == ids == backend.asked
    assert run.predictions["correct"].to_list() == [i % 2 == 0 for i in range(7)]
    assert [s.item_id for s in run.scores] == ids
    assert run.predictions["gold"].to_list() == [item.answer for item in synthetic_items]
    assert adapter.aggregate(synthetic_items, run.scores, "test").n_correct == 4
    assert sorted(p.name for p in out_dir.glob("shard-*")) == [
        f"shard-0000{i}.parquet" for i in range(3)
    ]
    assert run.stats["generated"] == 7 and run.stats["reused"] == 0

    # Drop the middle shard: only its three items are generated again.
    (out_dir / "shard-00001.parquet").unlink()
    backend.asked.clear()
    again = evaluate_benchmark(synthetic_items, adapter, backend, GREEDY, out_dir, shard_size=3)
    assert backend.asked == ids[3:6]
    assert again.predictions.equals(run.predictions)
    assert again.stats["reused"] == 4

    # Other decoding settings are another run: refused in the same directory.
    hotter = GREEDY.model_copy(update={"temperature": 0.7})
    with pytest.raises(ShardManifestError):
        evaluate_benchmark(synthetic_items, adapter, backend, hotter, out_dir, shard_size=3)
    with pytest.raises(ValueError, match="one answer per item"):
        evaluate_benchmark(
            synthetic_items, adapter, backend, GREEDY.model_copy(update={"n": 2}), out_dir
        )


def test_worker_scoring_equals_inline_scoring(synthetic_items) -> None:
    adapter = get_adapter("synthetic")
    answers = _half_right(synthetic_items)
    responses = [answers[item.item_id] for item in synthetic_items]
    inline, inline_timeouts = score_responses(adapter, synthetic_items, responses, workers=0)
    pooled, pooled_timeouts = score_responses(
        adapter, synthetic_items, responses, workers=1, timeout_s=30.0
    )
    assert pooled == inline
    assert inline_timeouts == pooled_timeouts == [False] * len(synthetic_items)


def test_scoring_falls_back_to_this_process_when_no_worker_starts(
    synthetic_items, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    adapter = get_adapter("synthetic")
    answers = _half_right(synthetic_items)
    responses = [answers[item.item_id] for item in synthetic_items]
    inline, _ = score_responses(adapter, synthetic_items, responses, workers=0)
    monkeypatch.setenv("MMR1_VERIFIER_PYTHON", str(tmp_path / "no-such-python"))
    with caplog.at_level("WARNING", logger="mmr1.eval.run"):
        scored, timeouts = score_responses(adapter, synthetic_items, responses, workers=2)
    assert scored == inline and timeouts == [False] * len(synthetic_items)
    assert "cannot launch a verification worker" in caplog.text


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def test_judge_scores_instead_of_the_rule(tmp_path: Path) -> None:
    items = [
        EvalItem(
            item_id=str(i),
            question="<image>\nWhat is x?",
            images=[_png()],
            answer="3",
            answer_type="free-form",
            tags={"version": "Text Lite"},
            row={"question_type": "free-form", "answer": "3", "question_for_eval": "x?"},
        )
        for i in range(2)
    ]
    model = ScriptedBackend({"0": "x is three", "1": "x is four"})
    # The judge accepts the first answer and rejects the second; the rule would reject both.
    judge = ScriptedBackend(
        {"0": "Extracted: three\nJudgement: 1", "1": "Judgement: 0"}, with_images=False
    )
    run = evaluate_benchmark(
        items, get_adapter("mathverse"), model, GREEDY, tmp_path / "w", judge=judge
    )
    assert run.predictions["correct"].to_list() == [True, False]
    assert run.predictions["scorer"].to_list() == ["llm_judge", "llm_judge"]
    assert run.predictions["extracted"].to_list()[0] == "three"


class SampledBackend(ScriptedBackend):
    """Greedy answers from ``answers``; with temperature > 0, ``sampled[id]`` (n of them)."""

    def __init__(self, answers: dict[str, str], sampled: dict[str, list[str]]) -> None:
        super().__init__(answers)
        self.sampled = sampled
        self.seeds: list[int] = []

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingParams
    ) -> list[Completion]:
        if sampling.temperature == 0:
            return super().generate(requests, sampling)
        self.seeds.append(sampling.seed)
        return [
            Completion(
                request_id=r.request_id,
                samples=[
                    CompletionSample(text=text, finish_reason="stop")
                    for text in self.sampled[str(r.request_id)][: sampling.n]
                ],
            )
            for r in requests
        ]


def test_sampled_answers_are_scored_per_item(synthetic_items, tmp_path: Path) -> None:
    adapter = get_adapter("synthetic")
    right = {item.item_id: f"<answer>\\boxed{{{item.answer}}}</answer>" for item in synthetic_items}
    # Item i gets i % 4 right answers out of 3 samples (capped at 3).
    sampled = {
        item.item_id: [right[item.item_id] if j < i % 4 else "no" for j in range(3)]
        for i, item in enumerate(synthetic_items)
    }
    backend = SampledBackend(_half_right(synthetic_items), sampled)
    samples = SamplingParams(n=3, temperature=1.0, max_new_tokens=16, return_logprobs=False)
    run = evaluate_benchmark(
        synthetic_items, adapter, backend, GREEDY, tmp_path / "w", shard_size=4, samples=samples
    )
    expected = [[j < i % 4 for j in range(3)] for i in range(7)]
    assert run.predictions["sampled_correct"].to_list() == expected
    assert run.predictions["correct"].to_list() == [i % 2 == 0 for i in range(7)]
    assert run.predictions["sampled_responses"].to_list()[1] == sampled[synthetic_items[1].item_id]
    assert len(set(backend.seeds)) == 2  # one derived seed per shard
    # The greedy scores (what the adapter aggregates) are unchanged by the samples.
    assert [s.correct for s in run.scores] == [i % 2 == 0 for i in range(7)]
    # Other sampled settings are another run; greedy samples are refused.
    with pytest.raises(ShardManifestError):
        evaluate_benchmark(synthetic_items, adapter, backend, GREEDY, tmp_path / "w", shard_size=4)
    with pytest.raises(ValueError, match="temperature"):
        evaluate_benchmark(
            synthetic_items,
            adapter,
            backend,
            GREEDY,
            tmp_path / "v",
            samples=samples.model_copy(update={"temperature": 0.0}),
        )
