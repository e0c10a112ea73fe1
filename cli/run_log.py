"""A command's full log under the home, and a console that shows one line per failure.

``mmr1`` commands keep the console readable: Prefect's progress lines still go
to the terminal, but tracebacks (Prefect logs every failed task and flow run
with one) are kept out of it and written, with everything else logged, to
``$MMR1_HOME/logs/mmr1-<command>-<time>-<pid>.log``. The command then prints a
single ``mmr1: error: ...`` line naming that file. Nothing here imports
Prefect: its console handler is recognised by class name.
"""

from __future__ import annotations

import logging
import os
import traceback
from datetime import UTC, datetime
from pathlib import Path

from schemas.home import HomeConfig

_CONSOLE_HANDLERS = ("PrefectConsoleHandler",)


class _WithoutTraceback(logging.Formatter):
    """Formats a record with another formatter, leaving exception and stack text out."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_console_tracebacks() -> None:
    """Strip tracebacks from Prefect's console handlers (the log file keeps them)."""
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if type(handler).__name__ in _CONSOLE_HANDLERS and not isinstance(
                handler.formatter, _WithoutTraceback
            ):
                handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))


class RunLog:
    """The log file of one command: what the console shows, tracebacks included.

    The file is created lazily, by the first record or traceback, so inspection
    commands leave nothing behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handler: logging.Handler | None = None
        handler = _LazyFileHandler(path)
        handler.setLevel(logging.INFO)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s - %(message)s")
        )
        # On the root logger, levels untouched: what reaches the console (Prefect's flow and
        # task run logs, warnings) reaches the file too, with its tracebacks.
        logging.getLogger().addHandler(handler)
        self._handler = handler

    @classmethod
    def for_command(cls, command: str) -> RunLog:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        directory = HomeConfig().root / "logs"
        return cls(directory / f"mmr1-{command}-{stamp}-{os.getpid()}.log")

    def write_traceback(self, exc: BaseException) -> Path:
        """Append ``exc``'s traceback to the file; return the file's path."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(traceback.format_exception(exc)))
        return self.path

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None


class _LazyFileHandler(logging.FileHandler):
    """A ``FileHandler`` that creates its directory and file on the first record."""

    def __init__(self, path: Path) -> None:
        self._path = path
        super().__init__(path, encoding="utf-8", delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:  # type: ignore[has-type]
            self._path.parent.mkdir(parents=True, exist_ok=True)
        super().emit(record)
