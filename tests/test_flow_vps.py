"""The ``estimate_vps`` flow: a VPS table version in the catalog, histograms in MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rl_fixtures import register_pool

from mmr1.catalog import Catalog
from mmr1.hashing import hash_directory
from mmr1.models import build_tiny_model
from mmr1.tracking import find_runs
from mmr1.vas.estimate import read_vps_table
from schemas.models import TinyVLMConfig
from schemas.vas import VPSEstimateConfig


@pytest.fixture
def vps_home(prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from schemas.home import HomeConfig

    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "home"))
    home = HomeConfig().ensure()
    catalog = Catalog(home.catalog)
    register_pool(catalog, tmp_path / "pool", name="pool", n_items=6)
    model_dir = build_tiny_model(TinyVLMConfig(), tmp_path / "m1")
    catalog.register_checkpoint(
        name="policy", stage="sft", uri=str(model_dir), content_hash=hash_directory(model_dir)
    )
    return home


def _config() -> VPSEstimateConfig:
    return VPSEstimateConfig.model_validate(
        {
            "dataset": "pool",
            "checkpoint": "policy",
            "rollouts": 4,
            "sampling": {"temperature": 1.0, "max_new_tokens": 10},
            "shard_size": 4,
            "rewards": {"num_workers": 0},
        }
    )


def test_flow_registers_a_vps_table_and_logs_histograms(vps_home, tmp_path) -> None:
    from flows.vps import estimate_vps

    ref = estimate_vps(_config())
    assert ref == "vps:pool-vps@1"
    catalog = Catalog(vps_home.catalog)
    entry = catalog.get_vps_table("pool-vps@1")
    assert (entry.dataset_ref, entry.checkpoint_ref, entry.row_count) == ("pool@1", "policy@1", 6)
    assert {p.ref for p in catalog.lineage("pool-vps@1", kind="vps").parents} == {
        "pool@1",
        "policy@1",
    }
    table = read_vps_table(Path(entry.uri))
    assert table.height == 6 and set(table["n_rollouts"]) == {4}
    assert (Path(entry.uri) / "rollouts.parquet").is_file()
    assert entry.stats["prompts"] == 6
    assert 0.0 <= entry.stats["frac_zero_variance"] <= 1.0

    (run,) = find_runs(vps_home, "estimate_vps")
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for key in ("vps/frac_zero_variance", "vps/rollouts_per_s", "vps/vps_mean", "vps/frac_p0"):
        assert key in metrics
    client = MlflowClient(vps_home.tracking_uri)
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/vps_histograms.png" in plots
    assert run.data.tags["mmr1.vps_table"] == "pool-vps@1"

    # Same inputs again: the finished shards are reused and the content is unchanged.
    assert estimate_vps(_config()) == "vps:pool-vps@1"

    # A new checkpoint version appears (as a training run would register it): a bare
    # ref follows it, which is what scheduled re-estimation relies on.
    model_dir = build_tiny_model(TinyVLMConfig(seed=1), tmp_path / "m2")
    catalog.register_checkpoint(
        name="policy", stage="rl", uri=str(model_dir), content_hash=hash_directory(model_dir)
    )
    assert estimate_vps(_config()) == "vps:pool-vps@2"
    latest = catalog.latest_vps_table("pool")
    assert latest is not None and latest.checkpoint_ref == "policy@2"


def test_cli_estimates_and_shows(vps_home, capsys) -> None:
    from cli.main import main

    args = ["--set", "dataset=pool", "--set", "checkpoint=policy", "--set", "rollouts=2"]
    args += ["--set", "sampling.max_new_tokens=6", "--set", "rewards.num_workers=0"]
    assert main(["vps", "estimate", *args]) == 0
    assert "wrote vps:pool-vps@1" in capsys.readouterr().out
    assert main(["vps", "show", "pool"]) == 0
    out = capsys.readouterr().out
    assert "VPS table pool-vps@1: checkpoint policy@1 on dataset pool@1, 6 prompts" in out
    assert "frac_zero_variance" in out and out.count("[0.90, 1.00]") == 2
    assert main(["vps", "show", "vps:pool-vps@1", "--json"]) == 0
    assert '"row_count": 6' in capsys.readouterr().out
    assert main(["vps", "show", "nope"]) == 2
