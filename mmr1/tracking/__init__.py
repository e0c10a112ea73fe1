"""MLflow tracking: one experiment per flow, runs tagged with Prefect and catalog ids."""

from mmr1.tracking.runs import (
    TrackedRun,
    child_runs,
    configure_tracking,
    find_runs,
    flatten_params,
    start_run,
)

__all__ = [
    "TrackedRun",
    "child_runs",
    "configure_tracking",
    "find_runs",
    "flatten_params",
    "start_run",
]
