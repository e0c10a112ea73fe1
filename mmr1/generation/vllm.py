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

- :func:`engine_kwargs` -> ``vllm.LLM(**kwargs)`` (:func:`colocated_engine_kwargs`
  for an engine beside a training process, :func:`colocated_environment` for
  the variables it needs);
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
- ``LLM.apply_model(fn)`` is ``collective_rpc("apply_model", (fn,))``: each
  worker calls ``fn(model)``. With the engine core in this process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and one worker
  (``distributed_executor_backend="external_launcher"``, tensor parallel 1)
  that is a plain function call: nothing is serialised.
- ``model.load_weights(weights)`` takes an iterable of ``(name, tensor)`` in
  Hugging Face naming and consumes it lazily; the model's
  ``hf_to_vllm_mapper`` renames (Qwen2.5-VL: ``model.language_model.`` ->
  ``language_model.model.``, ``model.visual.`` -> ``visual.``, ``lm_head.`` ->
  ``language_model.lm_head.``, and the pre-4.52 ``model.`` / ``visual.``
  names too), q/k/v and gate/up are copied into their fused parameters and the
  dtype is converted by the copy. A tied ``lm_head`` is skipped (it shares the
  embedding).
- ``external_launcher`` engines take their device from ``LOCAL_RANK`` and join
  the ``torch.distributed`` world the launcher set up (``RANK``, ``WORLD_SIZE``,
  ``MASTER_ADDR``, ``MASTER_PORT``); with tensor parallel 1 that is one engine
  per training process, each serving its own prompts (the colocated mode of
  TRL and verl).
- ``LLM(enable_sleep_mode=True)``; ``sleep(level=1)`` moves the weights to
  CPU memory and frees the KV cache, ``wake_up()`` restores both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
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


def colocated_engine_kwargs(
    config: VLLMBackendConfig, *, seed: int = 0, sleep_mode: bool = False, world_size: int = 1
) -> dict[str, Any]:
    """``vllm.LLM`` kwargs of an engine living in a training process (one per process).

    With several processes (``world_size`` > 1, from ``accelerate launch`` /
    ``torchrun``) the ``external_launcher`` executor runs a single worker in
    this process on the GPU of ``LOCAL_RANK``, inside the launcher's
    ``torch.distributed`` world; alone, vLLM's default one-worker executor does
    the same on the first GPU. ``sleep_mode`` lets :class:`VLLMBackend` sleep.
    """
    kwargs = engine_kwargs(config, seed=seed)
    if world_size > 1:
        kwargs["distributed_executor_backend"] = "external_launcher"
    if sleep_mode:
        kwargs["enable_sleep_mode"] = True
    return kwargs


def colocated_environment(env: MutableMapping[str, str] | None = None) -> int:
    """Make ``env`` (default ``os.environ``) run the engine core in this process; the world size.

    Weight sync hands the engine tensors by reference, which needs the core in
    this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``); an explicit other value
    is refused. Returns ``WORLD_SIZE`` (1 outside a launcher).
    """
    env = os.environ if env is None else env
    if env.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") not in ("0", ""):
        raise ValueError(
            "VLLM_ENABLE_V1_MULTIPROCESSING is set to "
            f"{env['VLLM_ENABLE_V1_MULTIPROCESSING']!r}: the colocated rollout engine must run "
            "in the training process (weights are synced tensor by tensor, by reference); "
            "unset it or set it to 0"
        )
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return int(env.get("WORLD_SIZE", "1"))


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
        colocated: the engine lives beside a training process (GRPO rollouts):
            its core runs in this process on this process's GPU
            (:func:`colocated_environment`, :func:`colocated_engine_kwargs`), which
            :meth:`update_weights` needs.
        sleep_between_rollouts: (colocated) sleep after each :meth:`generate`
            (weights to CPU memory, KV cache freed) and wake before the next use.
    """

    name = "vllm"

    def __init__(
        self,
        config: VLLMBackendConfig,
        *,
        seed: int = 0,
        suppress_vision_tokens: bool = True,
        colocated: bool = False,
        sleep_between_rollouts: bool = False,
    ) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise ImportError(VLLM_MISSING_MESSAGE) from exc
        if sleep_between_rollouts and not colocated:
            raise ValueError("sleep_between_rollouts needs a colocated engine")
        self.config = config
        self.colocated = colocated
        self._vllm = vllm
        self._sleep = sleep_between_rollouts
        self._asleep = False
        if colocated:
            kwargs = colocated_engine_kwargs(
                config,
                seed=seed,
                sleep_mode=sleep_between_rollouts,
                world_size=colocated_environment(),
            )
        else:
            kwargs = engine_kwargs(config, seed=seed)
        self._llm = vllm.LLM(**kwargs)
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
        self._wake()
        outputs = self._llm.generate(inputs, params, use_tqdm=False)
        if self._sleep:
            self._llm.sleep(level=1)
            self._asleep = True
        return [
            request_output_to_completion(
                out, request_id=req.request_id, want_logprobs=sampling.return_logprobs
            )
            for req, out in zip(requests, outputs, strict=True)
        ]

    def update_weights(self, weights: Iterable[tuple[str, Any]]) -> dict[str, float]:
        """Load new policy weights into the running engine, tensor by tensor (GRPO weight sync).

        ``weights`` yields ``(name, tensor)`` in Hugging Face naming, tensors on
        this process's GPU (e.g. :func:`mmr1.rl.rollout.policy_weights`: each
        parameter once, gathered one at a time when sharded). They reach the
        model's own ``load_weights`` (renaming, q/k/v and gate/up fusion, dtype
        conversion: module docstring) through ``LLM.apply_model``, which for a
        colocated engine is a call in this process: the iterator is consumed
        lazily, each tensor copied once into the engine's parameter, and no
        state dict is built or serialised. The prefix cache is reset afterwards
        so no KV computed with the old weights is reused.

        Returns ``{"tensors": count, "bytes": total}`` of what was handed over.
        """
        if not self.colocated:
            raise RuntimeError(
                "update_weights needs a colocated engine (VLLMBackend(colocated=True)): a "
                "separate engine process would need the weights serialised"
            )
        counted = _CountingWeights(weights)

        def load(model: Any) -> None:
            model.load_weights(weights=counted)

        self._wake()
        self._llm.apply_model(load)
        reset = getattr(self._llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()
        return {"tensors": float(counted.tensors), "bytes": float(counted.bytes)}

    def _wake(self) -> None:
        if self._asleep:
            # The update pass's freed activations sit in torch's cache; give them back to
            # the driver first, or the engine cannot re-allocate its weights and KV cache.
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._llm.wake_up()
            self._asleep = False

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


class _CountingWeights:
    """Passes ``(name, tensor)`` pairs through one at a time, counting tensors and bytes."""

    def __init__(self, weights: Iterable[tuple[str, Any]]) -> None:
        self._weights = iter(weights)
        self.tensors = 0
        self.bytes = 0

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for name, tensor in self._weights:
            self.tensors += 1
            self.bytes += int(tensor.numel()) * int(tensor.element_size())
            yield name, tensor
