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
from job_specs import grpo_job, sft_job, write_job

from mmr1 import jobs as trainer_main
from mmr1.trainer.tracking import (
    TrackingStoreError,
    check_tracking_store,
    is_database_store,
    job_tracking_problem,
    store_modules_available,
    tracking_store_problem,
)
from schemas.grpo import GRPOConfig
from schemas.jobs import TrackingSpec
from schemas.sft import SFTConfig


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


@pytest.mark.parametrize("kind", ["sft", "grpo"])
def test_the_job_entry_point_refuses_before_loading_anything(
    kind: str, tmp_path: Path, without_sqlalchemy: None, caplog: pytest.LogCaptureFixture
) -> None:
    paths = (tmp_path / "no-model", tmp_path / "no-data", tmp_path / "out")
    tracking = TrackingSpec(run_id="abc", tracking_uri=f"sqlite:///{tmp_path}/m.db")
    make = sft_job if kind == "sft" else grpo_job
    config = SFTConfig() if kind == "sft" else GRPOConfig()
    spec = write_job(tmp_path / "job.json", make(config, *paths, tracking=tracking))
    # 2 (refused) rather than 1 (failed loading the missing model): checked first.
    assert trainer_main.main([str(spec)]) == 2
    assert "lacks sqlalchemy and alembic" in caplog.text
    assert not (tmp_path / "out").exists()
    assert job_tracking_problem(None, f"sqlite:///{tmp_path}/m.db") is None  # no run: no logging
    assert job_tracking_problem("abc", "http://127.0.0.1:5000") is None
