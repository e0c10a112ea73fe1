"""The columnar contract between curation steps.

Every step takes a polars frame and returns a :class:`StepResult`: the rows it
kept and the rows it quarantined (with a reason), so ``kept + quarantined ==
input`` holds step by step and therefore for the whole flow. Steps run in
separate Prefect tasks and hand each other parquet files of these frames.

Columns (``RAW_SCHEMA`` after ingest, more added by later steps):

- ``row_id``: ``"<source>/<source_row_id>"``, unique across the flow's sources
- ``source``, ``source_row_id``: where the row came from
- ``problem``, ``answer``, ``images`` (list of {bytes, path}), ``choices``
  (list of option texts or null), ``type``, ``difficulty`` (generator knob or null)
- after validation: ``problem_norm`` (text key for dedup/decontamination),
  ``image_sha256`` (list), ``image_phash`` (list of 64-bit perceptual hashes)
- after difficulty estimation: ``pass_rate``, ``n_rollouts``, ``difficulty_bucket``
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from schemas.catalog import QuarantinedRow

IMAGE_STRUCT = pl.Struct({"bytes": pl.Binary, "path": pl.String})

RAW_SCHEMA: dict[str, pl.DataType] = {
    "row_id": pl.String(),
    "source": pl.String(),
    "source_row_id": pl.String(),
    "problem": pl.String(),
    "answer": pl.String(),
    "images": pl.List(IMAGE_STRUCT),
    "choices": pl.List(pl.String()),
    "type": pl.String(),
    "difficulty": pl.Int64(),
}

VALIDATED_COLUMNS: dict[str, pl.DataType] = {
    "problem_norm": pl.String(),
    "image_sha256": pl.List(pl.String()),
    "image_phash": pl.List(pl.UInt64()),
}

DIFFICULTY_COLUMNS: dict[str, pl.DataType] = {
    "pass_rate": pl.Float64(),
    "n_rollouts": pl.Int64(),
    "difficulty_bucket": pl.String(),
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "source_row_id": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "duplicate_of": pl.String(),
}


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def quarantine_frame(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Quarantine rows (dicts with the QUARANTINE_SCHEMA keys; detail/duplicate_of optional)."""
    records = [
        {
            "source": r["source"],
            "source_row_id": str(r["source_row_id"]),
            "reason": r["reason"],
            "detail": r.get("detail", ""),
            "duplicate_of": r.get("duplicate_of"),
        }
        for r in rows
    ]
    return pl.DataFrame(records, schema=QUARANTINE_SCHEMA) if records else empty_quarantine()


@dataclass
class StepResult:
    """What a curation step kept and what it quarantined."""

    kept: pl.DataFrame
    quarantined: pl.DataFrame = field(default_factory=empty_quarantine)

    def counts(self) -> dict[str, int]:
        return {"kept": self.kept.height, "quarantined": self.quarantined.height}

    def reasons(self) -> dict[str, int]:
        if self.quarantined.is_empty():
            return {}
        grouped = self.quarantined.group_by("reason").len().sort("reason")
        return dict(zip(grouped["reason"].to_list(), grouped["len"].to_list(), strict=True))

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``kept.parquet`` and ``quarantined.parquet``; return their paths."""
        directory.mkdir(parents=True, exist_ok=True)
        kept, quarantined = directory / "kept.parquet", directory / "quarantined.parquet"
        self.kept.write_parquet(kept)
        self.quarantined.write_parquet(quarantined)
        return kept, quarantined


def to_quarantined_rows(frame: pl.DataFrame) -> list[QuarantinedRow]:
    """Catalog rows from a quarantine frame."""
    return [
        QuarantinedRow(
            source=row["source"],
            source_row_id=row["source_row_id"],
            reason=row["reason"],
            detail=row["detail"] or "",
            duplicate_of=row["duplicate_of"],
        )
        for row in frame.iter_rows(named=True)
    ]


def ensure_raw_schema(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast/complete a frame to RAW_SCHEMA (missing optional columns become null)."""
    columns = []
    for name, dtype in RAW_SCHEMA.items():
        if name in frame.columns:
            columns.append(pl.col(name).cast(dtype))
        else:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
    extra = [c for c in frame.columns if c not in RAW_SCHEMA]
    return frame.select(columns + [pl.col(c) for c in extra])


def require_columns(frame: pl.DataFrame, columns: tuple[str, ...], step: str) -> None:
    """Raise ``ValueError`` naming ``step`` if ``frame`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{step} needs columns {missing} (validated rows: run validation first); "
            f"the frame has {frame.columns}"
        )
