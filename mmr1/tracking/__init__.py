"""MLflow tracking: one experiment per flow, runs tagged with Prefect and catalog ids."""

from mmr1.tracking.runs import (
    TrackedRun,
    configure_tracking,
    find_runs,
    flatten_params,
    start_run,
)

__all__ = ["TrackedRun", "configure_tracking", "find_runs", "flatten_params", "start_run"]
