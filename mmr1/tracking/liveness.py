"""Runs left RUNNING by a process that died, found and closed when their work resumes.

A flow killed with SIGKILL (or a lost machine) never ends its MLflow run, which
then shows RUNNING forever. Every run therefore records who runs it: the host,
the process id, and a *work key* (a hash of the flow and its config, which is
what a rerun resumes). When a run with a work key starts, earlier runs with the
same key that are still RUNNING and whose process is gone (same host, pid no
longer alive) are closed: status KILLED, tag ``mmr1.resumed_by`` and an MLflow
note naming the run that resumed them. Runs on other hosts are left alone: from
here we cannot tell whether they are alive.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

TAG_HOST = "mmr1.host"
TAG_PID = "mmr1.pid"
TAG_WORK_KEY = "mmr1.work_key"
TAG_RESUMED_BY = "mmr1.resumed_by"
TAG_NOTE = "mlflow.note.content"  # the description the MLflow UI shows on the run page


def process_tags(work_key: str) -> dict[str, str]:
    """The tags that let a later run tell whether this one's process is still alive."""
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()), TAG_WORK_KEY: work_key}


def process_alive(host: str | None, pid: str | None) -> bool | None:
    """Whether ``pid`` on ``host`` still runs: None when it cannot be told from here."""
    if host != socket.gethostname() or not pid or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class DeadRun:
    """A RUNNING run whose process is gone."""

    run_id: str
    host: str
    pid: str
    prefect_flow_run_id: str | None


def dead_runs(
    client: MlflowClient,
    experiment_ids: list[str],
    work_key: str,
    *,
    exclude_run_id: str,
    prefect_tag: str,
) -> list[DeadRun]:
    """Earlier RUNNING runs of the same work (``work_key``) whose process died."""
    runs = client.search_runs(
        experiment_ids,
        filter_string=f"tags.`{TAG_WORK_KEY}` = '{work_key}' and attributes.status = 'RUNNING'",
        max_results=100,
    )
    found = []
    for run in runs:
        tags = run.data.tags
        if run.info.run_id == exclude_run_id:
            continue
        if process_alive(tags.get(TAG_HOST), tags.get(TAG_PID)) is False:
            found.append(
                DeadRun(
                    run_id=run.info.run_id,
                    host=tags[TAG_HOST],
                    pid=tags[TAG_PID],
                    prefect_flow_run_id=tags.get(prefect_tag),
                )
            )
    return found


def close_dead_run(client: MlflowClient, dead: DeadRun, resumed_by: str) -> None:
    """Mark ``dead`` KILLED, with a note naming the run that resumed its work."""
    note = (
        f"Process {dead.pid} on {dead.host} died before this run ended; its work was resumed "
        f"by run {resumed_by}."
    )
    client.set_tag(dead.run_id, TAG_RESUMED_BY, resumed_by)
    client.set_tag(dead.run_id, TAG_NOTE, note)
    client.set_terminated(dead.run_id, status="KILLED")
