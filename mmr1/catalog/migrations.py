"""Schema of the catalog, as an ordered list of migrations versioned in code.

A migration is applied once: ``schema_migrations`` records each version with
its description and time. ``apply_migrations`` runs inside the caller's
transaction, so a partly applied migration never persists, and it is safe
under concurrency because the DuckDB file admits one writer process at a time
and ``run_transaction`` serialises the threads of a process: whoever opens the
file second sees the versions the first one recorded and applies nothing.

Rules for editing: never change a migration that has shipped; append a new
one with the next version number. Stored timestamps are naive UTC; dict-valued
fields are JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from mmr1.catalog.errors import CatalogError


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "datasets, checkpoints, lineage edges, quarantined rows",
        """
        CREATE TABLE datasets (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            kind VARCHAR NOT NULL,
            uri VARCHAR NOT NULL,
            row_count BIGINT NOT NULL CHECK (row_count >= 0),
            content_hash VARCHAR NOT NULL,
            columns JSON NOT NULL,
            created_at TIMESTAMP NOT NULL,
            prefect_flow_run_id VARCHAR,
            mlflow_run_id VARCHAR,
            metadata JSON NOT NULL,
            UNIQUE (name, version),
            UNIQUE (name, content_hash)
        );
        CREATE TABLE checkpoints (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            stage VARCHAR NOT NULL,
            uri VARCHAR NOT NULL,
            content_hash VARCHAR NOT NULL,
            step BIGINT,
            metrics JSON NOT NULL,
            config JSON NOT NULL,
            created_at TIMESTAMP NOT NULL,
            prefect_flow_run_id VARCHAR,
            mlflow_run_id VARCHAR,
            UNIQUE (name, version),
            UNIQUE (name, content_hash)
        );
        -- One table for every "derived from" edge; kinds: dataset, checkpoint (vps from v2).
        CREATE TABLE lineage_edges (
            child_kind VARCHAR NOT NULL,
            child_id VARCHAR NOT NULL,
            parent_kind VARCHAR NOT NULL,
            parent_id VARCHAR NOT NULL,
            PRIMARY KEY (child_kind, child_id, parent_kind, parent_id)
        );
        -- No index: bulk inserts of 100k rows stay fast; zone maps serve the per-dataset scans.
        CREATE TABLE quarantine (
            dataset_id VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            source VARCHAR NOT NULL,
            source_row_id VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            detail VARCHAR NOT NULL,
            duplicate_of VARCHAR,
            payload JSON,
            created_at TIMESTAMP NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "VPS tables, evaluation results, the entries view",
        """
        CREATE TABLE vps_tables (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            dataset_id VARCHAR NOT NULL,
            checkpoint_id VARCHAR NOT NULL,
            uri VARCHAR NOT NULL,
            content_hash VARCHAR NOT NULL,
            row_count BIGINT NOT NULL CHECK (row_count >= 0),
            stats JSON NOT NULL,
            created_at TIMESTAMP NOT NULL,
            prefect_flow_run_id VARCHAR,
            mlflow_run_id VARCHAR,
            UNIQUE (name, version),
            UNIQUE (name, content_hash)
        );
        CREATE TABLE eval_results (
            id VARCHAR PRIMARY KEY,
            checkpoint_id VARCHAR NOT NULL,
            benchmark VARCHAR NOT NULL,
            split VARCHAR NOT NULL,
            scorer VARCHAR NOT NULL,
            n_items BIGINT NOT NULL,
            metrics JSON NOT NULL,
            breakdown JSON NOT NULL,
            predictions_uri VARCHAR,
            created_at TIMESTAMP NOT NULL,
            prefect_flow_run_id VARCHAR,
            mlflow_run_id VARCHAR
        );
        -- Every versioned entry, whatever its kind: what ref resolution and lineage read.
        CREATE VIEW entries AS
            SELECT 'dataset' AS kind, id, name, version, created_at FROM datasets
            UNION ALL
            SELECT 'checkpoint' AS kind, id, name, version, created_at FROM checkpoints
            UNION ALL
            SELECT 'vps' AS kind, id, name, version, created_at FROM vps_tables;
        """,
    ),
    Migration(
        3,
        "stage runs: which pipeline stage produced what from which inputs",
        """
        CREATE TABLE stage_runs (
            id VARCHAR PRIMARY KEY,
            stage VARCHAR NOT NULL,
            key VARCHAR NOT NULL,
            status VARCHAR NOT NULL CHECK (status IN ('completed', 'failed', 'reused')),
            output_ref VARCHAR,
            inputs JSON NOT NULL,
            code_version VARCHAR NOT NULL,
            error VARCHAR,
            created_at TIMESTAMP NOT NULL,
            prefect_flow_run_id VARCHAR,
            mlflow_run_id VARCHAR
        );
        CREATE INDEX stage_runs_key ON stage_runs (key);
        """,
    ),
    Migration(
        4,
        "eval results keyed by what produced them, so a resumed evaluation records once",
        """
        ALTER TABLE eval_results ADD COLUMN result_key VARCHAR;
        CREATE INDEX eval_results_key ON eval_results (checkpoint_id, benchmark, split, result_key);
        """,
    ),
)


def _check_order(migrations: Sequence[Migration]) -> None:
    expected = list(range(1, len(migrations) + 1))
    found = [m.version for m in migrations]
    if found != expected:
        raise CatalogError(f"catalog migrations must be numbered 1..N in order, got {found}")


_check_order(MIGRATIONS)

LATEST_VERSION = MIGRATIONS[-1].version


def applied_versions(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Versions recorded in ``schema_migrations`` (empty for a new file)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchall()[0][0]
    if not exists:
        return []
    rows = con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    return [row[0] for row in rows]


def apply_migrations(
    con: duckdb.DuckDBPyConnection, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """Apply the migrations ``con``'s database lacks, in order; return their versions.

    Runs in the caller's transaction. A second call is a no-op. A database
    written by newer code (a version we do not know) is refused rather than
    half-understood.
    """
    _check_order(migrations)
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            description VARCHAR NOT NULL,
            applied_at TIMESTAMP NOT NULL
        )
        """
    )
    done = set(applied_versions(con))
    known = {m.version for m in migrations}
    unknown = sorted(done - known)
    if unknown:
        raise CatalogError(
            f"catalog schema is at version {max(done)}, newer than this code knows "
            f"(latest {max(known)}): upgrade mmr1-pipeline to read it"
        )
    applied = []
    for migration in migrations:
        if migration.version in done:
            continue
        con.execute(migration.sql)
        con.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, ?)",
            [
                migration.version,
                migration.description,
                datetime.now(UTC).replace(tzinfo=None),
            ],
        )
        applied.append(migration.version)
    return applied
