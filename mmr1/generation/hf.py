"""Local transformers generation (CPU or one GPU): the ``hf`` backend.

Per call: requests are cut into batches of ``config.batch_size`` prompts; each
prompt is rendered with the model's chat template, processed with its images
(left padding) and repeated ``n`` times (images repeated with it), then one
``model.generate`` samples every row.

What a sample holds:

* ``token_ids``: the generated ids up to and **including** the first EOS
  (``<|im_end|>`` for Qwen), nothing after it. Keeping EOS makes re-scoring
  exact: the policy is trained to emit it. ``text`` is decoded with
  ``skip_special_tokens=True`` (so without EOS; ``<think>``/``<answer>`` tags
  are ordinary added tokens and stay).
* ``logprobs[i]``: ``log_softmax(masked_logits / T)[token_ids[i]]`` where the
  masked logits are the model's raw logits with the vision control tokens set
  to ``-inf``, and ``T`` the sampling temperature (1 for greedy). This is
  exactly what the trainer recomputes (docs/METHOD.md section 7); top-p truncation
  is *not* applied to the reported log-probs.
* ``finish_reason``: ``"stop"`` if EOS was generated, else ``"length"``.

Sampling is seeded: the same ``SamplingParams.seed``, requests and batch size
give the same samples on CPU (one RNG stream per call, so a request's samples
depend on the batch it shares). The caller's global RNG state is left untouched.

``generation_batch_size`` bounds the sequences of one ``model.generate`` call
(its KV cache is rows x (prompt + new tokens)): a batch of requests is cut
into calls of ``generation_batch_size // n`` requests, or, when ``n`` alone is
larger, each request's samples into calls of at most ``generation_batch_size``.
The calls draw from the same RNG stream one after the other, so results are
reproducible for a given value; they are not those of the uncut batch, since
``generate`` draws every row's token from one ``multinomial`` call per step (a
row's draw depends on the rows beside it) and the left padding differs. Greedy
decoding gives the same tokens either way.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from mmr1.generation.messages import to_template_messages
from mmr1.models.loader import Policy, load_policy, vision_special_token_ids
from mmr1.models.processor import repeat_multimodal_batch
from schemas.generation import (
    Completion,
    CompletionSample,
    GenerationRequest,
    HFBackendConfig,
    SamplingParams,
)


class SuppressAndRecordLogprobs(LogitsProcessor):
    """Masks ``suppress_ids`` to ``-inf`` and records the log-prob of each sampled token.

    Custom logits processors run before transformers' temperature/top-p warpers,
    so ``scores`` here are the raw logits (shape ``(rows, vocab)``). The token
    sampled from step ``t`` is only known at step ``t + 1`` (last column of
    ``input_ids``), so each call gathers the previous step's distribution;
    :meth:`finish` gathers the last one. Only one ``(rows, vocab)`` distribution
    is kept at a time, whatever the number of steps.
    """

    def __init__(self, suppress_ids: Sequence[int], temperature: float, record: bool) -> None:
        self.suppress_ids = list(suppress_ids)
        self.temperature = temperature if temperature > 0 else 1.0
        self.record = record
        self._previous: torch.Tensor | None = None
        self._steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._previous is not None:
            self._steps.append(self._previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        if self.suppress_ids:
            ids = torch.tensor(self.suppress_ids, device=scores.device)
            scores = scores.index_fill(-1, ids, float("-inf"))
        if self.record:
            self._previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor | None:
        """Log-probs of generated tokens, shape ``(rows, generated_len)``; None if not recorded."""
        if not self.record or self._previous is None:
            return None
        steps = [*self._steps, self._previous.gather(-1, sequences[:, -1:]).squeeze(-1)]
        self._previous = None
        self._steps = []
        return torch.stack(steps, dim=1)


class HFBackend:
    """``GenerationBackend`` on a local transformers model (see the module docstring)."""

    name = "hf"

    def __init__(
        self,
        config: HFBackendConfig,
        *,
        policy: Policy | None = None,
        generation_batch_size: int | None = None,
    ) -> None:
        """Load ``config.model`` through ``load_policy``, or reuse an already loaded ``policy``.

        Passing ``policy`` (e.g. the model being trained) generates with it
        as is; :meth:`close` then only drops this backend's reference.
        ``generation_batch_size``: most sequences per ``generate`` call (module
        docstring); None: ``batch_size x n``.
        """
        if generation_batch_size is not None and generation_batch_size < 1:
            raise ValueError(f"generation_batch_size must be >= 1, got {generation_batch_size}")
        self.config = config
        self.generation_batch_size = generation_batch_size
        self._owns_policy = policy is None
        self.policy: Policy | None = policy or load_policy(
            config.model, device=config.device, dtype=config.dtype, for_training=False
        )
        tokenizer = self.policy.tokenizer
        self._suppress_ids = vision_special_token_ids(tokenizer)
        eos = self.policy.model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos])
        pad = self.policy.model.generation_config.pad_token_id
        self._pad_id = pad if pad is not None else tokenizer.pad_token_id

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingParams
    ) -> list[Completion]:
        """Sample ``sampling.n`` completions for each request, in request order."""
        if self.policy is None:
            raise RuntimeError("HFBackend is closed")
        model = self.policy.model
        devices = [self.policy.device] if self.policy.device.type == "cuda" else []
        completions: list[Completion] = []
        was_training = model.training  # a borrowed policy may be mid-training
        model.eval()
        try:
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(sampling.seed)
                rows = self.generation_batch_size
                per_call = self.config.batch_size
                if rows is not None:
                    per_call = min(per_call, max(1, rows // sampling.n))
                for start in range(0, len(requests), per_call):
                    batch = list(requests[start : start + per_call])
                    if rows is None or sampling.n <= rows:
                        completions.extend(self._generate_batch(batch, sampling))
                    else:
                        completions.extend(self._generate_split(r, sampling) for r in batch)
        finally:
            model.train(was_training)
        return completions

    def close(self) -> None:
        """Drop the model (and free accelerator memory if this backend loaded it)."""
        owned = self._owns_policy and self.policy is not None
        self.policy = None
        if owned:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- internals -------------------------------------------------------------------

    def _generate_split(self, request: GenerationRequest, sampling: SamplingParams) -> Completion:
        """One request's ``n`` samples in calls of at most ``generation_batch_size`` rows."""
        size = self.generation_batch_size
        assert size is not None
        parts = [
            self._generate_batch([request], sampling.model_copy(update={"n": min(size, left)}))[0]
            for left in range(sampling.n, 0, -size)
        ]
        return Completion(
            request_id=request.request_id,
            samples=[sample for part in parts for sample in part.samples],
            prompt_tokens=parts[0].prompt_tokens,
        )

    def _prompt_inputs(self, requests: list[GenerationRequest]) -> dict[str, torch.Tensor]:
        """Chat-templated, processed and left-padded prompts (one row per request)."""
        policy = self.policy
        assert policy is not None
        processor = policy.processor
        texts: list[str] = []
        images: list[Any] = []
        for i, request in enumerate(requests):
            messages = to_template_messages(request)
            if not policy.is_vlm:
                if request.images:
                    raise ValueError(
                        f"request {request.request_id or i} has images but "
                        f"{self.config.model} is a text-only model"
                    )
                messages = [{**m, "content": _as_text(m["content"])} for m in messages]
            texts.append(
                processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
            images.extend(request.images)
        # Decoder-only generation needs left padding, whatever the checkpoint's default.
        if policy.is_vlm:
            inputs = processor(
                text=texts,
                images=images or None,
                padding=True,
                padding_side="left",
                return_tensors="pt",
            )
        else:
            inputs = policy.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
        return dict(inputs)

    def _generate_batch(
        self, requests: list[GenerationRequest], sampling: SamplingParams
    ) -> list[Completion]:
        policy = self.policy
        assert policy is not None
        model = policy.model
        prompt = self._prompt_inputs(requests)
        prompt_tokens = prompt["attention_mask"].sum(-1).tolist()
        if policy.is_vlm:
            rows = repeat_multimodal_batch(
                prompt,
                sampling.n,
                image_token_id=model.config.image_token_id,
                spatial_merge_size=model.config.vision_config.spatial_merge_size,
            )
        else:
            rows = {k: v.repeat_interleave(sampling.n, dim=0) for k, v in prompt.items()}
        rows = {k: v.to(policy.device) for k, v in rows.items()}
        if "pixel_values" in rows:
            rows["pixel_values"] = rows["pixel_values"].to(model.dtype)

        recorder = SuppressAndRecordLogprobs(
            self._suppress_ids, sampling.temperature, record=sampling.return_logprobs
        )
        sequences = model.generate(
            **rows,
            generation_config=_generation_config(sampling, sorted(self._eos_ids), self._pad_id),
            logits_processor=LogitsProcessorList([recorder]),
        )
        generated = sequences[:, rows["input_ids"].shape[1] :]
        logprobs = recorder.finish(sequences)

        tokenizer = policy.tokenizer
        completions = []
        for i, request in enumerate(requests):
            samples = []
            for j in range(sampling.n):
                row = i * sampling.n + j
                ids, finish = trim_at_eos(generated[row].tolist(), self._eos_ids)
                samples.append(
                    CompletionSample(
                        text=tokenizer.decode(ids, skip_special_tokens=True),
                        token_ids=ids,
                        logprobs=None if logprobs is None else logprobs[row, : len(ids)].tolist(),
                        finish_reason=finish,
                    )
                )
            completions.append(
                Completion(
                    request_id=request.request_id,
                    samples=samples,
                    prompt_tokens=int(prompt_tokens[i]),
                )
            )
        return completions


def trim_at_eos(ids: list[int], eos_ids: set[int]) -> tuple[list[int], Literal["stop", "length"]]:
    """Cut a generated row after its first EOS (kept); ``"length"`` if there is none.

    Rows that finished early are padded by ``generate``; the padding comes after
    the EOS and is dropped, so a pad id that is also an EOS id is harmless.
    """
    for k, token in enumerate(ids):
        if token in eos_ids:
            return ids[: k + 1], "stop"
    return ids, "length"


def _generation_config(
    sampling: SamplingParams, eos_ids: list[int], pad_id: int
) -> GenerationConfig:
    """Every knob that matters set explicitly: transformers fills unset (None) fields from the
    checkpoint's ``generation_config.json`` (Qwen2.5-VL ships top_k=1, repetition_penalty=1.05)."""
    common: dict[str, Any] = {
        "repetition_penalty": 1.0,
        "num_beams": 1,
        "max_new_tokens": sampling.max_new_tokens,
        "eos_token_id": eos_ids,
        "pad_token_id": pad_id,
    }
    if sampling.temperature == 0:
        return GenerationConfig(do_sample=False, temperature=1.0, top_p=1.0, **common)
    return GenerationConfig(
        do_sample=True,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=0,  # 0 disables top-k; None would inherit the checkpoint's value
        min_p=0.0,
        **common,
    )


def _as_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(item.get("text", "") for item in content)
