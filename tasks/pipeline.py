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
from collections.abc import Callable
from typing import Any

from prefect.exceptions import ExternalSignal
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel

from mmr1.eval.benchmarks import get_adapter
from mmr1.eval.leaderboard import compare
from schemas.catalog import EvalResultEntry, StageRunEntry
from schemas.eval import EvaluateConfig
from tasks.context import catalog, flow_run_id, pipeline_stage, tracked_run
from tasks.observe import mirror_logger
from tasks.versions import code_version, stage_key


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
        reused: Callable[[StageRunEntry], Any] | None = None,
    ) -> Any:
        """The stage's output ref: pinned, skipped (None), reused, or computed by ``flow_fn``.

        ``output`` picks the catalog ref out of the flow's return value (None for a
        stage without one, which then returns the value itself); ``reused`` rebuilds
        that value from the completed attempt being reused (default: its output ref).
        """
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
                return found.output_ref if reused is None else reused(found)
        logger.info("stage %s: started", stage)
        started = time.monotonic()
        try:
            # The stage's MLflow run nests under ours; its progress is mirrored to our log.
            mirror = mirror_logger(flow_run_id() or "", flow_run.name or "")
            with pipeline_stage(stage, self.mlflow_run_id, mirror):
                result = flow_fn(config)
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
        logger.info(
            "stage %s: finished in %.0f s -> %s", stage, time.monotonic() - started, ref or "-"
        )
        return result if ref is None else ref

    def _note(self, stage: str, action: str, ref: str) -> None:
        self.outcomes[stage] = {"stage": stage, "action": action, "output": ref}
        tracked_run(self.mlflow_run_id).set_tags({f"mmr1.stage.{stage}": f"{action} {ref}"})


def recorded_evaluation(config: EvaluateConfig, found: StageRunEntry) -> dict[str, Any]:
    """What the ``evaluate`` flow returned in the attempt ``found``, read back from the catalog.

    The same shape as the flow's return value (``results``: pinned checkpoint ref ->
    benchmark -> accuracy, and the ``leaderboard`` text), so a pipeline run that
    reuses its evaluation reports the same numbers as the run that computed them.
    Each cell is the result written by that attempt (its evaluate run is nested
    under the attempt's MLflow run); when the MLflow store no longer knows that
    run, the latest recorded result of the same checkpoint, benchmark and split.
    """
    cat = catalog()
    client = tracked_run(found.mlflow_run_id or "").client
    parents: dict[str, str | None] = {}

    def written_by_found(result: EvalResultEntry) -> bool:
        run_id = result.mlflow_run_id
        if not run_id or not found.mlflow_run_id:
            return False
        if run_id not in parents:
            try:
                parents[run_id] = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
            except Exception:  # a run of another (or a reset) MLflow store
                parents[run_id] = None
        return parents[run_id] == found.mlflow_run_id

    refs = [cat.get_checkpoint(ref).ref for ref in config.checkpoints]
    results: dict[str, dict[str, float]] = {}
    for ref in dict.fromkeys(refs):
        scores: dict[str, float] = {}
        for spec in config.benchmarks:
            split = spec.split or get_adapter(spec.name).default_split
            recorded = [
                r
                for r in cat.eval_results(checkpoint_ref=ref, benchmark=spec.name)
                if r.split == split and "accuracy" in r.metrics
            ]
            chosen = [r for r in recorded if written_by_found(r)] or recorded
            if chosen:
                scores[spec.name] = chosen[-1].metrics["accuracy"]
        results[ref] = scores
    return {
        "results": results,
        "leaderboard": compare(cat, list(results), config.reference_rows, config.baseline),
    }
