"""Where a training job's metrics go: an MLflow run, by id, from any process.

The job logs with ``MlflowClient.log_batch`` only, so ``mlflow-skinny`` suffices
in the trainer environment. A database store (``sqlite:///...``) needs
SQLAlchemy and Alembic there, which ``mlflow-skinny`` lacks, and a SQLite file
written from several machines over a shared volume is unsafe anyway; an HTTP
tracking server (``mmr1 serve`` or the user's) needs neither.
:func:`check_tracking_store` (before launching) and :func:`job_tracking_problem`
(in the job, before the model is loaded) refuse the combination that would
otherwise fail only after minutes of set-up.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import time
from collections.abc import Callable

#: MLflow accepts at most 1000 metrics per log_batch call.
_METRIC_BATCH = 1000


def mlflow_logger(run_id: str, tracking_uri: str | None) -> Callable[[dict[str, float], int], None]:
    """A metrics callback that logs finite values to an existing MLflow run by id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)

    def log(metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [
            Metric(str(key), float(value), now, int(step))
            for key, value in metrics.items()
            if value is not None and math.isfinite(float(value))
        ]
        for start in range(0, len(items), _METRIC_BATCH):
            client.log_batch(run_id, metrics=items[start : start + _METRIC_BATCH])

    return log


#: MLflow tracking stores that are databases (read through SQLAlchemy, migrated by Alembic).
DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})
#: What MLflow imports for a database store; ``mlflow-skinny`` installs neither.
STORE_MODULES = ("sqlalchemy", "alembic")


class TrackingStoreError(ValueError):
    """The trainer environment cannot write to the configured MLflow tracking store."""


def is_database_store(uri: str) -> bool:
    """True for ``sqlite:///...``, ``postgresql+psycopg2://...`` and the like."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    return scheme in DATABASE_SCHEMES


def store_modules_available(python: str | None = None) -> bool:
    """Whether ``python`` (default: this interpreter) can import SQLAlchemy and Alembic.

    Another interpreter is asked in a subprocess (it is looked up, not imported).
    """
    if python is None or python == sys.executable:
        return all(importlib.util.find_spec(name) is not None for name in STORE_MODULES)
    probe = (
        "import importlib.util, sys; "
        f"sys.exit(0 if all(importlib.util.find_spec(m) for m in {STORE_MODULES!r}) else 1)"
    )
    try:
        completed = subprocess.run([python, "-c", probe], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TrackingStoreError(f"cannot run the trainer python {python!r}: {exc}") from exc
    return completed.returncode == 0


def tracking_store_problem(uri: str | None, *, modules_available: bool) -> str | None:
    """Why a job cannot log to ``uri``, or None (an HTTP server or a file store is fine)."""
    if not uri or not is_database_store(uri) or modules_available:
        return None
    return (
        f"the MLflow tracking URI is the database store {uri!r}, but the trainer environment "
        f"lacks {' and '.join(STORE_MODULES)} (mlflow-skinny does not install them). Log "
        "through an MLflow tracking server instead: start `mmr1 serve` (or your own `mlflow "
        "server`) and set MLFLOW_TRACKING_URI=http://HOST:5000 for the flow; or install the "
        "full `mlflow` package in the trainer environment (one machine only: a SQLite file on "
        "a shared volume must not be written from several machines)"
    )


def check_tracking_store(uri: str | None, python: str | None = None) -> None:
    """Raise :class:`TrackingStoreError` when a job run by ``python`` cannot log to ``uri``."""
    if not uri or not is_database_store(uri):
        return
    problem = tracking_store_problem(uri, modules_available=store_modules_available(python))
    if problem:
        raise TrackingStoreError(problem)


def job_tracking_problem(run_id: str | None, uri: str | None) -> str | None:
    """In a training job: why it could not log to MLflow run ``run_id`` at ``uri``, or None.

    ``uri`` None is MLflow's own default (``MLFLOW_TRACKING_URI``, else a local
    SQLite file). Checked by every process before the model is loaded, so a
    job that could not log fails at once, on all ranks alike.
    """
    if not run_id:
        return None
    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    if not is_database_store(uri):
        return None
    return tracking_store_problem(uri, modules_available=store_modules_available())
