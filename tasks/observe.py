"""What a flow run shows in the Prefect UI: a meaningful name, its MLflow run, progress.

- Flow-run names come from the config: ``grpo_vas[tiny-grpo]``; long training
  tasks append their progress (``grpo_vas[tiny-grpo] step 12/24``) and log it
  at INFO about every 10%, also in the calling pipeline's flow run, so
  watching the pipeline (``prefect deployment run --watch``, a CI log) shows it.
- Every flow run gets a markdown artifact linking its MLflow run, and the tag
  ``mlflow:<run id>``. When the MLflow UI's address is known (the tracking URI
  is an ``http(s)`` server, or ``MMR1_MLFLOW_UI_URL`` names a UI over the local
  store), the run's URL is a tag too: ``mlflow-url:<url>``. Prefect 3.9 stores
  tags as free-form strings (no length limit), so a URL fits; the UI shows it as
  text, the artifact as a link. For a local SQLite store without a known UI
  there is no URL to give: the artifact says how to start one. Links open the
  MLflow UI's "Model training" view (``workflowType=machine_learning``): MLflow
  3.17 otherwise opens its GenAI view.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run

from mmr1.tracking import TrackedRun
from mmr1.tracking.runs import MODEL_TRAINING_VIEW
from tasks.context import pipeline_stage_context
from tasks.parameters import parameter_field

logger = logging.getLogger(__name__)


def run_name(flow: str, field: str, default: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable: ``flow[<config.field>]`` (``default`` without a value).

    The value comes from the run's parameters as the flow resolves them
    (``preset`` or ``config``, then ``overrides``).
    """

    def name() -> str:
        value = parameter_field(flow_run.parameters or {}, field)
        if isinstance(value, list | tuple):
            value = ",".join(str(v).split(":", 1)[-1] for v in value)
        return f"{flow}[{value or default}]"

    return name


# Where `mlflow ui` / `mmr1 serve` put the UI when nothing says otherwise.
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"


def mlflow_ui_url(tracking_uri: str) -> str | None:
    """The MLflow UI serving ``tracking_uri``, when known.

    An ``http(s)`` tracking URI is its own UI; a local store (SQLite, files) has
    one only where ``MMR1_MLFLOW_UI_URL`` says a UI serves it.
    """
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    configured = os.environ.get("MMR1_MLFLOW_UI_URL", "").strip()
    return configured.rstrip("/") or None


def mlflow_run_url(run: TrackedRun, base: str) -> str:
    """The run's page in the MLflow UI at ``base``, in the "Model training" view."""
    info = run.client.get_run(run.run_id).info
    page = f"#/experiments/{info.experiment_id}/runs/{run.run_id}"
    return f"{base.rstrip('/')}/{page}?{MODEL_TRAINING_VIEW}"


def publish_mlflow_link(flow: str, run: TrackedRun) -> None:
    """A markdown artifact and flow-run tags pointing at the MLflow run."""
    run_id = flow_run.id
    if not run_id:
        return
    store = run.client.tracking_uri
    base = mlflow_ui_url(store)
    url = mlflow_run_url(run, base or DEFAULT_MLFLOW_UI_URL)
    markdown = f"MLflow run of this `{flow}` flow run: [{run.run_id}]({url})\n\n"
    markdown += f"Tracking store: `{store}`"
    if base is None:
        markdown += (
            f" (a local store: the link works once a UI serves it, e.g. `mmr1 serve` or "
            f"`mlflow ui --backend-store-uri {store}`)."
        )
    create_markdown_artifact(
        key=f"mlflow-{flow.replace('_', '-').lower()}",
        markdown=markdown,
        description=f"MLflow run {run.run_id}",
    )
    tags = {f"mlflow:{run.run_id}"} | ({f"mlflow-url:{url}"} if base else set())
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(UUID(str(run_id)))
            client.update_flow_run(UUID(str(run_id)), tags=sorted({*current.tags, *tags}))
    except Exception as exc:  # the link is a convenience: never fail a flow over it
        logger.warning("could not tag flow run %s with its MLflow run: %s", run_id, exc)


def run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """The Prefect run logger here, or this module's logger outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logger


_MIRROR = logging.getLogger("mmr1.pipeline")


def mirror_logger(flow_run_id: str, flow_run_name: str = "") -> logging.LoggerAdapter[Any]:
    """A logger whose records become logs of flow run ``flow_run_id`` in the Prefect API only.

    Stages log their progress to their own flow run (console included) and
    mirror it to the pipeline's run with this: watching the pipeline shows it,
    the console does not show it twice.
    """
    if not any(isinstance(h, APILogHandler) for h in _MIRROR.handlers):
        _MIRROR.addHandler(APILogHandler())
        _MIRROR.setLevel(logging.INFO)
        _MIRROR.propagate = False
    extra = {"flow_run_id": flow_run_id, "flow_run_name": flow_run_name, "flow_name": ""}
    return logging.LoggerAdapter(_MIRROR, extra)


def announce(message: str, *args: Any) -> None:
    """Log at INFO in this flow run and, inside a pipeline stage, in the pipeline's run."""
    run_logger().info(message, *args)
    stage = pipeline_stage_context()
    if stage is not None:
        stage.logger.info(f"{stage.stage}: {message}", *args)


# Cancellation of a flow run that a worker started (Prefect 3.9). The worker starts the
# run's process with this switch off, so on a cancel the engine leaves the Cancelled state
# (and on_cancellation hooks) to the worker, and logs "Finished in state Running()". The
# worker sets Cancelled only after it has loaded the flow again in a fresh process to look
# for hooks: 20-60 s for this project's imports (torch, transformers, MLflow) on a busy
# machine. These flows have no cancellation hooks, so their engine records the
# cancellation itself as soon as the SIGTERM lands; the worker then finds the run
# Cancelled already (prefect/runner/_cancel_finalizer.py).
CANCELLATION_SWITCH = "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS"
os.environ[CANCELLATION_SWITCH] = "true"


class Progress:
    """Training progress: ``step N/T`` appended to the flow run's name (at most every
    ``every_s`` seconds) and logged at INFO about every 10% (:func:`announce`)."""

    def __init__(self, total: int, every_s: float = 5.0) -> None:
        self.total = total
        self.every_s = every_s
        self.base = flow_run.name or ""
        self.last = 0.0
        self.logged_tenth = -1
        # Bound now, in the task's context: the training loop may call back from elsewhere.
        self.logger = run_logger()
        self.stage = pipeline_stage_context()

    def _log(self, step: int) -> None:
        if self.total <= 0:
            return
        tenth = min(10, step * 10 // self.total)
        if tenth <= self.logged_tenth:
            return
        self.logged_tenth = tenth
        message = f"step {step}/{self.total} ({100 * step // self.total}%)"
        self.logger.info(message)
        if self.stage is not None:
            self.stage.logger.info(f"{self.stage.stage}: {message}")

    def __call__(self, step: int) -> None:
        self._log(step)
        run_id = flow_run.id
        now = time.monotonic()
        if not run_id or (now - self.last < self.every_s and step < self.total):
            return
        self.last = now
        try:
            with get_client(sync_client=True) as client:
                client.update_flow_run(
                    UUID(str(run_id)), name=f"{self.base} step {step}/{self.total}"
                )
        except Exception as exc:
            logger.warning("could not update the progress of flow run %s: %s", run_id, exc)
