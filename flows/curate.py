"""Curation flows: ``curate_rl`` (the RL prompt pool) and ``curate_sft`` (long-CoT SFT data).

Both run ingest -> validate -> dedup -> decontaminate -> difficulty; ``curate_sft``
then writes teacher CoTs kept by rejection sampling. Every row read ends up
either in the dataset or in the catalog's quarantine with its reason.
"""

from pathlib import Path
from typing import Any

from prefect import flow

from mmr1.hashing import hash_bytes
from schemas.curation import CurateRLConfig, CurateSFTConfig
from tasks.context import flow_tracking, home, tracked_run
from tasks.curation import (
    StepOutput,
    decontaminate_rows,
    deduplicate_rows,
    difficulty_model_ref,
    estimate_difficulty,
    generate_cot_step,
    ingest_source,
    merge_sources,
    register_sources,
    validate_rows,
)
from tasks.curation_output import register_rl_pool, register_sft_dataset, report_curation
from tasks.observe import run_name
from tasks.parameters import stage_config


def _work_dir(flow_name: str, config: CurateRLConfig) -> str:
    # Keyed by the parameters, not the run: a restart with the same config resumes
    # from the shards the previous attempt left. The batch size changes no result.
    fingerprint = hash_bytes(config.model_dump_json(exclude={"batch_rows"}).encode())[:16]
    path = home().runs / flow_name / f"{config.output_name}-{fingerprint}"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _prepare(
    config: CurateRLConfig, work_dir: str, mlflow_run_id: str
) -> tuple[StepOutput, list[StepOutput], int, list[str]]:
    """The steps both flows share. Returns (last step, all steps, rows read, parents)."""
    rows = config.batch_rows
    ingested = [ingest_source(source, work_dir, rows) for source in config.sources]
    source_refs = register_sources(config.sources, ingested, mlflow_run_id)
    merged = merge_sources(ingested, work_dir, rows)
    validated = validate_rows(merged, config.validation, work_dir, rows)
    deduped = deduplicate_rows(validated, config.dedup, work_dir, rows)
    clean, benchmark_refs = decontaminate_rows(
        deduped, config.decontamination, config.validation, work_dir, rows
    )
    rated = estimate_difficulty(clean, config.difficulty, work_dir, config.seed, rows)
    steps = [*ingested, validated, deduped, clean, rated]
    n_read = sum(o.n_in for o in ingested)
    parents = source_refs + difficulty_model_ref(config.difficulty)
    tracked_run(mlflow_run_id).set_tags(
        {"mmr1.decontaminated_against": ",".join(benchmark_refs) or "-"}
    )
    return rated, steps, n_read, parents


@flow(
    name="curate_rl", log_prints=True, flow_run_name=run_name("curate_rl", "output_name", "rl-pool")
)
def curate_rl(
    config: CurateRLConfig | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Curate an RL prompt pool and register it; returns its catalog ref.

    Args:
        config: The whole RL curation config. A deployment fills it from its preset.
        preset: A preset name (schemas/presets/) or YAML path to use instead of config.
        overrides: Fields to change, merged over the preset (or config), keeping the rest:
            {"a.b": 1} or {"a": {"b": 1}}, like --set on the command line.
    """
    config = stage_config(CurateRLConfig, config, preset, overrides)
    with flow_tracking("curate_rl", config) as run:
        work_dir = _work_dir("curate_rl", config)
        final, steps, n_read, parents = _prepare(config, work_dir, run.run_id)
        ref = register_rl_pool(
            config.output_name, final, steps, n_read, parents, run.run_id, config.batch_rows
        )
        report_curation("curate_rl", ref, steps, run.run_id)
        print(f"{ref}: {final.n_kept} of {n_read} rows kept ({Path(work_dir).name})")
        return ref


@flow(
    name="curate_sft",
    log_prints=True,
    flow_run_name=run_name("curate_sft", "output_name", "sft-cot"),
)
def curate_sft(
    config: CurateSFTConfig | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Curate long-CoT SFT data (teacher + rejection sampling) and register it.

    Args:
        config: The whole SFT curation config. A deployment fills it from its preset.
        preset: A preset name (schemas/presets/) or YAML path to use instead of config.
        overrides: Fields to change, merged over the preset (or config), keeping the rest:
            {"a.b": 1} or {"a": {"b": 1}}, like --set on the command line.
    """
    config = stage_config(CurateSFTConfig, config, preset, overrides)
    with flow_tracking("curate_sft", config) as run:
        work_dir = _work_dir("curate_sft", config)
        rated, steps, n_read, parents = _prepare(config, work_dir, run.run_id)
        cot = generate_cot_step(
            rated, config.cot, config.sources, work_dir, config.seed, config.batch_rows
        )
        steps.append(cot)
        ref = register_sft_dataset(
            config.output_name, cot, steps, n_read, parents, run.run_id, config.batch_rows
        )
        report_curation("curate_sft", ref, steps, run.run_id)
        print(f"{ref}: {cot.n_kept} of {n_read} questions got a verified CoT")
        return ref
