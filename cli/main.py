"""The ``mmr1`` command: thin, it calls flows or, for inspection, the library.

Inspection commands (``catalog ...``, ``home``) need only the library, so they
work in a trainer environment without Prefect; flow commands import ``flows``
lazily (``mmr1/`` itself never imports Prefect). The parser is in :mod:`cli.parser`,
what each command does in :mod:`cli.commands`; this module runs one and turns its
errors into one line and an exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cli import run_log
from cli.commands import CliError
from cli.parser import build_parser
from mmr1.catalog import CatalogError
from mmr1.models.hub import ModelSourceError
from schemas.presets import ConfigError

_STARTUP_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"

#: Commands that run a flow: their ValueErrors keep the traceback.
FLOW_COMMANDS = frozenset({"demo", "curate", "sft", "grpo", "eval", "pipeline"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit 0; 2 for a bad command, config or input (one line on stderr,
    before anything starts); 1 for a failure while running (one line naming the log file
    that holds the full traceback); 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    if args.home is not None:
        os.environ["MMR1_HOME"] = str(args.home.expanduser().resolve())
    log = run_log.RunLog.for_command(args.command)
    try:
        args.func(args)
    except (CliError, CatalogError, ConfigError, ModelSourceError) as exc:
        print(f"mmr1: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmr1: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _is_input_error(args, exc):
            print(f"mmr1: error: {exc}", file=sys.stderr)  # e.g. a malformed ref
            return 2
        where = log.write_traceback(exc)
        print(f"mmr1: error: {_describe(exc)} (full traceback: {where})", file=sys.stderr)
        return 1
    finally:
        log.close()
    return 0


def _is_input_error(args: argparse.Namespace, exc: Exception) -> bool:
    """A ValueError of an inspection command (not of a running flow) is bad input."""
    running = args.command in FLOW_COMMANDS and getattr(args, "eval_command", None) is None
    running = running or getattr(args, "vps_command", None) == "estimate"
    return isinstance(exc, ValueError) and not running


def _describe(exc: BaseException) -> str:
    """One line for a runtime failure; the embedded server's time-out gets advice."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if _STARTUP_TIMEOUT in str(exc):
        waited = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "?")
        return (
            f"the embedded Prefect API server did not answer within {waited} s (a busy "
            "machine?); raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or run against "
            "a started server (`mmr1 serve`, then PREFECT_API_URL=http://HOST:PORT/api)"
        )
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
