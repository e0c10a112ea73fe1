"""A verification worker process: ``python -m mmr1.rewards.worker``.

Started by :class:`mmr1.rewards.pool.DeadlinePool` as
``python -m mmr1.rewards.worker`` (``sys.executable``): a fresh interpreter that
imports only this package and the modules it is told to preload, never the
caller's ``__main__``. So the caller needs no ``if __name__ == "__main__":``
guard, and ``python -c``, notebooks and ``python - < script`` work alike.

Wire format (:mod:`mmr1.rewards.wire`), both directions: frames of a 4-byte
big-endian payload length followed by a pickle. The worker reads frames on the
stdin pipe and writes on the stdout pipe it was started with; it moves those
pipes to private file descriptors first and points fds 0/1 at
``/dev/null``/stderr, so a stray ``print`` in a task cannot corrupt the stream.

Conversation::

    parent -> worker  (sys_path, preload, pickled_task)   once, at start
    worker -> parent  READY                               after the imports
    parent -> worker  [(key, args), ...]                  a batch of tasks
    worker -> parent  (key, status, value, error)         one frame per task, in order
    parent -> worker  None                                stop

A result is written as soon as its task ends, so the parent knows which task
the worker holds and since when (the deadline of a task runs from the result
of the one before it). Tasks run in the worker's main thread, so they may use
``signal.alarm`` (math-verify does). The worker exits when its stdin closes
or its parent process is gone.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sys
import threading
import time
from typing import Any

from mmr1.rewards.wire import READY, FrameReader, encode, write_all

PARENT_CHECK_S = 1.0  # how often a worker checks that its parent is alive


def _read_frame(fd: int, reader: FrameReader, pending: list[Any]) -> Any:
    """The next frame from ``fd``; raises EOFError when the parent closed the pipe."""
    while not pending:
        data = os.read(fd, 1 << 16)
        if not data:
            raise EOFError
        pending.extend(reader.feed(data))
    return pending.pop(0)


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent dies (a stuck task would otherwise outlive it)."""
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            os._exit(0)


def _run_one(task: Any, key: int, args: tuple) -> bytes:
    """The result frame of ``task(*args)``; failures are reported, never raised."""
    try:
        value = task(*args)
    except BaseException as exc:  # incl. an uncaught timeout from the task's own alarm
        return encode((key, "error", None, f"{type(exc).__name__}: {exc}"))
    try:
        return encode((key, "ok", value, ""))
    except Exception as exc:  # an unpicklable result
        return encode((key, "error", None, f"cannot send result: {exc}"))


def serve(in_fd: int, out_fd: int) -> None:
    """Read the start frame, import, announce READY, then run batches until told to stop."""
    reader, pending = FrameReader(), []
    sys_path, preload, task_bytes = _read_frame(in_fd, reader, pending)
    sys.path.extend(p for p in sys_path if p not in sys.path)
    for module in preload:
        importlib.import_module(module)
    task = pickle.loads(task_bytes)
    write_all(out_fd, encode(READY))
    while True:
        try:
            batch = _read_frame(in_fd, reader, pending)
        except EOFError:
            return
        if batch is None:
            return
        for key, args in batch:
            try:
                write_all(out_fd, _run_one(task, key, args))
            except BrokenPipeError:  # parent gone
                return


def main() -> None:
    """Entry point of ``python -m mmr1.rewards.worker``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # print() in a task goes to stderr, not into the frame stream
    parent_pid = os.getppid()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    try:
        serve(in_fd, out_fd)
    except (EOFError, BrokenPipeError):
        pass


if __name__ == "__main__":
    main()
