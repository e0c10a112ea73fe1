"""Stage bookkeeping of the ``mmr1-pipeline`` flow: keys, reuse, pins, attempts.

A stage's key hashes its name, its resolved config (which names the pinned
versions of its inputs) and the code version (:func:`mmr1.hashing.code_version`:
the pipeline's packages with their assets, and the versions of the libraries
that shape results). Before running a stage the pipeline looks for a
completed attempt with the same key whose output is still in the catalog and
reuses it; every attempt (completed, failed or reused) is recorded in the
catalog's ``stage_runs`` table, so a rerun after a failure picks up at the
failed stage, which itself resumes from its shards or checkpoints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from prefect.exceptions import ExternalSignal
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel

from schemas.catalog import StageRunEntry
from tasks.context import catalog, flow_run_id, pipeline_stage, tracked_run
from tasks.observe import mirror_logger
from tasks.versions import code_version, stage_key


class StageRunner:
    """Runs, reuses, pins or skips the stages of one pipeline run; remembers what it did."""

    def __init__(
        self, *, reuse: bool, pins: dict[str, str], skip: Collection[str], mlflow_run_id: str
    ):
        self.reuse = reuse
        self.pins = pins
        self.skip = set(skip)
        self.mlflow_run_id = mlflow_run_id
        self.outcomes: dict[str, dict[str, str]] = {}

    def run(
        self,
        stage: str,
        flow_fn: Callable[[BaseModel], str],
        build_config: Callable[[], BaseModel],
        inputs: dict[str, str | None],
    ) -> str | None:
        """The stage's output ref: pinned, skipped (None), reused, or written by ``flow_fn``.

        ``build_config`` is called only for a stage that runs or may be reused
        (a pinned or skipped stage may lack the inputs to build one); ``inputs``
        are the refs it reads, recorded with the attempt.
        """
        if stage in self.pins:
            kind, entry = catalog().resolve(self.pins[stage])
            ref = f"{kind}:{entry.ref}"  # type: ignore[union-attr]
            get_run_logger().info("stage %s: pinned to %s", stage, ref)
            return self._note(stage, "pinned", ref)
        if stage in self.skip:
            get_run_logger().info("stage %s: skipped", stage)
            self._note(stage, "skipped", None)
            return None
        config = build_config()
        key = stage_key(stage, config)
        found = catalog().find_completed_stage(key) if self.reuse else None
        if found is not None:
            return self._reuse(stage, key, found, inputs)
        return self._execute(stage, key, flow_fn, config, inputs)

    def _reuse(
        self, stage: str, key: str, found: StageRunEntry, inputs: dict[str, str | None]
    ) -> str | None:
        get_run_logger().info(
            "stage %s: reusing %s from the run of %s (flow run %s, same inputs, config and "
            "code %s)",
            stage,
            found.output_ref or "its results",
            found.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            found.prefect_flow_run_id,
            found.code_version,
        )
        self._record(stage, key, "reused", inputs, output_ref=found.output_ref)
        return self._note(stage, "reused", found.output_ref)

    def _execute(
        self,
        stage: str,
        key: str,
        flow_fn: Callable[[BaseModel], str],
        config: BaseModel,
        inputs: dict[str, str | None],
    ) -> str:
        logger = get_run_logger()
        logger.info("stage %s: started", stage)
        started = time.monotonic()
        try:
            # The stage's MLflow run nests under ours; its progress is mirrored to our log.
            mirror = mirror_logger(flow_run_id() or "", flow_run.name or "")
            with pipeline_stage(stage, self.mlflow_run_id, mirror):
                ref = flow_fn(config)
        except BaseException as exc:
            # A cancellation (the worker's SIGTERM) or Ctrl-C stops the stage; Prefect
            # itself reports the run's state, so this says only what stopped.
            stopped = isinstance(exc, ExternalSignal | KeyboardInterrupt)
            logger.log(
                logging.WARNING if stopped else logging.ERROR,
                "stage %s: %s after %.0f s: %s: %s",
                stage,
                "stopped" if stopped else "failed",
                time.monotonic() - started,
                type(exc).__name__,
                str(exc)[:500],
            )
            self._record(stage, key, "failed", inputs, error=f"{type(exc).__name__}: {exc}")
            self._note(stage, "failed", None)
            raise
        self._record(stage, key, "completed", inputs, output_ref=ref)
        logger.info("stage %s: finished in %.0f s -> %s", stage, time.monotonic() - started, ref)
        return self._note(stage, "ran", ref)

    def _record(
        self,
        stage: str,
        key: str,
        status: str,
        inputs: dict[str, str | None],
        *,
        output_ref: str | None = None,
        error: str | None = None,
    ) -> None:
        catalog().record_stage_run(
            stage=stage,
            key=key,
            status=status,
            code_version=code_version(),
            output_ref=output_ref,
            inputs=inputs,
            error=error[:2000] if error else None,
            prefect_flow_run_id=flow_run_id(),
            mlflow_run_id=self.mlflow_run_id,
        )

    def _note(self, stage: str, action: str, ref: str | None) -> Any:
        self.outcomes[stage] = {"stage": stage, "action": action, "output": ref or "-"}
        tracked_run(self.mlflow_run_id).set_tags({f"mmr1.stage.{stage}": f"{action} {ref or '-'}"})
        return ref
