"""Tasks run in this process, each under a wall-clock deadline: the no-subprocess path.

Used by :func:`mmr1.rewards.score.score_batch` when ``num_workers=0`` and as the
fallback when worker processes cannot start (subprocesses forbidden, no usable
interpreter, a machine so loaded that no worker is ready in time).

How the deadline is kept without signals (which only the main thread may use):
the tasks run one after another in a helper thread, and the calling thread waits
for each result with a timeout. A task that misses its deadline
(``timeout_s`` from the end of the task before it) is reported ``"timeout"``;
the helper is abandoned (it is told to stop by an asynchronous
:class:`TaskDeadline` exception raised in it, and exits at its next Python
instruction) and a fresh helper takes the remaining tasks. So it works from any
thread, the main one included, and the caller regains control on time.

Limits, compared with worker processes (document them where the fallback is used):

* An abandoned task stops only when it next runs Python bytecode. SymPy
  big-integer arithmetic in C holds the GIL until it returns, so it stalls the
  caller too; :mod:`mmr1.rewards.guards` rejects the known cases (power towers,
  huge exponents and factorials) before any parsing, but an unguarded C-level
  blow-up is not bounded here. Only killing a worker process bounds that.
* Tasks share this process's CPU core(s) with the caller (one task at a time).
* ``PyThreadState_SetAsyncExc`` is CPython's; elsewhere an abandoned helper runs
  its task to the end in the background (the caller still moves on).
"""

from __future__ import annotations

import ctypes
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from mmr1.rewards.pool import TaskOutcome


class TaskDeadline(BaseException):
    """Raised asynchronously in an abandoned helper thread (a BaseException, so that
    ``except Exception`` blocks in SymPy or math-verify cannot swallow it)."""


def _raise_in_thread(thread: threading.Thread) -> None:
    """Ask ``thread`` to raise :class:`TaskDeadline` at its next bytecode (CPython)."""
    ident = thread.ident
    set_async_exc = getattr(ctypes.pythonapi, "PyThreadState_SetAsyncExc", None)
    if ident is None or set_async_exc is None:
        return
    set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(TaskDeadline))


class _Helper(threading.Thread):
    """Runs ``task(*args)`` for each ``(key, args)`` in order, posting ``(key, outcome)``."""

    def __init__(self, task: Callable[..., Any], jobs: list[tuple[int, tuple]]) -> None:
        super().__init__(daemon=True, name="mmr1-verify-inprocess")
        self.task = task
        self.jobs = jobs
        self.results: queue.SimpleQueue[tuple[int, TaskOutcome]] = queue.SimpleQueue()
        self.abandoned = False
        self._finished = False
        self._state = threading.Lock()  # orders "finished" against "stop it"

    def run(self) -> None:
        try:
            for key, args in self.jobs:
                if self.abandoned:
                    break
                try:
                    outcome = TaskOutcome("ok", self.task(*args))
                except TaskDeadline:
                    raise
                except BaseException as exc:  # incl. a task's own uncaught timeout
                    outcome = TaskOutcome("error", error=f"{type(exc).__name__}: {exc}")
                self.results.put((key, outcome))
            with self._state:
                self._finished = True
        except TaskDeadline:  # abandoned by the caller: just stop
            return

    def abandon(self) -> None:
        """Stop posting results; interrupt the task in progress (while it still runs)."""
        self.abandoned = True
        with self._state:
            if not self._finished:  # never aim at a thread id that may be reused
                _raise_in_thread(self)


def run_bounded(
    task: Callable[..., Any], args_list: Sequence[tuple], timeout_s: float
) -> list[TaskOutcome]:
    """``task(*args)`` for each ``args`` in this process; outcomes in input order.

    Each task gets ``timeout_s`` seconds from the moment it can start (see the
    module docstring for how, and for the limits); a late one is ``"timeout"``.
    """
    if not timeout_s > 0:
        raise ValueError(f"run_bounded: timeout_s must be > 0, got {timeout_s}")
    outcomes: list[TaskOutcome | None] = [None] * len(args_list)
    pending = list(range(len(args_list)))
    while pending:
        helper = _Helper(task, [(k, args_list[k]) for k in pending])
        helper.start()
        try:
            pending = _collect(helper, pending, outcomes, timeout_s)
        except BaseException:  # Ctrl-C while waiting: do not leave the helper running
            helper.abandon()
            raise
    return [o if o is not None else TaskOutcome("crashed") for o in outcomes]


def _collect(
    helper: _Helper, keys: list[int], outcomes: list[TaskOutcome | None], timeout_s: float
) -> list[int]:
    """Wait for ``helper``'s results in order; the keys left when one misses its deadline."""
    deadline = time.monotonic() + timeout_s
    for position, key in enumerate(keys):
        try:
            done_key, outcome = helper.results.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            outcomes[key] = TaskOutcome("timeout")
            helper.abandon()
            return keys[position + 1 :]
        outcomes[done_key] = outcome
        deadline = time.monotonic() + timeout_s
    return []
