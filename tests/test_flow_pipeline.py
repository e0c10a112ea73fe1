"""The ``mmr1-pipeline`` flow end to end through a real (ephemeral) Prefect API.

One module-scoped sequence on the demo preset shrunk to seconds:

1. a run whose GRPO stage fails (injected through its reward function);
2. a rerun: the finished stages are reused, GRPO and evaluation run;
3. a third run: every stage is reused, nothing new is written;
4. a run with SFT pinned and SFT curation skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mmr1.catalog import Catalog
from mmr1.tracking import child_runs, find_runs
from mmr1.tracking.runs import TAG_PREFECT_FLOW_RUN, TAG_WRITES
from schemas.pipeline import PipelineConfig
from schemas.presets import ConfigError, load_config

SMALL = [
    "curate_rl.sources=[{kind: synthetic, name: rl, synthetic: {n_items: 12, seed: 0}}]",
    "curate_sft.sources=[{kind: synthetic, name: sft, synthetic: {n_items: 12, seed: 1}}]",
    "curate_rl.difficulty.rollouts=2",
    "curate_rl.difficulty.sampling.max_new_tokens=8",
    "curate_sft.difficulty.sampling.max_new_tokens=8",
    "benchmark_items=6",
    "sft.train.max_steps=3",
    "sft.train.micro_batch_size=4",
    "sft.train.eval_every=3",
    "sft.train.eval_max_items=2",
    "sft.train.eval_max_new_tokens=8",
    "vps.rollouts=2",
    "vps.sampling.max_new_tokens=8",
    "vps.rewards.num_workers=0",
    "grpo.train.steps=2",
    "grpo.train.prompts_per_step=2",
    "grpo.train.group_size=2",
    "grpo.train.rollout_batch_size=2",
    "grpo.train.sampling.max_new_tokens=8",
    "grpo.train.vps_update_every=null",
    "grpo.train.save_every=2",
    "grpo.train.rewards.num_workers=0",
    "grpo.train.reward_function=rl_fixtures:flaky_length_reward",
    "evaluate.sampling.max_new_tokens=8",
]
STAGES = ["curate_rl", "curate_sft", "sft", "estimate_vps", "grpo_vas", "grpo_uniform", "evaluate"]


def _is_partial(name: str) -> bool:
    """Names of unfinished writes: mmr1/storage.py's ``.staging-<uuid>`` directories,
    mmr1/trainer/checkpoint.py's ``.tmp-step-*`` and the ``.<file>.<uuid>.tmp`` files."""
    return name.startswith((".staging-", ".tmp-")) or name.endswith(".tmp")


@pytest.fixture(scope="module")
def runs(prefect_harness, tmp_path_factory: pytest.TempPathFactory):
    from flows.pipeline import mmr1_pipeline

    root = tmp_path_factory.mktemp("pipeline-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMR1_HOME", str(root))
        from schemas.home import HomeConfig

        home = HomeConfig()
        config = load_config(PipelineConfig, "demo", SMALL)
        mp.setenv("MMR1_TEST_FAIL_REWARD", "1")
        with pytest.raises(Exception, match="injected reward failure"):
            mmr1_pipeline(config)
        mp.delenv("MMR1_TEST_FAIL_REWARD")
        catalog = Catalog(home.catalog)
        after_failure = {
            "statuses": {r.stage: r.status for r in catalog.stage_runs()},
            "rl_checkpoints": [c.ref for c in catalog.list_checkpoints(stage="rl")],
            "grpo_checkpoints": [c.ref for c in catalog.list_checkpoints(name="tiny-grpo")],
            "checkpoints": {c.ref: c.uri for c in catalog.list_checkpoints()},
            "staging": [
                str(path)
                for root in (home.checkpoints, home.datasets)
                for path in root.rglob(".*")
                if _is_partial(path.name)
            ],
        }
        second = mmr1_pipeline(config)
        # A later evaluation of the SFT model elsewhere (`mmr1 eval`, other settings):
        # the reused evaluation must still report its own run's numbers.
        [own] = catalog.eval_results(checkpoint_ref=second["sft_model"], benchmark="synthetic")
        catalog.record_eval_result(
            checkpoint_ref=own.checkpoint_ref,
            benchmark=own.benchmark,
            split=own.split,
            scorer=own.scorer,
            n_items=own.n_items,
            metrics={**own.metrics, "accuracy": 1.0 - own.metrics["accuracy"]},
        )
        third = mmr1_pipeline(config)
        pinned_config = config.model_copy(
            update={"pin": {"sft": second["sft_model"]}, "skip": ["curate_sft", "evaluate"]}
        )
        pinned = mmr1_pipeline(pinned_config)
    return home, after_failure, second, third, pinned


def _statuses(catalog: Catalog, flow_run_id: str) -> dict[str, str]:
    return {r.stage: r.status for r in catalog.stage_runs() if r.prefect_flow_run_id == flow_run_id}


def test_failure_is_recorded_and_nothing_half_written(runs) -> None:
    home, after_failure, *_ = runs
    assert after_failure["statuses"] == {
        "curate_rl": "completed",
        "curate_sft": "completed",
        "sft": "completed",
        "estimate_vps": "completed",
        "grpo_vas": "failed",
    }
    catalog = Catalog(home.catalog)
    failed = [r for r in catalog.stage_runs(stage="grpo_vas") if r.status == "failed"]
    assert "injected reward failure" in (failed[0].error or "")
    # Nothing of the failed GRPO stage was registered, and no staging copy was left behind.
    assert after_failure["rl_checkpoints"] == [] and after_failure["grpo_checkpoints"] == []
    assert after_failure["staging"] == []
    # What was registered before the failure is complete on disk.
    assert set(after_failure["checkpoints"]) == {"tiny-qwen2.5-vl@1", "tiny-sft@1"}
    for uri in after_failure["checkpoints"].values():
        assert (Path(uri) / "config.json").is_file()


def test_rerun_resumes_at_the_failed_stage_then_reuses_everything(runs) -> None:
    home, _, second, third, _ = runs
    catalog = Catalog(home.catalog)
    pipeline_runs = {r.info.run_id: r for r in find_runs(home, "mmr1-pipeline")}
    flow_id = pipeline_runs[second["mlflow_run_id"]].data.tags[TAG_PREFECT_FLOW_RUN]
    assert _statuses(catalog, flow_id) == {
        "curate_rl": "reused",
        "curate_sft": "reused",
        "sft": "reused",
        "estimate_vps": "reused",
        "grpo_vas": "completed",
        "grpo_uniform": "completed",
        "evaluate": "completed",
    }
    flow_id = pipeline_runs[third["mlflow_run_id"]].data.tags[TAG_PREFECT_FLOW_RUN]
    assert _statuses(catalog, flow_id) == dict.fromkeys(STAGES, "reused")
    keys = ("base_model", "benchmark", "rl_pool", "sft_data", "sft_model", "vps", "rl_model")
    assert {k: second[k] for k in keys} == {k: third[k] for k in keys}
    # A reused evaluation reports the accuracies the reused run computed.
    assert len(second["results"]) == 4  # base, SFT, GRPO with VAS and its uniform ablation
    assert all(set(scores) == {"synthetic"} for scores in second["results"].values())
    assert third["results"] == second["results"] and third["evaluation"] == second["evaluation"]
    assert (
        pipeline_runs[third["mlflow_run_id"]]
        .data.tags["mmr1.stage.grpo_vas"]
        .startswith("reused checkpoint:tiny-grpo@")
    )


def test_outputs_and_lineage(runs) -> None:
    home, _, refs, _, _ = runs
    catalog = Catalog(home.catalog)
    base = catalog.get_checkpoint(refs["base_model"].removeprefix("checkpoint:"))
    assert base.stage == "base" and Path(base.uri).is_relative_to(home.checkpoints)
    rl = catalog.get_dataset(refs["rl_pool"].removeprefix("dataset:"))
    assert rl.row_count + sum(catalog.quarantine_summary(rl.ref).values()) == 12
    sft = catalog.get_dataset(refs["sft_data"].removeprefix("dataset:"))
    assert sft.row_count + sum(catalog.quarantine_summary(sft.ref).values()) == 12
    sft_model = catalog.lineage(refs["sft_model"].removeprefix("checkpoint:"), kind="checkpoint")
    assert sorted(p.ref for p in sft_model.parents) == ["synthetic-sft@1", "tiny-qwen2.5-vl@1"]
    vps = catalog.get_vps_table(refs["vps"].removeprefix("vps:"))
    assert (vps.dataset_ref, vps.checkpoint_ref) == (rl.ref, "tiny-sft@1")
    rl_model = catalog.lineage(refs["rl_model"].removeprefix("checkpoint:"), kind="checkpoint")
    assert {p.ref for p in rl_model.parents} == {"tiny-sft@1", rl.ref, vps.ref}
    # The evaluation covered base, SFT and RL models on the synthetic benchmark.
    evaluated = {r.checkpoint_ref for r in catalog.eval_results(benchmark="synthetic")}
    uniform = catalog.lineage(
        refs["rl_uniform_model"].removeprefix("checkpoint:"), kind="checkpoint"
    )
    assert {p.ref for p in uniform.parents} == {"tiny-sft@1", rl.ref, vps.ref}
    assert uniform.ref.startswith("tiny-grpo-uniform@")
    assert evaluated == {"tiny-qwen2.5-vl@1", "tiny-sft@1", rl_model.ref, uniform.ref}
    assert set(refs["results"]) == evaluated
    # The evaluation stage wrote a catalog entry too, with the models as parents.
    record = catalog.lineage(refs["evaluation"].removeprefix("dataset:"))
    assert {p.ref for p in record.parents} == evaluated | {"synthetic-bench@1"}


def test_pipeline_run_is_tagged_in_mlflow(runs) -> None:
    home, _, refs, _, _ = runs
    run = next(
        r for r in find_runs(home, "mmr1-pipeline") if r.info.run_id == refs["mlflow_run_id"]
    )
    assert run.info.status == "FINISHED"
    writes = run.data.tags[TAG_WRITES].split(",")
    assert refs["rl_model"] in writes and refs["vps"] in writes
    assert run.data.params["benchmark_items"] == "6"
    # The stages that ran are the pipeline run's children in its experiment (where the
    # MLflow UI shows them); the reused ones ran under the first attempt's run.
    children = child_runs(home, run.info.run_id)
    # (the uniform ablation is the grpo_vas flow too)
    assert [c.data.tags["mmr1.flow"] for c in children] == ["grpo_vas", "grpo_vas", "evaluate"]
    assert {c.info.experiment_id for c in children} == {run.info.experiment_id}
    assert all(c.info.status == "FINISHED" for c in children)
    [grpo] = [r for r in find_runs(home, "grpo_vas") if r.info.run_id == children[0].info.run_id]
    assert grpo.data.tags["mlflow.parentRunId"] == run.info.run_id
    # Each stage's own experiment links to it and is a model-training experiment.
    client = MlflowClient(home.tracking_uri)
    own = client.get_experiment_by_name("mmr1/grpo_vas")
    assert own.tags["mlflow.experimentKind"] == "custom_model_development"
    links = client.search_runs(
        [own.experiment_id], filter_string=f"tags.`mmr1.nested_run_id` = '{grpo.info.run_id}'"
    )
    assert len(links) == 1 and links[0].info.status == "FINISHED"
    # estimate_vps logs the RL pool it scored as a dataset input.
    [vps] = find_runs(home, "estimate_vps")[-1:]
    assert [d.dataset.name for d in vps.inputs.dataset_inputs] == [refs["rl_pool"].split(":")[1]]


def test_the_pipeline_run_log_tells_what_happened(runs) -> None:
    # What `prefect deployment run --watch` (a CI job) shows: the pipeline's own log,
    # with its stages' progress and the leaderboard mirrored into it.
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    home, _, second, _, _ = runs
    APILogHandler().flush()
    pipeline_runs = {r.info.run_id: r for r in find_runs(home, "mmr1-pipeline")}
    flow_run_id = UUID(pipeline_runs[second["mlflow_run_id"]].data.tags[TAG_PREFECT_FLOW_RUN])
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    messages = [log.message for log in logs if log.flow_run_id == flow_run_id]
    assert "stage grpo_vas: started" in messages
    assert any(m.startswith("stage grpo_vas: finished in") for m in messages)
    assert "grpo_vas: step 2/2 (100%)" in messages
    assert any(m.startswith("stage curate_rl: reusing") for m in messages)
    [board] = [m for m in messages if m.startswith("evaluate: leaderboard")]
    assert "tiny-grpo" in board


def test_pinned_and_skipped_stages(runs) -> None:
    home, _, second, _, pinned = runs
    assert pinned["sft_model"] == second["sft_model"]
    assert pinned["sft_data"] is None and pinned["evaluation"] is None
    assert pinned["results"] == {}
    catalog = Catalog(home.catalog)
    pipeline_runs = {r.info.run_id: r for r in find_runs(home, "mmr1-pipeline")}
    tags = pipeline_runs[pinned["mlflow_run_id"]].data.tags
    assert tags["mmr1.stage.sft"] == f"pinned {second['sft_model']}"
    assert tags["mmr1.stage.curate_sft"] == "skipped -"
    flow_id = tags[TAG_PREFECT_FLOW_RUN]
    assert _statuses(catalog, flow_id) == {
        "curate_rl": "reused",
        "estimate_vps": "reused",
        "grpo_vas": "reused",
        "grpo_uniform": "reused",
    }


def test_uniform_ablation_differs_from_the_vas_run_only_in_sampling() -> None:
    from flows.pipeline import _VAS_ONLY, _uniform_ablation

    grpo = load_config(PipelineConfig, "demo").grpo.model_copy(
        update={"dataset": "synthetic-rl@1", "init_model": "tiny-sft@1", "vps_table": "t@1"}
    )
    ablation = _uniform_ablation(grpo, "tiny-grpo-uniform")
    assert (grpo.train.sampling_mode, ablation.train.sampling_mode) == ("vas", "uniform")
    assert grpo.train.vps_update_every is not None and ablation.train.vps_update_every is None
    assert ablation.output_name == "tiny-grpo-uniform" and grpo.output_name == "tiny-grpo"
    # Same init, pool, VPS table, steps, batch, lr, KL, seed: the paper's equal budget.
    assert ablation.model_dump(exclude={"output_name", "train"}) == grpo.model_dump(
        exclude={"output_name", "train"}
    )
    changed = {"sampling_mode", "vps_update_every", *_VAS_ONLY}
    assert ablation.train.model_dump(exclude=changed) == grpo.train.model_dump(exclude=changed)


def test_uniform_ablation_ignores_the_vas_only_settings() -> None:
    # Changing lambda or the refresh rollouts for VAS must not rerun an identical uniform run.
    from flows.pipeline import _uniform_ablation

    demo = load_config(PipelineConfig, "demo")
    tuned = load_config(
        PipelineConfig,
        "demo",
        ["grpo.train.mix_ratio=0.75", "grpo.train.vps_rollouts=16", "grpo.train.vps_floor=0.1"],
    )
    assert tuned.grpo.train.mix_ratio == 0.75
    first, second = (_uniform_ablation(c.grpo, "u") for c in (demo, tuned))
    assert first.model_dump() == second.model_dump()
    assert first.train.mix_ratio == 0.5 and first.train.sampling_mode == "uniform"


def test_skipping_a_needed_stage_names_the_fix() -> None:
    # Decided from the stage table when the config is read, before anything runs.
    with pytest.raises(ConfigError, match=r"'estimate_vps' needs the output of 'sft'.*pin: \{sft"):
        load_config(PipelineConfig, "demo", ["skip=[sft]"])
    # Pinned instead, or skipped with everything after it that needs it: valid.
    load_config(PipelineConfig, "demo", ["pin={sft: tiny-sft@1}"])
    later = "skip=[sft, estimate_vps, grpo_vas, grpo_uniform]"
    assert load_config(PipelineConfig, "demo", [later]).skipped == {
        "sft",
        "estimate_vps",
        "grpo_vas",
        "grpo_uniform",
    }


def test_a_stage_input_set_in_the_pipeline_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match=r"grpo.dataset is 'x', but the pipeline sets it"):
        load_config(PipelineConfig, "demo", ["grpo.dataset=x"])
    with pytest.raises(ConfigError, match=r"evaluate.checkpoints is \['m'\]"):
        load_config(PipelineConfig, "demo", ["evaluate.checkpoints=[m]"])


def test_the_stage_table_and_the_flows_name_the_same_stages() -> None:
    from flows.pipeline import STAGE_FLOWS
    from schemas.pipeline import STAGE_IO, STAGES, WRITER

    assert list(STAGE_IO) == list(STAGE_FLOWS) == list(STAGES)
    # Each stage reads only what an earlier stage (or a source) wrote.
    written = {"base_model", "benchmark"}
    for io in STAGE_IO.values():
        assert set(io.reads) | set(io.optional) <= written, io
        written.add(io.writes)
    assert len(WRITER) == len(STAGE_IO)


def test_teacher_steps_retry_outages_but_not_bad_input(
    prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The curation stages' model calls (estimate-difficulty, generate-cot) retry at
    # task level on outages; bad input fails at once. Driven through Prefect's engine.
    import polars as pl
    from prefect import flow

    import tasks.curation as curation
    from mmr1.data.frame import StepResult
    from mmr1.generation.openai_compat import ChatCompletionError
    from schemas.curation import CoTConfig

    assert curation.estimate_difficulty.retry_condition_fn is curation.retry_unless_bad_input
    assert curation.estimate_difficulty.retries == curation.generate_cot_step.retries == 3
    kept = tmp_path / "kept.parquet"
    pl.DataFrame({"row_id": ["a", "b"]}).write_parquet(kept)
    previous = curation.StepOutput(
        stage="prev", kept=str(kept), quarantined="", n_in=2, n_kept=2, n_quarantined=0, reasons={}
    )
    errors: list[BaseException] = []
    calls: list[int] = []

    def teacher(frame, config, shard_dir, seed, **kwargs):
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return StepResult(frame)

    monkeypatch.setattr(curation, "generate_cot", teacher)
    step = curation.generate_cot_step.with_options(retry_delay_seconds=0, retry_jitter_factor=None)

    @flow
    def cot_step() -> curation.StepOutput:
        return step(previous, CoTConfig(), [], str(tmp_path / "work"), 0)

    def outage(status: int | None) -> ChatCompletionError:
        return ChatCompletionError("teacher down", url="http://t", status=status, body_snippet="")

    errors[:] = [outage(503), outage(None)]
    assert cot_step().n_kept == 2
    assert len(calls) == 3
    for bad in (ValueError("row 'a': no question"), outage(401)):
        calls.clear()
        errors[:] = [bad]
        with pytest.raises(type(bad)):
            cot_step()
        assert len(calls) == 1, bad
