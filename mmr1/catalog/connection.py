"""Short-lived DuckDB connections with retry on lock conflicts.

DuckDB lets one process at a time open a database file read-write, and while
it does, no other process can open the file at all, not even read-only
(verified with duckdb 2.0.1). Opening fails at once with::

    duckdb.IOException: IO Error: Could not set lock on file "/path/catalog.duckdb":
    Conflicting lock is held in /usr/bin/python3 (PID 4937). ...

Prefect workers run flows in separate processes, so the catalog never keeps a
connection: each operation opens the file, runs one transaction, commits and
closes, and a conflicting open is retried with exponential backoff and jitter
until a deadline, then surfaces as ``CatalogLockTimeout``.

We always open read-write. Read-only opens would not help (they fail in the
same way while a writer holds the file, and they block writers), and within
one process DuckDB refuses a read-only connection to a file that is already
open read-write ("different configuration").

Within one process, DuckDB shares one database instance between connections,
so threads (Prefect runs tasks in a thread pool) do not hit the file lock but
optimistic write-write conflicts instead. A per-file lock serialises our own
transactions in a process; ``TransactionException: Conflict ...`` is still
retried in case other code writes to the same file.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb

from mmr1.catalog.errors import CatalogLockTimeout

T = TypeVar("T")

_LOCK_MARKERS = ("Could not set lock on file", "Conflicting lock")
_CONFLICT_MARKERS = ("Conflict on", "write-write conflict", "Transaction conflict")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt ``k`` sleeps about
    ``min(max_s, initial_s * multiplier**k)``, scaled by a uniform factor in
    ``[1 - jitter, 1 + jitter]`` so that competing processes spread out."""

    initial_s: float = 0.005
    multiplier: float = 2.0
    max_s: float = 0.25
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_s, self.initial_s * self.multiplier**attempt)
        return base * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)


DEFAULT_BACKOFF = Backoff()


def is_lock_conflict(exc: BaseException) -> bool:
    """True for the error DuckDB raises when another process holds the file."""
    return isinstance(exc, duckdb.IOException) and any(m in str(exc) for m in _LOCK_MARKERS)


#: DuckDB's file starts with three 4 KiB header blocks; a shorter file is still being created.
_HEADER_BYTES = 3 * 4096


def is_file_being_created(exc: BaseException, path: Path) -> bool:
    """True when another process has just created ``path`` and not yet written its headers.

    DuckDB then reports "exists, but it is not a valid DuckDB database file". Only
    a file shorter than DuckDB's headers counts: a full-size file with that error is
    really broken (or mid-write by a process that should hold the lock), and retrying
    it could hide lost writes, so that error propagates.
    """
    if not (isinstance(exc, duckdb.IOException) and "not a valid DuckDB database" in str(exc)):
        return False
    try:
        return path.stat().st_size < _HEADER_BYTES
    except OSError:
        return True  # vanished again: the creator is still at work


def is_transaction_conflict(exc: BaseException) -> bool:
    """True for an optimistic write-write conflict between two open transactions."""
    return isinstance(exc, duckdb.TransactionException) and any(
        m in str(exc) for m in _CONFLICT_MARKERS
    )


# One lock per catalog file, shared by all Catalog objects of this process.
_PATH_LOCKS: dict[str, threading.RLock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(path: Path) -> threading.RLock:
    key = os.path.realpath(path)
    with _PATH_LOCKS_GUARD:
        lock = _PATH_LOCKS.get(key)
        if lock is None:
            lock = _PATH_LOCKS[key] = threading.RLock()
        return lock


def _forget_locks_after_fork() -> None:
    # A lock held by another thread at fork time would never be released in the child.
    global _PATH_LOCKS_GUARD
    _PATH_LOCKS.clear()
    _PATH_LOCKS_GUARD = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_after_fork)


def _run_once(path: Path, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            result = work(con)
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # the transaction was already aborted or never started
            raise
        return result
    finally:
        con.close()


def run_transaction(
    path: str | Path,
    work: Callable[[duckdb.DuckDBPyConnection], T],
    *,
    lock_timeout_s: float,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> T:
    """Open ``path``, run ``work(con)`` in one transaction, commit, close; return its result.

    ``work`` may run several times (after a lock or write conflict), so it must
    have no effect outside the database. Raises ``CatalogLockTimeout`` naming the
    file when it stays locked for ``lock_timeout_s`` seconds; every other error
    propagates after the transaction is rolled back.
    """
    path = Path(path)
    deadline = time.monotonic() + lock_timeout_s
    rng = random.Random()
    attempt = 0
    last_error: str = ""
    while True:
        remaining = deadline - time.monotonic()
        lock = _path_lock(path)
        if not lock.acquire(timeout=max(remaining, 0.0)):
            raise CatalogLockTimeout(
                f"catalog {path} stayed busy for {lock_timeout_s:.1f}s: another thread of this "
                "process held it"
            )
        try:
            return _run_once(path, work)
        except duckdb.Error as exc:
            transient = (
                is_lock_conflict(exc)
                or is_transaction_conflict(exc)
                or is_file_being_created(exc, path)
            )
            if not transient:
                raise
            last_error = str(exc)
        finally:
            lock.release()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CatalogLockTimeout(
                f"catalog {path} stayed locked for {lock_timeout_s:.1f}s after {attempt + 1} "
                f"attempts; last error: {last_error}"
            )
        time.sleep(min(backoff.delay(attempt, rng), remaining))
        attempt += 1
