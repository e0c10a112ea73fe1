"""Training jobs launched as subprocesses (``accelerate launch``) from a task."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from prefect.logging import get_run_logger


def run_job(command: Sequence[str], log_path: Path, timeout_s: float | None, what: str) -> None:
    """Run ``command``, appending its output to ``log_path``; raise with the log tail on failure."""
    get_run_logger().info("launching: %s", " ".join(command))
    with log_path.open("ab") as log:
        completed = subprocess.run(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            timeout=timeout_s,
            check=False,
        )
    if completed.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"{what} job failed with exit code {completed.returncode}; log {log_path}:\n{tail}"
        )
