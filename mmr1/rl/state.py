"""GRPO checkpoints: the loop state and its atomic write / exact read-back.

A checkpoint directory holds ``save_pretrained`` weights and processor, the
optimizer, the sampler state (scores, pass, position, generator), the loop
state (``trainer_state.json``, written last as the completeness marker) and
one RNG file per rank. Under DeepSpeed the optimizer is partitioned across
ranks: the engine's own checkpoint (``deepspeed/``: fp32 master weights and
every rank's optimizer partition) replaces ``optimizer.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from pydantic import BaseModel, Field

from mmr1.trainer.checkpoint import (
    OPTIMIZER_FILE,
    STATE_FILE,
    begin_atomic_dir,
    commit_atomic_dir,
    load_optimizer_state,
    load_rng_state,
    save_engine_state,
    save_rng_state,
    temp_dir_for,
)
from mmr1.vas.sampler import MixedVarianceSampler

SAMPLER_FILE = "sampler.pt"


class GRPOState(BaseModel):
    """Loop state that is not a tensor."""

    step: int = 0
    prompts: int = Field(description="Pool size (a resumed run must see the same pool).")
    seed: int
    prompts_per_step: int
    history: list[dict[str, float]] = Field(default_factory=list)
    vps_tables: list[str] = Field(default_factory=list)
    refreshes: int = 0
    skipped_updates: int = 0


def write_grpo_checkpoint(
    acc: Accelerator,
    final: Path,
    *,
    model: Any,
    processor: Any,
    optimizer: torch.optim.Optimizer,
    sampler: MixedVarianceSampler,
    state: GRPOState,
    engine: Any | None = None,
) -> Path:
    """Write ``final`` via a temp dir and a rename (every process must call this).

    ``engine``: the DeepSpeed engine, whose optimizer state every rank saves.
    """
    tmp = temp_dir_for(final)
    if acc.is_main_process:
        begin_atomic_dir(final)
    acc.wait_for_everyone()
    save_rng_state(tmp, acc.process_index)
    if engine is not None:
        save_engine_state(engine, tmp)
    if acc.is_main_process:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if engine is None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save(sampler.state_dict(), tmp / SAMPLER_FILE)
        (tmp / STATE_FILE).write_text(state.model_dump_json(indent=2))
    acc.wait_for_everyone()
    if acc.is_main_process:
        commit_atomic_dir(tmp, final)
    acc.wait_for_everyone()
    return final


def read_grpo_checkpoint(
    path: Path,
    *,
    expected: tuple[int, int, int],
    optimizer: torch.optim.Optimizer,
    sampler: MixedVarianceSampler,
    rank: int,
    engine: Any | None = None,
) -> GRPOState:
    """Restore optimizer, sampler and RNG in place; return the loop state.

    ``expected`` is (pool size, seed, prompts per step) of the run resuming: a
    checkpoint of another data plan is refused rather than silently continued.
    ``engine``: the DeepSpeed engine; it reloads its weights (fp32 master copy
    included) and this rank's optimizer partition from the checkpoint.
    """
    state = GRPOState.model_validate_json((Path(path) / STATE_FILE).read_text())
    saved = (state.prompts, state.seed, state.prompts_per_step)
    if saved != expected:
        raise ValueError(
            f"cannot resume from {path}: it was written for {saved[0]} prompts, seed "
            f"{saved[1]}, {saved[2]} prompts per step; now {expected[0]}, {expected[1]}, "
            f"{expected[2]}. Use a new output directory or resume=False"
        )
    load_optimizer_state(Path(path), optimizer=optimizer, engine=engine)
    sampler.load_state_dict(torch.load(path / SAMPLER_FILE, weights_only=False))
    load_rng_state(path, rank)
    return state
