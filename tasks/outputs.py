"""The tail every producing task shares: record what it wrote in the flow's MLflow run."""

from __future__ import annotations

from typing import Any

from prefect.logging import get_run_logger

from mmr1.tracking import TrackedRun
from tasks.context import flow_run_id


def provenance(run: TrackedRun) -> dict[str, Any]:
    """The run ids a catalog registration records (``prefect_flow_run_id``, ``mlflow_run_id``)."""
    return {"prefect_flow_run_id": flow_run_id(), "mlflow_run_id": run.run_id}


def record_output(run: TrackedRun, kind: str, entry: Any, *, tag: str | None = None) -> str:
    """Record a registered catalog entry as written by ``run``; returns ``kind:name@version``.

    Adds it to the run's ``mmr1.writes``, tags ``mmr1.<tag>`` (ref) and
    ``mmr1.<tag>_uri`` when ``tag`` is given, and logs where it is.
    """
    ref = f"{kind}:{entry.ref}"
    run.record_writes([ref])
    if tag:
        run.set_tags({f"mmr1.{tag}": entry.ref, f"mmr1.{tag}_uri": entry.uri})
    get_run_logger().info("wrote %s at %s", ref, entry.uri)
    return ref
