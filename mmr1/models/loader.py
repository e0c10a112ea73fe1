"""The one loader: a checkpoint directory or hub id -> model + processor on a device.

Every stage (generation, SFT, GRPO, evaluation) loads policies through
:func:`load_policy`, so device, dtype and processor choices live here only.

The processor class is chosen by inspecting the checkpoint's files, never by
its name: a directory written by ``build_tiny_model`` (or saved from a policy
trained from it) names :class:`ImageOnlyQwenVLProcessor` in
``processor_config.json``; anything else (``Qwen/Qwen2.5-VL-7B-Instruct``, ...)
goes through ``AutoProcessor``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedModel,
    ProcessorMixin,
)

from mmr1.models.processor import ImageOnlyQwenVLProcessor
from mmr1.models.tokenizer import (
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    VISION_END_TOKEN,
    VISION_PAD_TOKEN,
    VISION_START_TOKEN,
)

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Policy:
    """A loaded policy: the model (on ``device``), its processor and whether it sees images."""

    model: PreTrainedModel
    processor: Any
    device: torch.device
    is_vlm: bool

    @property
    def tokenizer(self) -> Any:
        """The text tokenizer (the processor itself for text-only models)."""
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the first CUDA device if there is one, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on a CUDA device that supports it, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected 'auto' or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _read_json(path_or_hub_id: str, filename: str) -> dict[str, Any] | None:
    """A JSON file of a local checkpoint or a (cached / reachable) hub repo; None if absent."""
    local = Path(path_or_hub_id)
    if local.is_dir():
        file = local / filename
        return json.loads(file.read_text()) if file.is_file() else None
    try:
        from transformers.utils import cached_file

        resolved = cached_file(
            path_or_hub_id,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except (OSError, ValueError):
        return None
    return json.loads(Path(resolved).read_text()) if resolved else None


def _is_vlm_config(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def load_processor(path_or_hub_id: str | Path) -> Any:
    """The processor of a checkpoint: ours for tiny-model directories, else ``AutoProcessor``.

    Raises if ``AutoProcessor`` falls back to a bare tokenizer for a vision
    model (it does so silently, e.g. when torchvision is missing).
    """
    path_or_hub_id = str(path_or_hub_id)
    processor_config = _read_json(path_or_hub_id, "processor_config.json") or {}
    if processor_config.get("processor_class") == ImageOnlyQwenVLProcessor.__name__:
        return ImageOnlyQwenVLProcessor.from_pretrained(path_or_hub_id)
    processor = AutoProcessor.from_pretrained(path_or_hub_id)
    if not isinstance(processor, ProcessorMixin):
        config = AutoConfig.from_pretrained(path_or_hub_id)
        if _is_vlm_config(config):
            raise RuntimeError(
                f"AutoProcessor.from_pretrained({path_or_hub_id!r}) returned only a tokenizer "
                f"({type(processor).__name__}) for a vision-language model; its image/video "
                "processors could not be built (transformers 5.x needs torchvision for the "
                "Qwen2.5-VL video processor)"
            )
    return processor


def load_policy(
    path_or_hub_id: str | Path,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    for_training: bool = False,
) -> Policy:
    """Load a policy for generation (``for_training=False``: eval mode, no grads) or training.

    ``path_or_hub_id``: a directory from ``build_tiny_model`` / a saved policy,
    or a hub id such as ``Qwen/Qwen2.5-VL-7B-Instruct``. Vision-language
    checkpoints load with ``AutoModelForImageTextToText``, text-only ones with
    ``AutoModelForCausalLM``.
    """
    path_or_hub_id = str(path_or_hub_id)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    config = AutoConfig.from_pretrained(path_or_hub_id)
    is_vlm = _is_vlm_config(config)
    model_class = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = model_class.from_pretrained(path_or_hub_id, dtype=torch_dtype)
    model.to(torch_device)
    if for_training:
        model.train()
    else:
        model.eval()
        model.requires_grad_(False)
    processor = load_processor(path_or_hub_id)
    logger.info(
        "loaded %s (%s) on %s as %s",
        path_or_hub_id,
        type(model).__name__,
        torch_device,
        torch_dtype,
    )
    return Policy(model=model, processor=processor, device=torch_device, is_vlm=is_vlm)


def vision_special_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the vision control tokens a policy must never generate.

    A weak policy sampling at temperature 1 can emit ``<|image_pad|>``; the
    re-scoring forward pass then fails ("Image features and image tokens do not
    match"). Generation suppresses these ids and re-scoring masks them the same
    way. Accepts a tokenizer or a processor; tokens missing from the vocabulary
    are skipped.
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    vocab = tokenizer.get_vocab()
    tokens = (IMAGE_TOKEN, VIDEO_TOKEN, VISION_START_TOKEN, VISION_END_TOKEN, VISION_PAD_TOKEN)
    return [vocab[tok] for tok in tokens if tok in vocab]
