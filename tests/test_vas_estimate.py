"""VPS estimation over a pool with the tiny model: table contents, resume, helpers."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from rl_fixtures import write_pool

from mmr1.data.requests import backend_identity
from mmr1.data.shards import ShardManifestError
from mmr1.generation import get_backend
from mmr1.generation.hf import trim_at_eos
from mmr1.vas.estimate import (
    ROLLOUTS_FILE,
    VPS_TABLE_FILE,
    VPSEstimate,
    estimate_vps,
    read_pool_frame,
    read_vps_table,
    score_groups,
    summarise,
    text_histogram,
    trajectory_units,
    vps_table,
    write_vps_table,
)
from mmr1.vas.vps import trajectory_diversity, variance_promotion_score
from schemas.generation import CompletionSample, HFBackendConfig
from schemas.vas import VPSEstimateConfig, VPSScoreConfig


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    return read_pool_frame(write_pool(tmp_path_factory.mktemp("pool"), n_items=6))


def _config(**update) -> VPSEstimateConfig:
    return VPSEstimateConfig.model_validate(
        {
            "rollouts": 4,
            "sampling": {"temperature": 1.0, "max_new_tokens": 12},
            "shard_size": 2,
            "rewards": {"num_workers": 0},
            **update,
        }
    )


def _run(tiny_dir: Path, pool: pl.DataFrame, out: Path, config: VPSEstimateConfig):
    backend = get_backend(HFBackendConfig(model=str(tiny_dir), batch_size=4, device="cpu"))
    try:
        return estimate_vps(pool, backend, config, out, dataset_ref="pool@1", checkpoint_ref="t@1")
    finally:
        backend.close()


def test_estimate_scores_every_prompt_from_its_rollouts(tiny_dir, pool, tmp_path) -> None:
    config = _config()
    result = _run(tiny_dir, pool, tmp_path / "work", config)
    table, rollouts = result.table, result.rollouts
    assert table["prompt_id"].to_list() == pool["row_id"].to_list()
    assert table["n_rollouts"].to_list() == [4] * pool.height
    assert rollouts.height == 4 * pool.height
    assert set(table["checkpoint_ref"]) == {"t@1"} and set(table["dataset_ref"]) == {"pool@1"}
    # Each prompt's row is the VPS of its own rollouts (recomputed here from the audit rows).
    for prompt_id, group in rollouts.group_by("prompt_id", maintain_order=True):
        accuracies = group["accuracy"].to_list()
        expected_p = sum(accuracies) / 4
        row = table.filter(pl.col("prompt_id") == prompt_id[0]).row(0, named=True)
        assert row["pass_rate"] == pytest.approx(expected_p)
        assert row["ovs"] == pytest.approx(4 * expected_p * (1 - expected_p))
        assert row["vps"] == pytest.approx(0.8 * row["ovs"] + 0.2 * row["tds"])
        assert 0.0 <= row["tds"] <= 1.0
    stats = result.stats
    assert stats["prompts"] == pool.height
    assert stats["rollouts_generated"] == 4 * pool.height
    assert stats["rollouts_per_s"] > 0


def test_interrupted_estimate_resumes_to_the_same_table(tiny_dir, pool, tmp_path) -> None:
    config = _config()
    first = _run(tiny_dir, pool, tmp_path / "a", config)
    # Simulate a kill after the first shard: drop the later shards and rerun.
    for shard in sorted((tmp_path / "a").glob("shard-*.parquet"))[1:]:
        shard.unlink()
    resumed = _run(tiny_dir, pool, tmp_path / "a", config)
    assert resumed.stats["rollouts_generated"] == 4 * (pool.height - 2)
    assert resumed.table.equals(first.table)
    fresh = _run(tiny_dir, pool, tmp_path / "b", config)
    assert fresh.table.equals(first.table)  # no timestamp: same content, same catalog version


def test_a_moved_checkpoint_with_the_same_hash_reuses_the_shards(tiny_dir, pool, tmp_path) -> None:
    """The checkpoint's content hash identifies the model, not the directory it lies in."""
    moved = tmp_path / "moved-home" / "tiny"
    shutil.copytree(tiny_dir, moved)
    config = _config()

    def run(model_dir: Path, checkpoint_hash: str) -> VPSEstimate:
        backend = get_backend(HFBackendConfig(model=str(model_dir), batch_size=4, device="cpu"))
        try:
            return estimate_vps(
                pool,
                backend,
                config,
                tmp_path / "work",
                dataset_ref="pool@1",
                checkpoint_ref="t@1",
                checkpoint_hash=checkpoint_hash,
            )
        finally:
            backend.close()

    first = run(tiny_dir, "hash-a")
    again = run(moved, "hash-a")
    assert again.stats["rollouts_generated"] == 0
    assert again.table.equals(first.table)
    with pytest.raises(ShardManifestError):  # other weights: the shards are not theirs
        run(moved, "hash-b")


def test_backend_identity_names_the_model_by_hash_when_given() -> None:
    class Backend:
        name = "hf"
        config = HFBackendConfig(model="/somewhere/tiny", batch_size=4)

    assert backend_identity(Backend())["model"] == "/somewhere/tiny"
    identity = backend_identity(Backend(), "abc123")
    assert identity["model"] == "abc123" and identity["batch_size"] == 4


def test_words_unit_and_missing_token_ids() -> None:
    sample = CompletionSample(text="a b c", token_ids=[])
    assert trajectory_units(sample, "words", "p") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="tds_unit='words'"):
        trajectory_units(sample, "tokens", "p")
    assert trajectory_units(CompletionSample(text="", token_ids=[]), "tokens", "p") == []


def test_score_groups_matches_variance_promotion_score() -> None:
    config = VPSScoreConfig(alpha=0.5, beta=0.5, ovs_scale=1.0, tds_method="distinct")
    accs = [[1, 0, 1, 0], [1, 1, 1, 1]]
    trajs = [[[1, 2], [3, 4], [1, 2], [5]], [[1], [1], [1], [1]]]
    got = score_groups(accs, trajs, config)
    for (p, ovs, tds, vps), a, t in zip(got, accs, trajs, strict=True):
        ref = variance_promotion_score(a, t, 0.5, 0.5, 1.0, "distinct")
        assert (p, ovs, tds, vps) == (ref.pass_rate, ref.ovs, ref.tds, ref.vps)
    assert got[0][1] == pytest.approx(0.25) and got[1][1] == 0.0


# Token ids 0..2 are reserved for pad / EOS below; content uses 3 and up.
_EOS = 2
_GROUPS = [
    [[5, 6, 7, 8, 9, 10, 2], [5, 6, 2], [11, 2], [5, 6, 7, 12, 2]],
    # the last rollout hit max_new_tokens: no EOS, the full width, never padded
    [[3, 4, 2], [3, 4, 2], [7, 8, 9, 2], [7, 8, 9, 9, 9, 9, 9, 9]],
]
_ACCURACIES = [[1, 0, 1, 0], [1, 1, 0, 1]]


@pytest.mark.parametrize(
    ("pad", "eos_ids"),
    [(0, {_EOS}), (_EOS, {_EOS}), (1, {_EOS, 1})],
    ids=["pad-distinct", "pad-is-eos", "pad-is-second-eos"],
)
@pytest.mark.parametrize("method", ["self_bleu", "distinct", "edit"])
def test_padding_does_not_change_tds(pad: int, eos_ids: set[int], method: str) -> None:
    """Rows right-padded by batched generation score exactly like the unpadded rollouts.

    The path is the estimator's: ``generate`` rows -> ``trim_at_eos`` (the hf backend)
    -> ``CompletionSample.token_ids`` -> ``trajectory_units`` -> ``score_groups``.
    (Qwen pads with <|endoftext|>, which is also one of its EOS ids.)
    """
    width = max(len(t) for group in _GROUPS for t in group)
    padded = [[t + [pad] * (width - len(t)) for t in group] for group in _GROUPS]
    trajectories = []
    for k, group in enumerate(padded):
        units = []
        for row in group:
            ids, _ = trim_at_eos(row, eos_ids)
            sample = CompletionSample(text="answer", token_ids=ids)
            units.append(trajectory_units(sample, "tokens", f"p{k}"))
        trajectories.append(units)
    assert trajectories == _GROUPS
    config = VPSScoreConfig(tds_method=method)
    assert score_groups(_ACCURACIES, trajectories, config) == score_groups(
        _ACCURACIES, _GROUPS, config
    )
    # Control: TDS on the raw padded ids (the released code's defect) is different.
    for raw, clean in zip(padded, _GROUPS, strict=True):
        assert trajectory_diversity(raw, method) != pytest.approx(
            trajectory_diversity(clean, method), abs=1e-3
        )
    if method == "self_bleu":  # shared pad n-grams make short answers look alike
        assert trajectory_diversity(padded[0], method) < trajectory_diversity(_GROUPS[0], method)


def test_table_round_trip_and_summary(tmp_path) -> None:
    rollouts = pl.DataFrame(
        {
            "prompt_id": ["a", "a", "b", "b"],
            "n_tokens": [3, 5, 4, 4],
            "finish_reason": ["stop", "length", "stop", "stop"],
            "pass_rate": [0.5, 0.5, 1.0, 1.0],
            "ovs": [1.0, 1.0, 0.0, 0.0],
            "tds": [0.5, 0.5, 0.0, 0.0],
            "vps": [0.9, 0.9, 0.0, 0.0],
        }
    )
    table = vps_table(rollouts, "d@1", "c@2")
    assert table["mean_tokens"].to_list() == [4.0, 4.0]
    assert table["truncated_frac"].to_list() == [0.5, 0.0]
    stats = summarise(table)
    assert stats["frac_p1"] == 0.5 and stats["frac_zero_variance"] == 0.5
    assert stats["vps_mean"] == pytest.approx(0.45)

    from mmr1.vas.estimate import VPSEstimate

    write_vps_table(VPSEstimate(table=table, rollouts=rollouts), tmp_path)
    assert (tmp_path / ROLLOUTS_FILE).is_file()
    assert read_vps_table(tmp_path).equals(table)
    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="lacks columns"):
        read_vps_table(tmp_path / "bad.parquet")
    assert VPS_TABLE_FILE == "vps.parquet"


def test_text_histogram_counts_every_value() -> None:
    text = text_histogram([0.0, 0.05, 0.5, 1.0, 1.0], bins=4, width=8)
    lines = text.splitlines()
    assert len(lines) == 4
    assert [int(line.split()[-1]) for line in lines] == [2, 0, 1, 2]
    assert lines[-1].startswith("[0.75, 1.00]")
