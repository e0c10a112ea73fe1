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
``seed + epoch``). ``n`` counts every sample of the training split: one that
turns out longer than ``cutoff_len`` when it is encoded is dropped from its
micro-batch (``mmr1.sft.data``), so knowing which are too long needs no pass
over the data before training. A :class:`SampleKey` tells the reader whether
its stream position lies in epoch 0, where every sample is drawn exactly once:
counting drops there counts each too-long sample once, however many epochs run.

The held-out split is fixed by a seeded 64-bit hash of the row index
(:func:`split_train_eval`): the ``k`` rows with the smallest hashes, so no
record is read to decide it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Sampler


class SampleKey(NamedTuple):
    """What a batch sampler hands the dataset: which sample, and whether to count a drop."""

    index: int
    """Index into the split's samples (not the dataset row)."""
    first_epoch: bool
    """Drawn at a stream position of epoch 0 (each sample once): a drop here is counted."""


class SampleStream:
    """The endless, seeded index stream over ``n`` samples (module docstring)."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError(f"cannot draw training batches from {n} samples")
        self.n = n
        self.seed = seed
        self._permutations: dict[int, torch.Tensor] = {}

    def generator(self, epoch: int) -> torch.Generator:
        """The generator of ``epoch`` before it drew its permutation."""
        return torch.Generator().manual_seed(self.seed + epoch)

    def permutation(self, epoch: int) -> torch.Tensor:
        """Sample order of ``epoch``, shape ``(n,)`` int64 (the two most recent are cached).

        A tensor, not a list: 8 bytes a sample (13 MB at 1.6M) instead of ~36.
        """
        if epoch not in self._permutations:
            order = torch.randperm(self.n, generator=self.generator(epoch))
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
            out.append(int(self.permutation(epoch)[offset]))
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


class StepBatchSampler(Sampler[list[SampleKey]]):
    """``batch_sampler`` for a DataLoader: this rank's micro-batches, steps ``start..stop-1``.

    Yields ``grad_accum`` micro-batches (lists of :class:`SampleKey`) per step,
    in step order.
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

    def __iter__(self) -> Iterator[list[SampleKey]]:
        per_rank = self.micro_batch_size * self.grad_accum
        for step in range(self.start_step, self.stop_step):
            position = step * per_rank * self.world_size + self.rank * per_rank
            for micro in micro_batches_for_step(
                self.stream,
                step,
                micro_batch_size=self.micro_batch_size,
                grad_accum=self.grad_accum,
                rank=self.rank,
                world_size=self.world_size,
            ):
                yield [
                    SampleKey(index, position + k < self.stream.n) for k, index in enumerate(micro)
                ]
                position += len(micro)


def row_hashes(n: int, seed: int) -> np.ndarray:
    """Seeded 64-bit hashes of the row indices ``0..n-1``, shape ``(n,)`` uint64.

    SplitMix64's finaliser of ``index + key``, with ``key`` derived from the seed
    (a seed of its own, so the split is not the first epoch's order):
    ``z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
    z ^= z >> 31`` (arithmetic mod 2**64).
    """
    key = int.from_bytes(hashlib.sha256(f"sft-eval-split/{seed}".encode()).digest()[:8], "big")
    z = np.arange(n, dtype=np.uint64) + np.uint64(key)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def split_train_eval(n: int, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded held-out split of ``n`` rows: ``(train_rows, eval_rows)``, each sorted int64.

    The held-out rows are the ``k`` rows with the smallest :func:`row_hashes`
    (ties, if any, by index), ``k = min(max(1, round(eval_fraction * n)), n - 1)``
    when the fraction is positive and ``n >= 2``, else 0. A pure function of
    ``(n, eval_fraction, seed)``: no record is read, every process agrees.
    """
    if eval_fraction <= 0 or n < 2:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n_eval = min(max(1, round(eval_fraction * n)), n - 1)
    order = np.argsort(row_hashes(n, seed), kind="stable")
    held = np.sort(order[:n_eval]).astype(np.int64)
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep).astype(np.int64), held
