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
        # Child processes start their own embedded server: the default 20 s is not
        # enough on a loaded machine.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(_SESSION_ROOT / "prefect-results"),
        "TOKENIZERS_PARALLELISM": "false",
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def _prefect_console_follows_capture() -> Iterator[None]:
    """Point Prefect's console handlers at this test's stderr.

    Prefect binds its console handler to ``sys.stderr`` when it sets up logging,
    which under pytest is the capture stream of whichever test imported it; once
    that test ends the stream is closed, a later log record fails to write, and
    (inside a flow with ``log_prints``) the error report recurses through the
    patched ``print``. Re-pointing the handlers keeps every test's output captured.
    """
    import logging
    import sys

    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if type(handler).__name__ == "PrefectConsoleHandler":
                handler.stream = sys.stderr
                handler.console.file = sys.stderr
    yield


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
        with prefect_test_harness(server_startup_timeout=300):  # a loaded machine is slow
            yield


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny offline Qwen2.5-VL, built once per test module (read-only for tests)."""
    from mmr1.models import build_tiny_model
    from schemas.models import TinyVLMConfig

    return build_tiny_model(TinyVLMConfig(), tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic SFT records (two families) as a dataset directory, once per module."""
    from mmr1.data.io import write_sft_dataset
    from mmr1.data.synthetic import generate_items, to_sft_record
    from schemas.synthetic import SyntheticConfig

    items = generate_items(SyntheticConfig(n_items=40, families=["shape_color", "bar_chart"]))
    out = tmp_path_factory.mktemp("sft") / "data"
    write_sft_dataset([to_sft_record(item) for item in items], out)
    return out
