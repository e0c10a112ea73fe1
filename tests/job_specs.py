"""Job specs for tests that run ``python -m mmr1.jobs SPEC.json`` themselves."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from schemas.grpo import GRPOConfig
from schemas.jobs import GRPOJob, SFTJob
from schemas.sft import SFTConfig


def write_job(path: Path, spec: SFTJob | GRPOJob) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.model_dump_json())
    return path


def sft_job(config: SFTConfig, model: Path, data: Path, out: Path, **fields: object) -> SFTJob:
    return SFTJob(config=config, model_path=model, dataset_path=data, output_dir=out, **fields)


def grpo_job(config: GRPOConfig, model: Path, pool: Path, out: Path, **fields: object) -> GRPOJob:
    return GRPOJob(config=config, model_path=model, dataset_path=pool, output_dir=out, **fields)


def job_command(spec_path: Path, launcher: Sequence[str] = (sys.executable,)) -> list[str]:
    """What every process of a launched job runs."""
    return [*launcher, "-m", "mmr1.jobs", str(spec_path)]
