"""Chunked response log-probs and entropy equal the full-logits computation (fp32).

The reference below is the computation the trainer used before chunking: the
model's full logits for the last R + 1 positions, divided by the temperature,
vision tokens set to -inf, log-softmax, gather. Chunked results must match it
to 1e-6 (values) and in gradients, for several chunk sizes and masks, and the
head must never see more positions than one chunk.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rl_fixtures import write_pool

from mmr1.data.requests import build_requests
from mmr1.models import head as head_module
from mmr1.models.head import output_head
from mmr1.models.loader import Policy, load_policy, vision_special_token_ids
from mmr1.rl.batch import Rollout, collate, encode_prompt, response_logprobs
from mmr1.vas.estimate import read_pool_frame

TEMPERATURE = 0.7
LENGTHS = [5, 9, 1, 0, 7, 3]  # unequal, one empty response


@pytest.fixture(scope="module")
def policy(tiny_dir: Path) -> Policy:
    return load_policy(tiny_dir, device="cpu", dtype=torch.float32, for_training=True)


@pytest.fixture(scope="module")
def batch(policy: Policy, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    pool = write_pool(tmp_path_factory.mktemp("pool"), n_items=3)
    prompts = [encode_prompt(policy, r) for r in build_requests(read_pool_frame(pool))]
    vocab = policy.model.config.get_text_config().vocab_size
    generator = torch.Generator().manual_seed(0)
    rollouts = [
        Rollout(
            prompt=i % len(prompts),
            response_ids=torch.randint(0, vocab, (n,), generator=generator).tolist(),
            advantage=0.0,
            train=i != 4,  # a masked row: computed, excluded by response_mask
        )
        for i, n in enumerate(LENGTHS)
    ]
    return collate(prompts, rollouts, policy.tokenizer.pad_token_id, is_vlm=True)


def full_logits_reference(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], suppress: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    width = batch["response_ids"].shape[1]
    keys = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")
    inputs = {k: batch[k] for k in keys}
    logits = model(**inputs, logits_to_keep=width + 1, use_cache=False).logits[:, :-1]
    logits = logits.float() / TEMPERATURE
    logits[..., suppress] = float("-inf")
    normaliser = torch.logsumexp(logits, dim=-1)
    chosen = logits.gather(-1, batch["response_ids"].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        logp = logits - normaliser.unsqueeze(-1)
        entropy = -torch.where(probs > 0, probs * logp, torch.zeros_like(probs)).sum(-1)
    return chosen - normaliser, entropy


def _gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, None])
def test_chunked_logprobs_entropy_and_gradients_equal_full_logits(
    policy: Policy,
    batch: dict[str, torch.Tensor],
    chunk_size: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = policy.model
    suppress = vision_special_token_ids(policy.tokenizer)
    assert suppress
    real = batch["attention_mask"][:, -batch["response_ids"].shape[1] :].bool()
    mask = batch["response_mask"]
    weights = torch.linspace(0.5, 1.5, mask.numel()).reshape(mask.shape) * mask

    expected, expected_entropy = full_logits_reference(model, batch, suppress)
    expected_grads = _gradients(model, (expected * weights).sum())

    head_rows: list[int] = []  # positions the model's own head call projects
    hook = output_head(model).register_forward_hook(
        lambda module, args, out: head_rows.append(int(args[0][..., 0].numel()))
    )
    chunk_rows: list[int] = []  # rows of every (rows, V) logits tensor built
    scaled_logits = head_module._scaled_logits

    def recording(hidden: torch.Tensor, *args: object) -> torch.Tensor:
        chunk_rows.append(int(hidden.shape[0]))
        return scaled_logits(hidden, *args)

    monkeypatch.setattr(head_module, "_scaled_logits", recording)
    try:
        logp, entropy = response_logprobs(
            model,
            batch,
            temperature=TEMPERATURE,
            suppress_ids=suppress,
            with_entropy=True,
            chunk_size=chunk_size,
        )
        grads = _gradients(model, (logp * weights).sum())
    finally:
        hook.remove()

    assert logp.shape == expected.shape == mask.shape
    torch.testing.assert_close(logp[real], expected[real], rtol=0, atol=1e-6)
    assert entropy is not None
    torch.testing.assert_close(entropy[real], expected_entropy[real], rtol=0, atol=2e-6)
    assert bool((logp[~real] == 0).all()) and bool((entropy[~real] == 0).all())
    assert grads.keys() == expected_grads.keys() and len(grads) == len(list(model.parameters()))
    for name, grad in grads.items():
        scale = float(expected_grads[name].abs().max()) + 1e-12
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-6 * scale)
    # The model's own head call projects nothing; the chunks never exceed chunk_size rows,
    # and only real response positions are projected (forward, then again in backward).
    n_real = int(real.sum())
    assert head_rows == [0]
    assert max(chunk_rows) <= (chunk_size or n_real)
    assert sum(chunk_rows) == 2 * n_real


def test_without_gradients_and_without_entropy(
    policy: Policy, batch: dict[str, torch.Tensor]
) -> None:
    suppress = vision_special_token_ids(policy.tokenizer)
    real = batch["attention_mask"][:, -batch["response_ids"].shape[1] :].bool()
    with torch.no_grad():
        expected, _ = full_logits_reference(policy.model, batch, suppress)
        logp, entropy = response_logprobs(
            policy.model, batch, temperature=TEMPERATURE, suppress_ids=suppress, chunk_size=4
        )
    assert entropy is None and logp.grad_fn is None
    torch.testing.assert_close(logp[real], expected[real], rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_the_head_runs_in_the_autocast_precision(
    policy: Policy, batch: dict[str, torch.Tensor], chunk_size: int | None
) -> None:
    model = policy.model
    suppress = vision_special_token_ids(policy.tokenizer)
    real = batch["attention_mask"][:, -batch["response_ids"].shape[1] :].bool()
    weights = batch["response_mask"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, _ = full_logits_reference(model, batch, suppress)
        expected_grads = _gradients(model, (expected * weights).sum())
        logp, _ = response_logprobs(
            model, batch, temperature=TEMPERATURE, suppress_ids=suppress, chunk_size=chunk_size
        )
        grads = _gradients(model, (logp * weights).sum())
    with torch.no_grad():
        fp32, _ = full_logits_reference(model, batch, suppress)
    assert float((expected.detach() - fp32)[real].abs().max()) > 1e-3  # bf16 differs from fp32
    torch.testing.assert_close(logp[real], expected[real], rtol=0, atol=1e-5)
    for name, grad in grads.items():
        scale = float(expected_grads[name].abs().max()) + 1e-12
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-2, atol=1e-2 * scale)
