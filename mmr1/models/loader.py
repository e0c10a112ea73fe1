"""The one loader: a checkpoint directory or hub id -> model + processor on a device.

Every stage (generation, SFT, GRPO, evaluation) loads policies through
:func:`load_policy`, so device, dtype and processor choices live here only.

The processor class is chosen by inspecting the checkpoint's files, never by
its name (:func:`load_processor`): the tiny model's own processor, the
image-only processor for Qwen-VL checkpoints where torchvision is missing, or
``AutoProcessor``. Hub ids resolve to their snapshot in the local HF cache
(:func:`mmr1.models.hub.local_checkpoint`), so model and processor always load
from the same files.
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
from transformers.utils import is_torchvision_available

from mmr1.models.hub import has_image_processor, local_checkpoint
from mmr1.models.processor import ImageOnlyQwenVLProcessor
from mmr1.models.tokenizer import (
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    VISION_END_TOKEN,
    VISION_PAD_TOKEN,
    VISION_START_TOKEN,
)

logger = logging.getLogger(__name__)

#: Checkpoints the image-only processor can serve when torchvision is missing.
QWEN_VL_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")

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


def _read_json(directory: Path, filename: str) -> dict[str, Any]:
    file = directory / filename
    return json.loads(file.read_text()) if file.is_file() else {}


def _is_vlm_config(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def load_processor(path_or_hub_id: str | Path) -> Any:
    """The processor of a checkpoint directory or hub id.

    - Directories written by the tiny model (or a policy trained from it) name
      :class:`ImageOnlyQwenVLProcessor` in ``processor_config.json``: loaded with it.
    - A Qwen2-VL / Qwen2.5-VL checkpoint (hub layout) on a machine without
      torchvision: the same image-only processor around the checkpoint's own
      tokenizer, chat template and image settings (transformers builds the real
      processor only with torchvision, for its video processor). Video inputs
      then raise a clear error.
    - Anything else goes through ``AutoProcessor``, which raises here if it falls
      back to a bare tokenizer for a vision model.
    """
    directory = local_checkpoint(path_or_hub_id)
    processor_config = _read_json(directory, "processor_config.json")
    if processor_config.get("processor_class") == ImageOnlyQwenVLProcessor.__name__:
        return ImageOnlyQwenVLProcessor.from_pretrained(directory)
    config = AutoConfig.from_pretrained(str(directory))
    is_vlm = _is_vlm_config(config)
    if is_vlm and config.model_type in QWEN_VL_MODEL_TYPES and not is_torchvision_available():
        if not has_image_processor(directory):
            raise ValueError(
                f"{path_or_hub_id}: no image processor settings (preprocessor_config.json, or "
                "processor_config.json with image_processor) for this vision-language model"
            )
        logger.info("%s: image-only Qwen-VL processor (torchvision is not installed)", directory)
        return ImageOnlyQwenVLProcessor.from_pretrained(directory)
    processor = AutoProcessor.from_pretrained(str(directory))
    if is_vlm and not isinstance(processor, ProcessorMixin):
        raise RuntimeError(
            f"AutoProcessor.from_pretrained({str(path_or_hub_id)!r}) returned only a tokenizer "
            f"({type(processor).__name__}) for a vision-language model ({config.model_type}); "
            "its image/video processors could not be built (transformers 5.x needs torchvision "
            "for video processors)"
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
    a checkpoint in the hub layout, or a hub id such as
    ``Qwen/Qwen2.5-VL-7B-Instruct`` (its loadable files come from the local HF
    cache, downloaded first when the hub is reachable). Vision-language
    checkpoints load with ``AutoModelForImageTextToText``, text-only ones with
    ``AutoModelForCausalLM``.
    """
    directory = local_checkpoint(path_or_hub_id)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    config = AutoConfig.from_pretrained(str(directory))
    is_vlm = _is_vlm_config(config)
    model_class = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = model_class.from_pretrained(str(directory), dtype=torch_dtype)
    model.to(torch_device)
    if for_training:
        model.train()
    else:
        model.eval()
        model.requires_grad_(False)
    processor = load_processor(directory)
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
