"""Schema migrations: applied once, idempotent, upgrade old files, safe on a racing first open."""

from __future__ import annotations

import multiprocessing

import pytest

from mmr1.catalog import Catalog, CatalogError
from mmr1.catalog.connection import run_transaction
from mmr1.catalog.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    applied_versions,
    apply_migrations,
)


def _query(path, sql):
    return run_transaction(path, lambda con: con.execute(sql).fetchall(), lock_timeout_s=10)


def _tables(path) -> set[str]:
    rows = _query(path, "SELECT table_name FROM information_schema.tables")
    return {name for (name,) in rows}


def test_fresh_file_gets_every_migration(tmp_path):
    path = tmp_path / "catalog.duckdb"
    Catalog(path)
    rows = _query(path, "SELECT version, description FROM schema_migrations ORDER BY version")
    assert [v for v, _ in rows] == [m.version for m in MIGRATIONS] == [1, 2, 3, 4]
    assert all(description for _, description in rows)
    assert LATEST_VERSION == 4
    assert {"datasets", "checkpoints", "lineage_edges", "quarantine", "vps_tables"} <= _tables(path)


def test_rerunning_is_a_no_op(tmp_path):
    path = tmp_path / "catalog.duckdb"
    catalog = Catalog(path)
    catalog.register_dataset(
        name="d", kind="rl", uri="/d", content_hash="h", row_count=1, columns={}
    )
    before = _query(path, "SELECT * FROM schema_migrations ORDER BY version")
    assert run_transaction(path, apply_migrations, lock_timeout_s=10) == []
    Catalog(path)  # opening again applies nothing either
    assert _query(path, "SELECT * FROM schema_migrations ORDER BY version") == before
    assert [e.ref for e in Catalog(path).list_datasets()] == ["d@1"]


def test_file_at_version_1_is_upgraded_keeping_data(tmp_path):
    path = tmp_path / "catalog.duckdb"
    applied = run_transaction(
        path, lambda con: apply_migrations(con, MIGRATIONS[:1]), lock_timeout_s=10
    )
    assert applied == [1]
    assert "vps_tables" not in _tables(path)
    # A dataset and a checkpoint written by the version-1 code.
    _query(
        path,
        "INSERT INTO datasets VALUES ('d1', 'rl-pool', 1, 'rl', '/d', 5, 'h', '{}', "
        "TIMESTAMP '2026-01-01 00:00:00', NULL, NULL, '{}')",
    )
    _query(
        path,
        "INSERT INTO checkpoints VALUES ('c1', 'sft', 1, 'sft', '/c', 'ch', NULL, '{}', '{}', "
        "TIMESTAMP '2026-01-01 00:00:00', NULL, NULL)",
    )

    catalog = Catalog(path)
    assert run_transaction(path, applied_versions, lock_timeout_s=10) == [1, 2, 3, 4]
    dataset = catalog.get_dataset("rl-pool")
    assert dataset.row_count == 5 and dataset.created_at.year == 2026
    vps = catalog.register_vps_table(
        name="vps",
        dataset_ref="rl-pool@1",
        checkpoint_ref="sft@1",
        uri="/v",
        content_hash="v",
        row_count=5,
    )
    assert vps.ref == "vps@1"
    assert catalog.lineage("vps:vps").parents[0].ref == "rl-pool@1"


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "catalog.duckdb"
    Catalog(path)
    _query(path, "INSERT INTO schema_migrations VALUES (99, 'from the future', now())")
    with pytest.raises(CatalogError, match="version 99, newer than this code"):
        Catalog(path)


def test_migrations_must_be_numbered_in_order(tmp_path):
    shuffled = [Migration(2, "b", "SELECT 1"), Migration(1, "a", "SELECT 1")]
    with pytest.raises(CatalogError, match="numbered 1..N"):
        run_transaction(
            tmp_path / "x.duckdb", lambda con: apply_migrations(con, shuffled), lock_timeout_s=5
        )


def test_failed_migration_leaves_nothing_behind(tmp_path):
    path = tmp_path / "catalog.duckdb"
    broken = [*MIGRATIONS, Migration(LATEST_VERSION + 1, "broken", "CREATE TABLE t (x NOPE)")]
    with pytest.raises(Exception, match="NOPE"):
        run_transaction(path, lambda con: apply_migrations(con, broken), lock_timeout_s=5)
    # One transaction: not even migrations 1 and 2 were kept.
    assert run_transaction(path, applied_versions, lock_timeout_s=5) == []


def _open(path: str, barrier) -> None:
    barrier.wait()
    Catalog(path, lock_timeout_s=600)  # generous: a loaded machine starts processes slowly


def test_concurrent_first_open_applies_each_migration_once(tmp_path):
    path = str(tmp_path / "catalog.duckdb")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open, args=(path, barrier)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=900)
        assert proc.exitcode == 0
    versions = _query(path, "SELECT version FROM schema_migrations ORDER BY 1")
    assert versions == [(1,), (2,), (3,), (4,)]
