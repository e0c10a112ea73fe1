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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_cross_entropy` of ``model(**inputs)``, without its full logits.

    The model's own forward runs (wrappers included) up to the final hidden
    states; the head then projects only the labelled positions, ``chunk_size`` at
    a time, in the precision it would have had inside the forward. Equal to the
    plain form up to the matmul's summation order.
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
