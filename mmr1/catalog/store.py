"""SQL against an open catalog connection: every function runs inside the caller's
transaction (``Catalog`` opens one per public call) and may run again on retry,
so none has an effect outside the database.
"""

from __future__ import annotations

import difflib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from mmr1.catalog.errors import CatalogAmbiguousRefError, CatalogNotFoundError
from schemas.catalog import (
    CheckpointEntry,
    DatasetEntry,
    QuarantinedRow,
    VPSTableEntry,
)
from schemas.refs import KINDS, Ref

Entry = DatasetEntry | CheckpointEntry | VPSTableEntry
Con = duckdb.DuckDBPyConnection

TABLE = {"dataset": "datasets", "checkpoint": "checkpoints", "vps": "vps_tables"}
LABEL = {"dataset": "dataset", "checkpoint": "checkpoint", "vps": "VPS table"}
MODEL: dict[str, type[Entry]] = {
    "dataset": DatasetEntry,
    "checkpoint": CheckpointEntry,
    "vps": VPSTableEntry,
}
SELECT = {
    "dataset": """
        SELECT t.id, t.name, t.version, t.kind, t.uri, t.row_count, t.content_hash, t.columns,
               t.created_at, t.prefect_flow_run_id, t.mlflow_run_id, t.metadata
        FROM datasets t""",
    "checkpoint": """
        SELECT t.id, t.name, t.version, t.stage, t.uri, t.content_hash, t.step, t.metrics,
               t.config, t.created_at, t.prefect_flow_run_id, t.mlflow_run_id
        FROM checkpoints t""",
    "vps": """
        SELECT t.id, t.name, t.version, d.name || '@' || d.version AS dataset_ref,
               c.name || '@' || c.version AS checkpoint_ref, t.uri, t.content_hash,
               t.row_count, t.stats, t.created_at, t.prefect_flow_run_id, t.mlflow_run_id
        FROM vps_tables t
        JOIN datasets d ON d.id = t.dataset_id
        JOIN checkpoints c ON c.id = t.checkpoint_id""",
}
SELECT_EVAL = """
    SELECT e.id, c.name || '@' || c.version AS checkpoint_ref, e.benchmark, e.split, e.scorer,
           e.n_items, e.metrics, e.breakdown, e.predictions_uri, e.created_at,
           e.prefect_flow_run_id, e.mlflow_run_id
    FROM eval_results e
    JOIN checkpoints c ON c.id = e.checkpoint_id"""
_JSON_FIELDS = frozenset(
    {"columns", "metadata", "metrics", "config", "stats", "breakdown", "inputs"}
)
#: Columns holding locations: stored relative to the catalog file's directory when inside it.
PATH_FIELDS = frozenset({"uri", "predictions_uri"})
_QUARANTINE_VIEW = "incoming_quarantine"


def now() -> datetime:
    """Current time as naive UTC, the form every timestamp column stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_json(value: Any, field: str) -> str:
    """JSON text for a dict-valued column; ``ValueError`` naming the field if impossible."""
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"catalog field {field!r} is not JSON-serialisable: {exc}") from exc


def rows(con: Con, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Run a query and return its rows as dicts, JSON columns decoded, locations absolute."""
    con.execute(sql, list(params))
    names = [column[0] for column in con.description or ()]
    out = []
    anchor: Path | None = None
    for values in con.fetchall():
        row = dict(zip(names, values, strict=True))
        for key in _JSON_FIELDS & row.keys():
            if row[key] is not None:
                row[key] = json.loads(row[key])
        for key in PATH_FIELDS & row.keys():
            if is_relative_location(row[key]):
                anchor = anchor or Path(database_path(con)).parent
                row[key] = str(anchor / row[key])
        out.append(row)
    return out


def is_relative_location(value: Any) -> bool:
    """A stored location relative to the catalog's directory (not absolute, not a URI)."""
    return (
        isinstance(value, str)
        and bool(value)
        and "://" not in value
        and not (Path(value).is_absolute())
    )


def stored_location(location: str, anchor: Path) -> str:
    """What to store for ``location``: relative to ``anchor`` (the catalog file's directory)
    when it lies inside it, so a home can be moved or copied whole; else the absolute path
    (URIs such as ``hf://...`` unchanged)."""
    if "://" in location:
        return location
    path = Path(location).expanduser().absolute()  # a relative path means from here
    return path.relative_to(anchor).as_posix() if path.is_relative_to(anchor) else location


def scalar(con: Con, sql: str, params: Sequence[Any] = ()) -> Any:
    """First column of the first row."""
    return con.execute(sql, list(params)).fetchall()[0][0]


def database_path(con: Con) -> str:
    """The file behind ``con`` (for error messages)."""
    found = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return str(found[0][0]) if found else "?"


def select(con: Con, kind: str, tail: str, params: Sequence[Any]) -> list[Entry]:
    """Entries of ``kind`` matching ``tail`` (a WHERE/ORDER clause on alias ``t``)."""
    found = rows(con, f"{SELECT[kind]} {tail}", params)
    if kind == "vps":  # parents of a VPS table are its dataset_ref and checkpoint_ref
        return [VPSTableEntry(**row) for row in found]
    parents = parents_of(con, kind, [row["id"] for row in found])
    return [MODEL[kind](**row, parents=parents.get(row["id"], [])) for row in found]


def parents_of(con: Con, kind: str, ids: list[str]) -> dict[str, list[str]]:
    """Child id -> its parents as ``kind:name@version``, datasets first."""
    if not ids:
        return {}
    edges = con.execute(
        """
        SELECT e.child_id, p.kind || ':' || p.name || '@' || p.version
        FROM lineage_edges e JOIN entries p ON p.kind = e.parent_kind AND p.id = e.parent_id
        WHERE e.child_kind = ? AND list_contains(?, e.child_id)
        ORDER BY list_position(['dataset', 'checkpoint', 'vps'], p.kind), p.name, p.version
        """,
        [kind, ids],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for child_id, parent in edges:
        out.setdefault(child_id, []).append(parent)
    return out


def list_entries(con: Con, kind: str, filters: Mapping[str, str | None]) -> list[Entry]:
    """Entries whose columns equal the non-None ``filters``, by name then version."""
    clauses = [f"{column} = ?" for column, value in filters.items() if value is not None]
    params = [value for value in filters.values() if value is not None]
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return select(con, kind, where + " ORDER BY t.name, t.version", params)


def lookup(con: Con, ref: Ref, kind: str) -> Entry | None:
    """The entry of ``kind`` at ``ref`` (latest version if unpinned), or None."""
    if ref.version is None:
        found = select(con, kind, "WHERE t.name = ? ORDER BY t.version DESC LIMIT 1", [ref.name])
    else:
        found = select(con, kind, "WHERE t.name = ? AND t.version = ?", [ref.name, ref.version])
    return found[0] if found else None


def require(con: Con, ref: Ref, kind: str) -> Entry:
    """Like ``lookup`` but raises ``CatalogNotFoundError`` with what does exist."""
    entry = lookup(con, ref, kind)
    if entry is None:
        raise CatalogNotFoundError(not_found_message(con, ref, [kind]))
    return entry


def resolve(con: Con, ref: Ref) -> tuple[str, Entry]:
    """(kind, entry) for a ref of any kind; an unprefixed name used by two kinds is refused."""
    if ref.kind is not None:
        return ref.kind, require(con, ref, ref.kind)
    # Ambiguity is decided by name, not version: "x@3" where x is both a dataset and a
    # checkpoint is refused even if only one of them has a version 3 (likely a typo).
    kinds = [
        row[0]
        for row in con.execute(
            "SELECT DISTINCT kind FROM entries WHERE name = ?", [ref.name]
        ).fetchall()
    ]
    kinds = [k for k in KINDS if k in kinds]
    if len(kinds) > 1:
        options = ", ".join(f"{k}:{ref.name}" for k in kinds)
        raise CatalogAmbiguousRefError(
            f"catalog ref {str(ref)!r} is ambiguous: the name is used by {options}; "
            "prefix the ref with its kind"
        )
    if not kinds:
        raise CatalogNotFoundError(not_found_message(con, ref, list(KINDS)))
    return kinds[0], require(con, ref, kinds[0])


def not_found_message(con: Con, ref: Ref, kinds: list[str]) -> str:
    """Why ``ref`` matched nothing: the known versions of its name, or similar names."""
    names_of_kinds = [LABEL[k] for k in kinds]
    labels = (
        names_of_kinds[0]
        if len(names_of_kinds) == 1
        else ", ".join(names_of_kinds[:-1]) + " or " + names_of_kinds[-1]
    )
    tables = " UNION ALL ".join(
        f"SELECT '{k}' AS kind, name, version FROM {TABLE[k]}" for k in kinds
    )
    known = con.execute(f"SELECT kind, name, version FROM ({tables})").fetchall()
    versions = sorted(v for _, name, v in known if name == ref.name)
    where = f"in catalog {database_path(con)}"
    if versions:
        listed = ", ".join(str(v) for v in versions)
        return (
            f"{labels} {ref.name + '@' + str(ref.version)!r} not found {where}: "
            f"known versions of {ref.name!r} are {listed}"
        )
    names = sorted({name for _, name, _ in known})
    if not names:
        return f"no {labels} named {ref.name!r} {where}: it has no {labels} entries yet"
    similar = difflib.get_close_matches(ref.name, names, n=5, cutoff=0.5)
    if similar:
        hint = "similar names: " + ", ".join(similar)
    else:
        shown = names[:10]
        more = f" (and {len(names) - 10} more)" if len(names) > 10 else ""
        hint = "known names: " + ", ".join(shown) + more
    return f"no {labels} named {ref.name!r} {where}; {hint}"


def register(
    con: Con,
    kind: str,
    name: str,
    content_hash: str,
    values: Mapping[str, Any],
    parents: Sequence[Ref],
) -> Entry:
    """Insert a new version of ``name`` unless ``content_hash`` is already registered.

    Runs inside the caller's transaction: read max(version), insert, write
    edges. Parents are resolved first so a bad ref fails even on a repeat.
    """
    parent_entries = [resolve(con, p) for p in parents]
    existing = select(con, kind, "WHERE t.name = ? AND t.content_hash = ?", [name, content_hash])
    if existing:
        return existing[0]
    table = TABLE[kind]
    version = scalar(
        con, f"SELECT coalesce(max(version), 0) + 1 FROM {table} WHERE name = ?", [name]
    )
    entry_id = uuid.uuid4().hex
    row = {
        "id": entry_id,
        "name": name,
        "version": version,
        "content_hash": content_hash,
        "created_at": now(),
        **values,
    }
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(row.values()))
    edges = sorted({(parent_kind, parent.id) for parent_kind, parent in parent_entries})
    for parent_kind, parent_id in edges:
        con.execute(
            "INSERT INTO lineage_edges VALUES (?, ?, ?, ?)",
            [kind, entry_id, parent_kind, parent_id],
        )
    return select(con, kind, "WHERE t.id = ?", [entry_id])[0]


def insert_quarantine(con: Con, ref: Ref, frame: pl.DataFrame) -> int:
    """Append ``frame`` (see ``quarantine_frame``) to a dataset version's quarantine,
    skipping (source, source_row_id, reason) already there; return rows inserted."""
    dataset = require(con, ref, "dataset")
    if frame.height == 0:
        return 0
    start = scalar(
        con, "SELECT coalesce(max(seq), 0) FROM quarantine WHERE dataset_id = ?", [dataset.id]
    )
    con.register(_QUARANTINE_VIEW, frame)
    try:
        result = con.execute(
            f"""
            INSERT INTO quarantine
            SELECT ?, ? + row_number() OVER (ORDER BY n.idx), n.source, n.source_row_id,
                   n.reason, n.detail, n.duplicate_of, CAST(n.payload AS JSON), ?
            FROM (
                SELECT * FROM {_QUARANTINE_VIEW}
                QUALIFY row_number() OVER (
                    PARTITION BY source, source_row_id, reason ORDER BY idx) = 1
            ) AS n
            WHERE NOT EXISTS (
                SELECT 1 FROM quarantine q
                WHERE q.dataset_id = ? AND q.source = n.source
                  AND q.source_row_id = n.source_row_id AND q.reason = n.reason
            )
            """,
            [dataset.id, start, now(), dataset.id],
        ).fetchall()
    finally:
        con.unregister(_QUARANTINE_VIEW)
    return int(result[0][0])


def quarantine_frame(rows: Sequence[QuarantinedRow]) -> pl.DataFrame:
    """Column-wise frame of quarantined rows; payloads serialised to JSON text."""
    payloads = []
    for row in rows:
        if not isinstance(row, QuarantinedRow):
            raise ValueError(f"add_quarantined expects QuarantinedRow objects, got {type(row)!r}")
        if row.payload is None:
            payloads.append(None)
            continue
        try:
            payloads.append(json.dumps(row.payload, ensure_ascii=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"quarantined row {row.source}/{row.source_row_id}: payload is not "
                f"JSON-serialisable: {exc}"
            ) from exc
    return pl.DataFrame(
        {
            "idx": range(len(rows)),
            "source": [r.source for r in rows],
            "source_row_id": [r.source_row_id for r in rows],
            "reason": [r.reason for r in rows],
            "detail": [r.detail for r in rows],
            "duplicate_of": [r.duplicate_of for r in rows],
            "payload": payloads,
        },
        schema={
            "idx": pl.Int64,
            "source": pl.String,
            "source_row_id": pl.String,
            "reason": pl.String,
            "detail": pl.String,
            "duplicate_of": pl.String,
            "payload": pl.String,
        },
    )
