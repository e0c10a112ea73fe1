"""The catalog: a DuckDB manifest of datasets, checkpoints, VPS tables and eval results.

Every artefact the pipeline writes is registered here under ``name@version``;
stages pass these refs, never in-memory objects. Rules shared by datasets,
checkpoints and VPS tables:

- versions start at 1 per name; registering a (name, content_hash) that is
  already present returns the existing entry unchanged (retried tasks are
  free), a new hash gets ``max(version) + 1``. The read of the max and the
  insert share one transaction, and (name, version) and (name, content_hash)
  are unique, so concurrent writers can neither collide nor leave gaps;
- ``name`` alone means the latest version; ``kind:`` prefixes disambiguate a
  name used by several kinds (see ``schemas.refs``);
- lineage edges (child -> parents) live in one table and are written once, when
  the version is created.

Every public method opens the file, runs one short transaction and closes it
(``mmr1.catalog.connection``), so any number of processes can share a catalog.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mmr1.catalog import store
from mmr1.catalog.connection import run_transaction
from mmr1.catalog.errors import CatalogError
from mmr1.catalog.migrations import apply_migrations
from schemas.catalog import (
    CheckpointEntry,
    DatasetEntry,
    EvalResultEntry,
    LineageNode,
    QuarantinedRow,
    StageRunEntry,
    VPSTableEntry,
)
from schemas.refs import KINDS, Ref, check_name, parse_ref

Con = store.Con
Entry = store.Entry
T = TypeVar("T")


class Catalog:
    """The pipeline's manifest, stored in one DuckDB file shared by all processes.

    ``lock_timeout_s`` bounds how long one operation waits for the file while
    another process holds it before raising ``CatalogLockTimeout``.
    """

    def __init__(self, path: str | Path, *, lock_timeout_s: float = 120.0) -> None:
        if lock_timeout_s < 0:
            raise ValueError(f"lock_timeout_s must be >= 0, got {lock_timeout_s}")
        self.path = Path(path).expanduser().resolve()
        self.lock_timeout_s = lock_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._run(apply_migrations)

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r})"

    def _location(self, location: str) -> str:
        """Stored form of a file location: relative to the catalog's directory when inside it
        (the home can then be moved or copied whole); entries always read back absolute."""
        return store.stored_location(location, self.path.parent)

    def _run(self, work: Callable[[Con], T]) -> T:
        return run_transaction(self.path, work, lock_timeout_s=self.lock_timeout_s)

    # ------------------------------------------------------------------ datasets

    def register_dataset(
        self,
        *,
        name: str,
        kind: str,
        uri: str,
        content_hash: str,
        row_count: int,
        columns: Mapping[str, str],
        parents: Sequence[str] = (),
        prefect_flow_run_id: str | None = None,
        mlflow_run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> DatasetEntry:
        """Register a dataset version (or return the existing one with this content hash).

        ``parents`` are refs of the entries it was derived from (any kind); they
        must exist and are pinned to a version when recorded.
        """
        check_name(name)
        _require_text(kind=kind, uri=uri, content_hash=content_hash)
        parent_refs = _parse_parents(parents)
        if row_count < 0:
            raise ValueError(f"dataset {name!r}: row_count must be >= 0, got {row_count}")
        values = {
            "kind": kind,
            "uri": self._location(str(uri)),
            "row_count": int(row_count),
            "columns": store.to_json({str(k): str(v) for k, v in columns.items()}, "columns"),
            "prefect_flow_run_id": prefect_flow_run_id,
            "mlflow_run_id": mlflow_run_id,
            "metadata": store.to_json(dict(metadata or {}), "metadata"),
        }
        entry = self._run(
            lambda con: store.register(con, "dataset", name, content_hash, values, parent_refs)
        )
        assert isinstance(entry, DatasetEntry)
        return entry

    def get_dataset(self, ref: str) -> DatasetEntry:
        """The dataset at ``ref`` (``name`` = latest version, ``name@3`` = version 3)."""
        ref_ = _typed_ref(ref, "dataset")
        entry = self._run(lambda con: store.require(con, ref_, "dataset"))
        assert isinstance(entry, DatasetEntry)
        return entry

    def list_datasets(
        self, *, name: str | None = None, kind: str | None = None
    ) -> list[DatasetEntry]:
        """All dataset versions, optionally of one name and/or kind, by name then version."""
        filters = {"t.name": name, "t.kind": kind}
        entries = self._run(lambda con: store.list_entries(con, "dataset", filters))
        return [e for e in entries if isinstance(e, DatasetEntry)]

    def add_quarantined(self, dataset_ref: str, rows: Sequence[QuarantinedRow]) -> int:
        """Record rows kept out of a dataset version; return how many were inserted.

        Idempotent per row: a row whose (source, source_row_id, reason) is
        already quarantined for this dataset version is skipped, so a retried
        task does not count its rejections twice. Rows are inserted in one
        statement from a Polars frame (100k rows take well under a second).
        """
        frame = store.quarantine_frame(rows)
        ref = _typed_ref(dataset_ref, "dataset")
        return self._run(lambda con: store.insert_quarantine(con, ref, frame))

    def quarantined(
        self, dataset_ref: str, *, reason: str | None = None, limit: int | None = None
    ) -> list[QuarantinedRow]:
        """Quarantined rows of a dataset version in insertion order (optionally one reason)."""
        ref = _typed_ref(dataset_ref, "dataset")

        def work(con: Con) -> list[dict[str, Any]]:
            dataset = store.require(con, ref, "dataset")
            sql = (
                "SELECT source, source_row_id, reason, detail, duplicate_of, payload "
                "FROM quarantine WHERE dataset_id = ?"
            )
            params: list[Any] = [dataset.id]
            if reason is not None:
                sql += " AND reason = ?"
                params.append(reason)
            sql += " ORDER BY seq"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            con.execute(sql, params)
            return [
                {
                    "source": r[0],
                    "source_row_id": r[1],
                    "reason": r[2],
                    "detail": r[3],
                    "duplicate_of": r[4],
                    "payload": json.loads(r[5]) if r[5] is not None else None,
                }
                for r in con.fetchall()
            ]

        return [QuarantinedRow(**row) for row in self._run(work)]

    def quarantine_summary(self, dataset_ref: str) -> dict[str, int]:
        """Reason -> number of quarantined rows for a dataset version, most frequent first."""
        ref = _typed_ref(dataset_ref, "dataset")

        def work(con: Con) -> dict[str, int]:
            dataset = store.require(con, ref, "dataset")
            rows = con.execute(
                "SELECT reason, count(*) AS n FROM quarantine WHERE dataset_id = ? "
                "GROUP BY reason ORDER BY n DESC, reason",
                [dataset.id],
            ).fetchall()
            return {reason: int(n) for reason, n in rows}

        return self._run(work)

    # --------------------------------------------------------------- checkpoints

    def register_checkpoint(
        self,
        *,
        name: str,
        stage: str,
        uri: str,
        content_hash: str,
        step: int | None = None,
        metrics: Mapping[str, float] | None = None,
        config: Mapping[str, Any] | None = None,
        parents: Sequence[str] = (),
        prefect_flow_run_id: str | None = None,
        mlflow_run_id: str | None = None,
    ) -> CheckpointEntry:
        """Register a checkpoint version (or return the existing one with this content hash)."""
        check_name(name)
        _require_text(stage=stage, uri=uri, content_hash=content_hash)
        if step is not None and step < 0:
            raise ValueError(f"checkpoint {name!r}: step must be >= 0, got {step}")
        parent_refs = _parse_parents(parents)
        values = {
            "stage": stage,
            "uri": self._location(str(uri)),
            "step": step,
            "metrics": store.to_json(_float_map(metrics or {}, "metrics"), "metrics"),
            "config": store.to_json(dict(config or {}), "config"),
            "prefect_flow_run_id": prefect_flow_run_id,
            "mlflow_run_id": mlflow_run_id,
        }
        entry = self._run(
            lambda con: store.register(con, "checkpoint", name, content_hash, values, parent_refs)
        )
        assert isinstance(entry, CheckpointEntry)
        return entry

    def get_checkpoint(self, ref: str) -> CheckpointEntry:
        """The checkpoint at ``ref`` (``name`` = latest version)."""
        ref_ = _typed_ref(ref, "checkpoint")
        entry = self._run(lambda con: store.require(con, ref_, "checkpoint"))
        assert isinstance(entry, CheckpointEntry)
        return entry

    def list_checkpoints(
        self, *, name: str | None = None, stage: str | None = None
    ) -> list[CheckpointEntry]:
        """All checkpoint versions, optionally of one name and/or stage."""
        filters = {"t.name": name, "t.stage": stage}
        entries = self._run(lambda con: store.list_entries(con, "checkpoint", filters))
        return [e for e in entries if isinstance(e, CheckpointEntry)]

    # ------------------------------------------------------------ VPS and evals

    def register_vps_table(
        self,
        *,
        name: str,
        dataset_ref: str,
        checkpoint_ref: str,
        uri: str,
        content_hash: str,
        row_count: int,
        stats: Mapping[str, Any] | None = None,
        prefect_flow_run_id: str | None = None,
        mlflow_run_id: str | None = None,
    ) -> VPSTableEntry:
        """Register a VPS table computed by rolling out ``checkpoint_ref`` on ``dataset_ref``.

        Both refs must exist; they are pinned to versions and also recorded as
        the table's lineage parents.
        """
        check_name(name)
        _require_text(uri=uri, content_hash=content_hash)
        if row_count < 0:
            raise ValueError(f"VPS table {name!r}: row_count must be >= 0, got {row_count}")
        data_ref = _typed_ref(dataset_ref, "dataset")
        model_ref = _typed_ref(checkpoint_ref, "checkpoint")
        values = {
            "uri": self._location(str(uri)),
            "row_count": int(row_count),
            "stats": store.to_json(dict(stats or {}), "stats"),
            "prefect_flow_run_id": prefect_flow_run_id,
            "mlflow_run_id": mlflow_run_id,
        }

        def work(con: Con) -> Entry:
            dataset = store.require(con, data_ref, "dataset")
            checkpoint = store.require(con, model_ref, "checkpoint")
            row = {**values, "dataset_id": dataset.id, "checkpoint_id": checkpoint.id}
            parents = [
                Ref("dataset", dataset.name, dataset.version),
                Ref("checkpoint", checkpoint.name, checkpoint.version),
            ]
            return store.register(con, "vps", name, content_hash, row, parents)

        entry = self._run(work)
        assert isinstance(entry, VPSTableEntry)
        return entry

    def get_vps_table(self, ref: str) -> VPSTableEntry:
        """The VPS table at ``ref`` (``name`` = latest version)."""
        ref_ = _typed_ref(ref, "vps")
        entry = self._run(lambda con: store.require(con, ref_, "vps"))
        assert isinstance(entry, VPSTableEntry)
        return entry

    def list_vps_tables(self, *, name: str | None = None) -> list[VPSTableEntry]:
        """All VPS table versions, optionally of one name, by name then version."""
        entries = self._run(lambda con: store.list_entries(con, "vps", {"t.name": name}))
        return [e for e in entries if isinstance(e, VPSTableEntry)]

    def latest_vps_table(self, dataset_ref: str) -> VPSTableEntry | None:
        """The most recently registered VPS table computed for a dataset version, or None.

        As everywhere, a bare dataset name means its latest version: a table
        scored on an older version is not returned for newer data, since its
        prompt ids may not match. Raises ``CatalogNotFoundError`` if the dataset
        itself does not exist.
        """
        ref = _typed_ref(dataset_ref, "dataset")

        def work(con: Con) -> Entry | None:
            dataset = store.require(con, ref, "dataset")
            found = store.select(
                con,
                "vps",
                "WHERE t.dataset_id = ? ORDER BY t.created_at DESC, t.version DESC LIMIT 1",
                [dataset.id],
            )
            return found[0] if found else None

        entry = self._run(work)
        assert entry is None or isinstance(entry, VPSTableEntry)
        return entry

    def record_eval_result(
        self,
        *,
        checkpoint_ref: str,
        benchmark: str,
        split: str,
        scorer: str,
        n_items: int,
        metrics: Mapping[str, float],
        breakdown: Mapping[str, Any] | None = None,
        predictions_uri: str | None = None,
        prefect_flow_run_id: str | None = None,
        mlflow_run_id: str | None = None,
        result_key: str | None = None,
    ) -> EvalResultEntry:
        """Record the scores of a checkpoint (which must exist) on a benchmark split.

        ``result_key`` identifies what produced the result (generations, scorer and
        code): a result with the same checkpoint, benchmark, split and key already
        recorded is returned unchanged, so a resumed or retried evaluation records
        once. Without a key every call adds a result (newest last).
        """
        _require_text(benchmark=benchmark, split=split, scorer=scorer)
        model_ref = _typed_ref(checkpoint_ref, "checkpoint")
        if n_items < 0:
            raise ValueError(f"eval result: n_items must be >= 0, got {n_items}")
        metrics_json = store.to_json(_float_map(metrics, "metrics"), "metrics")
        breakdown_json = store.to_json(dict(breakdown or {}), "breakdown")

        def work(con: Con) -> EvalResultEntry:
            checkpoint = store.require(con, model_ref, "checkpoint")
            if result_key is not None:
                found = store.rows(
                    con,
                    store.SELECT_EVAL + " WHERE e.checkpoint_id = ? AND e.benchmark = ? AND "
                    "e.split = ? AND e.result_key = ? ORDER BY e.created_at LIMIT 1",
                    [checkpoint.id, benchmark, split, result_key],
                )
                if found:
                    return EvalResultEntry(**found[0])
            result_id = uuid.uuid4().hex
            con.execute(
                "INSERT INTO eval_results (id, checkpoint_id, benchmark, split, scorer, n_items, "
                "metrics, breakdown, predictions_uri, created_at, prefect_flow_run_id, "
                "mlflow_run_id, result_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    result_id,
                    checkpoint.id,
                    benchmark,
                    split,
                    scorer,
                    int(n_items),
                    metrics_json,
                    breakdown_json,
                    self._location(predictions_uri) if predictions_uri else None,
                    store.now(),
                    prefect_flow_run_id,
                    mlflow_run_id,
                    result_key,
                ],
            )
            rows = store.rows(con, store.SELECT_EVAL + " WHERE e.id = ?", [result_id])
            return EvalResultEntry(**rows[0])

        return self._run(work)

    def eval_results(
        self, *, checkpoint_ref: str | None = None, benchmark: str | None = None
    ) -> list[EvalResultEntry]:
        """Recorded results, oldest first, optionally for one checkpoint and/or benchmark.

        A bare checkpoint name means its latest version.
        """
        model_ref = _typed_ref(checkpoint_ref, "checkpoint") if checkpoint_ref else None

        def work(con: Con) -> list[EvalResultEntry]:
            clauses, params = [], []
            if model_ref is not None:
                clauses.append("e.checkpoint_id = ?")
                params.append(store.require(con, model_ref, "checkpoint").id)
            if benchmark is not None:
                clauses.append("e.benchmark = ?")
                params.append(benchmark)
            where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
            rows = store.rows(
                con, store.SELECT_EVAL + where + " ORDER BY e.created_at, e.id", params
            )
            return [EvalResultEntry(**row) for row in rows]

        return self._run(work)

    # --------------------------------------------------------------- stage runs

    def record_stage_run(
        self,
        *,
        stage: str,
        key: str,
        status: str,
        code_version: str,
        output_ref: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        error: str | None = None,
        prefect_flow_run_id: str | None = None,
        mlflow_run_id: str | None = None,
    ) -> StageRunEntry:
        """Record one attempt of a pipeline stage (every call adds a row)."""
        _require_text(stage=stage, key=key, code_version=code_version)
        if status not in {"completed", "failed", "reused"}:
            raise ValueError(f"stage run status must be completed|failed|reused, got {status!r}")
        if output_ref:
            self.resolve(output_ref)  # must exist
        inputs_json = store.to_json(dict(inputs or {}), "inputs")

        def work(con: Con) -> StageRunEntry:
            run_id = uuid.uuid4().hex
            con.execute(
                "INSERT INTO stage_runs (id, stage, key, status, output_ref, inputs, code_version, "
                "error, created_at, prefect_flow_run_id, mlflow_run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    stage,
                    key,
                    status,
                    output_ref,
                    inputs_json,
                    code_version,
                    error,
                    store.now(),
                    prefect_flow_run_id,
                    mlflow_run_id,
                ],
            )
            found = store.rows(con, "SELECT * FROM stage_runs WHERE id = ?", [run_id])
            return StageRunEntry(**found[0])

        return self._run(work)

    def find_completed_stage(self, key: str) -> StageRunEntry | None:
        """The newest completed attempt with this key whose output is still in the catalog."""

        def work(con: Con) -> list[dict[str, Any]]:
            return store.rows(
                con,
                "SELECT * FROM stage_runs WHERE key = ? AND status = 'completed' "
                "ORDER BY created_at DESC",
                [key],
            )

        for row in self._run(work):
            if row["output_ref"] is None:  # a stage with no catalog output (evaluation)
                return StageRunEntry(**row)
            try:
                self.resolve(row["output_ref"])
            except (CatalogError, ValueError):
                continue
            return StageRunEntry(**row)
        return None

    def stage_runs(self, *, stage: str | None = None) -> list[StageRunEntry]:
        """Recorded stage attempts, oldest first, optionally of one stage."""

        def work(con: Con) -> list[dict[str, Any]]:
            where, params = ("WHERE stage = ?", [stage]) if stage else ("", [])
            return store.rows(
                con, f"SELECT * FROM stage_runs {where} ORDER BY created_at, id", params
            )

        return [StageRunEntry(**row) for row in self._run(work)]

    # ------------------------------------------------------------------ lineage

    def lineage(self, ref: str, *, kind: str = "dataset") -> LineageNode:
        """The entry at ``ref`` and, recursively, what it was derived from.

        ``kind`` (dataset, checkpoint, vps) applies to an unprefixed ref; a
        ``kind:`` prefix in the ref wins. A parent shared by two branches
        appears under each.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown lineage kind {kind!r}: expected one of {', '.join(KINDS)}")
        parsed = parse_ref(ref)
        target_kind = parsed.kind or kind

        def work(con: Con) -> LineageNode:
            root = store.require(con, parsed, target_kind)
            edges = con.execute(
                """
                WITH RECURSIVE up(child_kind, child_id, parent_kind, parent_id) AS (
                    SELECT child_kind, child_id, parent_kind, parent_id
                    FROM lineage_edges WHERE child_kind = ? AND child_id = ?
                    UNION
                    SELECT e.child_kind, e.child_id, e.parent_kind, e.parent_id
                    FROM lineage_edges e
                    JOIN up ON e.child_kind = up.parent_kind AND e.child_id = up.parent_id
                )
                SELECT up.child_kind, up.child_id, up.parent_kind, up.parent_id,
                       p.name || '@' || p.version AS parent_ref
                FROM up JOIN entries p ON p.kind = up.parent_kind AND p.id = up.parent_id
                ORDER BY list_position(['dataset', 'checkpoint', 'vps'], up.parent_kind),
                         p.name, p.version
                """,
                [target_kind, root.id],
            ).fetchall()
            parents: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
            for child_kind, child_id, parent_kind, parent_id, parent_ref in edges:
                parents.setdefault((child_kind, child_id), []).append(
                    (parent_kind, parent_id, parent_ref)
                )

            def build(node_kind: str, node_id: str, node_ref: str) -> LineageNode:
                return LineageNode(
                    kind=node_kind,
                    ref=node_ref,
                    parents=[build(k, i, r) for k, i, r in parents.get((node_kind, node_id), [])],
                )

            return build(target_kind, root.id, root.ref)

        return self._run(work)

    def resolve(self, ref: str) -> tuple[str, Entry]:
        """Find ``ref`` in any table: returns (kind, entry).

        An unprefixed name used by several kinds raises ``CatalogAmbiguousRefError``.
        """
        parsed = parse_ref(ref)
        return self._run(lambda con: store.resolve(con, parsed))


def _typed_ref(ref: str, kind: str) -> Ref:
    """Parse a ref that must name an entry of ``kind`` (a matching prefix is allowed)."""
    parsed = parse_ref(ref)
    if parsed.kind is not None and parsed.kind != kind:
        raise ValueError(
            f"catalog ref {ref!r} names a {store.LABEL[parsed.kind]}, not a {store.LABEL[kind]}"
        )
    return parsed


def _parse_parents(parents: Sequence[str]) -> list[Ref]:
    if isinstance(parents, str):
        raise ValueError(f"parents must be a list of refs, got the string {parents!r}")
    return [parse_ref(p) for p in parents]


def _float_map(values: Mapping[str, Any], field: str) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"catalog field {field!r}: {key!r} is not a number ({value!r})"
            ) from exc
    return out


def _require_text(**fields: Any) -> None:
    for field, value in fields.items():
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ValueError(f"catalog field {field!r} must be a non-empty string, got {value!r}")
