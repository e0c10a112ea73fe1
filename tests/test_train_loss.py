"""The SFT loss computed in chunks equals the plain cross-entropy, values and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmr1.models import load_policy
from mmr1.sft.data import IGNORE_INDEX
from mmr1.sft.loss import chunked_cross_entropy, token_cross_entropy


def _batch(vocab: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(20, vocab, (3, 17), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row
    labels = ids.clone()
    labels[:, :9] = IGNORE_INDEX  # the prompt: no loss
    labels[1, :4] = IGNORE_INDEX
    labels[2, 12:] = IGNORE_INDEX  # a row with fewer labelled tokens
    inputs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": torch.zeros_like(ids)}
    return inputs, labels


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("module_head", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 5, 64, None])
def test_chunked_loss_equals_the_full_logits_loss(
    tiny_dir: Path, chunk_size: int | None, module_head: bool
) -> None:
    # module_head: the ZeRO-3 path (the head called as a module per checkpointed chunk).
    policy = load_policy(tiny_dir, device="cpu", dtype="float32", for_training=True)
    model = policy.model
    inputs, labels = _batch(model.config.text_config.vocab_size)
    expected, expected_count = token_cross_entropy(model(**inputs, use_cache=False).logits, labels)
    expected_grads = _grads(model, expected)
    got, count = chunked_cross_entropy(
        model, inputs, labels, chunk_size=chunk_size, module_head=module_head
    )
    assert int(count) == int(expected_count) == 8 + 8 + 3
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    grads = _grads(model, got)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        # The head's weight gradient sums over chunks here, in one matmul there: fp32 order.
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_batch_without_labels_still_gives_every_gradient_a_value(tiny_dir: Path) -> None:
    policy = load_policy(tiny_dir, device="cpu", dtype="float32", for_training=True)
    inputs, labels = _batch(policy.model.config.text_config.vocab_size)
    loss, count = chunked_cross_entropy(
        policy.model, inputs, torch.full_like(labels, IGNORE_INDEX), chunk_size=4
    )
    assert int(count) == 0 and float(loss.detach()) == 0.0
    loss.backward()  # the graph exists (DDP needs every parameter's gradient)
