"""max_prompt_length: exact prompt lengths (image tokens included), dropped and counted
prompts, and a GRPO run that only ever samples kept prompts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from rl_fixtures import write_pool, write_vps_file

from mmr1.data.requests import build_requests
from mmr1.models.loader import Policy, load_policy
from mmr1.rl.batch import encode_prompt
from mmr1.rl.grpo import GRPOTrainer
from mmr1.rl.pool import DROPPED_FILE, PROMPT_TOO_LONG, prompt_token_counts, select_pool
from mmr1.vas.estimate import read_pool_frame
from schemas.grpo import GRPOConfig


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pool(tmp_path_factory.mktemp("pool"), n_items=12)


@pytest.fixture(scope="module")
def policy(tiny_dir: Path) -> Policy:
    return load_policy(tiny_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def lengths(policy: Policy, pool_dir: Path) -> dict[str, int]:
    """Reference lengths: the prompts fully encoded, pixels and all."""
    requests = build_requests(read_pool_frame(pool_dir))
    return {r.request_id: int(encode_prompt(policy, r).input_ids.numel()) for r in requests}


def test_prompt_token_counts_equal_the_encoded_prompts(
    policy: Policy, pool_dir: Path, lengths: dict[str, int]
) -> None:
    pool = read_pool_frame(pool_dir)
    counts = prompt_token_counts(policy, pool, batch_size=5)  # several batches
    assert dict(zip(pool["row_id"].to_list(), counts, strict=True)) == lengths
    image_pads = [
        int((encode_prompt(policy, r).mm_token_type_ids == 1).sum())
        for r in build_requests(pool.head(2))
    ]
    assert all(n > 1 for n in image_pads)  # images really are expanded in the count


def test_select_pool_drops_and_counts_the_long_prompts(
    policy: Policy, pool_dir: Path, lengths: dict[str, int]
) -> None:
    pool = read_pool_frame(pool_dir)
    limit = sorted(lengths.values())[len(lengths) // 2]
    selection = select_pool(pool, policy, limit)
    long_ids = [pid for pid in pool["row_id"].to_list() if lengths[pid] > limit]
    assert long_ids and len(long_ids) < pool.height
    assert selection.dropped["row_id"].to_list() == long_ids
    assert selection.dropped["reason"].unique().to_list() == [PROMPT_TOO_LONG]
    assert selection.dropped["prompt_tokens"].to_list() == [lengths[p] for p in long_ids]
    assert selection.counts() == {PROMPT_TOO_LONG: len(long_ids)}
    kept = [pid for pid in pool["row_id"].to_list() if pid not in long_ids]
    assert selection.pool["row_id"].to_list() == kept  # original order
    assert selection.pool.height + selection.dropped.height == pool.height
    unlimited = select_pool(pool, policy, None)
    assert unlimited.pool.height == pool.height and unlimited.dropped.is_empty()


def test_grpo_samples_only_kept_prompts_and_reports_the_drops(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path, lengths: dict[str, int]
) -> None:
    pool = read_pool_frame(pool_dir)
    limit = sorted(lengths.values())[len(lengths) // 2]
    long_ids = {pid for pid, n in lengths.items() if n > limit}
    ids = pool["row_id"].to_list()
    # A VPS table estimated on the whole pool: the dropped prompts' scores are ignored.
    vps_dir = write_vps_file(tmp_path / "vps", {pid: 0.1 + 0.05 * i for i, pid in enumerate(ids)})
    config = GRPOConfig.model_validate(
        {
            "steps": 1,
            "prompts_per_step": 2,
            "group_size": 2,
            "micro_batch_size": 4,
            "rollout_batch_size": 2,
            "sampling": {"temperature": 1.0, "max_new_tokens": 4},
            "max_prompt_length": limit,
            "vps_update_every": None,
            "rewards": {"num_workers": 0},
            "reward_function": "rl_fixtures:length_reward",
        }
    )
    trainer = GRPOTrainer(config, tiny_dir, pool_dir, tmp_path / "run", vps_table=("v@1", vps_dir))
    try:
        trainer.setup(resume=False)
        kept = [pid for pid in ids if pid not in long_ids]
        assert trainer.pool["row_id"].to_list() == kept
        assert trainer.sampler.num_prompts == len(kept)
        assert trainer.prompt_index == {pid: i for i, pid in enumerate(kept)}
        scores = trainer.sampler.scores  # lined up with the kept prompts
        for pid, index in trainer.prompt_index.items():
            assert float(scores[index]) == pytest.approx(0.1 + 0.05 * ids.index(pid))
        sampled: list[int] = []
        next_batch = trainer.sampler.next_batch

        def spy() -> list[int]:
            batch = next_batch()
            sampled.extend(batch)
            return batch

        trainer.sampler.next_batch = spy  # type: ignore[method-assign]
        result = trainer.train()
    finally:
        trainer.close()
    assert sampled and all(0 <= i < len(kept) for i in sampled)
    assert result.pool_prompts == len(kept)
    assert result.dropped_prompts == {PROMPT_TOO_LONG: len(long_ids)}
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["dropped_prompts"] == {PROMPT_TOO_LONG: len(long_ids)}
    dropped = pl.read_parquet(tmp_path / "run" / DROPPED_FILE)
    assert set(dropped["row_id"].to_list()) == long_ids
    assert all(n > limit for n in dropped["prompt_tokens"].to_list())


def test_an_unknown_prompt_in_a_vps_table_still_raises(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path
) -> None:
    vps_dir = write_vps_file(tmp_path / "vps", {"not-in-the-pool": 0.5})
    config = GRPOConfig.model_validate(
        {"prompts_per_step": 2, "group_size": 2, "max_prompt_length": 10_000}
    )
    trainer = GRPOTrainer(config, tiny_dir, pool_dir, tmp_path / "run", vps_table=("v@1", vps_dir))
    with pytest.raises(ValueError, match="not in the pool"):
        trainer.setup(resume=False)
    trainer.close()


def test_a_pool_with_every_prompt_too_long_is_refused(
    tiny_dir: Path, pool_dir: Path, tmp_path: Path
) -> None:
    config = GRPOConfig.model_validate(
        {"prompts_per_step": 2, "group_size": 2, "max_prompt_length": 1}
    )
    trainer = GRPOTrainer(config, tiny_dir, pool_dir, tmp_path / "run")
    with pytest.raises(ValueError, match="every prompt of .* is longer than max_prompt_length"):
        trainer.setup(resume=False)
    trainer.close()
