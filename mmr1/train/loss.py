"""The SFT loss: next-token cross-entropy on labelled (assistant) tokens, as a sum and a count.

The recipe returns sums, not means, so that averaging happens once, over the
whole global batch: with ``N`` labelled tokens across all micro-batches and
processes, each micro-batch contributes ``sum_CE * world_size / N`` and DDP's
gradient averaging turns that into the gradient of ``sum_CE(global) / N``
(a token-weighted mean that does not depend on how the batch is split).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmr1.train.data import IGNORE_INDEX


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
