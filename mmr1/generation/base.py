"""The one generation interface every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from schemas.generation import Completion, GenerationRequest, SamplingParams


@runtime_checkable
class GenerationBackend(Protocol):
    """Turns requests into completions: ``n`` samples per request, in request order.

    Implementations: ``hf`` (transformers, CPU/GPU), ``vllm`` (GPU extra),
    ``openai`` (any OpenAI-compatible chat-completions endpoint).
    """

    name: str

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingParams
    ) -> list[Completion]:
        """Sample ``sampling.n`` completions for each request."""
        ...

    def close(self) -> None:
        """Release model memory, worker threads or connections."""
        ...
