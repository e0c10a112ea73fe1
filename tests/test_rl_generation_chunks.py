"""hf rollouts in chunks of generation_batch_size sequences: bounded calls, reproducible
samples for a given chunk size, the same greedy tokens as one uncut call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from rl_fixtures import write_pool

from mmr1.data.requests import build_requests
from mmr1.generation.hf import HFBackend
from mmr1.models.loader import load_policy
from mmr1.rl.rollout import RolloutSource
from mmr1.vas.estimate import read_pool_frame
from schemas.generation import GenerationRequest, HFBackendConfig, SamplingParams
from schemas.grpo import GRPOConfig


@pytest.fixture(scope="module")
def requests(tmp_path_factory: pytest.TempPathFactory) -> list[GenerationRequest]:
    pool = write_pool(tmp_path_factory.mktemp("pool"), n_items=3)
    return build_requests(read_pool_frame(pool))


def _backend(tiny_dir: Path, generation_batch_size: int | None) -> tuple[HFBackend, list[int]]:
    """A backend whose model records the rows of every generate call."""
    backend = HFBackend(
        HFBackendConfig(model=str(tiny_dir), device="cpu", batch_size=16),
        generation_batch_size=generation_batch_size,
    )
    model = backend.policy.model
    rows: list[int] = []
    generate = model.generate

    def recording(**kwargs: Any) -> Any:
        rows.append(int(kwargs["input_ids"].shape[0]))
        return generate(**kwargs)

    model.generate = recording
    return backend, rows


def _tokens(completions: list) -> list[list[list[int]]]:
    return [[s.token_ids for s in c.samples] for c in completions]


@pytest.mark.parametrize(
    ("size", "calls"),
    [(None, [12]), (8, [8, 4]), (3, [3, 1, 3, 1, 3, 1]), (4, [4, 4, 4])],
    ids=["uncut", "whole-groups", "split-groups", "one-group"],
)
def test_calls_hold_at_most_generation_batch_size_sequences(
    tiny_dir: Path, requests: list[GenerationRequest], size: int | None, calls: list[int]
) -> None:
    backend, rows = _backend(tiny_dir, size)
    sampling = SamplingParams(n=4, temperature=1.0, max_new_tokens=4, seed=11)
    first = backend.generate(requests, sampling)
    assert rows == calls
    assert [len(c.samples) for c in first] == [4, 4, 4]
    assert [c.request_id for c in first] == [r.request_id for r in requests]
    assert all(c.prompt_tokens and c.prompt_tokens > 4 for c in first)
    again = backend.generate(requests, sampling)  # same seed, same chunking: same samples
    assert _tokens(again) == _tokens(first)
    assert [[s.logprobs for s in c.samples] for c in again] == [
        [s.logprobs for s in c.samples] for c in first
    ]
    backend.close()


def test_greedy_chunks_give_the_uncut_tokens(
    tiny_dir: Path, requests: list[GenerationRequest]
) -> None:
    sampling = SamplingParams(n=2, temperature=0.0, max_new_tokens=6, seed=0)
    outputs = {}
    for size in (None, 1, 3):
        backend, _ = _backend(tiny_dir, size)
        outputs[size] = backend.generate(requests, sampling)
        backend.close()
    for size in (1, 3):
        assert _tokens(outputs[size]) == _tokens(outputs[None])
        for chunked, whole in zip(outputs[size], outputs[None], strict=True):
            for a, b in zip(chunked.samples, whole.samples, strict=True):
                assert a.logprobs is not None and b.logprobs is not None
                torch.testing.assert_close(
                    torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=0, atol=1e-4
                )


def test_grpo_hands_generation_batch_size_to_the_hf_backend(tiny_dir: Path) -> None:
    policy = load_policy(tiny_dir, device="cpu", dtype=torch.float32)
    config = GRPOConfig(rollout_batch_size=4, group_size=8, generation_batch_size=16)
    source = RolloutSource.build(config, policy=policy, start=tiny_dir, process_index=0)
    assert isinstance(source.backend, HFBackend)
    assert source.backend.generation_batch_size == 16
    assert source.backend.config.batch_size == 4
    with pytest.raises(ValueError, match="generation_batch_size must be >= 1"):
        HFBackend(HFBackendConfig(model=str(tiny_dir)), policy=policy, generation_batch_size=0)
