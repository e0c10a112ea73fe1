"""Many processes (and threads) writing one catalog file: nothing lost, no gaps, no dupes.

DuckDB admits one read-write process per file, so these tests exercise the
retry-with-backoff path for real: separate interpreters started with the
``spawn`` context, as Prefect's process workers are.
"""

from __future__ import annotations

import multiprocessing
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

from mmr1.catalog import Catalog, CatalogLockTimeout
from mmr1.catalog.connection import is_lock_conflict, run_transaction
from schemas.catalog import QuarantinedRow

N_WORKERS = 6
SHARED_NAMES = 3  # names every worker writes distinct content to
COMMON_NAMES = 4  # names every worker writes the *same* content to
PRIVATE_NAMES = 4
QUARANTINE_PER_DATASET = 25
SHARED_QUARANTINE_ROWS = 10  # identical rows sent by every worker: stored once


def _plan(worker: int) -> list[tuple[str, str]]:
    """(name, content_hash) pairs a worker registers: 15 in all."""
    shared = [(f"shared-{k}", f"w{worker}-shared-{k}") for k in range(SHARED_NAMES)]
    # Two contents per shared name for some workers: more versions, more contention.
    shared += [(f"shared-{k}", f"w{worker}-shared-{k}-b") for k in range(worker % 2 * 2)]
    common = [(f"common-{k}", f"common-content-{k}") for k in range(COMMON_NAMES)]
    private = [(f"private-{worker}-{k}", f"p{worker}-{k}") for k in range(PRIVATE_NAMES)]
    plan = shared + common + private
    plan += [(f"private-{worker}-0", f"p{worker}-0-v{v}") for v in range(15 - len(plan))]
    return plan


def _worker(path: str, worker: int, barrier, results) -> None:
    catalog = Catalog(path, lock_timeout_s=60)
    rng = random.Random(worker)
    plan = _plan(worker)
    rng.shuffle(plan)
    barrier.wait()
    got = []
    for name, digest in plan:
        entry = catalog.register_dataset(
            name=name,
            kind="rl",
            uri=f"/data/{name}/{digest}",
            content_hash=digest,
            row_count=len(digest),
            columns={"id": "str"},
            metadata={"worker": worker},
        )
        got.append((name, digest, entry.version))
        if name.startswith("common-"):
            own = [
                QuarantinedRow(source=f"worker-{worker}", source_row_id=str(i), reason="duplicate")
                for i in range(QUARANTINE_PER_DATASET)
            ]
            same = [
                QuarantinedRow(source="common", source_row_id=str(i), reason="empty_problem")
                for i in range(SHARED_QUARANTINE_ROWS)
            ]
            catalog.add_quarantined(entry.ref, own + same)
        elif name.startswith("private-") and entry.version == 1:
            rows = [
                QuarantinedRow(source="p", source_row_id=str(i), reason="image_decode_error")
                for i in range(QUARANTINE_PER_DATASET)
            ]
            catalog.add_quarantined(entry.ref, rows)
    results.put((worker, got))


def test_processes_register_concurrently_without_loss(tmp_path):
    path = str(tmp_path / "catalog.duckdb")
    Catalog(path)  # create up front so workers race on data, not only on migrations
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_WORKERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(path, w, barrier, results)) for w in range(N_WORKERS)
    ]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    got = dict(results.get(timeout=900) for _ in procs)
    for proc in procs:
        proc.join(timeout=300)
        assert proc.exitcode == 0
    elapsed = time.perf_counter() - start

    catalog = Catalog(path)
    entries = catalog.list_datasets()
    planned = {pair for w in range(N_WORKERS) for pair in _plan(w)}
    stored = Counter((e.name, e.content_hash) for e in entries)
    assert set(stored) == planned
    assert all(count == 1 for count in stored.values())

    versions = defaultdict(list)
    for entry in entries:
        versions[entry.name].append(entry.version)
    for name, found in versions.items():
        assert sorted(found) == list(range(1, len(found) + 1)), name
    for k in range(COMMON_NAMES):
        assert versions[f"common-{k}"] == [1]  # identical content: one version for everyone
    assert len(versions["shared-0"]) == N_WORKERS + N_WORKERS // 2

    # Every worker saw the version that was stored for its content.
    by_pair = {(e.name, e.content_hash): e.version for e in entries}
    for worker_results in got.values():
        for name, digest, version in worker_results:
            assert by_pair[(name, digest)] == version

    for k in range(COMMON_NAMES):
        summary = catalog.quarantine_summary(f"common-{k}@1")
        assert summary == {
            "duplicate": N_WORKERS * QUARANTINE_PER_DATASET,
            "empty_problem": SHARED_QUARANTINE_ROWS,
        }
        rows = catalog.quarantined(f"common-{k}@1")
        assert len({(r.source, r.source_row_id, r.reason) for r in rows}) == len(rows)
    for w in range(N_WORKERS):
        for k in range(PRIVATE_NAMES):
            summary = catalog.quarantine_summary(f"private-{w}-{k}@1")
            assert summary == {"image_decode_error": QUARANTINE_PER_DATASET}
    assert elapsed < 60, f"concurrent registration took {elapsed:.1f}s"


def test_threads_of_one_process_share_a_catalog(tmp_path):
    """Prefect runs tasks in a thread pool: the in-process path must not lose writes either."""
    catalog = Catalog(tmp_path / "catalog.duckdb")

    def register(i: int) -> int:
        return catalog.register_dataset(
            name=f"set-{i % 3}",
            kind="rl",
            uri="/x",
            content_hash=f"h{i % 12}",
            row_count=1,
            columns={},
        ).version

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(register, range(48)))
    entries = catalog.list_datasets()
    assert len(entries) == 12
    for k in range(3):
        assert [e.version for e in entries if e.name == f"set-{k}"] == [1, 2, 3, 4]


_HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the catalog file open read-write."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_lock_conflict_is_the_error_we_retry(tmp_path):
    path = tmp_path / "catalog.duckdb"
    Catalog(path)
    holder = _hold(path, 30)
    try:
        for read_only in (False, True):
            with pytest.raises(duckdb.IOException) as info:
                duckdb.connect(str(path), read_only=read_only)
            assert is_lock_conflict(info.value)
            assert "Could not set lock on file" in str(info.value)
    finally:
        holder.kill()
        holder.wait()


def test_lock_timeout_names_the_file(tmp_path):
    path = tmp_path / "catalog.duckdb"
    catalog = Catalog(path, lock_timeout_s=0.5)
    holder = _hold(path, 30)
    try:
        start = time.perf_counter()
        with pytest.raises(CatalogLockTimeout, match=str(path)) as info:
            catalog.list_datasets()
        elapsed = time.perf_counter() - start
        assert "Conflicting lock" in str(info.value)
        # Gave up after its 0.5 s, long before the holder lets go (30 s).
        assert 0.5 <= elapsed < 25.0
        with pytest.raises(CatalogLockTimeout):
            Catalog(path, lock_timeout_s=0.2)  # migrations on open wait like everything else
    finally:
        holder.kill()
        holder.wait()


def test_reads_and_writes_wait_for_the_holder(tmp_path):
    path = tmp_path / "catalog.duckdb"
    catalog = Catalog(path, lock_timeout_s=20)
    holder = _hold(path, 1.0)
    try:
        start = time.perf_counter()
        assert catalog.list_datasets() == []
        waited = time.perf_counter() - start
        entry = catalog.register_dataset(
            name="after", kind="rl", uri="/x", content_hash="h", row_count=0, columns={}
        )
    finally:
        holder.wait(timeout=30)
    assert waited > 0.5  # it really had to wait for the other process
    assert entry.version == 1


def test_failed_work_rolls_back(tmp_path):
    path = tmp_path / "catalog.duckdb"
    Catalog(path)

    def work(con):
        con.execute("INSERT INTO lineage_edges VALUES ('dataset', 'a', 'dataset', 'b')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_transaction(path, work, lock_timeout_s=5)
    rows = run_transaction(
        path,
        lambda con: con.execute("SELECT count(*) FROM lineage_edges").fetchall(),
        lock_timeout_s=5,
    )
    assert rows == [(0,)]


def test_a_file_being_created_is_retried_but_a_broken_one_is_not(tmp_path) -> None:
    import duckdb

    from mmr1.catalog.connection import is_file_being_created

    path = tmp_path / "catalog.duckdb"
    path.write_bytes(b"")
    error = duckdb.IOException(
        f'IO Error: The file "{path}" exists, but it is not a valid DuckDB database file!'
    )
    assert is_file_being_created(error, path)
    path.write_bytes(b"x" * 64 * 1024)  # full-size garbage: broken, not being created
    assert not is_file_being_created(error, path)
    assert not is_file_being_created(duckdb.IOException("IO Error: disk full"), path)
