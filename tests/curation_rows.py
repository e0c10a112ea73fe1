"""Curation frames for tests: synthetic records or hand-written rows in RAW_SCHEMA."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

from mmr1.data.frame import ensure_raw_schema
from schemas.records import RLRecord


def records_frame(records: Iterable[RLRecord], source: str = "synthetic") -> pl.DataFrame:
    """A frame as ingest would build it: ``row_id = <source>/<record id>``."""
    rows = [
        {
            "row_id": f"{source}/{r.id}",
            "source": source,
            "source_row_id": r.id,
            "problem": r.problem,
            "answer": r.answer,
            "images": [{"bytes": i.bytes, "path": i.path} for i in r.images],
            "choices": r.choices,
            "type": r.type,
            "difficulty": r.difficulty,
        }
        for r in records
    ]
    return ensure_raw_schema(pl.DataFrame(rows, schema=_raw_schema()))


def text_frame(
    questions: Sequence[tuple[str, str]],
    *,
    source: str = "local",
    choices: Sequence[Sequence[str] | None] | None = None,
    types: Sequence[str] | None = None,
    **extra: Sequence[Any],
) -> pl.DataFrame:
    """Text-only rows ``(problem, answer)`` with ids ``q0, q1, ...``; ``extra`` adds columns."""
    n = len(questions)
    frame = pl.DataFrame(
        {
            "row_id": [f"{source}/q{i}" for i in range(n)],
            "source": [source] * n,
            "source_row_id": [f"q{i}" for i in range(n)],
            "problem": [q for q, _ in questions],
            "answer": [a for _, a in questions],
            "images": [[] for _ in range(n)],
            "choices": list(choices) if choices is not None else [None] * n,
            "type": list(types) if types is not None else ["text"] * n,
        },
        schema={k: v for k, v in _raw_schema().items() if k != "difficulty"},
    )
    return ensure_raw_schema(frame).with_columns(
        pl.Series(name, list(values)) for name, values in extra.items()
    )


def _raw_schema() -> dict[str, pl.DataType]:
    from mmr1.data.frame import RAW_SCHEMA

    return dict(RAW_SCHEMA)
