"""Generation backends behind one interface: ``get_backend(config).generate(requests, sampling)``.

Backends are imported lazily so that the GPU-only ``vllm`` backend is never
needed by the CPU path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmr1.generation.base import GenerationBackend
from schemas.generation import (
    BackendConfig,
    Completion,
    CompletionSample,
    GenerationRequest,
    HFBackendConfig,
    OpenAIBackendConfig,
    SamplingParams,
    VLLMBackendConfig,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "BackendConfig",
    "Completion",
    "CompletionSample",
    "GenerationBackend",
    "GenerationRequest",
    "SamplingParams",
    "generate",
    "get_backend",
]


def get_backend(config: BackendConfig) -> GenerationBackend:
    """Build the backend described by ``config`` (imports it on first use)."""
    if isinstance(config, HFBackendConfig):
        from mmr1.generation.hf import HFBackend

        return HFBackend(config)
    if isinstance(config, VLLMBackendConfig):
        from mmr1.generation.vllm import VLLMBackend

        return VLLMBackend(config)
    if isinstance(config, OpenAIBackendConfig):
        from mmr1.generation.openai_compat import OpenAIBackend

        return OpenAIBackend(config)
    raise TypeError(f"unknown generation backend config: {type(config).__name__}")


def generate(
    config: BackendConfig, requests: Sequence[GenerationRequest], sampling: SamplingParams
) -> list[Completion]:
    """One-shot helper: build the backend, generate, release it."""
    backend = get_backend(config)
    try:
        return backend.generate(requests, sampling)
    finally:
        backend.close()
