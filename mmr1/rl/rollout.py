"""Where GRPO's rollouts come from, and keeping that source in step with the policy.

Two sources share one interface (:class:`~mmr1.generation.base.GenerationBackend`):

- ``hf``: the very module being trained generates (no copy, never stale);
- ``vllm``: a colocated engine per process holding its own copy of the weights.
  An optimiser update makes that copy stale; :meth:`RolloutSource.sync` pushes
  the policy's weights right before the next generation (training rollouts or
  a VPS re-estimation), so a step that skipped its update costs no transfer.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from mmr1.data.shards import derive_seed
from mmr1.generation.base import GenerationBackend
from mmr1.generation.hf import HFBackend
from mmr1.models.loader import Policy
from schemas.generation import HFBackendConfig
from schemas.grpo import GRPOConfig


class RolloutSource:
    """A generation backend plus whether its weights lag behind the policy's."""

    def __init__(self, backend: GenerationBackend) -> None:
        self.backend = backend
        self.stale = False

    @classmethod
    def build(
        cls, config: GRPOConfig, *, policy: Policy, start: Path, process_index: int
    ) -> RolloutSource:
        """The configured backend; ``policy`` is the trained module, ``start`` its weights now.

        vLLM is imported only here, only when ``rollout_backend == "vllm"``; its engine
        loads ``config.vllm.model`` or, by default, ``start`` (the initial or resumed
        checkpoint), so it begins in step with the policy.
        """
        if config.rollout_backend == "vllm":
            from mmr1.generation.vllm import VLLMBackend

            engine = config.vllm.model_copy(update={"model": config.vllm.model or str(start)})
            return cls(VLLMBackend(engine, seed=derive_seed(config.seed, "vllm", process_index)))
        return cls(
            HFBackend(
                HFBackendConfig(model=str(start), batch_size=config.rollout_batch_size),
                policy=policy,
            )
        )

    def mark_stale(self) -> None:
        """The policy's weights changed (an optimiser update was applied)."""
        self.stale = True

    def sync(self, module: torch.nn.Module) -> float:
        """Copy ``module``'s weights into the backend if it holds a stale copy; seconds spent.

        A no-op for backends without ``update_weights`` (hf generates with the module
        itself) and when nothing changed since the last sync.
        """
        update = getattr(self.backend, "update_weights", None)
        if not self.stale or update is None:
            return 0.0
        began = time.perf_counter()
        with torch.no_grad():
            update(module.state_dict().items())
        self.stale = False
        return time.perf_counter() - began

    def close(self) -> None:
        """Release the backend (a vLLM engine's GPU memory)."""
        self.backend.close()
