"""The end of a curation flow: write the dataset, register it with its quarantine, report.

The final rows are read and written ``batch_rows`` at a time (records are built
per batch, never for the whole dataset); quarantined rows go to the catalog in
batches too.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

# Figure objects directly (no pyplot): headless, no global state, no backend to pick.
from matplotlib.figure import Figure
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mmr1.cot.generate import iter_sft_records
from mmr1.data.batches import DEFAULT_BATCH_ROWS, iter_frames
from mmr1.data.frame import to_quarantined_rows
from mmr1.data.io import DatasetFiles, write_rl_dataset, write_sft_dataset
from mmr1.storage import content_addressed
from schemas.records import ImageData, RLRecord
from tasks.context import catalog, flow_run_id, home, tracked_run
from tasks.curation import PASS_RATES_FILE, StepOutput

RL_EXTRA_COLUMNS = ("pass_rate", "n_rollouts", "difficulty_bucket")


def rl_records(frame: pl.DataFrame) -> list[RLRecord]:
    """MMR1-RL records from a curated frame (``row_id`` becomes the record id)."""
    return list(iter_rl_records([frame]))


def iter_rl_records(frames: Iterable[pl.DataFrame]) -> Iterator[RLRecord]:
    """:func:`rl_records` of a stream of frames, one record at a time."""
    for frame in frames:
        for row in frame.iter_rows(named=True):
            yield RLRecord(
                id=row["row_id"],
                problem=row["problem"],
                answer=row["answer"],
                images=[ImageData(bytes=i["bytes"], path=i["path"]) for i in row["images"] or []],
                choices=row["choices"],
                type=row["type"] or "unknown",
                source=row["source"],
                difficulty=row["difficulty"],
            )


#: Quarantined rows sent to the catalog per call.
_QUARANTINE_BATCH = 50_000


def _add_quarantined(ref: str, outputs: Sequence[StepOutput]) -> None:
    """Every step's quarantined rows, in step order, into the catalog (batch by batch)."""
    cat = catalog()
    for output in outputs:
        for frame in iter_frames(output.quarantined, _QUARANTINE_BATCH):
            if frame.height:
                cat.add_quarantined(ref, to_quarantined_rows(frame))


def _check_funnel(outputs: Sequence[StepOutput], n_read: int, n_kept: int) -> None:
    quarantined = sum(o.n_quarantined for o in outputs)
    if n_kept + quarantined != n_read:
        raise RuntimeError(
            f"curation lost rows: read {n_read}, kept {n_kept}, quarantined {quarantined}"
        )


def _register(
    name: str,
    kind: str,
    write: Any,
    outputs: Sequence[StepOutput],
    n_read: int,
    parents: Sequence[str],
    mlflow_run_id: str,
    metadata: dict[str, Any],
) -> str:
    path, digest, files = content_addressed(home().datasets, name, write)
    assert isinstance(files, DatasetFiles)
    _check_funnel(outputs, n_read, files.row_count)
    cat = catalog()
    entry = cat.register_dataset(
        name=name,
        kind=kind,
        uri=str(path),
        content_hash=digest,
        row_count=files.row_count,
        columns=files.columns,
        parents=list(parents),
        prefect_flow_run_id=flow_run_id(),
        mlflow_run_id=mlflow_run_id,
        metadata=metadata | {"read": n_read, "funnel": _funnel_rows(outputs)},
    )
    _add_quarantined(entry.ref, outputs)
    run = tracked_run(mlflow_run_id)
    run.record_writes([f"dataset:{entry.ref}"])
    run.record_reads(list(parents))
    run.log_dataset_input(
        name=entry.ref, digest=digest, uri=entry.uri, context="output", columns=entry.columns
    )
    return f"dataset:{entry.ref}"


@task(name="register-rl-pool")
def register_rl_pool(
    name: str,
    final: StepOutput,
    outputs: Sequence[StepOutput],
    n_read: int,
    parents: Sequence[str],
    mlflow_run_id: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> str:
    """Write the curated RL pool (MMR1-RL schema + pass rates) and register it."""
    present = pl.read_parquet_schema(final.kept)
    wanted = [c for c in RL_EXTRA_COLUMNS if c in present]
    columns = pl.read_parquet(final.kept, columns=wanted) if wanted else pl.DataFrame()
    extra = {c: columns[c].to_list() for c in wanted}
    records = iter_rl_records(iter_frames(final.kept, batch_rows))
    return _register(
        name,
        "rl",
        lambda out: write_rl_dataset(records, out, extra=extra),
        outputs,
        n_read,
        parents,
        mlflow_run_id,
        {"stage": "curate_rl"},
    )


@task(name="register-sft-dataset")
def register_sft_dataset(
    name: str,
    final: StepOutput,
    outputs: Sequence[StepOutput],
    n_read: int,
    parents: Sequence[str],
    mlflow_run_id: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> str:
    """Write the curated SFT dataset (MMR1-SFT conversations + images) and register it."""
    records = iter_sft_records(iter_frames(final.kept, batch_rows))
    return _register(
        name,
        "sft",
        lambda out: write_sft_dataset(records, out),
        outputs,
        n_read,
        parents,
        mlflow_run_id,
        {"stage": "curate_sft"},
    )


def _funnel_rows(outputs: Sequence[StepOutput]) -> list[dict[str, Any]]:
    return [
        {
            "stage": o.stage,
            "in": o.n_in,
            "kept": o.n_kept,
            "quarantined": o.n_quarantined,
            "reasons": ", ".join(f"{k}={v}" for k, v in sorted(o.reasons.items())),
        }
        for o in outputs
    ]


@task(name="report-curation")
def report_curation(
    flow_name: str,
    dataset_ref: str,
    outputs: Sequence[StepOutput],
    mlflow_run_id: str,
    sample_columns: Sequence[str] = ("row_id", "problem", "answer", "choices", "type"),
) -> None:
    """Funnel counts, quarantine reasons and pass rates to MLflow and a Prefect artifact."""
    run = tracked_run(mlflow_run_id)
    funnel = _funnel_rows(outputs)
    metrics: dict[str, float] = {}
    reasons: dict[str, int] = {}
    for output in outputs:
        metrics[f"funnel/{output.stage}/in"] = output.n_in
        metrics[f"funnel/{output.stage}/kept"] = output.n_kept
        metrics[f"funnel/{output.stage}/quarantined"] = output.n_quarantined
        for reason, count in output.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
    metrics |= {f"quarantine/{reason}": count for reason, count in reasons.items()}
    run.log_metrics(metrics)
    run.log_dict({"dataset": dataset_ref, "funnel": funnel, "reasons": reasons}, "funnel.json")

    if reasons:
        figure = Figure(figsize=(6, 0.4 * len(reasons) + 1.2))
        axis = figure.subplots()
        names = sorted(reasons, key=reasons.__getitem__)
        axis.barh(names, [reasons[n] for n in names])
        axis.set_xlabel("rows quarantined")
        axis.set_title(f"{flow_name}: quarantine reasons")
        figure.tight_layout()
        run.log_figure(figure, "plots/quarantine_reasons.png")
    for output in outputs:
        rates_path = Path(output.kept).parent / PASS_RATES_FILE
        if not rates_path.exists():
            continue
        rates = pl.read_parquet(rates_path, columns=["pass_rate"])["pass_rate"].to_numpy()
        figure = Figure(figsize=(5, 3))
        axis = figure.subplots()
        axis.hist(rates, bins=20, range=(0, 1))
        axis.set_xlabel("pass rate")
        axis.set_ylabel("prompts")
        axis.set_title(f"{flow_name}: pass rates before filtering ({len(rates)} prompts)")
        figure.tight_layout()
        run.log_figure(figure, "plots/pass_rate_histogram.png")
    present = pl.read_parquet_schema(outputs[-1].kept)
    columns = [c for c in (*sample_columns, "pass_rate", "response") if c in present]
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample_rows.jsonl"
        rows = next(iter_frames(outputs[-1].kept, 20, columns)).to_dicts()
        sample.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
        run.log_artifact(sample, "samples")

    key = f"{flow_name}-funnel".replace("_", "-")
    create_table_artifact(key=key, table=funnel, description=f"Curation funnel of {dataset_ref}")
    lines = [f"# {flow_name}: {dataset_ref}", "", "| reason | rows |", "|---|---|"]
    lines += [f"| {r} | {c} |" for r, c in sorted(reasons.items(), key=lambda x: -x[1])]
    create_markdown_artifact(
        key=f"{key}-reasons", markdown="\n".join(lines), description="Quarantine reasons"
    )
