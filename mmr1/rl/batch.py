"""Rollout batches for the policy update, and the log-probs of their responses.

Layout (the generation layout, so positions match what was sampled)::

    [ pad ... pad  prompt tokens | response tokens  pad ... pad ]
      <- left-padded to P ->       <- right-padded to R ->

Each prompt is encoded once (chat template + processor, images included) and
shared by its G rollouts; a micro-batch of rows concatenates the pixel values
of its rows in row order, so every copy carries its own image block.
Qwen2.5-VL derives its 3-D (M-RoPE) positions from ``attention_mask`` and
``mm_token_type_ids``; both are passed, or the logits silently differ from
the ones the rollout was sampled from (docs/STACK.md).

Log-probs (docs/METHOD.md section 7): ``log_softmax(masked_logits / T)`` where the
vision control tokens are masked to ``-inf`` exactly as the ``hf`` backend
does while sampling, and ``T`` is the sampling temperature.

Memory: full-vocabulary logits for a micro-batch would be ``rows x R x V``
floats (4 x 4,097 x 151,936 x 4 bytes ~ 10 GB at paper lengths), and the
entropy pass as many again. They are never built: the model runs up to its
final hidden states and the head is applied to the real response positions
only, ``chunk_size`` positions at a time (:mod:`mmr1.models.head`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmr1.generation.messages import to_template_messages
from mmr1.models.head import final_hidden_states, output_head, token_logprobs
from mmr1.models.loader import Policy
from schemas.generation import GenerationRequest


@dataclass
class EncodedPrompt:
    """One chat-templated prompt with its images, unpadded."""

    input_ids: torch.Tensor  # (P,) long
    mm_token_type_ids: torch.Tensor | None  # (P,) long, 1 at image tokens (VLMs)
    pixel_values: torch.Tensor | None  # (patches, patch_dim)
    image_grid_thw: torch.Tensor | None  # (images, 3)


@dataclass
class Rollout:
    """One sampled response to one prompt, ready for the update."""

    prompt: int  # index into the step's list of EncodedPrompt
    response_ids: list[int]
    advantage: float
    train: bool = True  # False: tokens excluded from the loss (e.g. masked truncation)


def encode_prompt(policy: Policy, request: GenerationRequest) -> EncodedPrompt:
    """The chat-templated prompt the generation backend saw, as tensors."""
    messages = to_template_messages(request)
    if not policy.is_vlm:
        if request.images:
            raise ValueError(f"request {request.request_id} has images; the model is text-only")
        text = policy.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        ids = policy.tokenizer(text, return_tensors="pt")["input_ids"][0]
        return EncodedPrompt(ids, None, None, None)
    processor = policy.processor
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=request.images or None, return_tensors="pt")
    return EncodedPrompt(
        input_ids=inputs["input_ids"][0],
        mm_token_type_ids=inputs["mm_token_type_ids"][0],
        pixel_values=inputs.get("pixel_values"),
        image_grid_thw=inputs.get("image_grid_thw"),
    )


def collate(
    prompts: Sequence[EncodedPrompt],
    rollouts: Sequence[Rollout],
    pad_token_id: int,
    *,
    is_vlm: bool,
) -> dict[str, torch.Tensor]:
    """Model inputs for ``rollouts`` plus ``response_ids`` / ``response_mask`` of shape (rows, R).

    ``response_mask`` is 1 on real response tokens of rows with ``train=True``.
    """
    if not rollouts:
        raise ValueError("cannot collate an empty micro-batch")
    rows = len(rollouts)
    width_p = max(int(prompts[r.prompt].input_ids.numel()) for r in rollouts)
    width_r = max(1, max(len(r.response_ids) for r in rollouts))
    input_ids = torch.full((rows, width_p + width_r), pad_token_id, dtype=torch.long)
    attention = torch.zeros((rows, width_p + width_r), dtype=torch.long)
    mm = torch.zeros((rows, width_p + width_r), dtype=torch.long) if is_vlm else None
    response_ids = torch.full((rows, width_r), pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((rows, width_r), dtype=torch.float32)
    pixels, grids = [], []
    for row, rollout in enumerate(rollouts):
        prompt = prompts[rollout.prompt]
        n_p, n_r = int(prompt.input_ids.numel()), len(rollout.response_ids)
        start = width_p - n_p
        input_ids[row, start:width_p] = prompt.input_ids
        attention[row, start : width_p + n_r] = 1
        if n_r:
            ids = torch.tensor(rollout.response_ids, dtype=torch.long)
            input_ids[row, width_p : width_p + n_r] = ids
            response_ids[row, :n_r] = ids
            response_mask[row, :n_r] = float(rollout.train)
        if mm is not None and prompt.mm_token_type_ids is not None:
            mm[row, start:width_p] = prompt.mm_token_type_ids
        if prompt.pixel_values is not None:
            pixels.append(prompt.pixel_values)
            grids.append(prompt.image_grid_thw)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "response_ids": response_ids,
        "response_mask": response_mask,
    }
    if mm is not None:
        batch["mm_token_type_ids"] = mm
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
        batch["image_grid_thw"] = torch.cat(grids)
    return batch


def response_logprobs(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    temperature: float,
    suppress_ids: Sequence[int],
    with_entropy: bool = False,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of ``batch["response_ids"]``, shape (rows, R), and optionally entropy.

    Positions ``P - 1 .. P + R - 2`` predict the R response tokens; only the
    real ones (``attention_mask`` 1 in the response columns) go through the
    output head, ``chunk_size`` at a time (None: all at once). Padding
    positions get 0: mask them with ``response_mask``. Entropy (of the
    temperature-scaled, vision-masked distribution) is computed without
    gradient. ``model`` may be wrapped (DDP, DeepSpeed): its own forward runs.
    """
    width_r = batch["response_ids"].shape[1]
    inputs = {
        k: v
        for k, v in batch.items()
        if k
        in {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"}
    }
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(next(model.parameters()).dtype)
    head = output_head(model)
    hidden, autocast = final_hidden_states(model, head, inputs, keep=width_r + 1)
    hidden = hidden[:, :-1]  # (rows, R, H)
    valid = batch["attention_mask"][:, -width_r:].bool()
    if not bool(valid.any()):
        # Keep the graph (and every parameter's gradient, for DDP) with one padded position.
        valid = torch.zeros_like(valid)
        valid[0, 0] = True
    where = valid.nonzero(as_tuple=True)
    with autocast:  # the head computes exactly as it would have inside the forward
        logp, entropy = token_logprobs(
            hidden[where],
            batch["response_ids"][where],
            head,
            temperature=temperature,
            suppress_ids=suppress_ids,
            chunk_size=chunk_size,
            with_entropy=with_entropy,
        )
    zeros = torch.zeros(valid.shape, dtype=torch.float32, device=hidden.device)
    full_entropy = None if entropy is None else zeros.index_put(where, entropy)
    return zeros.index_put(where, logp), full_entropy
