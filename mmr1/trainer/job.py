"""What every training job shares: how it starts, its model's trainable parts, its optimizer.

Both recipes (``mmr1.sft.recipe``, ``mmr1.rl.grpo``) set up in the same explicit
steps: :func:`open_job` (threads, Accelerator, seed, the checkpoint to resume),
``_setup_model`` (:func:`load_trainable`), ``_setup_data``, ``_setup_optimizer``
(:func:`adamw`), then ``accelerator.prepare``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, set_seed
from transformers import AutoConfig

from mmr1.models.loader import Policy, load_policy
from mmr1.trainer.checkpoint import latest_checkpoint
from mmr1.trainer.deepspeed import keep_used_weight_conversions

logger = logging.getLogger(__name__)


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


def open_job(
    *,
    model_path: Path,
    checkpoint_root: Path,
    precision: str,
    freeze_vision: bool,
    seed: int,
    resume: bool,
    torch_threads: int | None,
) -> tuple[Accelerator, Path | None]:
    """Start a training job: (Accelerator, the newest complete checkpoint to resume or None).

    ``resume=False`` removes earlier checkpoints under ``checkpoint_root`` (main
    process) and starts over. Every process waits for that before returning.
    """
    if torch_threads:
        torch.set_num_threads(torch_threads)
    accelerator = make_accelerator(model_path, precision=precision, freeze_vision=freeze_vision)
    set_seed(seed)
    resume_from = latest_checkpoint(checkpoint_root) if resume else None
    if not resume and accelerator.is_main_process and checkpoint_root.exists():
        logger.warning("resume=False: removing old checkpoints in %s", checkpoint_root)
        shutil.rmtree(checkpoint_root)
    accelerator.wait_for_everyone()
    return accelerator, resume_from


def load_trainable(
    path: Path,
    accelerator: Accelerator,
    *,
    freeze_vision: bool,
    gradient_checkpointing: bool,
    zero3: bool = False,
) -> Policy:
    """The policy with fp32 master weights, its vision tower frozen if asked, checkpointed."""
    policy = load_policy(path, device=accelerator.device, dtype=torch.float32, for_training=True)
    model = policy.model
    if zero3:
        keep_used_weight_conversions(model)
    if freeze_vision:
        tower = vision_tower(model)
        if tower is None:
            raise ValueError(
                f"freeze_vision=True but {type(model).__name__} ({path}) has no vision tower"
            )
        tower.requires_grad_(False)
    if gradient_checkpointing:
        # Non-reentrant: works with frozen inputs and with DDP's unused-parameter search.
        # transformers renamed the method (the old name warns from 5.2x on).
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return policy


def adamw(
    model: torch.nn.Module,
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    vision_lr_scale: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; matrices decay, biases and norm weights do not.

    The vision tower's parameters get ``lr * vision_lr_scale`` (their own groups;
    a schedule scales every group's lr by the same factor).
    """
    tower = vision_tower(model) if vision_lr_scale != 1.0 else None
    in_tower = {id(p) for p in tower.parameters()} if tower is not None else set()
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad:
            # A ZeRO-3 parameter is an empty shard; ds_shape is its real shape.
            shape = getattr(param, "ds_shape", param.shape)
            key = (len(shape) >= 2, id(param) in in_tower)
            groups.setdefault(key, []).append(param)
    return torch.optim.AdamW(
        [
            {
                "params": groups[key],
                "weight_decay": weight_decay if key[0] else 0.0,
                "lr": lr * (vision_lr_scale if key[1] else 1.0),
            }
            for key in sorted(groups, key=lambda k: (not k[0], k[1]))
        ],
        lr=lr,
        betas=betas,
    )


def vision_tower(model: torch.nn.Module) -> torch.nn.Module | None:
    """The vision encoder of a VLM (Qwen2.5-VL in transformers 5: ``model.model.visual``)."""
    for owner in (model, getattr(model, "model", None)):
        tower = getattr(owner, "visual", None) if owner is not None else None
        if isinstance(tower, torch.nn.Module):
            return tower
    return None
