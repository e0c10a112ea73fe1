"""Resumable training checkpoints: layout, atomic writes, RNG capture, discovery, pruning.

One checkpoint is ``<root>/step-XXXXXX/`` holding:

- the model and processor as ``save_pretrained`` writes them (so any step
  loads with ``mmr1.models.load_policy``, and resuming reloads fp32 weights bit
  for bit);
- ``optimizer.pt`` and ``scheduler.pt`` (state dicts); under DeepSpeed the
  optimizer is partitioned across processes and ``deepspeed/`` (the engine's
  ``save_checkpoint``: fp32 master weights and every process's optimizer
  partition) replaces ``optimizer.pt``;
- ``rng_state_rank{R}.pt``: Python, NumPy, torch (and CUDA) RNG states of process R;
- ``trainer_state.json``: :class:`TrainerState` (step, data position, best
  metric, metric histories, world size).

It is written into a hidden ``.tmp-step-XXXXXX`` sibling and renamed into
place once every file is there, so a directory named ``step-*`` is always
complete; :func:`latest_checkpoint` also requires ``trainer_state.json``.
The data position needs no generator state of its own: the sample order of
epoch ``e`` is a pure function of ``seed + e`` (``mmr1.sft.sampling``), so
``(step, global batch)`` pins it, and :class:`TrainerState` records both.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
DEEPSPEED_TAG = "deepspeed"
"""Sub-directory of a checkpoint holding a DeepSpeed engine's ``save_checkpoint``."""
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


class TrainerState(BaseModel):
    """Loop state that is not a tensor: where training is and what it has seen."""

    step: int = Field(description="Optimiser steps completed.")
    global_batch_size: int = Field(description="Samples per step across processes.")
    world_size: int = Field(description="Processes of the run that wrote the checkpoint.")
    samples_seen: int = Field(description="step * global_batch_size (stream position).")
    epoch: int = Field(description="Epoch of the next sample to draw.")
    epoch_offset: int = Field(description="Index of that sample in its epoch's permutation.")
    data_seed: int = Field(description="Base seed of the per-epoch permutations (seed + epoch).")
    train_samples: int = Field(description="Training samples the positions index into.")
    total_steps: int = Field(description="Schedule horizon of the run that wrote it.")
    accelerate: dict[str, Any] = Field(
        default_factory=dict,
        description="Accelerate state at save time: distributed type, processes, precision.",
    )
    skipped_steps: int = 0
    dropped_too_long: int = Field(
        default=0,
        description="Training samples found longer than cutoff_len so far, each counted once "
        "(drops at stream positions of epoch 0, where every sample is drawn once).",
    )
    eval_dropped_too_long: int = Field(
        default=0, description="Held-out samples longer than cutoff_len (last evaluation)."
    )
    best_metric: float | None = None
    best_step: int | None = None
    last_eval_step: int | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)
    eval_history: list[dict[str, Any]] = Field(default_factory=list)


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_steps(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, path)``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    steps = checkpoint_steps(root)
    return steps[-1][1] if steps else None


def prune_checkpoints(root: Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints; returns what was deleted."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    doomed = [path for _, path in checkpoint_steps(root)[:-keep_last]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def temp_dir_for(final: Path) -> Path:
    """The hidden sibling a directory is written to before being renamed to ``final``."""
    return final.parent / f".tmp-{final.name}"


def begin_atomic_dir(final: Path) -> Path:
    """Create (emptied) the temp sibling of ``final`` and return it."""
    tmp = temp_dir_for(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_atomic_dir(tmp: Path, final: Path) -> None:
    """Move a fully written ``tmp`` to ``final``, replacing an existing one.

    An existing ``final`` is first renamed aside, so at every instant either
    the old or the new complete directory is in place under a ``step-*`` /
    final name (a crash between the two renames leaves the old one under
    ``.old-*``, never a half-written one under the real name).
    """
    old = final.parent / f".old-{final.name}"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def save_pretrained_atomic(
    model: Any, processor: Any, final: Path, *, state_dict: dict[str, Any] | None = None
) -> Path:
    """``save_pretrained`` model and processor into ``final`` atomically (temp dir + rename).

    ``state_dict``: the weights to write instead of the module's own (gathered
    whole from ZeRO-3 shards).
    """
    tmp = begin_atomic_dir(final)
    _save_weights(model, tmp, state_dict)
    processor.save_pretrained(tmp)
    commit_atomic_dir(tmp, final)
    return final


def gathered_state_dict(accelerator: Any, model: Any, *, zero3: bool) -> dict[str, Any] | None:
    """Whole weights gathered from ZeRO-3 shards (every process must call it); else None.

    Outside ZeRO-3 the unwrapped module holds whole weights and ``save_pretrained``
    reads them itself.
    """
    return accelerator.get_state_dict(model) if zero3 else None


def save_model(accelerator: Any, model: Any, processor: Any, final: Path, *, zero3: bool) -> None:
    """``save_pretrained`` the prepared ``model`` and ``processor`` to ``final`` (all processes)."""
    state_dict = gathered_state_dict(accelerator, model, zero3=zero3)
    if accelerator.is_main_process:
        save_pretrained_atomic(
            accelerator.unwrap_model(model), processor, final, state_dict=state_dict
        )
    accelerator.wait_for_everyone()


def _save_weights(model: Any, directory: Path, state_dict: dict[str, Any] | None) -> None:
    if state_dict is None:
        model.save_pretrained(directory)
    else:
        model.save_pretrained(directory, state_dict=state_dict)


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of this process."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_file(directory: Path, rank: int) -> Path:
    return Path(directory) / f"rng_state_rank{rank}.pt"


def save_rng_state(directory: Path, rank: int) -> None:
    torch.save(capture_rng_state(), rng_file(directory, rank))


def load_rng_state(directory: Path, rank: int) -> bool:
    """Restore this rank's RNG states (rank 0's if the run had fewer processes); found?"""
    path = rng_file(directory, rank)
    if not path.is_file():
        path = rng_file(directory, 0)
        if not path.is_file():
            return False
        logger.warning("%s has no RNG state for rank %d; using rank 0's", directory, rank)
    restore_rng_state(torch.load(path, weights_only=False))
    return True


def save_training_state(
    directory: Path, *, optimizer: Any | None, scheduler: Any, state: TrainerState
) -> None:
    """Write optimizer, scheduler and (last, as the completeness marker) the trainer state.

    ``optimizer=None``: a DeepSpeed engine's checkpoint holds the optimizer.
    """
    directory = Path(directory)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), directory / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), directory / SCHEDULER_FILE)
    (directory / STATE_FILE).write_text(json.dumps(state.model_dump(), indent=2))


def write_checkpoint(
    accelerator: Any,
    final: Path,
    *,
    model: Any,
    processor: Any,
    optimizer: Any,
    scheduler: Any,
    state: TrainerState,
    engine: Any | None = None,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write one checkpoint to ``final`` from every process (all must call this).

    The main process empties the temp dir; every process writes its RNG state
    (and, under DeepSpeed, its part of the ``engine`` checkpoint, which then
    replaces ``optimizer.pt``); the main process writes weights (``state_dict``
    when given: gathered from ZeRO-3 shards), processor, optimizer, scheduler
    and (last) the trainer state, then renames the directory into place.
    Barriers separate the phases, so the rename never races a slow process.
    Assumes one filesystem visible to all processes (one node, or shared storage).
    """
    tmp = temp_dir_for(final)
    if accelerator.is_main_process:
        begin_atomic_dir(final)
    accelerator.wait_for_everyone()
    save_rng_state(tmp, accelerator.process_index)
    if engine is not None:
        save_engine_state(engine, tmp)
    if accelerator.is_main_process:
        _save_weights(model, tmp, state_dict)
        processor.save_pretrained(tmp)
        state.world_size = accelerator.num_processes
        state.accelerate = {
            "distributed_type": str(accelerator.distributed_type),
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
        }
        optimizer_state = optimizer if engine is None else None  # the engine saved it
        save_training_state(tmp, optimizer=optimizer_state, scheduler=scheduler, state=state)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        commit_atomic_dir(tmp, final)
    accelerator.wait_for_everyone()
    return final


def read_trainer_state(directory: Path) -> TrainerState:
    path = Path(directory) / STATE_FILE
    try:
        return TrainerState.model_validate_json(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable trainer state ({exc})") from exc


def check_resumable(
    state: TrainerState,
    path: Path,
    *,
    global_batch_size: int,
    train_samples: int,
    seed: int,
    total_steps: int,
) -> None:
    """Raise if the data plan changed since ``state`` was saved; adopt a new step horizon.

    The stream position of step ``s`` is ``s * global_batch_size`` over a
    ``train_samples``-long permutation seeded by ``seed``: if any of the three
    differs, resuming would silently train on other samples. The world size
    may change (the global batch is what counts). A different ``total_steps``
    (training extended or shortened) is allowed with a warning: the schedule
    then changes shape from here on.
    """
    mismatches = {
        name: (saved, now)
        for name, saved, now in (
            ("global batch size", state.global_batch_size, global_batch_size),
            ("training samples", state.train_samples, train_samples),
            ("seed", state.data_seed, seed),
        )
        if saved != now
    }
    if mismatches:
        detail = ", ".join(f"{k}: saved {a}, now {b}" for k, (a, b) in mismatches.items())
        raise ValueError(
            f"cannot resume from {path}: the data plan changed ({detail}); use a new "
            "output_dir or resume=False"
        )
    if state.total_steps != total_steps:
        logger.warning(
            "resuming %s with %d total steps instead of %d: the LR schedule changes shape",
            path,
            total_steps,
            state.total_steps,
        )
        state.total_steps = total_steps


def save_engine_state(engine: Any, directory: Path) -> None:
    """This process's part of a DeepSpeed engine checkpoint, in ``directory/deepspeed/``."""
    engine.save_checkpoint(str(directory), tag=DEEPSPEED_TAG, save_latest=False)


def load_optimizer_state(directory: Path, *, optimizer: Any, engine: Any | None) -> None:
    """Restore the optimizer in place: the engine checkpoint under DeepSpeed, else ``optimizer.pt``.

    ``engine``: a DeepSpeed engine, which reloads its weights (fp32 master copy
    included) and this process's optimizer partition from ``deepspeed/``. A
    checkpoint written with DeepSpeed does not resume without it, nor the
    reverse: the optimizer state would be missing.
    """
    directory = Path(directory)
    has_engine_state = (directory / DEEPSPEED_TAG).is_dir()
    if engine is not None:
        if not has_engine_state:
            raise ValueError(
                f"cannot resume from {directory} under DeepSpeed: it has no {DEEPSPEED_TAG}/ "
                "engine checkpoint (it was written without DeepSpeed); use resume=False"
            )
        engine.load_checkpoint(str(directory), tag=DEEPSPEED_TAG, load_lr_scheduler_states=False)
        return
    if has_engine_state and not (directory / OPTIMIZER_FILE).is_file():
        raise ValueError(
            f"cannot resume from {directory} without DeepSpeed: its optimizer state is a "
            f"DeepSpeed engine checkpoint ({DEEPSPEED_TAG}/); resume under the same DeepSpeed "
            "config or use resume=False"
        )
    optimizer.load_state_dict(torch.load(directory / OPTIMIZER_FILE, weights_only=False))


def load_training_state(
    directory: Path, *, optimizer: Any, scheduler: Any, engine: Any | None = None
) -> TrainerState:
    """Load optimizer and scheduler state in place; return the trainer state.

    The optimizer as :func:`load_optimizer_state` says. The LR schedule is not
    the engine's (it never sees it): ``scheduler.pt`` is restored either way,
    and under DeepSpeed its rate is written back into the optimizer.
    """
    directory = Path(directory)
    load_optimizer_state(directory, optimizer=optimizer, engine=engine)
    scheduler.load_state_dict(torch.load(directory / SCHEDULER_FILE, weights_only=False))
    if engine is not None:
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
    return read_trainer_state(directory)
