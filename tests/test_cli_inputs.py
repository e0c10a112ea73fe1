"""Fail fast, in one line: bad refs and missing files are refused before Prefect starts;
failures while running print one line naming the log that holds the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _mmr1(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MMR1_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _one_line_error(out: subprocess.CompletedProcess[str], code: int) -> str:
    """The single ``mmr1: error:`` line; no traceback anywhere on the console."""
    assert out.returncode == code, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("mmr1: error: ")]
    assert len(errors) == 1, out.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("sft", "--config", "sft-demo", "--set", "base_model=nope"),
            "base_model: no checkpoint named 'nope'",
        ),
        (
            ("sft", "--config", "sft-demo", "--set", "base_model=Org/Not-Cached"),
            "base_model: hub model 'Org/Not-Cached' is not in the local HF cache",
        ),
        (
            ("grpo", "--config", "grpo-demo", "--set", "init_model=/no/such/checkpoint"),
            "init_model: /no/such/checkpoint: /no/such/checkpoint is not a directory",
        ),
        (
            (
                "curate",
                "sft",
                "--set",
                "sources=[{kind: local, name: x, path: /no/such.parquet}]",
            ),
            "sources[0].path: /no/such.parquet: no such file or directory",
        ),
        (("eval", "--config", "eval-demo", "--set", "checkpoints=[absent@2]"), "checkpoints[0]"),
        (("vps", "estimate", "--config", "vps-demo"), "dataset: no dataset named 'synthetic-rl'"),
        (("sft", "--config", "sft-demo", "--set", "base_model=two words"), "base_model"),
        (("pipeline", "--config", "demo", "--set", "pin={sft: nothing@3}"), "pin.sft"),
    ],
)
def test_bad_inputs_are_refused_before_anything_starts(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    out = _mmr1(*args, home=tmp_path / "home")
    line = _one_line_error(out, 2)
    assert out.stderr.strip() == line  # nothing else at all
    assert expected in line
    assert "temporary server" not in out.stderr  # Prefect never started
    assert not (tmp_path / "home" / "logs").exists()


def test_a_failure_while_running_prints_one_line_and_keeps_the_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file PAR1")
    out = _mmr1(
        "curate",
        "rl",
        "--set",
        f"sources=[{{kind: local, name: broken, path: {broken}}}]",
        "--set",
        "difficulty.enabled=false",
        home=tmp_path / "home",
    )
    line = _one_line_error(out, 1)  # Prefect's progress lines around it, no traceback
    assert "SourceError" in line and "not a readable parquet file" in line
    assert "Retry 1/2" not in out.stderr  # bad input is not retried
    log = Path(line.rsplit("full traceback: ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "home" / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "SourceError" in text
