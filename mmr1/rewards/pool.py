"""A small process pool whose parent enforces a wall-clock deadline on every task.

Why not ``multiprocessing.Pool`` or ``concurrent.futures``: neither can stop a
single stuck task. SymPy big-integer arithmetic runs in C, where no signal
(and so no math-verify timeout) interrupts it, so the only reliable bound is
for the parent to kill the worker. This pool:

* keeps ``num_workers`` processes alive across tasks and calls (starting them
  costs about a second each under ``spawn``);
* sends one task at a time to each idle worker over its own pipe, so it always
  knows which task a worker holds and since when;
* waits on all busy pipes with ``multiprocessing.connection.wait`` until the
  earliest deadline; a task not answered by ``dispatch time + timeout_s`` is
  reported ``"timeout"``, its worker is SIGKILLed and a fresh one started;
* reads ready results before checking deadlines, so a result already waiting
  in a pipe is never reported as a timeout;
* returns outcomes in input order.

Workers run tasks in their main thread, so code inside them may use
``signal.alarm`` (math-verify does). A worker tells the parent when it is
ready, and tasks are only sent to ready workers: start-up time never counts
against a task's deadline.

Start method: ``forkserver`` where available (POSIX), else ``spawn``; never
plain ``fork``, which is unsafe when the parent has threads (Prefect task
runners, tokenizer pools). ``preload`` modules are imported once in the fork
server, so replacing a killed worker costs milliseconds, not a fresh SymPy
import. (The fork server is per process: ``preload`` only takes effect if this
pool starts it.)
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal, NamedTuple

logger = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 120.0
_READY = "__ready__"


class TaskOutcome(NamedTuple):
    """Result of one task. ``value`` is set only when ``status == "ok"``."""

    status: Literal["ok", "timeout", "error", "crashed"]
    value: Any = None
    error: str = ""


def _worker_main(conn: Connection, task: Callable[..., Any]) -> None:
    """Worker loop: receive ``(key, args)``, reply ``(key, status, value, error)``; None stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    conn.send(_READY)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # parent gone
            return
        if message is None:
            return
        key, args = message
        try:
            reply = (key, "ok", task(*args), "")
        except Exception as exc:  # report, stay alive for the next task
            reply = (key, "error", None, f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (BrokenPipeError, EOFError, OSError):
            return
        except Exception as exc:  # unpicklable value
            conn.send((key, "error", None, f"cannot send result: {exc}"))


@dataclass
class _Worker:
    process: Any  # a multiprocessing Process of the pool's context
    conn: Connection
    started_at: float
    ready: bool = False
    key: int | None = None  # index of the task in flight
    deadline: float = 0.0


class DeadlinePool:
    """``num_workers`` persistent processes running ``task(*args)`` with per-task deadlines.

    ``task`` must be a picklable top-level function. Not thread-safe: one
    ``map`` at a time (callers hold a lock). Use as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        task: Callable[..., Any],
        num_workers: int,
        *,
        start_method: str | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"DeadlinePool: num_workers must be >= 1, got {num_workers}")
        if start_method is None:
            methods = mp.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        self.task = task
        self.num_workers = num_workers
        self.owner_pid = os.getpid()
        self.kills = 0  # workers killed at a deadline, over the pool's life
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver" and preload:
            self._ctx.set_forkserver_preload(list(preload))
        self._workers: list[_Worker] = []
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main, args=(child_end, self.task), daemon=True, name="mmr1-verifier"
        )
        process.start()
        child_end.close()  # so the parent sees EOF when the child dies
        return _Worker(process=process, conn=parent_end, started_at=time.monotonic())

    def _stop_worker(self, worker: _Worker, *, kill: bool) -> None:
        if kill:
            worker.process.kill()
        else:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        worker.process.join(timeout=2.0 if not kill else 5.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5.0)
        worker.conn.close()

    def _replace(self, worker: _Worker) -> None:
        self._stop_worker(worker, kill=True)
        self._workers[self._workers.index(worker)] = self._start_worker()

    def _ensure_workers(self) -> None:
        if self._closed:
            raise RuntimeError("DeadlinePool is closed")
        if os.getpid() != self.owner_pid:
            raise RuntimeError("DeadlinePool used from a forked child; create a new pool there")
        while len(self._workers) < self.num_workers:
            self._workers.append(self._start_worker())

    def close(self) -> None:
        """Stop all workers (politely, then by force). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self.owner_pid:  # inherited copy: the workers are not ours
            self._workers = []
            return
        for worker in self._workers:
            self._stop_worker(worker, kill=worker.key is not None)
        self._workers = []

    def __enter__(self) -> DeadlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int | None]:
        """Process ids of the current workers (changes when a worker is replaced)."""
        return [w.process.pid for w in self._workers]

    # -- running tasks -------------------------------------------------------------

    def map(self, args_list: Sequence[tuple], timeout_s: float) -> list[TaskOutcome]:
        """Run ``task(*args)`` for every ``args`` tuple; outcomes in input order.

        Each task may run at most ``timeout_s`` seconds from the moment it is
        sent to a ready worker; later it is reported as ``"timeout"`` and its
        worker replaced. A worker that dies mid-task gives ``"crashed"``.
        """
        if not timeout_s > 0:
            raise ValueError(f"DeadlinePool.map: timeout_s must be > 0, got {timeout_s}")
        outcomes: list[TaskOutcome | None] = [None] * len(args_list)
        queue = deque(range(len(args_list)))
        if not queue:
            return []
        self._ensure_workers()
        try:
            while queue or any(w.key is not None for w in self._workers):
                self._dispatch(queue, args_list, timeout_s)
                self._collect(outcomes)
        except BaseException:
            # Interrupted (Ctrl-C, an error): workers holding tasks are in an unknown
            # state. Drop them; the next map() starts fresh ones.
            for worker in [w for w in self._workers if w.key is not None or not w.ready]:
                self._stop_worker(worker, kill=True)
                self._workers.remove(worker)
            raise
        return [o if o is not None else TaskOutcome("crashed") for o in outcomes]

    def _dispatch(self, queue: deque[int], args_list: Sequence[tuple], timeout_s: float) -> None:
        for worker in list(self._workers):
            if not queue:
                return
            if not worker.ready or worker.key is not None:
                continue
            key = queue.popleft()
            try:
                worker.conn.send((key, args_list[key]))
            except (BrokenPipeError, OSError):  # died while idle: retry the task elsewhere
                queue.appendleft(key)
                self._replace(worker)
                continue
            worker.key = key
            worker.deadline = time.monotonic() + timeout_s

    def _collect(self, outcomes: list[TaskOutcome | None]) -> None:
        now = time.monotonic()
        busy = [w for w in self._workers if w.key is not None]
        starting = [w for w in self._workers if not w.ready]
        deadlines = [w.deadline for w in busy]
        deadlines += [w.started_at + WORKER_START_TIMEOUT_S for w in starting]
        wait_s = max(0.0, min(deadlines) - now) if deadlines else 0.0
        ready_conns = wait([w.conn for w in busy + starting], timeout=wait_s)
        by_conn = {id(w.conn): w for w in busy + starting}
        for conn in ready_conns:
            worker = by_conn[id(conn)]
            try:
                message = conn.recv()
            except (EOFError, OSError):
                self._on_worker_death(worker, outcomes)
                continue
            if message == _READY:
                worker.ready = True
                continue
            key, status, value, error = message
            outcomes[key] = TaskOutcome(status, value, error)
            worker.key = None
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.key is not None and now >= worker.deadline:
                outcomes[worker.key] = TaskOutcome("timeout")
                logger.debug(
                    "task %d passed its deadline; killing worker %s", worker.key, worker.process.pid
                )
                self.kills += 1
                self._replace(worker)
            elif not worker.ready and now >= worker.started_at + WORKER_START_TIMEOUT_S:
                self._stop_worker(worker, kill=True)
                raise RuntimeError(
                    f"verification worker did not start within {WORKER_START_TIMEOUT_S:.0f} s"
                )

    def _on_worker_death(self, worker: _Worker, outcomes: list[TaskOutcome | None]) -> None:
        worker.process.join(timeout=5.0)
        code = worker.process.exitcode
        if not worker.ready:
            self._stop_worker(worker, kill=True)
            self._workers.remove(worker)
            raise RuntimeError(
                f"verification worker exited during start-up (exit code {code}); see its "
                "traceback above. Workers re-import the main script: a script that scores "
                "at import time needs an `if __name__ == '__main__':` guard."
            )
        if worker.key is not None:
            logger.warning(
                "verification worker %s died (exit code %s) on task %d",
                worker.process.pid,
                code,
                worker.key,
            )
            outcomes[worker.key] = TaskOutcome("crashed", error=f"exit code {code}")
        self._replace(worker)
