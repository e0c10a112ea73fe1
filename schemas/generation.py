"""Generation requests, sampling settings, completions and backend configs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import ConfigModel


class SamplingParams(BaseModel):
    """How to sample completions. Shared by every backend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(default=1, ge=1, description="Samples per request.")
    temperature: float = Field(default=1.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: the smallest token set of this mass.",
    )
    max_new_tokens: int = Field(
        default=256, ge=1, description="Most tokens generated per answer (longer ones truncate)."
    )
    seed: int = Field(default=0, description="Seed for sampling; same seed -> same samples (CPU).")
    return_logprobs: bool = Field(
        default=True, description="Return per-token log-probs of the sampled tokens."
    )


class GenerationRequest(BaseModel):
    """One prompt: the user text (with ``<image>`` placeholders) and its images.

    Backends apply the model's chat template themselves, so the same request
    works for a local model, vLLM and a remote chat-completions endpoint.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    prompt: str
    images: list[Any] = Field(
        default_factory=list, description="PIL images, one per <image> placeholder, in order."
    )
    system: str | None = Field(default=None, description="Optional system message.")
    request_id: str | None = None


class CompletionSample(BaseModel):
    """One sampled answer."""

    text: str
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] | None = Field(
        default=None, description="Log-prob of each sampled token (temperature-scaled)."
    )
    finish_reason: Literal["stop", "length"] = "stop"


class Completion(BaseModel):
    """All samples for one request, in request order."""

    request_id: str | None = None
    samples: list[CompletionSample]
    prompt_tokens: int | None = None


class HFBackendConfig(ConfigModel):
    """Local transformers generation (CPU or one GPU)."""

    kind: Literal["hf"] = Field(default="hf", description="Backend type: local transformers.")
    model: str = Field(description="Checkpoint directory or hub id (see mmr1.models.load_policy).")
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weight dtype; auto: the checkpoint's own."
    )
    batch_size: int = Field(default=16, ge=1, description="Requests per forward batch.")


class VLLMBackendConfig(ConfigModel):
    """In-process vLLM engine (GPU trainer environment only; imported lazily)."""

    kind: Literal["vllm"] = Field(default="vllm", description="Backend type: in-process vLLM.")
    model: str = Field(description="Checkpoint directory or hub id vLLM loads.")
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="GPUs the model is sharded over (tensor parallelism)."
    )
    gpu_memory_utilization: float = Field(
        default=0.6,
        gt=0.0,
        le=1.0,
        description="Share of each GPU's memory vLLM may take (weights + KV cache).",
    )
    max_model_len: int = Field(
        default=8192, ge=256, description="Longest prompt + answer in tokens (image tokens count)."
    )
    dtype: str = Field(default="bfloat16", description="Weight and activation dtype.")
    limit_images_per_prompt: int = Field(
        default=8, ge=1, description="Most images one prompt may carry."
    )
    enforce_eager: bool = Field(
        default=False, description="No CUDA graphs: slower, less memory, faster start-up."
    )


class OpenAIBackendConfig(ConfigModel):
    """Any OpenAI-compatible chat-completions endpoint (``vllm serve``, hosted APIs)."""

    kind: Literal["openai"] = Field(
        default="openai", description="Backend type: an OpenAI-compatible endpoint."
    )
    base_url: str = Field(description="Endpoint root, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY",
        description="Environment variable holding the API key (never logged). None: no key.",
    )
    api_key_secret_block: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the key; resolved by the "
        "orchestration layer (tasks/) and wins over api_key_env.",
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Seconds per request.")
    max_retries: int = Field(default=5, ge=0, description="Retries on 429/5xx/connection errors.")
    backoff_s: float = Field(default=1.0, ge=0, description="Initial backoff, doubled per retry.")
    concurrency: int = Field(default=8, ge=1, description="Requests in flight at once.")


BackendConfig = Annotated[
    HFBackendConfig | VLLMBackendConfig | OpenAIBackendConfig, Field(discriminator="kind")
]
