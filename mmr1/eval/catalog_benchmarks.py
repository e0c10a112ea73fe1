"""Evaluation benchmarks as catalog datasets, so curation can decontaminate against them.

Curation drops training rows that overlap any dataset of kind ``benchmark`` in the
catalog (``mmr1.data.decontam``). The synthetic benchmark is registered by the
pipeline; the real ones (MathVerse, MathVista, MathVision, LogicVista, ChartQA)
are read by their adapters from a hub id or local copy and registered here, in
the MMR1-RL layout decontamination reads: one row per item, the question with
its ``<image>`` placeholders, its images, options and gold answer. Rows the
adapter could not read (invalid items) have nothing to compare and are left
out, counted in the entry's metadata.

The name is ``<benchmark>-<split>`` (``mathvista-testmini``); the same items
register as the same version.
"""

from __future__ import annotations

from pathlib import Path

from mmr1.catalog import Catalog
from mmr1.data.io import write_rl_dataset
from mmr1.eval.benchmarks import get_adapter
from mmr1.storage import content_addressed
from schemas.catalog import DatasetEntry
from schemas.eval import BenchmarkSpec, EvalItem
from schemas.records import ImageData, RLRecord


def benchmark_record(item: EvalItem, benchmark: str) -> RLRecord:
    """The decontamination row of one (valid) benchmark item."""
    return RLRecord(
        id=item.item_id,
        problem=item.question,
        answer=item.answer,
        images=[ImageData(bytes=data) for data in item.images],
        choices=item.choices,
        type=benchmark,
        source=benchmark,
    )


def register_benchmark(catalog: Catalog, datasets_dir: Path, spec: BenchmarkSpec) -> DatasetEntry:
    """Load ``spec`` with its adapter and register its items as a ``benchmark`` dataset."""
    adapter = get_adapter(spec.name)
    split = spec.split or adapter.default_split
    items = adapter.load(spec)
    valid = [item for item in items if item.invalid is None]
    name = f"{spec.name}-{split}".lower().replace("_", "-")
    records = [benchmark_record(item, spec.name) for item in valid]
    path, digest, files = content_addressed(
        datasets_dir, name, lambda out: write_rl_dataset(records, out)
    )
    return catalog.register_dataset(
        name=name,
        kind="benchmark",
        uri=str(path),
        content_hash=digest,
        row_count=files.row_count,
        columns=files.columns,
        metadata={
            "benchmark": spec.name,
            "split": split,
            "source": spec.source,
            "items": len(items),
            "invalid_items": len(items) - len(valid),
        },
    )
