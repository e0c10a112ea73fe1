"""Worker processes whose parent enforces a wall-clock deadline on every task.

Why not ``multiprocessing.Pool`` or ``concurrent.futures``: neither can stop a
single stuck task, and both start workers by re-importing the caller's
``__main__`` (``spawn``/``forkserver``), which breaks scripts without an
``if __name__ == "__main__":`` guard, ``python -c`` and notebooks. SymPy
big-integer arithmetic runs in C, where no signal (and so no math-verify
timeout) interrupts it, so the only reliable bound is for the parent to kill
the worker. This pool:

* starts each worker as ``python -m mmr1.rewards.worker`` (``sys.executable``,
  or ``$MMR1_VERIFIER_PYTHON``): a fresh interpreter that imports the task's
  module and ``preload``, never the caller's main module. All workers start at
  once, in parallel, and are kept across calls;
* talks to each over its stdin/stdout pipes in length-prefixed pickle frames
  (:mod:`mmr1.rewards.wire`), sending tasks in batches (one frame for up to
  :data:`MAX_BATCH` tasks) and getting one small frame back per task;
* gives each task a deadline of ``timeout_s`` from the moment its worker can
  start it (the batch was sent, or the previous task's result arrived); a task
  not answered by then is reported ``"timeout"``, its worker is SIGKILLed and a
  fresh one started, and the rest of that worker's batch goes back in the queue;
* reads ready results before checking deadlines, so a result already waiting
  in a pipe is never reported as a timeout;
* returns outcomes in input order.

Workers are only sent tasks once they report ready, so start-up time never
counts against a task's deadline. If no worker is ready ``start_timeout_s``
after it was launched, or workers cannot be launched at all, :meth:`map`
raises :class:`WorkerStartError` (with the outcomes finished so far) and the
caller decides what to do (:mod:`mmr1.rewards.score` verifies in-process).
POSIX only (pipes are polled with :mod:`selectors`).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import selectors
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mmr1.rewards.wire import READY, FrameReader, encode, write_all

logger = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 30.0
MAX_BATCH = 32  # tasks per frame: few round trips, little lost work behind a stuck task
PYTHON_ENV = "MMR1_VERIFIER_PYTHON"  # interpreter for workers (default: sys.executable)
_WORKER_MODULE = "mmr1.rewards.worker"


class TaskOutcome(NamedTuple):
    """Result of one task. ``value`` is set only when ``status == "ok"``."""

    status: Literal["ok", "timeout", "error", "crashed"]
    value: Any = None
    error: str = ""


class WorkerStartError(RuntimeError):
    """No worker is ready to take tasks: none could be launched, all died or are still starting.

    ``outcomes`` holds what :meth:`DeadlinePool.map` finished before this (None
    for tasks not run); ``permanent`` is True when retrying is pointless (the
    interpreter cannot be launched, or workers die while starting).
    """

    def __init__(
        self, message: str, *, permanent: bool, outcomes: list[TaskOutcome | None] | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.outcomes = outcomes or []


@dataclass
class _Worker:
    process: subprocess.Popen
    started_at: float
    reader: FrameReader = field(default_factory=FrameReader)
    ready: bool = False
    keys: deque[int] = field(default_factory=deque)  # tasks sent, not yet answered, in order
    deadline: float = 0.0  # of keys[0]

    @property
    def read_fd(self) -> int:
        return self.process.stdout.fileno()  # type: ignore[union-attr]

    @property
    def write_fd(self) -> int:
        return self.process.stdin.fileno()  # type: ignore[union-attr]


def worker_python() -> str:
    """The interpreter workers run on: ``$MMR1_VERIFIER_PYTHON``, else ``sys.executable``."""
    return os.environ.get(PYTHON_ENV) or sys.executable


def _worker_env() -> dict[str, str]:
    """The parent's environment, with this package's root first on PYTHONPATH."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env


def _step(work: Iterator[Any]) -> Iterator[Any] | None:
    """Advance ``work`` by one step; None once it is exhausted."""
    try:
        next(work)
    except StopIteration:
        return None
    return work


class DeadlinePool:
    """``num_workers`` persistent processes running ``task(*args)`` with per-task deadlines.

    ``task`` must be a picklable top-level function of an importable module
    (not ``__main__``). Not thread-safe: one ``map`` at a time (callers hold a
    lock). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        task: Callable[..., Any],
        num_workers: int,
        *,
        preload: Sequence[str] = (),
        start_timeout_s: float | None = None,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"DeadlinePool: num_workers must be >= 1, got {num_workers}")
        if start_timeout_s is None:
            start_timeout_s = WORKER_START_TIMEOUT_S
        if not start_timeout_s > 0:
            raise ValueError(f"DeadlinePool: start_timeout_s must be > 0, got {start_timeout_s}")
        self.task = task
        self.num_workers = num_workers
        self.start_timeout_s = start_timeout_s
        self.owner_pid = os.getpid()
        self.kills = 0  # workers killed at a deadline, over the pool's life
        self.start_failures = 0  # workers that died before they were ready
        self._start_frame = encode(
            (list(sys.path), list(preload), pickle.dumps(task, pickle.HIGHEST_PROTOCOL))
        )
        self._workers: list[_Worker] = []
        self._selector = selectors.DefaultSelector()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------

    def _launch(self) -> _Worker:
        if os.name != "posix":
            raise WorkerStartError("verification workers need POSIX pipes", permanent=True)
        try:
            process = subprocess.Popen(
                # -P: the current directory does not go first on the worker's sys.path
                # (a stray sympy.py there must not shadow the real one).
                [worker_python(), "-P", "-m", _WORKER_MODULE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_worker_env(),
                close_fds=True,
            )
        except OSError as exc:
            raise WorkerStartError(
                f"cannot launch a verification worker ({worker_python()!r}): {exc}",
                permanent=True,
            ) from exc
        worker = _Worker(process=process, started_at=time.monotonic())
        try:
            write_all(worker.write_fd, self._start_frame)  # small: fits in the pipe buffer
        except OSError:
            pass  # it died at once; its EOF is seen when polling
        self._selector.register(worker.read_fd, selectors.EVENT_READ, worker)
        return worker

    def start(self) -> None:
        """Launch the missing workers (returns at once; they get ready in the background)."""
        if self._closed:
            raise RuntimeError("DeadlinePool is closed")
        if os.getpid() != self.owner_pid:
            raise RuntimeError("DeadlinePool used from a forked child; create a new pool there")
        while len(self._workers) < self.num_workers:
            self._workers.append(self._launch())

    def _stop(self, worker: _Worker, *, kill: bool) -> None:
        try:
            self._selector.unregister(worker.read_fd)
        except (KeyError, ValueError):
            pass
        process = worker.process
        if not kill:
            try:
                write_all(worker.write_fd, encode(None))
            except OSError:
                kill = True
        if kill:
            process.kill()
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            process.wait(timeout=5.0 if kill else 2.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5.0)
        if worker in self._workers:
            self._workers.remove(worker)

    def close(self) -> None:
        """Stop all workers (politely, then by force). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self.owner_pid:  # inherited copy: the workers are not ours
            self._workers = []
            return
        for worker in list(self._workers):
            self._stop(worker, kill=bool(worker.keys) or not worker.ready)
        self._selector.close()

    def __enter__(self) -> DeadlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (changes when a worker is replaced)."""
        return [w.process.pid for w in self._workers]

    def ready_count(self) -> int:
        """How many workers are ready for tasks now (no waiting)."""
        return sum(w.ready for w in self._workers)

    # -- running tasks -------------------------------------------------------------

    def map(
        self,
        args_list: Sequence[tuple],
        timeout_s: float,
        *,
        background: Iterator[Any] | None = None,
    ) -> list[TaskOutcome]:
        """Run ``task(*args)`` for every ``args`` tuple; outcomes in input order.

        Each task may run at most ``timeout_s`` seconds from the moment its
        worker can start it; later it is reported as ``"timeout"`` and its worker
        replaced. A worker that dies mid-task gives ``"crashed"``. ``background``
        is advanced one step at a time while the workers are busy (parent-side
        work that overlaps with theirs); the caller finishes what is left of it.
        Raises :class:`WorkerStartError` when no worker is ready to take tasks.
        """
        if not timeout_s > 0:
            raise ValueError(f"DeadlinePool.map: timeout_s must be > 0, got {timeout_s}")
        outcomes: list[TaskOutcome | None] = [None] * len(args_list)
        queue = deque(range(len(args_list)))
        if not queue:
            return []
        self.start()
        try:
            while queue or any(w.keys for w in self._workers):
                self._check_start(queue)
                self._dispatch(queue, args_list, timeout_s)
                # With background work left, only peek at the pipes; else sleep in select.
                events = self._poll(0.0 if background is not None else self._wait_s())
                self._read(events, queue, outcomes, timeout_s)
                self._expire(queue, outcomes)
                if background is not None and not events:
                    background = _step(background)
        except WorkerStartError as exc:
            exc.outcomes = outcomes
            raise
        except BaseException:
            # Interrupted (Ctrl-C, an error): workers holding tasks are in an unknown
            # state. Drop them; the next map() starts fresh ones.
            for worker in [w for w in self._workers if w.keys]:
                self._stop(worker, kill=True)
            raise
        return [o if o is not None else TaskOutcome("crashed") for o in outcomes]

    def _check_start(self, queue: deque[int]) -> None:
        """Raise WorkerStartError when tasks wait but no worker is or can become ready."""
        if not queue or any(w.ready for w in self._workers):
            return
        if not self._workers:
            raise WorkerStartError(
                f"all verification workers died while starting ({self.start_failures} "
                "failures); see their stderr above",
                permanent=True,
            )
        oldest = min(w.started_at for w in self._workers)
        if time.monotonic() - oldest >= self.start_timeout_s:
            raise WorkerStartError(
                f"no verification worker was ready within {self.start_timeout_s:.0f} s",
                permanent=False,
            )

    def _batch_size(self, queue_len: int) -> int:
        ready = max(1, sum(w.ready for w in self._workers))
        return max(1, min(MAX_BATCH, math.ceil(queue_len / (2 * ready))))

    def _dispatch(self, queue: deque[int], args_list: Sequence[tuple], timeout_s: float) -> None:
        for worker in list(self._workers):
            if not queue:
                return
            if not worker.ready or worker.keys:
                continue
            keys = [queue.popleft() for _ in range(min(len(queue), self._batch_size(len(queue))))]
            try:
                write_all(worker.write_fd, encode([(k, args_list[k]) for k in keys]))
            except OSError:  # died while idle: retry the tasks elsewhere
                queue.extendleft(reversed(keys))
                self._replace(worker)
                continue
            worker.keys.extend(keys)
            worker.deadline = time.monotonic() + timeout_s

    def _wait_s(self) -> float:
        """Seconds until the earliest task deadline or start-up timeout (at most 1 s)."""
        now = time.monotonic()
        limits = [w.deadline for w in self._workers if w.keys]
        limits += [w.started_at + self.start_timeout_s for w in self._workers if not w.ready]
        return max(0.0, min([now + 1.0, *limits]) - now)

    def _poll(self, wait_s: float) -> list[_Worker]:
        return [key.data for key, _ in self._selector.select(timeout=wait_s)]

    def _read(
        self,
        ready: list[_Worker],
        queue: deque[int],
        outcomes: list[TaskOutcome | None],
        timeout_s: float,
    ) -> None:
        for worker in ready:
            try:
                data = os.read(worker.read_fd, 1 << 20)
            except OSError:
                data = b""
            if not data:
                self._on_death(worker, queue, outcomes)
                continue
            answered = False
            for message in worker.reader.feed(data):
                if message == READY:
                    worker.ready = True
                    continue
                key, status, value, error = message
                outcomes[key] = TaskOutcome(status, value, error)
                worker.keys.remove(key)  # always the head: a worker answers in order
                answered = True
            if answered and worker.keys:  # the next task starts now
                worker.deadline = time.monotonic() + timeout_s

    def _expire(self, queue: deque[int], outcomes: list[TaskOutcome | None]) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.keys and now >= worker.deadline:
                key = worker.keys.popleft()
                outcomes[key] = TaskOutcome("timeout")
                logger.debug(
                    "task %d passed its deadline; killing worker %s", key, worker.process.pid
                )
                self.kills += 1
                queue.extendleft(reversed(worker.keys))
                worker.keys.clear()
                self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        self._stop(worker, kill=True)
        self._workers.append(self._launch())

    def _on_death(
        self, worker: _Worker, queue: deque[int], outcomes: list[TaskOutcome | None]
    ) -> None:
        code = worker.process.poll()
        if not worker.ready:
            self.start_failures += 1
            logger.warning(
                "verification worker %s exited while starting (exit code %s)",
                worker.process.pid,
                code,
            )
            self._stop(worker, kill=True)
            return
        if worker.keys:
            key = worker.keys.popleft()
            logger.warning(
                "verification worker %s died (exit code %s) on task %d",
                worker.process.pid,
                code,
                key,
            )
            outcomes[key] = TaskOutcome("crashed", error=f"exit code {code}")
            queue.extendleft(reversed(worker.keys))
            worker.keys.clear()
        self._replace(worker)
