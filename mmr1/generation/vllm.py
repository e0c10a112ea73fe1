"""In-process vLLM generation (GPU trainer environment only).

vLLM is imported inside :class:`VLLMBackend` and nowhere else, so importing this
module never needs it. vLLM 0.33 pins ``torch==2.14.0``, ``transformers<5.21``
and ``fastapi<0.137`` while Prefect 3.9 needs ``fastapi>=0.139``: the two cannot
share an environment (docs/STACK.md). Prefect tasks therefore never build this
backend themselves; they either start ``vllm serve`` and use the ``openai``
backend, or launch a subprocess in the trainer environment, where this backend
runs (e.g. GRPO rollouts with weight sync).

Everything that touches vLLM objects is a small function so the conversions can
be unit-tested on CPU with stand-ins that have the same attributes:

- :func:`engine_kwargs` -> ``vllm.LLM(**kwargs)``;
- :func:`sampling_kwargs` -> ``vllm.SamplingParams(**kwargs)``;
- :func:`build_prompt_input` -> one ``{"prompt", "multi_modal_data"}`` dict;
- :func:`request_output_to_completion` -> ``RequestOutput`` to :class:`Completion`.

vLLM API assumptions (checked against vLLM docs/sources, not run here):

- ``LLM.generate(list_of_prompt_dicts, sampling_params, use_tqdm=False)``
  returns one ``RequestOutput`` per input, in input order, with ``.outputs``
  (``CompletionOutput``: ``.index``, ``.text``, ``.token_ids``, ``.logprobs``,
  ``.finish_reason``) and ``.prompt_token_ids``.
- ``SamplingParams(logprobs=0)`` returns, per generated position, a mapping
  ``{token_id: Logprob(logprob=...)}`` holding at least the sampled token
  (a ``list`` of dicts, or the list-like ``FlatLogprobs`` of newer releases).
- ``LLM(logprobs_mode="processed_logprobs")`` makes those log-probs come from
  the temperature-scaled (and top-k/top-p-filtered) distribution, matching our
  convention; with ``top_p=1`` that is exactly ``log_softmax(logits / T)``.
- With ``n > 1`` and a seed, vLLM seeds sample ``i`` with ``seed + i``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from mmr1.generation.messages import to_template_messages
from schemas.generation import (
    Completion,
    CompletionSample,
    GenerationRequest,
    SamplingParams,
    VLLMBackendConfig,
)

VLLM_MISSING_MESSAGE = (
    "The 'vllm' generation backend needs vLLM, which is not installed in this environment. "
    "Install the GPU extra in the trainer environment: pip install 'mmr1-pipeline[gpu]'. "
    "vLLM cannot share an environment with Prefect (vLLM 0.33 pins torch==2.14.0, "
    "transformers<5.21 and fastapi<0.137; Prefect 3.9 needs fastapi>=0.139), so Prefect "
    "tasks launch vLLM work either through 'vllm serve' plus the 'openai' backend "
    "(OpenAIBackendConfig(base_url='http://HOST:PORT/v1', model=...)) or as a subprocess "
    "running in the trainer environment."
)

VISION_SPECIAL_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen2.5-VL markers a weak policy can emit at temperature 1; re-scoring such a
completion crashes ("Image features and image tokens do not match", docs/STACK.md)."""

SUPPRESS_BIAS = -100.0
"""Logit bias that removes a token from sampling in practice (OpenAI's own floor)."""


# -- pure conversions (tested on CPU) ----------------------------------------------


def engine_kwargs(config: VLLMBackendConfig, *, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for ``config``."""
    return {
        "model": config.model,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "max_model_len": config.max_model_len,
        "dtype": config.dtype,
        "limit_mm_per_prompt": {"image": config.limit_images_per_prompt},
        "enforce_eager": config.enforce_eager,
        "seed": seed,
        # Log-probs of the distribution actually sampled from (temperature applied).
        "logprobs_mode": "processed_logprobs",
    }


def sampling_kwargs(
    sampling: SamplingParams, *, suppress_token_ids: Iterable[int] = ()
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for ``sampling``.

    ``logprobs=0`` asks for the sampled token's log-prob only (no top-k
    alternatives); ``None`` turns log-probs off. ``suppress_token_ids`` get a
    -100 logit bias.
    """
    kwargs: dict[str, Any] = {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
        "logprobs": 0 if sampling.return_logprobs else None,
    }
    bias = {int(token_id): SUPPRESS_BIAS for token_id in suppress_token_ids}
    if bias:
        kwargs["logit_bias"] = bias
    return kwargs


def vision_token_ids(tokenizer: Any) -> list[int]:
    """Ids of :data:`VISION_SPECIAL_TOKENS` present in ``tokenizer``'s vocabulary."""
    vocab = tokenizer.get_vocab()
    return sorted(vocab[token] for token in VISION_SPECIAL_TOKENS if token in vocab)


def format_prompt(tokenizer: Any, request: GenerationRequest) -> str:
    """Render ``request`` with the model's chat template, ready for generation.

    Images become ``{"type": "image"}`` content items, which Qwen2.5-VL's
    template turns into ``<|vision_start|><|image_pad|><|vision_end|>``; vLLM
    expands each ``<|image_pad|>`` to the image's patch count itself.
    """
    return tokenizer.apply_chat_template(
        to_template_messages(request), tokenize=False, add_generation_prompt=True
    )


def build_prompt_input(prompt_text: str, images: Sequence[Any]) -> dict[str, Any]:
    """One ``LLM.generate`` input: templated text plus its PIL images in placeholder order."""
    prompt: dict[str, Any] = {"prompt": prompt_text}
    if images:
        prompt["multi_modal_data"] = {"image": list(images)}
    return prompt


def sampled_token_logprobs(
    token_ids: Sequence[int], position_logprobs: Sequence[Any]
) -> list[float]:
    """Log-prob of each sampled token from vLLM's per-position ``{token_id: Logprob}`` maps."""
    if len(position_logprobs) != len(token_ids):
        raise ValueError(
            f"vLLM returned log-probs for {len(position_logprobs)} positions but "
            f"{len(token_ids)} tokens"
        )
    values: list[float] = []
    for position, (token_id, candidates) in enumerate(
        zip(token_ids, position_logprobs, strict=True)
    ):
        if candidates is None or token_id not in candidates:
            raise ValueError(
                f"vLLM log-probs at position {position} lack the sampled token {token_id}"
            )
        values.append(float(candidates[token_id].logprob))
    return values


def completion_output_to_sample(output: Any, want_logprobs: bool) -> CompletionSample:
    """One ``CompletionOutput`` -> :class:`CompletionSample`."""
    token_ids = [int(t) for t in output.token_ids]
    logprobs = None
    if want_logprobs and output.logprobs is not None:
        logprobs = sampled_token_logprobs(token_ids, output.logprobs)
    finish_reason = "length" if output.finish_reason == "length" else "stop"
    return CompletionSample(
        text=output.text, token_ids=token_ids, logprobs=logprobs, finish_reason=finish_reason
    )


def request_output_to_completion(
    output: Any, *, request_id: str | None, want_logprobs: bool
) -> Completion:
    """One ``RequestOutput`` -> :class:`Completion`, samples ordered by their ``index``."""
    outputs = sorted(output.outputs, key=lambda o: o.index)
    prompt_ids = getattr(output, "prompt_token_ids", None)
    return Completion(
        request_id=request_id,
        samples=[completion_output_to_sample(o, want_logprobs) for o in outputs],
        prompt_tokens=len(prompt_ids) if prompt_ids is not None else None,
    )


# -- the backend -------------------------------------------------------------------


class VLLMBackend:
    """Generate with an in-process ``vllm.LLM`` engine.

    Args:
        config: model and engine settings.
        seed: engine seed (every request also carries ``sampling.seed``).
        suppress_vision_tokens: give Qwen's vision marker tokens a -100 logit
            bias so completions never contain them (docs/STACK.md, "crash to prevent").

    Building the engine sets ``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` unless the
    variable is already set: :meth:`update_weights` ships a function to the
    engine's worker processes, which vLLM only unpickles with that flag. Those
    workers are local child processes of this one.
    """

    name = "vllm"

    def __init__(
        self, config: VLLMBackendConfig, *, seed: int = 0, suppress_vision_tokens: bool = True
    ) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise ImportError(VLLM_MISSING_MESSAGE) from exc
        self.config = config
        self._vllm = vllm
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        self._llm = vllm.LLM(**engine_kwargs(config, seed=seed))
        self._tokenizer = self._llm.get_tokenizer()
        self._suppressed = vision_token_ids(self._tokenizer) if suppress_vision_tokens else []

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.config.model!r}, tp={self.config.tensor_parallel_size})"

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingParams
    ) -> list[Completion]:
        """Sample ``sampling.n`` completions per request in one batched ``LLM.generate`` call."""
        requests = list(requests)
        if not requests:
            return []
        inputs = [build_prompt_input(format_prompt(self._tokenizer, r), r.images) for r in requests]
        params = self._vllm.SamplingParams(
            **sampling_kwargs(sampling, suppress_token_ids=self._suppressed)
        )
        outputs = self._llm.generate(inputs, params, use_tqdm=False)
        return [
            request_output_to_completion(
                out, request_id=req.request_id, want_logprobs=sampling.return_logprobs
            )
            for req, out in zip(requests, outputs, strict=True)
        ]

    def update_weights(self, state_dict_items: Iterable[tuple[str, Any]]) -> None:
        """Load new policy weights into the running engine (GRPO weight sync).

        ``state_dict_items`` are ``(name, tensor)`` pairs in Hugging Face naming
        (``model.state_dict().items()`` of the trained policy, gathered to full
        tensors under ZeRO-3/FSDP). They reach the model through
        ``LLM.apply_model(fn)``, which runs ``fn(model)`` on the ``nn.Module`` in
        every worker, and ``fn`` calls the model's own ``load_weights(weights)``
        (vLLM's checkpoint loader: it maps HF names, fuses qkv/gate-up and
        shards for tensor parallelism). The prefix cache is reset afterwards so
        no KV computed with the old weights is reused.

        The tensors are pickled to the workers; move them to CPU first for big
        models, or run the engine in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
        tensor_parallel_size 1), where no copy is made. Not testable without a GPU.
        """
        weights = list(state_dict_items)

        def load(model: Any) -> None:
            model.load_weights(weights=weights)

        self._llm.apply_model(load)
        reset = getattr(self._llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

    def close(self) -> None:
        """Drop the engine so its GPU memory can be reclaimed."""
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        self._llm = None
        shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
