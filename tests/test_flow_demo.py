"""The demo flow end to end through a real (ephemeral) Prefect API.

Asserts the artefacts a run leaves: catalog entries with lineage, files on disk
under the home, and an MLflow run tagged with the Prefect flow-run id.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmr1.catalog import Catalog
from mmr1.tracking import find_runs
from mmr1.tracking.runs import TAG_PREFECT_FLOW_RUN, TAG_WRITES
from schemas.demo import DemoConfig
from schemas.presets import load_config

SMALL = [
    "curate_rl.sources=[{kind: synthetic, name: rl, synthetic: {n_items: 12, seed: 0}}]",
    "curate_sft.sources=[{kind: synthetic, name: sft, synthetic: {n_items: 12, seed: 1}}]",
    "curate_rl.difficulty.rollouts=2",
    "curate_rl.difficulty.sampling.max_new_tokens=8",
    "curate_sft.difficulty.sampling.max_new_tokens=8",
    "benchmark_items=8",
    "sft.train.max_steps=3",
    "sft.train.micro_batch_size=4",
    "sft.train.eval_every=3",
    "sft.train.eval_max_items=2",
    "sft.train.eval_max_new_tokens=8",
    "probe.n_prompts=4",
    "probe.sampling.n=2",
    "probe.sampling.max_new_tokens=8",
]


@pytest.fixture(scope="module")
def demo_run(prefect_harness, tmp_path_factory: pytest.TempPathFactory):
    from flows.demo import demo

    root = tmp_path_factory.mktemp("demo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMR1_HOME", str(root))
        from schemas.home import HomeConfig

        home = HomeConfig()
        config = load_config(DemoConfig, "demo", SMALL)
        first = demo(config)
        second = demo(config)
    return home, first, second


def test_demo_registers_model_and_datasets(demo_run) -> None:
    home, refs, _ = demo_run
    catalog = Catalog(home.catalog)
    base = catalog.get_checkpoint(refs["base_model"])
    assert base.stage == "base"
    assert (Path(base.uri) / "config.json").is_file()
    assert (Path(base.uri) / "model.safetensors").is_file()
    assert Path(base.uri).is_relative_to(home.checkpoints)
    rl = catalog.get_dataset(refs["rl_pool"])
    assert rl.kind == "rl"
    assert (Path(rl.uri) / "data.parquet").is_file()
    # Every row read is either in the pool or quarantined with a reason.
    assert rl.row_count + sum(catalog.quarantine_summary(rl.ref).values()) == 12
    bench = catalog.get_dataset(refs["benchmark"])
    assert (bench.kind, bench.row_count) == ("benchmark", 8)
    sft = catalog.get_dataset(refs["sft"])
    assert sft.kind == "sft"
    # Every teacher CoT verifies, and kept + quarantined == generated always holds.
    assert sft.row_count + sum(catalog.quarantine_summary(sft.ref).values()) == 12
    lineage = catalog.lineage(refs["sft"])
    assert sorted(p.ref for p in lineage.parents) == ["source-sft@1", "tiny-qwen2.5-vl@1"]
    sft_model = catalog.lineage(refs["sft_model"], kind="checkpoint")
    assert sorted(p.ref for p in sft_model.parents) == ["synthetic-sft@1", "tiny-qwen2.5-vl@1"]
    rl_lineage = catalog.lineage(refs["rl_pool"])
    assert sorted(p.ref for p in rl_lineage.parents) == ["source-rl@1", "tiny-qwen2.5-vl@1"]


def test_demo_is_idempotent(demo_run) -> None:
    home, first, second = demo_run
    assert {k: v for k, v in first.items() if k != "mlflow_run_id"} == {
        k: v for k, v in second.items() if k != "mlflow_run_id"
    }
    catalog = Catalog(home.catalog)
    assert sorted(e.ref for e in catalog.list_checkpoints()) == ["tiny-qwen2.5-vl@1", "tiny-sft@1"]
    assert all(e.version == 1 for e in catalog.list_datasets())


def test_demo_leaves_tagged_mlflow_runs(demo_run) -> None:
    home, first, _ = demo_run
    runs = find_runs(home, "demo")
    assert len(runs) == 2
    run = next(r for r in runs if r.info.run_id == first["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_PREFECT_FLOW_RUN]
    writes = run.data.tags[TAG_WRITES].split(",")
    assert first["base_model"] in writes and first["sft"] in writes
    assert run.data.params["benchmark_items"] == "8"
    assert 0.0 <= run.data.metrics["probe/tiny-qwen2.5-vl/accuracy"] <= 1.0
    assert {d.dataset.name for d in run.inputs.dataset_inputs} >= {"synthetic-bench@1"}
    catalog = Catalog(home.catalog)
    bench = catalog.get_dataset(first["benchmark"])
    assert bench.mlflow_run_id == first["mlflow_run_id"]
    assert bench.prefect_flow_run_id == run.data.tags[TAG_PREFECT_FLOW_RUN]
    # The curation subflows log their own runs, nested under the demo's.
    [curate] = [
        r
        for r in find_runs(home, "curate_rl")
        if r.data.tags.get("mlflow.parentRunId") == first["mlflow_run_id"]
    ]
    assert curate.data.metrics["funnel/validate/in"] == 12
    pool = catalog.get_dataset(first["rl_pool"])
    assert pool.mlflow_run_id == curate.info.run_id
