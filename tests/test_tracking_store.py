"""Trainer jobs and the MLflow store: a database URI without SQLAlchemy is refused up front.

The trainer environment installs ``mlflow-skinny`` (no SQLAlchemy, no Alembic).
SQLAlchemy's absence is simulated two ways: in this process by hiding the
module (``sys.modules[name] = None`` makes ``import`` and ``find_spec`` fail),
and for another interpreter by running this one with ``-S`` (no site-packages).
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from mmr1.rl import grpo_main
from mmr1.train import sft_main
from mmr1.train.launch import (
    TrackingStoreError,
    check_tracking_store,
    is_database_store,
    job_tracking_problem,
    store_modules_available,
    tracking_store_problem,
)


@pytest.fixture
def without_sqlalchemy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)


def interpreter(tmp_path: Path, *flags: str) -> str:
    """A ``python`` for the trainer environment: this interpreter with ``flags``."""
    script = tmp_path / f"python{''.join(flags)}"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} {" ".join(flags)} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.parametrize(
    ("uri", "database"),
    [
        ("sqlite:////home/u/.mmr1/mlflow.db", True),
        ("postgresql+psycopg2://u@db/mlflow", True),
        ("mysql://u@db/mlflow", True),
        ("http://127.0.0.1:5000", False),
        ("https://mlflow.example.org", False),
        ("file:///tmp/mlruns", False),
        ("databricks", False),
    ],
)
def test_database_stores_are_recognised(uri: str, database: bool) -> None:
    assert is_database_store(uri) is database


def test_the_refusal_names_the_way_out() -> None:
    problem = tracking_store_problem("sqlite:///h/mlflow.db", modules_available=False)
    assert problem is not None
    assert "'sqlite:///h/mlflow.db'" in problem and "sqlalchemy and alembic" in problem
    assert "mmr1 serve" in problem and "MLFLOW_TRACKING_URI=http://" in problem
    assert tracking_store_problem("sqlite:///h/mlflow.db", modules_available=True) is None
    assert tracking_store_problem("http://mlflow:5000", modules_available=False) is None


def test_missing_sqlalchemy_is_seen_in_this_and_in_another_interpreter(
    tmp_path: Path, without_sqlalchemy: None
) -> None:
    assert store_modules_available() is False  # hidden here
    assert store_modules_available(interpreter(tmp_path)) is True  # a fresh process has it
    bare = interpreter(tmp_path, "-S")  # no site-packages: no SQLAlchemy
    assert store_modules_available(bare) is False
    with pytest.raises(TrackingStoreError, match="lacks sqlalchemy and alembic"):
        check_tracking_store(f"sqlite:///{tmp_path}/mlflow.db", bare)
    check_tracking_store("http://127.0.0.1:5000", bare)  # an HTTP server needs neither
    check_tracking_store(f"sqlite:///{tmp_path}/mlflow.db", interpreter(tmp_path))


@pytest.mark.parametrize("entry", [sft_main, grpo_main], ids=["sft_main", "grpo_main"])
def test_job_entry_points_refuse_before_loading_anything(
    entry, tmp_path: Path, without_sqlalchemy: None, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "cfg.json"
    config.write_text("{}")  # the defaults are a valid SFT and GRPO config
    args = ["--config", str(config), "--model", str(tmp_path / "no-model")]
    args += ["--dataset", str(tmp_path / "no-data"), "--output", str(tmp_path / "out")]
    sqlite = ["--mlflow-run-id", "abc", "--mlflow-tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    # 2 (refused) rather than 1 (failed loading the missing model): checked first.
    assert entry.main(args + sqlite) == 2
    assert "lacks sqlalchemy and alembic" in caplog.text
    assert not (tmp_path / "out").exists()
    assert job_tracking_problem(None, f"sqlite:///{tmp_path}/m.db") is None  # no run: no logging
    assert job_tracking_problem("abc", "http://127.0.0.1:5000") is None
