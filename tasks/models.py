"""Tasks that produce model checkpoints."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from mmr1.models import build_tiny_model
from mmr1.models.registry import resolve_checkpoint
from mmr1.storage import content_addressed
from schemas.models import TinyVLMConfig
from tasks.context import catalog, flow_run_id, home, tracked_run


@task(name="checkpoint-input")
def checkpoint_input(source: str, mlflow_run_id: str) -> str:
    """The catalog ref of a checkpoint input: a catalog ref, or a directory or hub id that is
    registered on the fly (``mmr1.models.registry``). Returns ``checkpoint:name@version``."""
    entry = resolve_checkpoint(catalog(), source)
    ref = f"checkpoint:{entry.ref}"
    tracked_run(mlflow_run_id).record_reads([ref])
    get_run_logger().info("checkpoint %s -> %s (%s)", source, ref, entry.uri)
    return ref


@task(name="build-base-model", retries=1)
def build_base_model(name: str, config: TinyVLMConfig, mlflow_run_id: str) -> str:
    """Build the offline tiny Qwen2.5-VL and register it as a ``base`` checkpoint.

    Idempotent: the same config gives the same weights, hence the same
    content-addressed directory and the same catalog version.
    """
    logger = get_run_logger()
    path, digest, _ = content_addressed(
        home().checkpoints, name, lambda out: build_tiny_model(config, out)
    )
    entry = catalog().register_checkpoint(
        name=name,
        stage="base",
        uri=str(path),
        content_hash=digest,
        config=config.model_dump(mode="json"),
        prefect_flow_run_id=flow_run_id(),
        mlflow_run_id=mlflow_run_id,
    )
    run = tracked_run(mlflow_run_id)
    run.record_writes([f"checkpoint:{entry.ref}"])
    run.set_tags({"mmr1.base_model": entry.ref, "mmr1.base_model_uri": entry.uri})
    logger.info("base model %s at %s", entry.ref, entry.uri)
    return f"checkpoint:{entry.ref}"
