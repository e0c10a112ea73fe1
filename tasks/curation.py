"""Curation steps as Prefect tasks.

Each task reads the previous step's ``kept.parquet``, runs one library step
(``mmr1.data`` / ``mmr1.cot``) and writes ``kept.parquet`` + ``quarantined.parquet``
into its own directory under the flow's work dir. Tasks hand each other a
:class:`StepOutput` (paths and counts), never frames. Files are read and written
``batch_rows`` rows at a time (``mmr1.data.batches``): no step holds a whole
dataset, and the results do not depend on the batch size.

The work dir is keyed by the config's fingerprint, so a flow restarted with
the same parameters finds the shards its difficulty and CoT steps already
wrote and skips them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from prefect import Task, task
from prefect.client.schemas.objects import TaskRun
from prefect.logging import get_run_logger
from prefect.states import State
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from mmr1.cot.generate import cot_plan, generate_cot
from mmr1.data.batches import (
    DEFAULT_BATCH_ROWS,
    StepWriter,
    iter_column,
    iter_frames,
    parquet_rows,
)
from mmr1.data.benchmark_index import BenchmarkIndex
from mmr1.data.decontam import decontaminate
from mmr1.data.dedup import deduplicate_batches
from mmr1.data.difficulty import (
    estimate_pass_rates,
    filter_batches,
    pass_rate_plan,
    rated_columns,
)
from mmr1.data.frame import StepResult
from mmr1.data.shards import shard_groups
from mmr1.data.sources import SHAREGPT_COLUMNS, SourceBatches, read_source
from mmr1.data.validate import validate_frame
from mmr1.generation import GenerationBackend
from mmr1.generation.openai_compat import ChatCompletionError
from mmr1.hashing import hash_file
from mmr1.models.registry import resolve_checkpoint
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


def _write_step(
    stage: str, directory: Path, results: Iterable[StepResult], n_in: int | None = None
) -> StepOutput:
    """Write a step's results batch by batch; check ``kept + quarantined == n_in``.

    ``n_in``: rows the step read (None: every row it reports, as for ingest).
    """
    with StepWriter(directory) as writer:
        for result in results:
            writer.add(result)
        n_out = writer.n_kept + writer.n_quarantined
        if n_in is not None and n_out != n_in:
            raise RuntimeError(
                f"curation step {stage!r} lost rows: {n_in} in, {writer.n_kept} kept + "
                f"{writer.n_quarantined} quarantined"
            )
    output = StepOutput(
        stage=stage,
        kept=str(writer.kept.path),
        quarantined=str(writer.quarantined.path),
        n_in=n_out,
        n_kept=writer.n_kept,
        n_quarantined=writer.n_quarantined,
        reasons=dict(sorted(writer.reasons.items())),
    )
    get_run_logger().info(
        "%s: %d in -> %d kept, %d quarantined %s",
        stage,
        n_out,
        output.n_kept,
        output.n_quarantined,
        output.reasons or "",
    )
    return output


def _run_step(
    stage: str,
    previous: StepOutput,
    work_dir: str,
    batch_rows: int,
    step: Callable[[pl.DataFrame], StepResult],
) -> StepOutput:
    """A step that decides each row on its own: applied to the previous rows batch by batch."""
    results = (step(frame) for frame in iter_frames(previous.kept, batch_rows))
    return _write_step(stage, Path(work_dir) / stage, results, parquet_rows(previous.kept))


@task(
    name="ingest-source",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_unless_bad_input,  # a hub outage, not a broken file
)
def ingest_source(
    source: SourceConfig, work_dir: str, batch_rows: int = DEFAULT_BATCH_ROWS
) -> StepOutput:
    """Read one source (hub id, local files or the synthetic generator) into the raw schema.

    The kept file always has the ShareGPT columns (null for other layouts);
    :func:`merge_sources` drops them when no source has a ShareGPT row.
    """
    stage = f"ingest-{source.name}"
    return _write_step(stage, Path(work_dir) / stage, SourceBatches(source, batch_rows=batch_rows))


def _has_sharegpt_rows(path: str) -> bool:
    if "problem_is_prompt" not in pl.read_parquet_schema(path):
        return False
    flags = pl.scan_parquet(path).select(pl.col("problem_is_prompt").fill_null(False).any())
    return bool(flags.collect().item())


@task(name="merge-sources")
def merge_sources(
    outputs: Sequence[StepOutput], work_dir: str, batch_rows: int = DEFAULT_BATCH_ROWS
) -> StepOutput:
    """Concatenate ingested sources in config order (row ids are source-qualified).

    Row ids are ``<source name>/<id>`` with names that hold no ``/``, and unique
    within a source (ingest quarantines repeats), so sources share row ids
    exactly when they share a name.
    """
    names = [o.stage.removeprefix("ingest-") for o in outputs]
    shared = sorted({name for name in names if names.count(name) > 1})
    if shared:
        raise ValueError(f"sources {shared} share row ids: give every source a distinct name")
    sharegpt = any(_has_sharegpt_rows(o.kept) for o in outputs)

    def results() -> Iterator[StepResult]:
        for output in outputs:
            for frame in iter_frames(output.kept, batch_rows):
                yield StepResult(frame if sharegpt else frame.drop(SHAREGPT_COLUMNS, strict=False))

    n_in = sum(parquet_rows(o.kept) for o in outputs)
    return _write_step("merged", Path(work_dir) / "merged", results(), n_in)


@task(name="validate-rows")
def validate_rows(
    previous: StepOutput,
    config: ValidationConfig,
    work_dir: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> StepOutput:
    """Row checks, image decoding and normalisation; failures quarantined with reasons."""
    return _run_step(
        "validate", previous, work_dir, batch_rows, lambda f: validate_frame(f, config)
    )


@task(name="deduplicate")
def deduplicate_rows(
    previous: StepOutput, config: DedupConfig, work_dir: str, batch_rows: int = DEFAULT_BATCH_ROWS
) -> StepOutput:
    """Exact and near duplicates quarantined with a pointer to the kept row.

    Two passes over the previous rows: sketches (hashes, MinHash signatures) of
    every row, then each batch split by the verdicts (``deduplicate_batches``).
    """
    rows = parquet_rows(previous.kept)

    def read(columns: Sequence[str] | None) -> Iterator[pl.DataFrame]:
        return iter_frames(previous.kept, batch_rows, columns)

    # MinHash signatures and LSH keys wait on disk, not in memory (~330 bytes a row).
    with tempfile.TemporaryDirectory(prefix=".dedup-sketches-", dir=work_dir) as spill:
        results = deduplicate_batches(read, rows, config, spill=Path(spill))
        return _write_step("dedup", Path(work_dir) / "dedup", results, rows)


def _benchmark_frames(
    config: DecontaminationConfig, validation: ValidationConfig
) -> tuple[list[pl.DataFrame], list[str]]:
    cat = catalog()
    entries = (
        [cat.get_dataset(ref) for ref in config.benchmarks]
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
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> tuple[StepOutput, list[str]]:
    """Quarantine rows overlapping any evaluation benchmark in the catalog.

    Returns the step output and the benchmark refs checked (for lineage/tags).
    """
    if not config.enabled:
        return _run_step("decontaminate", previous, work_dir, batch_rows, StepResult), []
    frames, refs = _benchmark_frames(config, validation)
    index = BenchmarkIndex.build(frames, config)
    del frames
    output = _run_step(
        "decontaminate", previous, work_dir, batch_rows, lambda f: decontaminate(f, index, config)
    )
    return output, refs


def _difficulty_backend(config: DifficultyConfig) -> tuple[GenerationBackend, str | None]:
    """The rating backend, and the content hash of the checkpoint it loads (None: a server)."""
    if config.backend is not None:
        return build_backend(config.backend), None
    if config.model is None:
        raise ValueError(
            "difficulty.enabled is true but neither difficulty.model (a checkpoint ref or path) "
            "nor difficulty.backend is set"
        )
    checkpoint = resolve_checkpoint(catalog(), config.model)
    return build_backend(HFBackendConfig(model=checkpoint.uri)), checkpoint.content_hash


@task(name="estimate-difficulty", **teacher_retries)
def estimate_difficulty(
    previous: StepOutput,
    config: DifficultyConfig,
    work_dir: str,
    seed: int,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> StepOutput:
    """K rollouts per prompt -> pass rate -> buckets -> kept buckets, balanced by type.

    Rows are rated a group of whole shards at a time; only their ids, types and
    pass rates are kept to decide the buckets, then the rows are read again.
    """
    if not config.enabled:
        return _run_step("difficulty", previous, work_dir, batch_rows, StepResult)
    backend, checkpoint_hash = _difficulty_backend(config)
    try:
        ids = iter_column(previous.kept, "row_id", batch_rows)
        plan = pass_rate_plan(ids, backend, config, seed, checkpoint_hash=checkpoint_hash)
        # A directory per rating run: the same curation config rated by another version
        # of its model (or by older code) never meets that run's shards.
        rollouts = Path(work_dir) / "difficulty-rollouts" / plan.fingerprint[:16]
        groups = shard_groups(iter_frames(previous.kept, batch_rows), plan, batch_rows)
        rated = pl.concat(
            [
                estimate_pass_rates(rows, backend, config, rollouts, seed, plan=group_plan).select(
                    rated_columns(config)
                )
                for rows, group_plan in groups
            ],
            how="vertical",
        )
    finally:
        backend.close()
    results = filter_batches(rated, iter_frames(previous.kept, batch_rows), config, seed)
    directory = Path(work_dir) / "difficulty"
    output = _write_step("difficulty", directory, results, parquet_rows(previous.kept))
    # Every prompt's pass rate, kept or not: the histogram of what filtering saw.
    rated.select("row_id", "pass_rate", "n_rollouts").write_parquet(directory / PASS_RATES_FILE)
    return output


def difficulty_model_ref(config: DifficultyConfig) -> list[str]:
    """Catalog ref of the difficulty model, as a lineage parent (none for a backend).

    A directory or hub id is registered on the fly, like every checkpoint input.
    """
    if not config.enabled or config.backend is not None or config.model is None:
        return []
    return [f"checkpoint:{resolve_checkpoint(catalog(), config.model).ref}"]


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
        schema = pl.read_parquet_schema(output.kept)
        if not _has_sharegpt_rows(output.kept):
            schema = {k: v for k, v in schema.items() if k not in SHAREGPT_COLUMNS}
        entry = cat.register_dataset(
            name=f"source-{source.name}",
            kind="source",
            uri=uri,
            content_hash=hash_file(Path(output.kept)),
            row_count=output.n_in,
            columns={name: str(dtype) for name, dtype in schema.items()},
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
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> StepOutput:
    """Teacher CoTs with rejection sampling; questions without a verified CoT quarantined.

    The synthetic teacher regenerates items from their ids, which needs the
    generator settings of each synthetic source. Rows go to ``generate_cot`` a
    group of whole shards at a time, all under one shard plan (same shards and
    seeds as a single call over every row).
    """
    synthetic = {s.name: s.synthetic for s in sources if isinstance(s, SyntheticSource)}
    backend = (
        build_backend(config.teacher.backend) if isinstance(config.teacher, ModelTeacher) else None
    )
    shards = Path(work_dir) / "cot-shards"
    try:
        plan = cot_plan(
            iter_column(previous.kept, "row_id", batch_rows),
            config,
            seed,
            backend=backend,
            synthetic_configs=synthetic,
        )
        groups = shard_groups(iter_frames(previous.kept, batch_rows), plan, batch_rows)
        results = (
            generate_cot(
                rows,
                config,
                shards,
                seed,
                backend=backend,
                synthetic_configs=synthetic,
                plan=group_plan,
            )
            for rows, group_plan in groups
        )
        return _write_step("cot", Path(work_dir) / "cot", results, parquet_rows(previous.kept))
    finally:
        if backend is not None:
            backend.close()
