"""MLflow runs for pipeline stages.

Everything goes through an explicit ``MlflowClient`` and a run id rather than
MLflow's fluent "active run", because active runs are per thread and Prefect
runs tasks in worker threads (docs/STACK.md): a task must be able to log to its
flow's run by id.

Conventions:
- one experiment per flow (``mmr1/<flow name>``), created with its artifact
  root under the pipeline home so nothing lands in the working directory, and
  tagged as a model-training experiment (``mlflow.experimentKind``), so the
  MLflow 3 UI does not treat it as a GenAI one;
- a stage run of a pipeline lives in the pipeline's experiment, nested under
  the pipeline's run (the MLflow UI shows children only within one experiment);
  its flow's experiment gets a *link run* with the same name, config params,
  final metrics and status, tagged ``mmr1.nested_run_id`` and described with a
  link to the stage run, so every run of a flow can be browsed and compared in
  its experiment;
- tags ``mmr1.prefect_flow_run_id``, ``mmr1.reads`` and ``mmr1.writes`` (catalog refs);
- the stage config is logged both as flattened params and as ``config.yaml``;
- catalog datasets are logged as MLflow dataset inputs (metadata only: name,
  content hash as digest, uri as source).
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from mmr1.hashing import hash_bytes
from mmr1.tracking.liveness import DeadRun, close_dead_run, dead_runs, process_tags
from mmr1.tracking.relocate import EXPERIMENT_PREFIX, relocate_artifact_roots
from schemas.home import HomeConfig

TAG_PREFECT_FLOW_RUN = "mmr1.prefect_flow_run_id"
TAG_READS = "mmr1.reads"
TAG_WRITES = "mmr1.writes"
TAG_FLOW = "mmr1.flow"
TAG_PARENT = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"
#: On a link run: the id of the stage run it stands for (nested in a pipeline's experiment).
TAG_NESTED_RUN = "mmr1.nested_run_id"
#: How the MLflow UI (3.x) classifies an experiment; "custom_model_development" is
#: its "Model training" kind (the other common value is "genai_development").
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
#: MLflow 3.17's UI picks its view from this query parameter of a page's address (else
#: from the browser's last choice, GenAI by default): links add it to open the "Model
#: training" view.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"

# MLflow limits (3.x): param values up to 6000 chars, 100 params / 1000 metrics per batch.
_MAX_PARAM_VALUE = 6000
_PARAM_BATCH = 100
_METRIC_BATCH = 1000
_TAG_LOCK = threading.Lock()
#: Tracking stores whose artifact locations this process has checked (see relocate.py).
_RELOCATED: set[str] = set()


def configure_tracking(home: HomeConfig) -> MlflowClient:
    """A client for the home's tracking store (``MLFLOW_TRACKING_URI`` overrides the default).

    The default store is a SQLite file under the home, so no server is needed; once per
    process, a home that was moved gets its artifact locations pointed back inside it.
    """
    home.ensure()
    if home.tracking_uri not in _RELOCATED:
        relocate_artifact_roots(home)
        _RELOCATED.add(home.tracking_uri)
    return MlflowClient(tracking_uri=home.tracking_uri)


def flatten_params(config: BaseModel | Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a (nested) config into ``a.b.c -> str(value)`` params.

    Lists of scalars are JSON-encoded; values longer than MLflow's limit are
    truncated with a marker (the full config is always in ``config.yaml``).
    """
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(text) > _MAX_PARAM_VALUE:
            text = text[: _MAX_PARAM_VALUE - 14] + "...[truncated]"
        out[name] = text
    return out


def _experiment_id(client: MlflowClient, flow_name: str, home: HomeConfig) -> str:
    """The flow's experiment, created (as a model-training experiment) if missing."""
    name = f"{EXPERIMENT_PREFIX}{flow_name}"
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        artifact_root = (home.artifacts / flow_name).as_uri()
        try:
            return client.create_experiment(
                name,
                artifact_location=artifact_root,
                tags={TAG_EXPERIMENT_KIND: MODEL_TRAINING_KIND},
            )
        except Exception:
            # Another process created it between our lookup and create.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if TAG_EXPERIMENT_KIND not in experiment.tags:  # made before the kind was set
        client.set_experiment_tag(
            experiment.experiment_id, TAG_EXPERIMENT_KIND, MODEL_TRAINING_KIND
        )
    return experiment.experiment_id


class TrackedRun:
    """Logging handle for one MLflow run, safe to pass to any thread by value."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        #: Runs of the same work whose process died, closed when this run started.
        self.reaped: list[DeadRun] = []

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            items = [RunTag(str(k), str(v)) for k, v in tags.items()]
            self.client.log_batch(self.run_id, tags=items)

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(str(k), str(v)) for k, v in params.items()]
        for start in range(0, len(items), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + _PARAM_BATCH])

    def log_config(self, config: BaseModel, name: str = "config.yaml") -> None:
        """Log a stage config as flattened params and as a YAML artifact."""
        self.log_params(flatten_params(config))
        self.log_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), name)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log finite metrics (non-finite values are skipped: MLflow rejects them)."""
        now = int(time.time() * 1000)
        items = [
            Metric(str(k), float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for start in range(0, len(items), _METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + _METRIC_BATCH])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib figure as an image artifact."""
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_dataset_input(
        self,
        *,
        name: str,
        digest: str,
        uri: str,
        context: str,
        columns: Mapping[str, str] | None = None,
    ) -> None:
        """Record a catalog dataset as an input of this run (metadata only, no data copied).

        ``context`` is how the run used it: ``training``, ``evaluation``, ``source``...
        """
        is_local = "://" not in uri or uri.startswith("file://")
        source_type = "local" if is_local else uri.split(":")[0]
        entity = DatasetEntity(
            name=name,
            digest=digest[:36],
            source_type=source_type,
            source=json.dumps({"uri": uri}),
            schema=json.dumps({"mmr1_columns": dict(columns or {})}),
        )
        tags = [InputTag("mlflow.data.context", context)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags)])

    def record_reads(self, refs: Sequence[str]) -> None:
        """Add catalog refs to the run's ``mmr1.reads`` tag (comma separated, merged)."""
        self._merge_tag(TAG_READS, refs)

    def record_writes(self, refs: Sequence[str]) -> None:
        """Add catalog refs to the run's ``mmr1.writes`` tag (comma separated, merged)."""
        self._merge_tag(TAG_WRITES, refs)

    def _merge_tag(self, key: str, refs: Sequence[str]) -> None:
        # Several handles (one per task) may log to the same run: merge with what
        # the store holds instead of keeping a local list. The lock covers tasks
        # running in threads of this process.
        with _TAG_LOCK:
            current = self.client.get_run(self.run_id).data.tags.get(key, "")
            merged = [r for r in current.split(",") if r]
            merged += [r for r in refs if r not in merged]
            self.set_tags({key: ",".join(merged)})

    def log_yaml(self, data: Mapping[str, Any], artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(self.run_id, str(path), None if parent == "." else parent)


@contextmanager
def start_run(
    home: HomeConfig,
    flow_name: str,
    *,
    run_name: str | None = None,
    prefect_flow_run_id: str | None = None,
    config: BaseModel | None = None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[TrackedRun]:
    """Open an MLflow run in the flow's experiment: FINISHED on success, FAILED on an
    error, KILLED when stopped from outside (KeyboardInterrupt, a termination signal).

    ``parent_run_id`` nests this run under another one (passed explicitly
    because MLflow's active run does not cross threads): in the parent's
    experiment, with a link run in the flow's own experiment (module doc).
    """
    client = configure_tracking(home)
    flow_experiment = _experiment_id(client, flow_name, home)
    experiment_id = flow_experiment
    all_tags: dict[str, str] = {TAG_FLOW: flow_name}
    if prefect_flow_run_id:
        all_tags[TAG_PREFECT_FLOW_RUN] = prefect_flow_run_id
    if parent_run_id:
        all_tags[TAG_PARENT] = parent_run_id
        experiment_id = client.get_run(parent_run_id).info.experiment_id
    all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
    work_key = _work_key(flow_name, config) if config is not None else None
    if work_key:
        all_tags.update(process_tags(work_key))
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    tracked = TrackedRun(client, run.info.run_id)
    link = None
    if experiment_id != flow_experiment:
        link = _create_link_run(client, flow_experiment, run, all_tags)
    if work_key:
        tracked.reaped = _close_dead_runs(
            client, sorted({experiment_id, flow_experiment}), work_key, tracked, link
        )
    status = "FAILED"
    try:
        if config is not None:
            tracked.log_config(config)
            if link is not None:
                link.log_params(flatten_params(config))
        yield tracked
        status = "FINISHED"
    except Exception:
        raise
    except BaseException:
        # Stopped from outside (Ctrl-C, a cancellation's termination signal), not failed.
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run.info.run_id, status=status)
        if link is not None:
            _finish_link_run(client, link, run.info.run_id, status)


def _work_key(flow_name: str, config: BaseModel) -> str:
    """What a rerun of this flow with this config resumes: a hash of both."""
    payload = json.dumps(
        {"flow": flow_name, "config": config.model_dump(mode="json")}, sort_keys=True
    )
    return hash_bytes(payload.encode())[:24]


def _close_dead_runs(
    client: MlflowClient,
    experiment_ids: list[str],
    work_key: str,
    run: TrackedRun,
    link: TrackedRun | None,
) -> list[DeadRun]:
    """Close the RUNNING runs (and link runs) of this work whose process died (liveness)."""
    mine = {run.run_id, link.run_id if link else ""}
    found = [
        dead
        for dead in dead_runs(
            client,
            experiment_ids,
            work_key,
            exclude_run_id=run.run_id,
            prefect_tag=TAG_PREFECT_FLOW_RUN,
        )
        if dead.run_id not in mine
    ]
    for dead in found:
        close_dead_run(client, dead, resumed_by=run.run_id)
    return found


def _create_link_run(
    client: MlflowClient, experiment_id: str, run: Any, tags: Mapping[str, str]
) -> TrackedRun:
    """A run in the flow's experiment standing for ``run``, nested in another experiment."""
    runs = f"#/experiments/{run.info.experiment_id}/runs"
    parent = tags.get(TAG_PARENT, "")
    note = (
        f"Stage run of a pipeline: the full run (curves, artifacts, datasets) is "
        f"[{run.info.run_name or run.info.run_id}]({runs}/{run.info.run_id}?{MODEL_TRAINING_VIEW})"
        f", nested under the pipeline run [{parent}]({runs}/{parent}?{MODEL_TRAINING_VIEW}). "
        "This link run repeats its config, final metrics and status so the flow's runs "
        "compare here."
    )
    link_tags = {k: v for k, v in tags.items() if k != TAG_PARENT}
    link_tags |= {TAG_NESTED_RUN: run.info.run_id, TAG_NOTE: note}
    created = client.create_run(experiment_id, run_name=run.info.run_name, tags=link_tags)
    return TrackedRun(client, created.info.run_id)


def _finish_link_run(client: MlflowClient, link: TrackedRun, run_id: str, status: str) -> None:
    """Copy the stage run's final metrics and catalog tags to its link run, then end it."""
    try:
        data = client.get_run(run_id).data
        link.log_metrics(data.metrics)
        link.set_tags({k: v for k, v in data.tags.items() if k in (TAG_READS, TAG_WRITES)})
    finally:
        client.set_terminated(link.run_id, status=status)


def find_runs(home: HomeConfig, flow_name: str, *, max_results: int = 100) -> list[Any]:
    """Runs of a flow, newest first: its own experiment's and those nested in pipelines.

    Link runs (module doc) are left out: each run is returned once, as itself.
    """
    client = configure_tracking(home)
    experiments = client.search_experiments(
        filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'", max_results=1000
    )
    if not experiments:
        return []
    runs = client.search_runs(
        [e.experiment_id for e in experiments],
        filter_string=f"tags.`{TAG_FLOW}` = '{flow_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=2 * max_results,  # at most one link run per run
    )
    return [r for r in runs if TAG_NESTED_RUN not in r.data.tags][:max_results]


def child_runs(home: HomeConfig, parent_run_id: str) -> list[Any]:
    """The runs nested under ``parent_run_id`` in its experiment, oldest first."""
    client = configure_tracking(home)
    parent = client.get_run(parent_run_id)
    return list(
        client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
        )
    )
