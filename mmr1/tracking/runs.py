"""MLflow runs for pipeline stages.

Everything goes through an explicit ``MlflowClient`` and a run id rather than
MLflow's fluent "active run", because active runs are per thread and Prefect
runs tasks in worker threads (docs/STACK.md): a task must be able to log to its
flow's run by id.

Conventions:
- one experiment per flow (``mmr1/<flow name>``), created with its artifact
  root under the pipeline home so nothing lands in the working directory;
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

from schemas.home import HomeConfig

EXPERIMENT_PREFIX = "mmr1/"
TAG_PREFECT_FLOW_RUN = "mmr1.prefect_flow_run_id"
TAG_READS = "mmr1.reads"
TAG_WRITES = "mmr1.writes"
TAG_FLOW = "mmr1.flow"

# MLflow limits (3.x): param values up to 6000 chars, 100 params / 1000 metrics per batch.
_MAX_PARAM_VALUE = 6000
_PARAM_BATCH = 100
_METRIC_BATCH = 1000
_TAG_LOCK = threading.Lock()


def configure_tracking(home: HomeConfig) -> MlflowClient:
    """A client for the home's tracking store (``MLFLOW_TRACKING_URI`` overrides the default).

    The default store is a SQLite file under the home, so no server is needed.
    """
    home.ensure()
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
    name = f"{EXPERIMENT_PREFIX}{flow_name}"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_root = (home.artifacts / flow_name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_root)
    except Exception:
        # Another process created it between our lookup and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


class TrackedRun:
    """Logging handle for one MLflow run, safe to pass to any thread by value."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

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
    """Open an MLflow run in the flow's experiment; FINISHED on success, FAILED on error.

    ``parent_run_id`` nests this run under another one (passed explicitly
    because MLflow's active run does not cross threads).
    """
    client = configure_tracking(home)
    experiment_id = _experiment_id(client, flow_name, home)
    all_tags: dict[str, str] = {TAG_FLOW: flow_name}
    if prefect_flow_run_id:
        all_tags[TAG_PREFECT_FLOW_RUN] = prefect_flow_run_id
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    tracked = TrackedRun(client, run.info.run_id)
    try:
        if config is not None:
            tracked.log_config(config)
        yield tracked
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")


def find_runs(home: HomeConfig, flow_name: str, *, max_results: int = 100) -> list[Any]:
    """Runs of a flow's experiment, newest first (empty if the experiment does not exist)."""
    client = configure_tracking(home)
    experiment = client.get_experiment_by_name(f"{EXPERIMENT_PREFIX}{flow_name}")
    if experiment is None:
        return []
    return list(
        client.search_runs(
            [experiment.experiment_id],
            order_by=["attributes.start_time DESC"],
            max_results=max_results,
        )
    )
