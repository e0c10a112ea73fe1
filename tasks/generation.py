"""Generation backends as the orchestration layer builds them.

The only thing added over ``mmr1.generation.get_backend`` is secret handling:
an ``openai`` backend may name a Prefect Secret block for its API key. The
key is read here (the library never imports Prefect) and handed to the
backend, which never logs it.
"""

from __future__ import annotations

from prefect.blocks.system import Secret

from mmr1.generation import GenerationBackend, get_backend
from mmr1.generation.openai_compat import OpenAIBackend
from schemas.generation import BackendConfig, OpenAIBackendConfig


def resolve_api_key(config: OpenAIBackendConfig) -> str | None:
    """The key from the configured Prefect Secret block, or None to fall back to the env var."""
    if config.api_key_secret_block is None:
        return None
    try:
        secret = Secret.load(config.api_key_secret_block)
    except ValueError as exc:
        raise ValueError(
            f"Prefect Secret block {config.api_key_secret_block!r} (api_key_secret_block of the "
            f"openai backend for {config.base_url}) could not be loaded: {exc}"
        ) from exc
    value = secret.get()
    return str(value) if value else None


def build_backend(config: BackendConfig) -> GenerationBackend:
    """``get_backend`` plus Prefect Secret resolution for the ``openai`` backend."""
    if isinstance(config, OpenAIBackendConfig) and config.api_key_secret_block is not None:
        return OpenAIBackend(config, api_key=resolve_api_key(config))
    return get_backend(config)
