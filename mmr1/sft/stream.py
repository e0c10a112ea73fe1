"""The SFT recipe's data: lazy rows, a hashed split, samples encoded when drawn, loaders.

Setting up reads the parquet footers and nothing else of the dataset (row
groups, ``mmr1.sft.rows``), splits the rows by a seeded hash of their index
(``mmr1.sft.sampling.split_train_eval``) and encodes one sample: the first
training sample in row order that fits ``cutoff_len``, the *filler*. Memory
at any time is the two index arrays (8 bytes a row), two epoch permutations
(8 bytes a training row), one decoded row group per reading process and the
micro-batches in flight, whatever the number of rows.

Each process reads only the samples of its own micro-batches, in the training
loader's workers (``num_workers``; the training process itself when 0), which
read, decode images, tokenise and collate; the workers' output arrives in step
order, so batches and weights are the same for any ``num_workers``.

The filler stands in for a micro-batch whose samples were all too long: the
trainer runs it with loss weight 0, so every process still makes its
``grad_accum`` forward and backward calls (DDP's all-reduce and the DeepSpeed
engine count them) and the update is that of the kept samples alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmr1.sft.data import MicroBatchCollator, SFTCollator, SFTEncoder, SFTSamples
from mmr1.sft.rows import SFTRows
from mmr1.sft.sampling import SampleKey, SampleStream, StepBatchSampler, split_train_eval
from mmr1.trainer.deepspeed import check_zero3_images
from schemas.records import SFTRecord
from schemas.sft import SFTConfig

#: Training samples (in row order) tried for the filler before giving up.
FILLER_SCAN = 256


class SFTData:
    """Training and held-out samples of one SFT dataset for one policy (module docstring)."""

    def __init__(self, dataset_path: Path, policy: Any, config: SFTConfig) -> None:
        self.path = Path(dataset_path)
        self.config = config
        rows = SFTRows(self.path)
        if rows.num_rows == 0:
            raise ValueError(f"{self.path}: the SFT dataset has no rows")
        train_rows, eval_rows = split_train_eval(rows.num_rows, config.eval_fraction, config.seed)
        root = self.path if self.path.is_dir() else self.path.parent
        encoder = SFTEncoder(policy.processor, is_vlm=policy.is_vlm, image_root=root)
        self.rows = rows
        self.train = SFTSamples(rows, train_rows, encoder, cutoff_len=config.cutoff_len)
        self.eval = SFTSamples(rows, eval_rows, encoder, cutoff_len=config.cutoff_len)
        tokenizer = policy.tokenizer
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id
        self.collate = MicroBatchCollator(SFTCollator(pad_id, is_vlm=policy.is_vlm))
        self.stream = SampleStream(len(self.train), config.seed)
        self.filler = self._filler()

    def _filler(self) -> dict[str, torch.Tensor]:
        """The collated first training sample (row order) that fits ``cutoff_len``."""
        scanned = min(len(self.train), FILLER_SCAN)
        for index in range(scanned):
            batch = self.collate([self.train[index]])
            if batch.tensors is not None:
                return batch.tensors
        what = (
            f"all {scanned} are longer"
            if scanned == len(self.train)
            else f"the first {scanned} in row order are all longer"
        )
        raise ValueError(
            f"{self.path}: no training sample fits cutoff_len={self.config.cutoff_len} "
            f"({what}); raise cutoff_len or shorten the data"
        )

    def _loader(self, dataset: SFTSamples, batch_sampler: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=self.collate,
            num_workers=self.config.num_workers,
        )

    def train_loader(
        self, *, start_step: int, stop_step: int, rank: int, world_size: int
    ) -> DataLoader:
        """``rank``'s micro-batches (:class:`MicroBatch`) of steps ``start..stop-1``."""
        cfg = self.config
        sampler = StepBatchSampler(
            self.stream,
            start_step=start_step,
            stop_step=stop_step,
            micro_batch_size=cfg.micro_batch_size,
            grad_accum=cfg.grad_accum,
            rank=rank,
            world_size=world_size,
        )
        return self._loader(self.train, sampler)

    def eval_loader(self, indices: list[int]) -> DataLoader:
        """Held-out samples ``indices`` in micro-batches of ``micro_batch_size``."""
        size = self.config.micro_batch_size
        chunks = [
            [SampleKey(i, True) for i in indices[start : start + size]]
            for start in range(0, len(indices), size)
        ]
        return self._loader(self.eval, chunks)

    def eval_records(self) -> Iterable[SFTRecord]:
        """Held-out records in row order, read lazily (for greedy answers)."""
        return self.eval.records()

    def check_zero3_images(self) -> None:
        """Refuse text-only training rows (ZeRO-3, several processes, a VLM): one column pass."""
        counts = self.rows.image_counts()[self.train.indices]
        text_only = (counts == 0).nonzero()[0]
        example = self.train.record(int(text_only[0])).id if len(text_only) else None
        check_zero3_images(len(text_only), example, source=self.path)
