"""Shared setup for the VPS, GRPO and evaluation tests: a tiny model and an RL pool in a catalog."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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


def write_vps_file(out_dir: Path, scores: dict[str, float], ref: str = "vps@1") -> Path:
    """A VPS table directory scoring ``scores`` (prompt id -> vps), as estimate_vps writes it."""

    import polars as pl

    from mmr1.vas.estimate import VPS_TABLE_FILE, VPS_TABLE_SCHEMA

    n = len(scores)
    table = pl.DataFrame(
        {
            "prompt_id": list(scores),
            "pass_rate": [0.5] * n,
            "ovs": list(scores.values()),
            "tds": [0.0] * n,
            "vps": list(scores.values()),
            "n_rollouts": [4] * n,
            "mean_tokens": [8.0] * n,
            "truncated_frac": [0.0] * n,
            "checkpoint_ref": ["tiny@1"] * n,
            "dataset_ref": [ref] * n,
        }
    ).cast(VPS_TABLE_SCHEMA)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.write_parquet(out_dir / VPS_TABLE_FILE)
    return out_dir


class StandInLLM:
    """A ``vllm.LLM`` stand-in for the GRPO weight-sync tests (vLLM is GPU-only).

    ``generate`` samples short responses from plain-text token ids (seeded by
    the request's seed, so runs repeat) and ``apply_model`` hands the loaded
    weights to :attr:`events` together with every generation, in call order.
    """

    events: list[tuple[str, Any]] = []  # shared by every engine built in a test

    def __init__(self, **kwargs: Any) -> None:
        from mmr1.models.loader import load_processor

        self.kwargs = kwargs
        processor = load_processor(kwargs["model"])
        self._tokenizer = getattr(processor, "tokenizer", processor)
        self._vocab = self._tokenizer.encode(
            "the answer is A B C D red blue green circle square", add_special_tokens=False
        )

    def get_tokenizer(self) -> Any:
        return self._tokenizer

    def generate(self, inputs: list[dict[str, Any]], params: Any, use_tqdm: bool = True) -> Any:
        import torch

        StandInLLM.events.append(("generate", len(inputs)))
        outputs = []
        for i in range(len(inputs)):
            samples = []
            for j in range(params["n"]):
                rng = torch.Generator().manual_seed(params["seed"] * 1009 + i * 31 + j)
                length = int(torch.randint(1, params["max_tokens"] + 1, (1,), generator=rng))
                picks = torch.randint(0, len(self._vocab), (length,), generator=rng).tolist()
                ids = [self._vocab[k] for k in picks]
                logprobs = None
                if params["logprobs"] is not None:
                    logprobs = [{t: SimpleNamespace(logprob=-1.0)} for t in ids]
                samples.append(
                    SimpleNamespace(
                        index=j,
                        text=self._tokenizer.decode(ids),
                        token_ids=ids,
                        logprobs=logprobs,
                        finish_reason="length" if length == params["max_tokens"] else "stop",
                    )
                )
            outputs.append(SimpleNamespace(prompt_token_ids=[0], outputs=samples))
        return outputs

    def apply_model(self, func: Any) -> list[Any]:
        loaded: dict[str, Any] = {}

        def load_weights(weights: Any) -> None:
            loaded.update({name: tensor.detach().clone() for name, tensor in weights})

        func(SimpleNamespace(load_weights=load_weights))
        StandInLLM.events.append(("sync", loaded))
        return [None]

    def reset_prefix_cache(self) -> None:
        StandInLLM.events.append(("reset_prefix_cache", None))
