"""Where GRPO's rollouts come from, and keeping that source in step with the policy.

Two sources share one interface (:class:`~mmr1.generation.base.GenerationBackend`):

- ``hf``: the very module being trained generates (no copy, never stale);
- ``vllm``: a colocated engine per process holding its own copy of the weights.
  An optimiser update makes that copy stale; :meth:`RolloutSource.sync` pushes
  the policy's weights right before the next generation (training rollouts or
  a VPS re-estimation), so a step that skipped its update costs no transfer.

The push streams :func:`policy_weights` into the engine's ``load_weights``: one
``(name, parameter)`` at a time, on this process's GPU, copied once into the
engine's tensor (no state dict, no CPU round trip, no pickling). Under
DeepSpeed ZeRO-1/2 every rank holds the whole (bf16) parameters, so nothing
is gathered; parameters partitioned by ZeRO-3 would be gathered one at a time
(``deepspeed.zero.GatheredParameters``) and released once the engine copied them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
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
            return cls(
                VLLMBackend(
                    engine,
                    seed=derive_seed(config.seed, "vllm", process_index),
                    colocated=True,
                    sleep_between_rollouts=config.vllm.sleep_between_rollouts,
                )
            )
        return cls(
            HFBackend(
                HFBackendConfig(model=str(start), batch_size=config.rollout_batch_size),
                policy=policy,
                generation_batch_size=config.generation_batch_size,
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
            update(policy_weights(module))
        self.stale = False
        return time.perf_counter() - began

    def close(self) -> None:
        """Release the backend (a vLLM engine's GPU memory)."""
        self.backend.close()


def policy_weights(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Each parameter of ``module`` once, ``(Hugging Face name, full tensor)``, lazily.

    Tied parameters come once, under their first name (the embedding; an engine
    ties its head to it). Buffers are not sent: Qwen's rotary tables are
    computed by the engine itself. A parameter partitioned by DeepSpeed ZeRO-3
    (it has ``ds_id``) is gathered for the time between its yield and the next
    request, which is when the engine copies it.
    """
    for name, param in module.named_parameters():
        with _gathered(param):
            yield name, param.detach()


def _gathered(param: torch.nn.Parameter) -> contextlib.AbstractContextManager[object]:
    if not hasattr(param, "ds_id"):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters([param], modifier_rank=None)
