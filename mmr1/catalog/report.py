"""Plain-text and JSON views of catalog entries, for the ``mmr1 catalog`` commands.

Pure functions of the row models: the CLI fetches with ``Catalog`` and prints
what these return (``render_*`` for people, ``*_json`` for ``--json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from schemas.catalog import (
    CheckpointEntry,
    DatasetEntry,
    EvalResultEntry,
    LineageNode,
    VPSTableEntry,
)

ReportEntry = DatasetEntry | CheckpointEntry | VPSTableEntry | EvalResultEntry

_HASH_CHARS = 12


def entry_type(entry: ReportEntry) -> str:
    """``dataset``, ``checkpoint``, ``vps`` or ``eval``."""
    if isinstance(entry, DatasetEntry):
        return "dataset"
    if isinstance(entry, CheckpointEntry):
        return "checkpoint"
    if isinstance(entry, VPSTableEntry):
        return "vps"
    if isinstance(entry, EvalResultEntry):
        return "eval"
    raise TypeError(f"not a catalog entry: {type(entry).__name__}")


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: float) -> str:
    return f"{value:.4g}"


def _metrics(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={_number(v)}" for k, v in metrics.items()) or "-"


def _row(entry: ReportEntry) -> dict[str, str]:
    """The columns of ``render_list`` for one entry."""
    if isinstance(entry, DatasetEntry):
        return {
            "REF": entry.ref,
            "KIND": entry.kind,
            "ROWS": str(entry.row_count),
            "HASH": entry.content_hash[:_HASH_CHARS],
            "CREATED": _time(entry.created_at),
            "URI": entry.uri,
        }
    if isinstance(entry, CheckpointEntry):
        return {
            "REF": entry.ref,
            "STAGE": entry.stage,
            "STEP": "-" if entry.step is None else str(entry.step),
            "HASH": entry.content_hash[:_HASH_CHARS],
            "CREATED": _time(entry.created_at),
            "URI": entry.uri,
        }
    if isinstance(entry, VPSTableEntry):
        return {
            "REF": entry.ref,
            "DATASET": entry.dataset_ref,
            "CHECKPOINT": entry.checkpoint_ref,
            "ROWS": str(entry.row_count),
            "CREATED": _time(entry.created_at),
            "URI": entry.uri,
        }
    if isinstance(entry, EvalResultEntry):
        return {
            "CHECKPOINT": entry.checkpoint_ref,
            "BENCHMARK": entry.benchmark,
            "SPLIT": entry.split,
            "SCORER": entry.scorer,
            "N": str(entry.n_items),
            "METRICS": _metrics(entry.metrics),
            "CREATED": _time(entry.created_at),
        }
    raise TypeError(f"not a catalog entry: {type(entry).__name__}")


_NUMERIC = frozenset({"ROWS", "STEP", "N"})


def _table(rows: Sequence[Mapping[str, str]]) -> str:
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in headers}

    def line(cells: Mapping[str, str]) -> str:
        parts = [
            cells[h].rjust(widths[h]) if h in _NUMERIC else cells[h].ljust(widths[h])
            for h in headers
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * widths[h] for h in headers)
    return "\n".join([line({h: h for h in headers}), rule, *(line(r) for r in rows)])


def render_list(entries: Sequence[ReportEntry]) -> str:
    """A fixed-width table, one line per entry; mixed kinds get one table each."""
    if not entries:
        return "(no entries)"
    groups: dict[str, list[ReportEntry]] = {}
    for entry in entries:
        groups.setdefault(entry_type(entry), []).append(entry)
    tables = [_table([_row(e) for e in group]) for group in groups.values()]
    if len(tables) == 1:
        return tables[0]
    return "\n\n".join(f"[{kind}]\n{table}" for kind, table in zip(groups, tables, strict=True))


def _is_flat(mapping: Mapping[str, Any]) -> bool:
    return all(not isinstance(v, dict | list) for v in mapping.values())


def _value_lines(value: Any, indent: str) -> list[str]:
    """Lines for a dict field: ``key: value`` when flat, indented JSON otherwise."""
    if not value:
        return [f"{indent}-"]
    if isinstance(value, Mapping) and _is_flat(value):
        width = max(len(str(k)) for k in value)
        return [f"{indent}{str(k).ljust(width)}  {_scalar(v)}" for k, v in value.items()]
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return [indent + line for line in text.splitlines()]


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def render_show(entry: ReportEntry, quarantine_summary: Mapping[str, int] | None = None) -> str:
    """Every field of one entry; for datasets, the quarantine counts by reason.

    ``quarantine_summary`` is ``Catalog.quarantine_summary(ref)``; None leaves
    the section out.
    """
    kind = entry_type(entry)
    title = entry.id if isinstance(entry, EvalResultEntry) else entry.ref
    lines = [f"{kind}:{title}"]
    fields = entry.model_dump(exclude={"ref"})
    scalars = {k: v for k, v in fields.items() if not isinstance(v, dict)}
    width = max(len(k) for k in [*fields, "quarantined"])
    for key, value in scalars.items():
        lines.append(f"  {key.ljust(width)}  {_scalar(value)}")
    for key, value in fields.items():
        if isinstance(value, dict):
            lines.append(f"  {key}")
            lines.extend(_value_lines(value, "    "))
    if quarantine_summary is not None:
        total = sum(quarantine_summary.values())
        lines.append(f"  {'quarantined'.ljust(width)}  {total} row{'s' if total != 1 else ''}")
        if quarantine_summary:
            reason_width = max(len(r) for r in quarantine_summary)
            count_width = max(len(str(n)) for n in quarantine_summary.values())
            for reason, count in quarantine_summary.items():
                lines.append(f"    {reason.ljust(reason_width)}  {str(count).rjust(count_width)}")
    return "\n".join(lines)


def render_lineage(node: LineageNode) -> str:
    """The lineage as an indented tree, the entry first and its parents below it."""
    lines = [node.qualified_ref]

    def walk(children: Sequence[LineageNode], prefix: str) -> None:
        for i, child in enumerate(children):
            last = i == len(children) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{child.qualified_ref}")
            walk(child.parents, prefix + ("    " if last else "│   "))

    walk(node.parents, "")
    return "\n".join(lines)


def entry_json(entry: ReportEntry) -> dict[str, Any]:
    """JSON-serialisable form of one entry, with its ``type`` (dataset/checkpoint/vps/eval)."""
    return {"type": entry_type(entry), **entry.model_dump(mode="json")}


def list_json(entries: Sequence[ReportEntry]) -> list[dict[str, Any]]:
    """JSON-serialisable form of ``render_list``'s input."""
    return [entry_json(e) for e in entries]


def show_json(
    entry: ReportEntry, quarantine_summary: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """JSON-serialisable form of ``render_show``'s input."""
    out = entry_json(entry)
    if quarantine_summary is not None:
        out["quarantine"] = {
            "total": sum(quarantine_summary.values()),
            "by_reason": dict(quarantine_summary),
        }
    return out


def lineage_json(node: LineageNode) -> dict[str, Any]:
    """``{"kind", "ref", "parents": [...]}`` recursively."""
    return node.model_dump(mode="json")
