"""What flow runs log for people watching them: progress, the pipeline mirror, cancellation."""

from __future__ import annotations

import logging
import os

import pytest

from tasks.context import pipeline_stage
from tasks.observe import CANCELLATION_SWITCH, Progress, announce, mirror_logger


def test_flow_runs_record_their_own_cancellation() -> None:
    # Imported by every flow: a worker-started run that is cancelled goes to Cancelled
    # at once (tests/test_ops_servers_e2e.py cancels one on a real server and worker).
    assert os.environ[CANCELLATION_SWITCH] == "true"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def pipeline_log() -> _Collect:
    collect = _Collect()
    logger = logging.getLogger("test.pipeline-mirror")
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield collect
    logger.removeHandler(collect)


def test_progress_is_logged_every_tenth_and_mirrored_to_the_pipeline(
    caplog: pytest.LogCaptureFixture, pipeline_log: _Collect
) -> None:
    caplog.set_level(logging.INFO, logger="tasks.observe")
    with pipeline_stage("sft", "mlflow-run", logging.getLogger("test.pipeline-mirror")):
        progress = Progress(total=50)
        for step in range(1, 51):
            progress(step)
        announce("leaderboard\n%s", "| model | acc |")
    own = [r.getMessage() for r in caplog.records if r.name == "tasks.observe"]
    expected = ["step 1/50 (2%)"] + [f"step {5 * k}/50 ({10 * k}%)" for k in range(1, 11)]
    assert own[:-1] == expected
    assert own[-1] == "leaderboard\n| model | acc |"
    assert pipeline_log.messages == [f"sft: {m}" for m in expected] + [
        "sft: leaderboard\n| model | acc |"
    ]


def test_progress_outside_a_pipeline_and_without_a_total(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tasks.observe")
    unknown = Progress(total=0)  # SFT by epochs: the total arrives with the first metrics
    unknown(1)
    unknown.total = 4
    for step in range(1, 5):
        unknown(step)
    assert [r.getMessage() for r in caplog.records] == [
        "step 1/4 (25%)",
        "step 2/4 (50%)",
        "step 3/4 (75%)",
        "step 4/4 (100%)",
    ]


def test_the_mirror_logs_to_the_api_only_as_the_given_flow_run() -> None:
    from prefect.logging.handlers import APILogHandler

    adapter = mirror_logger("0b2a6c9e-0000-4000-8000-000000000000", "mmr1-pipeline[demo]")
    assert adapter.extra["flow_run_id"] == "0b2a6c9e-0000-4000-8000-000000000000"
    base = adapter.logger
    assert not base.propagate  # not printed to the console a second time
    # Only the API handler (pytest's own capture handlers aside, which some earlier tests
    # of a whole-suite run leave on named loggers).
    ours = [type(h) for h in base.handlers if not type(h).__module__.startswith("_pytest")]
    assert ours == [APILogHandler]
