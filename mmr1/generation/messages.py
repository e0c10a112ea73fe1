"""Turn a :class:`GenerationRequest` into chat messages, shared by every backend.

A request holds user text with ``<image>`` placeholders and its images in
placeholder order (the MMR1 data format). Backends need two renderings of it:

- the OpenAI chat-completions wire format, with each image inlined as a
  base64 ``data:`` URL (:func:`to_openai_messages`);
- the transformers chat-template format, with bare ``{"type": "image"}`` items
  that Qwen2.5-VL's template renders as
  ``<|vision_start|><|image_pad|><|vision_end|>`` (:func:`to_template_messages`),
  used by the in-process backends, which pass the pixels separately.

Both keep text and images interleaved exactly as the placeholders say, so the
same request means the same thing to every backend.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from mmr1.prompts import Segment, split_prompt
from schemas.generation import GenerationRequest

_MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def image_to_data_url(img: Image.Image, format: str = "PNG") -> str:
    """Encode a PIL image as a ``data:image/...;base64,`` URL.

    The image is converted to RGB first (palette, alpha and greyscale images
    are what chat endpoints most often reject or mis-read), so the encoded
    pixels are exactly what an RGB model input would see.
    """
    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(img).__name__}")
    fmt = format.upper()
    if fmt == "JPG":
        fmt = "JPEG"
    if fmt not in _MIME_TYPES:
        raise ValueError(f"unsupported image format {format!r}; use one of {sorted(_MIME_TYPES)}")
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    buffer = io.BytesIO()
    rgb.save(buffer, format=fmt)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:{_MIME_TYPES[fmt]};base64,{encoded}"


def _request_segments(request: GenerationRequest) -> list[Segment]:
    try:
        return split_prompt(request.prompt, len(request.images))
    except ValueError as exc:
        name = f"request {request.request_id!r}" if request.request_id else "request"
        raise ValueError(f"{name}: {exc}") from None


def to_openai_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    """Chat-completions ``messages`` for one request.

    A system message first when ``request.system`` is set, then one user
    message whose content is a list of ``{"type": "text", "text": ...}`` and
    ``{"type": "image_url", "image_url": {"url": <PNG data URL>}}`` parts in
    placeholder order.
    """
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": request.system})
    content: list[dict[str, Any]] = []
    for kind, value in _request_segments(request):
        if kind == "text":
            content.append({"type": "text", "text": value})
        else:
            url = image_to_data_url(request.images[value])
            content.append({"type": "image_url", "image_url": {"url": url}})
    messages.append({"role": "user", "content": content})
    return messages


def to_template_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    """Messages for a tokenizer/processor ``apply_chat_template`` call.

    Same layout as :func:`to_openai_messages`, but images are bare
    ``{"type": "image"}`` items: the template emits the vision markers and the
    caller passes ``request.images`` (same order) to the model separately.
    """
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        # A plain string: every chat template renders a string system turn.
        messages.append({"role": "system", "content": request.system})
    content: list[dict[str, Any]] = []
    for kind, value in _request_segments(request):
        if kind == "text":
            content.append({"type": "text", "text": value})
        else:
            content.append({"type": "image"})
    messages.append({"role": "user", "content": content})
    return messages
