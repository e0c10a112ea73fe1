"""What a flow run shows in the Prefect UI: a meaningful name, its MLflow run, progress.

- Flow-run names come from the config: ``grpo_vas[tiny-grpo]``; long training
  tasks append their progress (``grpo_vas[tiny-grpo] step 12/24``).
- Every flow run gets a markdown artifact linking its MLflow run, and the tag
  ``mlflow:<run id>``. When the MLflow UI's address is known (the tracking URI
  is an ``http(s)`` server, or ``MMR1_MLFLOW_UI_URL`` names a UI over the local
  store), the run's URL is a tag too: ``mlflow-url:<url>``. Prefect 3.9 stores
  tags as free-form strings (no length limit), so a URL fits; the UI shows it as
  text, the artifact as a link. For a local SQLite store without a known UI
  there is no URL to give: the artifact says how to start one.
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
from prefect.runtime import flow_run

from mmr1.tracking import TrackedRun

logger = logging.getLogger(__name__)


def _field(config: Any, path: str) -> Any:
    value = config
    for part in path.split("."):
        if value is None:
            return None
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return value


def run_name(flow: str, field: str, default: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable: ``flow[<config.field>]`` (``default`` without a config)."""

    def name() -> str:
        config = (flow_run.parameters or {}).get("config")
        value = _field(config, field) if config is not None else None
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
    """The run's page in the MLflow UI at ``base``."""
    info = run.client.get_run(run.run_id).info
    return f"{base.rstrip('/')}/#/experiments/{info.experiment_id}/runs/{run.run_id}"


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


class Progress:
    """Appends ``step N/T`` to the flow run's name, at most every ``every_s`` seconds."""

    def __init__(self, total: int, every_s: float = 5.0) -> None:
        self.total = total
        self.every_s = every_s
        self.base = flow_run.name or ""
        self.last = 0.0

    def __call__(self, step: int) -> None:
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
