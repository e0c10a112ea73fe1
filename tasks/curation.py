"""Curation steps as Prefect tasks.

Each task reads the previous step's ``kept.parquet``, runs one library step
(``mmr1.data`` / ``mmr1.cot``) and writes ``kept.parquet`` + ``quarantined.parquet``
into its own directory under the flow's work dir. Tasks hand each other a
:class:`StepOutput` (paths and counts), never frames.

The work dir is keyed by the config's fingerprint, so a flow restarted with
the same parameters finds the shards its difficulty and CoT steps already
wrote and skips them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from prefect import Task, task
from prefect.client.schemas.objects import TaskRun
from prefect.logging import get_run_logger
from prefect.states import State
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from mmr1.cot.generate import generate_cot
from mmr1.data.decontam import BenchmarkIndex, decontaminate
from mmr1.data.dedup import deduplicate
from mmr1.data.difficulty import bucket_and_filter, estimate_pass_rates
from mmr1.data.frame import StepResult
from mmr1.data.sources import read_source
from mmr1.data.validate import validate_frame
from mmr1.generation.openai_compat import ChatCompletionError
from mmr1.hashing import hash_file
from schemas.curation import (
    CoTConfig,
    DecontaminationConfig,
    DedupConfig,
    DifficultyConfig,
    LocalSource,
    ModelTeacher,
    SourceConfig,
    SyntheticSource,
    ValidationConfig,
)
from schemas.generation import HFBackendConfig
from tasks.context import catalog, flow_run_id
from tasks.generation import build_backend

PASS_RATES_FILE = "pass_rates.parquet"

# Model calls already back off per request (mmr1.generation); task retries outlast a
# longer outage (a restarting vLLM or teacher server, a rate-limit window). Safe
# because both steps resume from the shards they have written: a retry regenerates
# only the missing ones. 3 retries, 30/60/120 s apart (+-50% jitter).
TEACHER_RETRIES = 3
TEACHER_BACKOFF_S = 30.0


def is_bad_input(error: BaseException) -> bool:
    """An error that a retry cannot fix: bad config or data, or a request the server refused.

    ``ValueError``/``TypeError``/``LookupError`` come from configs, frames, shard
    manifests and the catalog; a chat-completions error with a 4xx status other
    than 408/429 is a refused request (bad model name, key, payload).
    """
    if isinstance(error, ChatCompletionError):
        status = error.status
        return status is not None and 400 <= status < 500 and status not in (408, 429)
    return isinstance(error, ValueError | TypeError | LookupError | ImportError)


def retry_unless_bad_input(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect ``retry_condition_fn``: retry outages and crashes, not :func:`is_bad_input`."""
    error = state.data  # the engine wraps the raised exception as Failed(data=exc)
    return not (isinstance(error, BaseException) and is_bad_input(error))


teacher_retries: dict[str, Any] = {
    "retries": TEACHER_RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=TEACHER_BACKOFF_S),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_unless_bad_input,
}


class StepOutput(BaseModel):
    """Where a step left its rows, and how many it kept and quarantined."""

    stage: str
    kept: str
    quarantined: str
    n_in: int
    n_kept: int
    n_quarantined: int
    reasons: dict[str, int]


def _save(stage: str, result: StepResult, directory: Path, n_in: int) -> StepOutput:
    if result.kept.height + result.quarantined.height != n_in:
        raise RuntimeError(
            f"curation step {stage!r} lost rows: {n_in} in, {result.kept.height} kept + "
            f"{result.quarantined.height} quarantined"
        )
    kept, quarantined = result.save(directory)
    output = StepOutput(
        stage=stage,
        kept=str(kept),
        quarantined=str(quarantined),
        n_in=n_in,
        n_kept=result.kept.height,
        n_quarantined=result.quarantined.height,
        reasons=result.reasons(),
    )
    get_run_logger().info(
        "%s: %d in -> %d kept, %d quarantined %s",
        stage,
        n_in,
        output.n_kept,
        output.n_quarantined,
        output.reasons or "",
    )
    return output


def _run_step(
    stage: str, previous: StepOutput, work_dir: str, step: Callable[[pl.DataFrame], StepResult]
) -> StepOutput:
    frame = pl.read_parquet(previous.kept)
    return _save(stage, step(frame), Path(work_dir) / stage, frame.height)


@task(name="ingest-source", retries=2, retry_delay_seconds=10)
def ingest_source(source: SourceConfig, work_dir: str) -> StepOutput:
    """Read one source (hub id, local files or the synthetic generator) into the raw schema."""
    result = read_source(source)
    n_read = result.kept.height + result.quarantined.height
    return _save(f"ingest-{source.name}", result, Path(work_dir) / f"ingest-{source.name}", n_read)


@task(name="merge-sources")
def merge_sources(outputs: Sequence[StepOutput], work_dir: str) -> StepOutput:
    """Concatenate ingested sources in config order (row ids are source-qualified)."""
    frames = [pl.read_parquet(o.kept) for o in outputs]
    merged = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    duplicated = merged.filter(pl.col("row_id").is_duplicated())
    if duplicated.height:
        names = sorted(set(duplicated["source"].to_list()))
        raise ValueError(f"sources {names} share row ids: give every source a distinct name")
    return _save("merged", StepResult(merged), Path(work_dir) / "merged", merged.height)


@task(name="validate-rows")
def validate_rows(previous: StepOutput, config: ValidationConfig, work_dir: str) -> StepOutput:
    """Row checks, image decoding and normalisation; failures quarantined with reasons."""
    return _run_step("validate", previous, work_dir, lambda f: validate_frame(f, config))


@task(name="deduplicate")
def deduplicate_rows(previous: StepOutput, config: DedupConfig, work_dir: str) -> StepOutput:
    """Exact and near duplicates quarantined with a pointer to the kept row."""
    return _run_step("dedup", previous, work_dir, lambda f: deduplicate(f, config))


def _benchmark_frames(
    config: DecontaminationConfig, validation: ValidationConfig
) -> tuple[list[pl.DataFrame], list[str]]:
    cat = catalog()
    entries = (
        [cat.get_dataset(ref.removeprefix("dataset:")) for ref in config.benchmarks]
        if config.benchmarks is not None
        else cat.list_datasets(kind="benchmark")
    )
    latest: dict[str, Any] = {}
    for entry in entries:  # every version of a benchmark counts; dedupe by ref
        latest[entry.ref] = entry
    frames = []
    for entry in latest.values():
        raw = read_source(LocalSource(name=entry.name, path=entry.uri)).kept
        frames.append(validate_frame(raw, validation).kept)
    return frames, [f"dataset:{ref}" for ref in latest]


@task(name="decontaminate")
def decontaminate_rows(
    previous: StepOutput,
    config: DecontaminationConfig,
    validation: ValidationConfig,
    work_dir: str,
) -> tuple[StepOutput, list[str]]:
    """Quarantine rows overlapping any evaluation benchmark in the catalog.

    Returns the step output and the benchmark refs checked (for lineage/tags).
    """
    if not config.enabled:
        return _run_step("decontaminate", previous, work_dir, StepResult), []
    frames, refs = _benchmark_frames(config, validation)
    index = BenchmarkIndex.build(frames, config)
    output = _run_step(
        "decontaminate", previous, work_dir, lambda f: decontaminate(f, index, config)
    )
    return output, refs


def _difficulty_backend(config: DifficultyConfig):
    if config.backend is not None:
        return build_backend(config.backend)
    if config.model is None:
        raise ValueError(
            "difficulty.enabled is true but neither difficulty.model (a checkpoint ref or path) "
            "nor difficulty.backend is set"
        )
    uri = config.model
    if not Path(uri).exists():
        uri = catalog().get_checkpoint(config.model.removeprefix("checkpoint:")).uri
    return build_backend(HFBackendConfig(model=uri))


@task(name="estimate-difficulty", **teacher_retries)
def estimate_difficulty(
    previous: StepOutput, config: DifficultyConfig, work_dir: str, seed: int
) -> StepOutput:
    """K rollouts per prompt -> pass rate -> buckets -> kept buckets, balanced by type."""
    if not config.enabled:
        return _run_step("difficulty", previous, work_dir, StepResult)
    frame = pl.read_parquet(previous.kept)
    backend = _difficulty_backend(config)
    try:
        rated = estimate_pass_rates(
            frame, backend, config, Path(work_dir) / "difficulty-rollouts", seed
        )
    finally:
        backend.close()
    result = bucket_and_filter(rated, config, seed)
    output = _save("difficulty", result, Path(work_dir) / "difficulty", frame.height)
    # Every prompt's pass rate, kept or not: the histogram of what filtering saw.
    rated.select("row_id", "pass_rate", "n_rollouts").write_parquet(
        Path(work_dir) / "difficulty" / PASS_RATES_FILE
    )
    return output


def difficulty_model_ref(config: DifficultyConfig) -> list[str]:
    """Catalog ref of the difficulty model, as a lineage parent (none for paths/backends)."""
    if not config.enabled or config.backend is not None or config.model is None:
        return []
    if Path(config.model).exists():
        return []
    return [f"checkpoint:{config.model.removeprefix('checkpoint:')}"]


@task(name="register-sources")
def register_sources(
    sources: Sequence[SourceConfig], outputs: Sequence[StepOutput], mlflow_run_id: str
) -> list[str]:
    """Record each source as a dataset of kind ``source`` (no copy: its uri is the origin)."""
    cat = catalog()
    refs = []
    for source, output in zip(sources, outputs, strict=True):
        if source.kind == "hub":
            uri = f"hf://datasets/{source.dataset_id}"
            uri += f"/{source.subset}" if source.subset else ""
            uri += f"@{source.revision}" if source.revision else ""
            uri += f"#{source.split}"
        elif source.kind == "local":
            uri = str(Path(source.path).resolve())
        else:
            uri = "synthetic://" + json.dumps(source.synthetic.model_dump(mode="json"))
        frame = pl.read_parquet(output.kept)
        entry = cat.register_dataset(
            name=f"source-{source.name}",
            kind="source",
            uri=uri,
            content_hash=hash_file(Path(output.kept)),
            row_count=output.n_in,
            columns={name: str(dtype) for name, dtype in frame.schema.items()},
            prefect_flow_run_id=flow_run_id(),
            mlflow_run_id=mlflow_run_id,
            metadata={"source": source.model_dump(mode="json"), "readable_rows": output.n_kept},
        )
        refs.append(f"dataset:{entry.ref}")
    return refs


@task(name="generate-cot", **teacher_retries)
def generate_cot_step(
    previous: StepOutput,
    config: CoTConfig,
    sources: Sequence[SourceConfig],
    work_dir: str,
    seed: int,
) -> StepOutput:
    """Teacher CoTs with rejection sampling; questions without a verified CoT quarantined.

    The synthetic teacher regenerates items from their ids, which needs the
    generator settings of each synthetic source.
    """
    synthetic = {s.name: s.synthetic for s in sources if isinstance(s, SyntheticSource)}
    frame = pl.read_parquet(previous.kept)
    backend = (
        build_backend(config.teacher.backend) if isinstance(config.teacher, ModelTeacher) else None
    )
    try:
        result = generate_cot(
            frame,
            config,
            Path(work_dir) / "cot-shards",
            seed,
            backend=backend,
            synthetic_configs=synthetic,
        )
    finally:
        if backend is not None:
            backend.close()
    return _save("cot", result, Path(work_dir) / "cot", frame.height)
