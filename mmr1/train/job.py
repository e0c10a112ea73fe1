"""What every training job shares: its Accelerator, its logging, its config file.

Used by the SFT recipe and the GRPO trainer, and by their ``*_main`` entry
points that ``accelerate launch`` starts.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs
from pydantic import BaseModel, ValidationError
from transformers import AutoConfig

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def mixed_precision(precision: str) -> str:
    """Accelerate's mixed precision for a recipe's ``precision`` (auto: bf16 where supported)."""
    if precision == "bf16" or (
        precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    ):
        return "bf16"
    return "no"


def deepspeed_requested() -> bool:
    """True when ``accelerate launch`` (or the caller) asked for DeepSpeed via the environment."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(model_path: Path, *, precision: str, freeze_vision: bool) -> Accelerator:
    """The job's Accelerator: CPU when there is no GPU, DDP tolerant of an idle vision tower.

    A VLM with a trainable vision tower leaves it unused on text-only batches, so
    DDP must look for unused parameters then. A lone process (tests, in-process
    flow runs) resets Accelerate's process-wide state, which otherwise refuses a
    second Accelerator with another precision. A DeepSpeed launch
    (``ACCELERATE_USE_DEEPSPEED=true``) is honoured on CPU too (``cpu=True``
    would silently drop it) over gloo, which is how DeepSpeed configs are tested here.
    """
    vision_config = getattr(AutoConfig.from_pretrained(model_path), "vision_config", None)
    find_unused = vision_config is not None and not freeze_vision
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state()
    cpu_deepspeed = deepspeed_requested() and not torch.cuda.is_available()
    handlers: list[Any] = [DistributedDataParallelKwargs(find_unused_parameters=find_unused)]
    if cpu_deepspeed:
        # Accelerate knows no default backend for a CPU device: DeepSpeed would pick its
        # own (oneCCL, absent here) and Accelerate would count every process as the only
        # one (num_processes 1, rank 0). Naming gloo fixes both.
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    return Accelerator(
        # Without cpu=True, processes started by torchrun on a GPU-less machine each
        # believe they are alone (DistributedType.NO) and train on their own.
        cpu=not torch.cuda.is_available() and not cpu_deepspeed,
        mixed_precision=mixed_precision(precision),
        kwargs_handlers=handlers,
    )


def setup_job_logging() -> int:
    """Log to stderr with the rank in every line (INFO on rank 0, WARNING elsewhere)."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return rank


def read_job_config(path: Path, model: type[ConfigT], label: str) -> ConfigT:
    """A config from a JSON or YAML file (JSON is YAML); errors name the file."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the {label} config: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid {label} config:\n{exc}") from exc
