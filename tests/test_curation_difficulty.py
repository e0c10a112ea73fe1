"""Pass rates (tiny HF model and a seeded fake), buckets, quarantine reasons, type balancing."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest
from curation_rows import records_frame, text_frame

from mmr1.data.difficulty import balanced_quotas, bucket_and_filter, estimate_pass_rates
from mmr1.data.shards import ShardManifestError, shard_path
from mmr1.data.synthetic import generate_items
from mmr1.generation.hf import HFBackend
from mmr1.models import build_tiny_model
from schemas.curation import DifficultyConfig
from schemas.generation import (
    Completion,
    CompletionSample,
    GenerationRequest,
    HFBackendConfig,
    SamplingParams,
)
from schemas.models import TinyVLMConfig
from schemas.rewards import RewardConfig
from schemas.synthetic import SyntheticConfig

INLINE = RewardConfig(num_workers=0)


class Recording:
    """Wraps a backend and records every call (requests' ids, seed, sample texts)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.config = getattr(backend, "config", None)
        self.calls: list[tuple[list[str | None], int, list[list[str]]]] = []

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams):
        completions = self.backend.generate(requests, sampling)
        texts = [[s.text for s in c.samples] for c in completions]
        self.calls.append(([r.request_id for r in requests], sampling.seed, texts))
        return completions

    def close(self) -> None:
        self.backend.close()


class CoinBackend:
    """Answers right with the probability written in the question ("p=0.25"), seeded."""

    name = "coin"

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams):
        out = []
        for request in requests:
            p = float(request.prompt.rsplit("p=", 1)[1].split()[0])
            gold = request.prompt.rsplit("gold=", 1)[1].split()[0]
            samples = []
            for j in range(sampling.n):
                rng = random.Random(f"{sampling.seed}/{request.request_id}/{j}")
                answer = gold if rng.random() < p else "wrong"
                text = f"<think>try {j}</think><answer>\\boxed{{{answer}}}</answer>"
                samples.append(CompletionSample(text=text))
            out.append(Completion(request_id=request.request_id, samples=samples))
        return out

    def close(self) -> None:
        pass


# -- pass rates ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory: pytest.TempPathFactory):
    model = build_tiny_model(TinyVLMConfig(), tmp_path_factory.mktemp("tiny") / "model")
    backend = HFBackend(HFBackendConfig(model=str(model), batch_size=4))
    yield backend
    backend.close()


def test_pass_rates_with_the_tiny_model_are_deterministic_and_resumable(
    tiny_backend: HFBackend, tmp_path: Path
) -> None:
    frame = records_frame(r.record for r in generate_items(SyntheticConfig(n_items=6, seed=2)))
    config = DifficultyConfig(
        rollouts=3,
        shard_size=2,
        sampling=SamplingParams(temperature=1.0, max_new_tokens=6),
    )
    first = Recording(tiny_backend)
    rated = estimate_pass_rates(frame, first, config, tmp_path / "a", seed=5, rewards=INLINE)
    assert rated.columns == [*frame.columns, "pass_rate", "n_rollouts"]
    assert rated["row_id"].to_list() == frame["row_id"].to_list()
    assert rated["n_rollouts"].to_list() == [3] * 6
    assert rated["pass_rate"].is_between(0.0, 1.0).all()
    assert [len(ids) for ids, _, _ in first.calls] == [2, 2, 2]
    assert all(len(texts) == 3 for _, _, batch in first.calls for texts in batch)
    assert len({seed for _, seed, _ in first.calls}) == 3  # one seed per shard

    second = Recording(tiny_backend)
    again = estimate_pass_rates(frame, second, config, tmp_path / "b", seed=5, rewards=INLINE)
    assert again.equals(rated)
    assert second.calls == first.calls  # same seed: same samples

    other = Recording(tiny_backend)
    estimate_pass_rates(frame, other, config, tmp_path / "c", seed=6, rewards=INLINE)
    assert [t for _, _, t in other.calls] != [t for _, _, t in first.calls]

    # Resume: finished shards are reused; a missing one is recomputed identically.
    shard_path(tmp_path / "a", 1).unlink()
    resumed = Recording(tiny_backend)
    assert estimate_pass_rates(
        frame, resumed, config, tmp_path / "a", seed=5, rewards=INLINE
    ).equals(rated)
    assert resumed.calls == [first.calls[1]]
    with pytest.raises(ShardManifestError):
        estimate_pass_rates(frame, tiny_backend, config, tmp_path / "a", seed=6, rewards=INLINE)


def test_pass_rate_is_the_fraction_of_correct_rollouts(tmp_path: Path) -> None:
    ps = [0.0, 0.3, 0.6, 1.0, 0.5]
    frame = text_frame([(f"Q{i} p={p} gold={i + 10}", str(i + 10)) for i, p in enumerate(ps)])
    config = DifficultyConfig(rollouts=16, shard_size=2)
    rated = estimate_pass_rates(frame, CoinBackend(), config, tmp_path, seed=0, rewards=INLINE)
    rates = rated["pass_rate"].to_list()
    assert rates[0] == 0.0 and rates[3] == 1.0
    assert all(r * 16 == int(r * 16) for r in rates)
    assert 0.0 < rates[1] < rates[2] < 1.0


# -- buckets and balancing -------------------------------------------------------------


def rated_frame(pass_rates: Sequence[float], types: Sequence[str]) -> pl.DataFrame:
    n = len(pass_rates)
    return text_frame(
        [(f"question {i}", "1") for i in range(n)],
        types=types,
        pass_rate=list(pass_rates),
        n_rollouts=[8] * n,
    )


def test_buckets_and_quarantine_reasons() -> None:
    frame = rated_frame([0.875, 0.8, 0.5, 0.25, 0.2, 0.0], ["a"] * 6)
    result = bucket_and_filter(
        frame, DifficultyConfig(keep=["medium", "hard"], target_size=None), seed=0
    )
    assert result.kept["source_row_id"].to_list() == ["q2", "q3", "q4", "q5"]
    assert result.kept["difficulty_bucket"].to_list() == ["medium", "medium", "hard", "hard"]
    assert result.reasons() == {"too_easy": 2}
    assert result.quarantined["detail"].to_list() == [
        "pass rate 0.875 over 8 rollouts",
        "pass rate 0.8 over 8 rollouts",
    ]

    hard_only = bucket_and_filter(frame, DifficultyConfig(keep=["hard"]), seed=0)
    assert hard_only.reasons() == {"too_easy": 2, "medium_filtered": 2}
    assert hard_only.kept["source_row_id"].to_list() == ["q4", "q5"]
    assert hard_only.counts()["kept"] + hard_only.counts()["quarantined"] == frame.height

    easy_only = bucket_and_filter(frame, DifficultyConfig(keep=["easy"]), seed=0)
    assert easy_only.reasons() == {"medium_filtered": 2, "too_hard": 2}


def test_missing_pass_rates_are_named() -> None:
    frame = rated_frame([0.5, 0.5], ["a", "a"]).with_columns(
        pl.when(pl.col("source_row_id") == "q1")
        .then(None)
        .otherwise(pl.col("pass_rate"))
        .alias("pass_rate")
    )
    with pytest.raises(ValueError, match="'local/q1'.*estimate_pass_rates"):
        bucket_and_filter(frame, DifficultyConfig(), seed=0)


def test_balanced_quotas_redistribute_leftovers() -> None:
    assert balanced_quotas({"a": 10, "b": 10, "c": 10}, 9, seed=0) == {"a": 3, "b": 3, "c": 3}
    # c has 1 row: its leftover quota goes to a and b; b has 4, a gets the rest.
    assert balanced_quotas({"a": 50, "b": 4, "c": 1}, 12, seed=0) == {"a": 7, "b": 4, "c": 1}
    assert balanced_quotas({"a": 3, "b": 2}, 100, seed=0) == {"a": 3, "b": 2}
    # A remainder goes to seed-chosen types: always the right total, deterministic per seed.
    for seed in range(5):
        quotas = balanced_quotas({"a": 9, "b": 9, "c": 9, "d": 1}, 11, seed)
        assert sum(quotas.values()) == 11 and quotas["d"] == 1
        assert sorted(quotas[t] for t in "abc") == [3, 3, 4]
        assert quotas == balanced_quotas({"a": 9, "b": 9, "c": 9, "d": 1}, 11, seed)
    picked = {
        max("abc", key=balanced_quotas({"a": 9, "b": 9, "c": 9}, 10, s).get) for s in range(20)
    }
    assert len(picked) > 1


def test_type_balancing_is_uniform_with_redistribution_and_deterministic() -> None:
    types = ["algebra"] * 40 + ["geometry"] * 30 + ["logic"] * 3 + ["chart"] * 7
    frame = rated_frame([0.5] * len(types), types)
    config = DifficultyConfig(target_size=24, balance_by=["type"])
    result = bucket_and_filter(frame, config, seed=3)
    assert Counter(result.kept["type"].to_list()) == {
        "logic": 3,
        "chart": 7,
        "algebra": 7,
        "geometry": 7,
    }
    assert result.reasons() == {"balanced_out": len(types) - 24}
    assert result.counts()["kept"] + result.counts()["quarantined"] == frame.height
    kept_ids = result.kept["source_row_id"].to_list()
    assert kept_ids == sorted(kept_ids, key=lambda s: int(s[1:]))  # input order kept
    detail = result.quarantined["detail"][0]
    assert detail.startswith("algebra: over its quota of 7 (target 24 rows")
    assert "logic 3/3" in detail

    same = bucket_and_filter(frame, config, seed=3)
    assert same.kept.equals(result.kept) and same.quarantined.equals(result.quarantined)
    other = bucket_and_filter(frame, config, seed=4)
    assert other.kept["source_row_id"].to_list() != kept_ids
    # The kept set of a type does not depend on row order.
    shuffled = bucket_and_filter(frame.reverse(), config, seed=3)
    assert set(shuffled.kept["row_id"].to_list()) == set(result.kept["row_id"].to_list())


def test_balancing_by_type_and_answer_evens_out_each_types_answers() -> None:
    # bars: red 12, blue 4, green 4; shapes: red 4, blue 4.
    answers = ["red"] * 12 + ["blue"] * 4 + ["green"] * 4 + ["red"] * 4 + ["blue"] * 4
    types = ["bar"] * 20 + ["shape"] * 8
    frame = text_frame(
        [(f"question {i}", a) for i, a in enumerate(answers)],
        types=types,
        pass_rate=[0.5] * 28,
        n_rollouts=[8] * 28,
    )
    config = DifficultyConfig(target_size=15, balance_by=["type", "answer"])
    result = bucket_and_filter(frame, config, seed=0)
    kept = Counter(zip(result.kept["type"], result.kept["answer"], strict=True))
    assert kept == {("bar", "red"): 3, ("bar", "blue"): 3, ("bar", "green"): 3,
                    ("shape", "red"): 3, ("shape", "blue"): 3}  # fmt: skip
    assert result.reasons() == {"balanced_out": 13}
    detail = result.quarantined["detail"][0]
    assert detail.startswith("bar/red: over its quota of 3 (target 15 rows; kept per type/answer:")
    assert "bar/red 3/12" in detail
    # By type alone the same target keeps the bars' 3:1:1 answer skew.
    by_type = bucket_and_filter(frame, DifficultyConfig(target_size=15), seed=0)
    bar_answers = Counter(
        a for t, a in zip(by_type.kept["type"], by_type.kept["answer"], strict=True) if t == "bar"
    )
    assert sum(bar_answers.values()) in (7, 8) and bar_answers["red"] > bar_answers["green"]

    with pytest.raises(ValueError, match=r"frame lacks columns \['answer'\]"):
        bucket_and_filter(frame.drop("answer"), config, seed=0)
    with pytest.raises(ValueError, match="balance_by names a column twice"):
        DifficultyConfig(balance_by=["type", "type"])
    with pytest.raises(ValueError, match="balance_by"):
        DifficultyConfig(balance_by=["problem"])


def test_filtering_then_balancing_and_unbalanced_target() -> None:
    rates = [0.9] * 10 + [0.1] * 20
    types = ["a"] * 10 + ["a"] * 5 + ["b"] * 15
    frame = rated_frame(rates, types)
    result = bucket_and_filter(frame, DifficultyConfig(target_size=8), seed=0)
    assert result.reasons() == {"too_easy": 10, "balanced_out": 12}
    assert Counter(result.kept["type"].to_list()) == {"a": 4, "b": 4}

    flat = bucket_and_filter(frame, DifficultyConfig(target_size=8, balance_by=[]), seed=0)
    assert flat.kept.height == 8 and flat.reasons()["balanced_out"] == 12
    everything = bucket_and_filter(frame, DifficultyConfig(target_size=None), seed=0)
    assert everything.kept.height == 20
