"""Catalog side of a GRPO run: snapshot saved checkpoints, find newer VPS tables.

A training run keeps only its last few checkpoints on disk; a checkpoint
registered in the catalog must outlive that pruning. :func:`snapshot`
therefore hard-links (or copies, across filesystems) the loadable files of a
step directory (weights, config, processor; not optimizer or RNG state) into
a content-addressed directory under the home's checkpoint root.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmr1.catalog import Catalog, CatalogError
from mmr1.rl.report import run_summary
from mmr1.rl.state import SAMPLER_FILE
from mmr1.storage import content_addressed
from mmr1.trainer.checkpoint import OPTIMIZER_FILE, SCHEDULER_FILE, STATE_FILE
from schemas.catalog import CheckpointEntry

logger = logging.getLogger(__name__)

#: Training-state files that a loadable model snapshot leaves out.
_TRAINING_ONLY = {OPTIMIZER_FILE, STATE_FILE, SAMPLER_FILE, SCHEDULER_FILE}


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def checkpoint_metrics(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Catalog metrics of a GRPO checkpoint: its last step's, and the run's summary so far."""
    last = {k: float(v) for k, v in (history or [{}])[-1].items() if k != "step"}
    return last | run_summary(history)


def snapshot(step_dir: Path, root: Path, name: str) -> tuple[Path, str]:
    """The loadable model files of ``step_dir`` under ``root/name/<hash>``: (path, hash)."""

    def write(out: Path) -> None:
        for path in sorted(Path(step_dir).iterdir()):
            if (
                path.is_file()
                and path.name not in _TRAINING_ONLY
                and not path.name.startswith("rng_state")
            ):
                _link_or_copy(path, out / path.name)

    final, digest, _ = content_addressed(root, name, write)
    return final, digest


@dataclass
class CatalogHooks:
    """Callbacks a GRPO run uses to talk to the catalog (main process only)."""

    catalog_path: Path
    checkpoints_root: Path | None
    name: str | None
    dataset_ref: str | None
    init_ref: str | None
    mlflow_run_id: str | None = None
    prefect_flow_run_id: str | None = None
    sampling_mode: str | None = None
    """The run's prompt sampling ('vas' or 'uniform'), recorded in each entry's config."""

    def register(self, step_dir: Path, step: int) -> CheckpointEntry:
        """Snapshot a saved checkpoint and register it as the next version of ``name``.

        Its metrics are the last step's plus the run so far
        (:func:`mmr1.rl.report.run_summary`); its config the ``sampling_mode``.
        """
        if self.name is None or self.checkpoints_root is None:
            raise ValueError("CatalogHooks.register needs name and checkpoints_root")
        path, digest = snapshot(step_dir, self.checkpoints_root, self.name)
        catalog = Catalog(self.catalog_path)
        state = json.loads((Path(step_dir) / STATE_FILE).read_text())
        parents = [f"checkpoint:{self.init_ref}"] if self.init_ref else []
        parents += [f"dataset:{self.dataset_ref}"] if self.dataset_ref else []
        for ref in state.get("vps_tables", []):
            try:
                catalog.get_vps_table(ref)
            except (CatalogError, ValueError):
                continue  # estimated in-run, not a catalog table
            parents.append(f"vps:{ref}")
        entry = catalog.register_checkpoint(
            name=self.name,
            stage="rl",
            uri=str(path),
            content_hash=digest,
            step=step,
            metrics=checkpoint_metrics(state.get("history") or []),
            config={"sampling_mode": self.sampling_mode} if self.sampling_mode else None,
            parents=list(dict.fromkeys(parents)),
            prefect_flow_run_id=self.prefect_flow_run_id,
            mlflow_run_id=self.mlflow_run_id,
        )
        logger.info("registered checkpoint:%s (step %d)", entry.ref, step)
        return entry

    def latest_vps_table(self) -> tuple[str, Path] | None:
        """The newest VPS table of the dataset as (ref, path), or None."""
        if self.dataset_ref is None:
            return None
        entry = Catalog(self.catalog_path).latest_vps_table(self.dataset_ref)
        return (entry.ref, Path(entry.uri)) if entry is not None else None
