"""Image-only Qwen2.5-VL processor (works without torchvision) and chat-message helpers.

transformers 5.x cannot build ``Qwen2_5_VLProcessor`` without torchvision (its
video processor needs it), and ``AutoProcessor.from_pretrained`` on a directory
saved by this class silently returns only the tokenizer: always load it with
:meth:`ImageOnlyQwenVLProcessor.from_pretrained` (``mmr1.models.load_processor``
picks the right class for any checkpoint).

The batch it returns has the keys of the real processor: ``input_ids``,
``attention_mask``, ``mm_token_type_ids`` (1 at ``<|image_pad|>``),
``pixel_values`` and ``image_grid_thw``. ``mm_token_type_ids`` is not optional
in practice: without it Qwen2.5-VL silently falls back to 1-D positions and
re-scored log-probs no longer match generation (docs/STACK.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor

from mmr1.models.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN, load_tokenizer
from mmr1.prompts import split_prompt

try:  # transformers 5.x: the PIL backend needs no torchvision
    from transformers import Qwen2VLImageProcessorPil as _ImageProcessorClass
except ImportError:  # pragma: no cover - older transformers
    from transformers import Qwen2VLImageProcessor as _ImageProcessorClass


def make_image_processor(
    *,
    min_pixels: int,
    max_pixels: int,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
) -> BaseImageProcessor:
    """Qwen2-VL's image processor (PIL backend) with the given resize bounds.

    Images are resized so both sides are multiples of ``patch_size * merge_size``
    and the area lies in ``[min_pixels, max_pixels]``.
    """
    return _ImageProcessorClass(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=patch_size,
        temporal_patch_size=temporal_patch_size,
        merge_size=merge_size,
    )


_NO_VIDEO = (
    "video inputs need the Qwen2-VL video processor, which transformers builds only with "
    "torchvision; this machine has the image-only processor (install torchvision where its "
    "wheels match your torch, e.g. on GPU machines)"
)


class ImageOnlyQwenVLProcessor(ProcessorMixin):
    """Tokenizer + Qwen2-VL image processor; images only, no video processor.

    ``processor(text=[...], images=[...])`` expands each ``<|image_pad|>`` in the
    text into ``t * h * w / merge_size**2`` copies (the image's LLM token count),
    in the order the images are given (flattened across the batch).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
        self.video_token = getattr(tokenizer, "video_token", None) or VIDEO_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        if chat_template is None:
            chat_template = getattr(tokenizer, "chat_template", None)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @property
    def merge_size(self) -> int:
        return int(self.image_processor.merge_size)

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "mm_token_type_ids",
            "pixel_values",
            "image_grid_thw",
        ]

    def __call__(
        self,
        images: Sequence[Any] | None = None,
        text: str | Sequence[str] | None = None,
        videos: Any = None,
        *,
        padding: bool | str = True,
        return_tensors: str | None = "pt",
        **tokenizer_kwargs: Any,
    ) -> BatchFeature:
        """Tokenize ``text`` with expanded image tokens and preprocess ``images``.

        ``images`` is a flat list (or a per-sample list of lists) of PIL images,
        one per ``<|image_pad|>`` in reading order across the batch.
        """
        if text is None:
            raise ValueError(f"{type(self).__name__} needs text (use the chat template)")
        if videos is not None:
            raise ValueError(_NO_VIDEO)
        texts = [text] if isinstance(text, str) else list(text)
        flat_images = _flatten_images(images)
        n_placeholders = sum(t.count(self.image_token) for t in texts)
        if n_placeholders != len(flat_images):
            raise ValueError(
                f"the text holds {n_placeholders} {self.image_token} placeholders "
                f"but {len(flat_images)} images were given"
            )
        if any(self.video_token in t for t in texts):
            raise ValueError(_NO_VIDEO)

        data: dict[str, Any] = {}
        if flat_images:
            image_inputs = self.image_processor(images=flat_images, return_tensors=return_tensors)
            data["pixel_values"] = image_inputs["pixel_values"]
            data["image_grid_thw"] = image_inputs["image_grid_thw"]
            tokens_per_image = [
                int(torch.as_tensor(thw).prod()) // self.merge_size**2
                for thw in image_inputs["image_grid_thw"]
            ]
            texts = _expand_image_tokens(texts, self.image_token, tokens_per_image)

        encoded = self.tokenizer(texts, padding=padding, **tokenizer_kwargs)
        data["input_ids"] = encoded["input_ids"]
        data["attention_mask"] = encoded["attention_mask"]
        data["mm_token_type_ids"] = [
            [1 if tok == self.image_token_id else 0 for tok in row] for row in encoded["input_ids"]
        ]
        return BatchFeature(data, tensor_type=return_tensors)

    def apply_chat_template(  # type: ignore[override]
        self,
        conversation: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        **kwargs: Any,
    ) -> str:
        """Render one conversation to text (this processor only renders; call it to tokenize)."""
        if tokenize:
            raise ValueError("render with tokenize=False, then call the processor with the images")
        return self.tokenizer.apply_chat_template(
            conversation,
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
            **kwargs,
        )

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Any:  # type: ignore[override]
        """Save like ``ProcessorMixin``, without the tokenizer's transient padding state.

        The fast tokenizer's backend remembers the padding/truncation of its last call and
        ``tokenizer.json`` would carry it: a checkpoint saved after training steps would then
        differ from one saved before (and a resumed run's checkpoints from an uninterrupted
        run's). Each call sets padding anew, so clearing it here changes no encoding.
        """
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            backend.no_padding()
            backend.no_truncation()
        return super().save_pretrained(save_directory, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any):  # type: ignore[override]
        """Load from a local checkpoint directory: ours, or a Qwen2-VL / Qwen2.5-VL one.

        A directory written by :meth:`save_pretrained` from the tiny model gets its
        tokenizer wrapper rebuilt from ``tokenizer.json`` + ``chat_template.jinja``
        (see ``mmr1.models.tokenizer``). Any other tokenizer (a hub checkpoint's
        ``Qwen2Tokenizer``, or one saved after fine-tuning it) loads with
        ``AutoTokenizer``, left-padded like ours, with the chat template from
        ``chat_template.jinja``, ``chat_template.json`` or the tokenizer config. The
        image processor reads ``preprocessor_config.json`` (hub layout) or the
        ``image_processor`` section of ``processor_config.json`` (transformers 5).
        """
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{cls.__name__} loads local directories only; {path} is not one"
            )
        image_processor = _ImageProcessorClass.from_pretrained(str(path))
        if _tokenizer_class(path) in _OWN_TOKENIZER_CLASSES:
            tokenizer = load_tokenizer(path)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path))
            tokenizer.padding_side = "left"
        chat_template = getattr(tokenizer, "chat_template", None) or _chat_template_file(path)
        if chat_template is None:
            raise ValueError(
                f"{path}: no chat template (chat_template.jinja, chat_template.json or "
                "tokenizer_config.json)"
            )
        return cls(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template
        )


#: ``tokenizer_class`` values of tokenizers built by ``mmr1.models.tokenizer`` (as saved by
#: transformers 5) or of a directory without a tokenizer config.
_OWN_TOKENIZER_CLASSES = (None, "TokenizersBackend", "PreTrainedTokenizerFast")


def _tokenizer_class(path: Path) -> str | None:
    config_file = path / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text()).get("tokenizer_class")


def _chat_template_file(path: Path) -> str | None:
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    legacy = path / "chat_template.json"
    if legacy.is_file():
        return json.loads(legacy.read_text()).get("chat_template")
    return None


def _flatten_images(images: Sequence[Any] | None) -> list[Any]:
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        return [images]
    flat: list[Any] = []
    for item in images:
        if isinstance(item, (list, tuple)):
            flat.extend(item)
        else:
            flat.append(item)
    return flat


def _expand_image_tokens(
    texts: list[str], image_token: str, tokens_per_image: list[int]
) -> list[str]:
    """Replace the k-th ``image_token`` (across the batch) by ``tokens_per_image[k]`` copies."""
    counts = iter(tokens_per_image)
    expanded = []
    for text in texts:
        parts = text.split(image_token)
        pieces = [parts[0]]
        for part in parts[1:]:
            pieces.append(image_token * next(counts))
            pieces.append(part)
        expanded.append("".join(pieces))
    return expanded


def build_messages(prompt: str, n_images: int, system: str | None = None) -> list[dict[str, Any]]:
    """Chat messages for one prompt: ``<image>`` placeholders become image items, in order.

    ``"<image>\\nHow many?"`` with one image gives a user turn with content
    ``[{"type": "image"}, {"type": "text", "text": "\\nHow many?"}]``. Text
    between placeholders is kept verbatim; empty pieces are dropped. ``system``
    adds a system turn (otherwise the template's default system prompt is used).
    Raises ``ValueError`` naming both counts if placeholders and images differ.
    Same splitting as the generation backends (``mmr1.prompts.split_prompt``).
    """
    content: list[dict[str, Any]] = [
        {"type": "text", "text": value} if kind == "text" else {"type": "image"}
        for kind, value in split_prompt(prompt, n_images)
    ]
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": content})
    return messages


def repeat_multimodal_batch(
    batch: Mapping[str, torch.Tensor],
    repeats: int,
    *,
    image_token_id: int,
    spatial_merge_size: int,
) -> dict[str, torch.Tensor]:
    """Repeat each row of a processed batch ``repeats`` times (row i -> rows i*r .. i*r+r-1).

    Per-token tensors (``input_ids``, ``attention_mask``, ``mm_token_type_ids``)
    use ``repeat_interleave`` on dim 0. ``pixel_values`` is one block of
    ``t*h*w`` patch rows per image, so it is split by ``image_grid_thw.prod(-1)``,
    the blocks are grouped by the row that owns them (by counting that row's
    image tokens) and each group is repeated; ``image_grid_thw`` follows.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in batch.items():
        if key in ("pixel_values", "image_grid_thw"):
            continue
        if isinstance(value, torch.Tensor):
            out[key] = value.repeat_interleave(repeats, dim=0)
    grid = batch.get("image_grid_thw")
    if grid is None or len(grid) == 0:
        return out
    pixel_blocks = list(torch.split(batch["pixel_values"], grid.prod(-1).tolist(), dim=0))
    tokens_per_image = (grid.prod(-1) // spatial_merge_size**2).tolist()
    tokens_per_row = (batch["input_ids"] == image_token_id).sum(-1).tolist()
    pixels: list[torch.Tensor] = []
    grids: list[torch.Tensor] = []
    k = 0
    for row, row_tokens in enumerate(tokens_per_row):
        first = k
        while row_tokens > 0:
            if k >= len(tokens_per_image):
                raise ValueError(f"row {row} has more image tokens than image_grid_thw describes")
            row_tokens -= tokens_per_image[k]
            k += 1
        if row_tokens != 0:
            raise ValueError(f"row {row}: image token count does not match image_grid_thw")
        for _ in range(repeats):
            pixels.extend(pixel_blocks[first:k])
            grids.append(grid[first:k])
    if k != len(tokens_per_image):
        raise ValueError(f"{len(tokens_per_image) - k} images are not referenced by any row")
    out["pixel_values"] = torch.cat(pixels, dim=0)
    out["image_grid_thw"] = torch.cat(grids, dim=0)
    return out
