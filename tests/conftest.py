"""Test-wide environment: offline, every bit of state under a temporary home.

Set before Prefect, MLflow or transformers are imported (they read settings at import).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="mmr1-tests-"))
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(_SESSION_ROOT / "hf"),
        "MMR1_HOME": str(_SESSION_ROOT / "home"),
        "PREFECT_HOME": str(_SESSION_ROOT / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(_SESSION_ROOT / "prefect-results"),
        "TOKENIZERS_PARALLELISM": "false",
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh pipeline home for one test (MMR1_HOME points at it)."""
    from schemas.home import HomeConfig

    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "mmr1-home"))
    return HomeConfig().ensure()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One ephemeral Prefect API for the whole session (~10 s to start, once)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        with prefect_test_harness(server_startup_timeout=60):
            yield
