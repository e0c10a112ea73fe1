"""Shared setup for the VPS, GRPO and evaluation tests: a tiny model and an RL pool in a catalog."""

from __future__ import annotations

import os
from pathlib import Path

from mmr1.catalog import Catalog
from mmr1.data.io import write_rl_dataset
from mmr1.data.synthetic import iter_records
from mmr1.hashing import hash_directory
from mmr1.models import build_tiny_model
from schemas.catalog import CheckpointEntry, DatasetEntry
from schemas.models import TinyVLMConfig
from schemas.rewards import RewardScore
from schemas.synthetic import SyntheticConfig


def write_pool(out_dir: Path, n_items: int, seed: int = 0) -> Path:
    records = list(iter_records(SyntheticConfig(n_items=n_items, seed=seed)))
    write_rl_dataset(records, out_dir)
    return out_dir


def register_pool(
    catalog: Catalog, out_dir: Path, name: str = "pool", n_items: int = 8, seed: int = 0
) -> DatasetEntry:
    files = write_rl_dataset(
        list(iter_records(SyntheticConfig(n_items=n_items, seed=seed))), out_dir
    )
    return catalog.register_dataset(
        name=name,
        kind="rl",
        uri=str(out_dir),
        content_hash=files.content_hash,
        row_count=files.row_count,
        columns=files.columns,
    )


def register_tiny(catalog: Catalog, out_dir: Path, name: str = "tiny") -> CheckpointEntry:
    model_dir = build_tiny_model(TinyVLMConfig(), out_dir)
    return catalog.register_checkpoint(
        name=name, stage="base", uri=str(model_dir), content_hash=hash_directory(model_dir)
    )


def length_reward(
    responses: list[str], golds: list[str], choices: list[list[str] | None]
) -> list[RewardScore]:
    """A deterministic reward that varies within every group: longer text, higher reward.

    The tiny random model never verifies an answer, so the paper's reward is 0
    everywhere and every advantage vanishes; tests of the update need signal.
    """
    return [RewardScore(accuracy=0.0, format=0.0, overall=len(text) / 100.0) for text in responses]


def flaky_length_reward(
    responses: list[str], golds: list[str], choices: list[list[str] | None]
) -> list[RewardScore]:
    """``length_reward``, except that it fails while MMR1_TEST_FAIL_REWARD is set (failure
    injection for resume tests: the config, hence the stage key, stays the same)."""
    if os.environ.get("MMR1_TEST_FAIL_REWARD"):
        raise RuntimeError("injected reward failure (MMR1_TEST_FAIL_REWARD is set)")
    return length_reward(responses, golds, choices)
