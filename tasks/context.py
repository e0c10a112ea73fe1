"""What every task needs from its surroundings: the home, the catalog, the MLflow run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prefect.runtime import flow_run
from pydantic import BaseModel

from mmr1.catalog import Catalog
from mmr1.tracking import TrackedRun, configure_tracking, start_run
from schemas.home import HomeConfig


def home() -> HomeConfig:
    """The pipeline home of this process (``MMR1_HOME`` and friends), created if missing."""
    return HomeConfig().ensure()


def catalog() -> Catalog:
    return Catalog(home().catalog)


def flow_run_id() -> str | None:
    """Id of the Prefect flow run we are inside, if any."""
    run_id = flow_run.id
    return str(run_id) if run_id else None


def tracked_run(run_id: str) -> TrackedRun:
    """A handle on an MLflow run opened by the flow (tasks run in other threads)."""
    return TrackedRun(configure_tracking(home()), run_id)


@dataclass(frozen=True)
class PipelineStage:
    """What a stage flow run knows of the pipeline run that called it (as a subflow)."""

    stage: str
    mlflow_run_id: str
    #: Logs to the pipeline's flow run, so watching the pipeline shows the stage's progress.
    logger: logging.Logger | logging.LoggerAdapter[Any]


# Set by the pipeline around each stage it calls. Not a flow parameter: an internal
# id has no place in the run form, and subflows run in the caller's thread and context.
_PIPELINE_STAGE: ContextVar[PipelineStage | None] = ContextVar("mmr1_pipeline_stage", default=None)


@contextmanager
def pipeline_stage(
    stage: str, mlflow_run_id: str, logger: logging.Logger | logging.LoggerAdapter[Any]
) -> Iterator[PipelineStage]:
    """Run a stage flow inside this block to nest it under the pipeline's MLflow run."""
    current = PipelineStage(stage, mlflow_run_id, logger)
    token = _PIPELINE_STAGE.set(current)
    try:
        yield current
    finally:
        _PIPELINE_STAGE.reset(token)


def pipeline_stage_context() -> PipelineStage | None:
    """The calling pipeline's stage, when this flow runs as one of its stages."""
    return _PIPELINE_STAGE.get()


@contextmanager
def flow_tracking(flow_name: str, config: BaseModel) -> Iterator[TrackedRun]:
    """The MLflow run of a flow run: tagged with its Prefect id, config logged.

    Run as a pipeline stage (:func:`pipeline_stage`), it is nested under the
    pipeline's run, in the pipeline's experiment (mmr1.tracking.start_run).
    """
    parent = pipeline_stage_context()
    with start_run(
        home(),
        flow_name,
        run_name=flow_run.name or None,
        prefect_flow_run_id=flow_run_id(),
        config=config,
        parent_run_id=parent.mlflow_run_id if parent else None,
    ) as run:
        from tasks.observe import publish_mlflow_link

        publish_mlflow_link(flow_name, run)
        crash_dead_flow_runs(run)
        yield run


def crash_dead_flow_runs(run: TrackedRun) -> None:
    """Mark the Prefect flow runs of the dead MLflow runs ``run`` closed (same work, process
    gone) as Crashed, with a message naming the run that resumed them; they would otherwise
    show Running forever. Flow runs unknown to this Prefect API are left alone."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    logger = logging.getLogger(__name__)
    resumed_by = flow_run_id()
    for dead in run.reaped:
        if not dead.prefect_flow_run_id or dead.prefect_flow_run_id == resumed_by:
            continue
        message = (
            f"process {dead.pid} on {dead.host} died; resumed by flow run {resumed_by} "
            f"(MLflow run {run.run_id})"
        )
        try:
            with get_client(sync_client=True) as client:
                flow_run_ = client.read_flow_run(UUID(dead.prefect_flow_run_id))
                if flow_run_.state is not None and not flow_run_.state.is_final():
                    client.set_flow_run_state(flow_run_.id, Crashed(message=message), force=True)
        except Exception as exc:  # another Prefect API, a deleted run: nothing to mark here
            logger.warning("could not mark flow run %s crashed: %s", dead.prefect_flow_run_id, exc)
