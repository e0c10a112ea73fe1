"""The ``hf`` generation backend on the tiny offline Qwen2.5-VL."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from PIL import Image

from mmr1.generation import get_backend
from mmr1.generation.hf import HFBackend, SuppressAndRecordLogprobs, trim_at_eos
from mmr1.models import load_policy
from mmr1.models.loader import vision_special_token_ids
from schemas.generation import GenerationRequest, HFBackendConfig, SamplingParams


def noise_image(size: tuple[int, int] = (56, 56), seed: int = 0) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


@pytest.fixture(scope="module")
def backend(tiny_dir: Path):
    backend = HFBackend(HFBackendConfig(model=str(tiny_dir), batch_size=4))
    yield backend
    backend.close()


def mixed_requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt="<image>\nWhat colour?", images=[noise_image()], request_id="one"),
        GenerationRequest(prompt="No picture: 2 + 2 = ?", request_id="none"),
        GenerationRequest(
            prompt="Compare <image> with <image>.",
            images=[noise_image((84, 56), 1), noise_image((56, 112), 2)],
            system="Answer briefly.",
            request_id="two",
        ),
    ]


def token_ids(completions) -> list[list[list[int]]]:
    return [[s.token_ids for s in c.samples] for c in completions]


def test_n_samples_with_aligned_logprobs(backend: HFBackend) -> None:
    sampling = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=0)
    completions = backend.generate(mixed_requests(), sampling)
    assert [c.request_id for c in completions] == ["one", "none", "two"]
    for completion in completions:
        assert len(completion.samples) == 3
        assert completion.prompt_tokens and completion.prompt_tokens > 10
        for sample in completion.samples:
            assert 1 <= len(sample.token_ids) <= 12
            assert len(sample.logprobs) == len(sample.token_ids)
            assert all(lp <= 0.0 for lp in sample.logprobs)
    # The 2-image prompt carries 2 + 8 image tokens more than its text alone.
    assert completions[2].prompt_tokens > completions[0].prompt_tokens


def test_same_seed_same_samples_different_seed_different(backend: HFBackend) -> None:
    requests = mixed_requests()
    first = backend.generate(requests, SamplingParams(n=2, max_new_tokens=16, seed=11))
    again = backend.generate(requests, SamplingParams(n=2, max_new_tokens=16, seed=11))
    other = backend.generate(requests, SamplingParams(n=2, max_new_tokens=16, seed=12))
    assert first == again
    assert token_ids(first) != token_ids(other)


def test_seeding_leaves_global_rng_alone(backend: HFBackend) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    backend.generate(mixed_requests()[:1], SamplingParams(max_new_tokens=4, seed=5))
    assert torch.equal(torch.rand(3), expected)


def test_greedy_is_deterministic_and_batch_independent(tiny_dir: Path, backend: HFBackend) -> None:
    sampling = SamplingParams(n=2, temperature=0.0, max_new_tokens=8, seed=0)
    requests = mixed_requests()
    batched = backend.generate(requests, sampling)
    assert batched == backend.generate(requests, sampling)
    for completion in batched:
        # Two copies of one prompt in a batch: same tokens; the log-probs may differ in
        # the last bits, since a CPU GEMM kernel can treat rows in different blocks.
        first, second = completion.samples
        assert first.token_ids == second.token_ids
        assert first.finish_reason == second.finish_reason
        gap = torch.tensor(first.logprobs) - torch.tensor(second.logprobs)
        assert gap.abs().max() < 1e-5
    # One request per batch: same tokens, same log-probs (images stay with their rows).
    single = HFBackend(HFBackendConfig(model=str(tiny_dir), batch_size=1), policy=backend.policy)
    alone = single.generate(requests, sampling)
    assert token_ids(alone) == token_ids(batched)
    for a, b in zip(alone, batched, strict=True):
        diff = torch.tensor(a.samples[0].logprobs) - torch.tensor(b.samples[0].logprobs)
        assert diff.abs().max() < 1e-4
    single.close()
    assert backend.policy is not None  # closing a borrowing backend keeps the shared policy


def test_vision_tokens_are_suppressed_even_at_high_temperature(backend: HFBackend) -> None:
    vision_ids = set(vision_special_token_ids(backend.policy.tokenizer))
    sampling = SamplingParams(n=8, temperature=1.5, max_new_tokens=64, seed=0)
    requests = mixed_requests()
    for completion in backend.generate(requests, sampling):
        for sample in completion.samples:
            assert not vision_ids & set(sample.token_ids)

    # Without suppression the same call does emit them (the crash docs/STACK.md warns about).
    saved, backend._suppress_ids = backend._suppress_ids, []
    try:
        emitted = {
            tok
            for completion in backend.generate(requests, sampling)
            for sample in completion.samples
            for tok in sample.token_ids
        }
    finally:
        backend._suppress_ids = saved
    assert vision_ids & emitted


def test_finish_reason_length_when_max_new_tokens_is_small(backend: HFBackend) -> None:
    completions = backend.generate(mixed_requests(), SamplingParams(n=2, max_new_tokens=3))
    for sample in (s for c in completions for s in c.samples):
        assert sample.finish_reason == "length"
        assert len(sample.token_ids) == 3


def test_trim_at_eos_keeps_eos_and_drops_padding() -> None:
    assert trim_at_eos([5, 6, 2, 0, 0], {2}) == ([5, 6, 2], "stop")
    assert trim_at_eos([5, 6, 7], {2}) == ([5, 6, 7], "length")
    assert trim_at_eos([0, 2, 0], {2, 0}) == ([0], "stop")


def test_recorder_masks_and_scales() -> None:
    recorder = SuppressAndRecordLogprobs([1], temperature=0.5, record=True)
    scores = torch.tensor([[0.0, 5.0, 1.0]])
    out = recorder(torch.tensor([[9]]), scores)
    assert out[0, 1] == float("-inf") and scores[0, 1] == 5.0  # input left untouched
    logprobs = recorder.finish(torch.tensor([[9, 2]]))
    expected = torch.log_softmax(torch.tensor([0.0, 2.0]), dim=-1)[1]
    assert torch.allclose(logprobs, expected.view(1, 1))


def test_errors_name_the_request(backend: HFBackend) -> None:
    bad = GenerationRequest(prompt="<image> and <image>", images=[noise_image()], request_id="r7")
    with pytest.raises(ValueError, match=r"r7.*2 <image> placeholder\(s\) but 1 image\(s\)"):
        backend.generate([bad], SamplingParams(max_new_tokens=2))
    assert backend.generate([], SamplingParams()) == []


def test_get_backend_and_injected_policy(tiny_dir: Path) -> None:
    config = HFBackendConfig(model=str(tiny_dir), batch_size=2)
    owned = get_backend(config)
    assert owned.name == "hf"
    request = [GenerationRequest(prompt="<image>hi", images=[noise_image()])]
    sampling = SamplingParams(n=2, max_new_tokens=5, seed=3)
    expected = owned.generate(request, sampling)
    owned.close()
    with pytest.raises(RuntimeError, match="closed"):
        owned.generate(request, sampling)
    training = load_policy(tiny_dir, for_training=True)
    borrowed = HFBackend(config, policy=training)
    got = borrowed.generate(request, sampling)
    # Same tokens; log-probs agree to float noise (grad-enabled weights take other kernels).
    assert token_ids(got) == token_ids(expected)
    for a, b in zip(got[0].samples, expected[0].samples, strict=True):
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-5
    assert training.model.training  # generation leaves a borrowed policy's mode alone
