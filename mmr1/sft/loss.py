"""The SFT loss: next-token cross-entropy on labelled (assistant) tokens, as a sum and a count.

The recipe returns sums, not means, so that averaging happens once, over the
whole global batch: with ``N`` labelled tokens across all micro-batches and
processes, each micro-batch contributes ``sum_CE * world_size / N`` and DDP's
gradient averaging turns that into the gradient of ``sum_CE(global) / N``
(a token-weighted mean that does not depend on how the batch is split).

:func:`chunked_cross_entropy` computes the same sum from the model's final
hidden states, projecting only the labelled positions through the output head,
``chunk_size`` at a time (:mod:`mmr1.models.head`), so full-vocabulary logits
of a long sample never exist; :func:`token_cross_entropy` is the plain form.
Under DeepSpeed ZeRO-3 the head's weight is partitioned and only the head
module's own call gathers it, so there the head is called as a module per
chunk, each chunk recomputed in backward (``module_head``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from mmr1.models.head import final_hidden_states, output_head, token_logprobs
from mmr1.sft.data import IGNORE_INDEX


def token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over labelled positions, and how many there are.

    ``logits``: shape ``(batch, seq, vocab)``; ``labels``: ``(batch, seq)`` with
    ``IGNORE_INDEX`` where no loss applies. Position ``t`` predicts
    ``labels[t + 1]``::

        loss_sum = sum_{b, t : labels[b, t+1] != -100} -log softmax(logits[b, t])[labels[b, t+1]]

    Computed in float32 whatever the autocast dtype.
    """
    shifted_logits = logits[:, :-1].float()
    shifted_labels = labels[:, 1:]
    loss_sum = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss_sum, (shifted_labels != IGNORE_INDEX).sum()


def chunked_cross_entropy(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    chunk_size: int | None,
    module_head: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_cross_entropy` of ``model(**inputs)``, without its full logits.

    The model's own forward runs (wrappers included) up to the final hidden
    states; the head then projects only the labelled positions, ``chunk_size`` at
    a time, in the precision it would have had inside the forward. Equal to the
    plain form up to the matmul's summation order. ``module_head``: call the head
    module per chunk under activation checkpointing (ZeRO-3, where the module's
    hooks gather its partitioned weight) instead of reading its weight directly.
    """
    head = output_head(model)
    width = int(inputs["input_ids"].shape[1])
    hidden, autocast = final_hidden_states(model, head, inputs, keep=width)
    shifted = labels[:, 1:]
    where = (shifted != IGNORE_INDEX).nonzero(as_tuple=True)
    count = (shifted != IGNORE_INDEX).sum()
    if where[0].numel() == 0:
        # Keep the graph (every parameter's gradient, for DDP) with a zero-weight position.
        zero = torch.zeros(1, dtype=torch.long, device=labels.device)
        where = (zero, zero)
        weight = 0.0
    else:
        weight = 1.0
    if module_head:
        with autocast:
            logp = _module_head_logprobs(
                head, hidden[:, :-1][where], shifted[where].clamp_min(0), chunk_size
            )
        return -logp.sum() * weight, count
    with autocast:  # the head computes exactly as it would have inside the forward
        logp, _ = token_logprobs(
            hidden[:, :-1][where],
            shifted[where].clamp_min(0),
            head,
            temperature=1.0,
            suppress_ids=(),
            chunk_size=chunk_size,
        )
    return -logp.sum() * weight, count


def _module_head_logprobs(
    head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """``log softmax(head(hidden))[targets]`` per row, ``chunk_size`` rows at a time.

    ``hidden``: ``(n, hidden_size)``, ``targets``: ``(n,)``. Each chunk's logits
    are freed after its forward and recomputed in backward (non-reentrant
    checkpointing), so one chunk of logits exists at a time.
    """

    def chunk(rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        logits = head(rows).float()
        return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, None]).squeeze(-1)

    size = chunk_size or max(1, hidden.shape[0])
    parts = [
        torch.utils.checkpoint.checkpoint(
            chunk, hidden[start : start + size], targets[start : start + size], use_reentrant=False
        )
        for start in range(0, hidden.shape[0], size)
    ]
    return torch.cat(parts)
