"""What every task needs from its surroundings: the home, the catalog, the MLflow run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def flow_tracking(
    flow_name: str, config: BaseModel, parent_run_id: str | None = None
) -> Iterator[TrackedRun]:
    """The MLflow run of a flow run: tagged with its Prefect id, config logged.

    ``parent_run_id`` nests it under the run of a calling flow (subflows).
    """
    with start_run(
        home(),
        flow_name,
        run_name=flow_run.name or None,
        prefect_flow_run_id=flow_run_id(),
        config=config,
        parent_run_id=parent_run_id,
    ) as run:
        from tasks.observe import publish_mlflow_link

        publish_mlflow_link(flow_name, run)
        yield run
