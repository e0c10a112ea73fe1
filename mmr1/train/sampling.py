"""Which samples each process trains on at each step: seeded, resumable, world-size free.

Training reads one endless stream of sample indices: epoch ``e`` is
``torch.randperm(n, generator=Generator().manual_seed(seed + e))`` and the
epochs follow each other. Optimiser step ``s`` trains on stream positions
``[s * G, (s + 1) * G)`` with ``G = micro * accum * world`` the global batch
(a batch may straddle an epoch boundary; nothing is dropped and fractional
epochs are exact). Every process computes the same stream; process ``r``
takes the ``r``-th contiguous chunk of ``micro * accum`` samples of the global
batch and splits it into ``accum`` micro-batches.

So the data a step sees depends only on ``(seed, n, G, s)``: N processes with
``accum = A / N`` see the same global batch as one process with ``accum = A``,
and resuming needs only the step number (the epoch permutation is rebuilt from
``seed + epoch``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class SampleStream:
    """The endless, seeded index stream over ``n`` samples (module docstring)."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError(f"cannot draw training batches from {n} samples")
        self.n = n
        self.seed = seed
        self._permutations: dict[int, list[int]] = {}

    def generator(self, epoch: int) -> torch.Generator:
        """The generator of ``epoch`` before it drew its permutation."""
        return torch.Generator().manual_seed(self.seed + epoch)

    def permutation(self, epoch: int) -> list[int]:
        """Sample order of ``epoch`` (cached; the two most recent epochs are kept)."""
        if epoch not in self._permutations:
            order = torch.randperm(self.n, generator=self.generator(epoch)).tolist()
            self._permutations[epoch] = order
            for old in [e for e in self._permutations if e < epoch - 1]:
                del self._permutations[old]
        return self._permutations[epoch]

    def position(self, stream_index: int) -> tuple[int, int]:
        """``(epoch, index within that epoch's permutation)`` of a stream position."""
        return divmod(stream_index, self.n)

    def indices(self, start: int, count: int) -> list[int]:
        """Sample indices at stream positions ``[start, start + count)``."""
        out: list[int] = []
        for index in range(start, start + count):
            epoch, offset = self.position(index)
            out.append(self.permutation(epoch)[offset])
        return out


def micro_batches_for_step(
    stream: SampleStream,
    step: int,
    *,
    micro_batch_size: int,
    grad_accum: int,
    rank: int,
    world_size: int,
) -> list[list[int]]:
    """The ``grad_accum`` micro-batches (lists of sample indices) of ``rank`` at ``step``."""
    per_rank = micro_batch_size * grad_accum
    global_batch = per_rank * world_size
    chunk = stream.indices(step * global_batch + rank * per_rank, per_rank)
    return [chunk[i : i + micro_batch_size] for i in range(0, per_rank, micro_batch_size)]


class StepBatchSampler(Sampler[list[int]]):
    """``batch_sampler`` for a DataLoader: this rank's micro-batches, steps ``start..stop-1``.

    Yields ``grad_accum`` micro-batches per step, in step order.
    """

    def __init__(
        self,
        stream: SampleStream,
        *,
        start_step: int,
        stop_step: int,
        micro_batch_size: int,
        grad_accum: int,
        rank: int,
        world_size: int,
    ) -> None:
        self.stream = stream
        self.start_step = start_step
        self.stop_step = stop_step
        self.micro_batch_size = micro_batch_size
        self.grad_accum = grad_accum
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step) * self.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.stop_step):
            yield from micro_batches_for_step(
                self.stream,
                step,
                micro_batch_size=self.micro_batch_size,
                grad_accum=self.grad_accum,
                rank=self.rank,
                world_size=self.world_size,
            )


def split_train_eval(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded held-out split of ``n`` items: ``(train_indices, eval_indices)``, each sorted.

    ``max(1, round(eval_fraction * n))`` items are held out when the fraction
    is positive and ``n >= 2`` (never all of them); none otherwise.
    """
    if eval_fraction <= 0 or n < 2:
        return list(range(n)), []
    n_eval = min(max(1, round(eval_fraction * n)), n - 1)
    # A seed of its own, so the split is not the first epoch's order.
    split_seed = int.from_bytes(hashlib.sha256(f"sft-eval-split/{seed}".encode()).digest()[:7])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).tolist()
    return sorted(order[n_eval:]), sorted(order[:n_eval])
