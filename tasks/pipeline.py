"""Stage bookkeeping of the ``mmr1-pipeline`` flow: keys, reuse, pins, attempts.

A stage's key hashes its name, its resolved config (which names the pinned
versions of its inputs) and the code version (:func:`mmr1.hashing.source_version`
of the pipeline's packages). Before running a stage the pipeline looks for a
completed attempt with the same key whose output is still in the catalog and
reuses it; every attempt (completed, failed or reused) is recorded in the
catalog's ``stage_runs`` table, so a rerun after a failure picks up at the
failed stage, which itself resumes from its shards or checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prefect.logging import get_run_logger
from pydantic import BaseModel

from mmr1.hashing import hash_bytes, source_version
from tasks.context import catalog, flow_run_id, tracked_run

CODE_PACKAGES = ("mmr1", "schemas", "tasks", "flows")


def code_version() -> str:
    return source_version(*CODE_PACKAGES)


def stage_key(stage: str, config: BaseModel) -> str:
    payload = json.dumps(
        {"stage": stage, "config": config.model_dump(mode="json"), "code": code_version()},
        sort_keys=True,
    )
    return hash_bytes(payload.encode())


class StageRunner:
    """Runs, reuses, pins or skips the stages of one pipeline run; remembers what it did."""

    def __init__(self, *, reuse: bool, pins: dict[str, str], skip: list[str], mlflow_run_id: str):
        self.reuse = reuse
        self.pins = pins
        self.skip = set(skip)
        self.mlflow_run_id = mlflow_run_id
        self.outcomes: dict[str, dict[str, str]] = {}

    def run(
        self,
        stage: str,
        flow_fn: Callable[..., Any],
        config: BaseModel,
        inputs: dict[str, str | None],
        *,
        output: Callable[[Any], str | None] = lambda result: result,
    ) -> Any:
        """The stage's output ref: pinned, skipped (None), reused, or computed by ``flow_fn``."""
        logger = get_run_logger()
        cat = catalog()
        if stage in self.pins:
            kind, entry = cat.resolve(self.pins[stage])
            ref = f"{kind}:{entry.ref}"  # type: ignore[union-attr]
            logger.info("stage %s: pinned to %s", stage, ref)
            self._note(stage, "pinned", ref)
            return ref
        if stage in self.skip:
            logger.info("stage %s: skipped", stage)
            self._note(stage, "skipped", "-")
            return None
        key = stage_key(stage, config)
        if self.reuse:
            found = cat.find_completed_stage(key)
            if found is not None:
                logger.info(
                    "stage %s: reusing %s from the run of %s (flow run %s, same inputs, config "
                    "and code %s)",
                    stage,
                    found.output_ref or "its results",
                    found.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    found.prefect_flow_run_id,
                    found.code_version,
                )
                cat.record_stage_run(
                    stage=stage,
                    key=key,
                    status="reused",
                    code_version=code_version(),
                    output_ref=found.output_ref,
                    inputs=inputs,
                    prefect_flow_run_id=flow_run_id(),
                    mlflow_run_id=self.mlflow_run_id,
                )
                self._note(stage, "reused", found.output_ref or "-")
                return found.output_ref
        try:
            result = flow_fn(config, parent_mlflow_run_id=self.mlflow_run_id)
        except BaseException as exc:
            cat.record_stage_run(
                stage=stage,
                key=key,
                status="failed",
                code_version=code_version(),
                inputs=inputs,
                error=f"{type(exc).__name__}: {exc}"[:2000],
                prefect_flow_run_id=flow_run_id(),
                mlflow_run_id=self.mlflow_run_id,
            )
            self._note(stage, "failed", "-")
            raise
        ref = output(result)
        cat.record_stage_run(
            stage=stage,
            key=key,
            status="completed",
            code_version=code_version(),
            output_ref=ref,
            inputs=inputs,
            prefect_flow_run_id=flow_run_id(),
            mlflow_run_id=self.mlflow_run_id,
        )
        self._note(stage, "ran", ref or "-")
        return result if ref is None else ref

    def _note(self, stage: str, action: str, ref: str) -> None:
        self.outcomes[stage] = {"stage": stage, "action": action, "output": ref}
        tracked_run(self.mlflow_run_id).set_tags({f"mmr1.stage.{stage}": f"{action} {ref}"})
