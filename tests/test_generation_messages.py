"""Placeholder splitting, image data URLs and the two message renderings."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from mmr1.generation.messages import image_to_data_url, to_openai_messages, to_template_messages
from mmr1.prompts import split_prompt
from schemas.generation import GenerationRequest


def _decode(url: str) -> Image.Image:
    header, payload = url.split(",", 1)
    assert header == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_split_prompt_keeps_order_and_whitespace() -> None:
    assert split_prompt("<image>\nWhat is in <image>?", 2) == [
        ("image", 0),
        ("text", "\nWhat is in "),
        ("image", 1),
        ("text", "?"),
    ]
    assert split_prompt("no images", 0) == [("text", "no images")]
    assert split_prompt("<image><image>", 2) == [("image", 0), ("image", 1)]


@pytest.mark.parametrize(
    ("prompt", "n_images", "n_placeholders"), [("a <image> b", 2, 1), ("plain", 1, 0)]
)
def test_split_prompt_mismatch_names_both_counts(
    prompt: str, n_images: int, n_placeholders: int
) -> None:
    with pytest.raises(
        ValueError, match=rf"{n_placeholders} <image> placeholder\(s\) but {n_images} image\(s\)"
    ):
        split_prompt(prompt, n_images)


def test_image_to_data_url_round_trip_converts_to_rgb() -> None:
    rgba = Image.new("RGBA", (7, 5), (10, 20, 30, 128))
    decoded = _decode(image_to_data_url(rgba))
    assert decoded.format == "PNG"
    assert decoded.mode == "RGB"
    assert decoded.size == (7, 5)
    assert decoded.getpixel((3, 2)) == (10, 20, 30)

    grey = Image.new("L", (4, 4), 200)
    assert _decode(image_to_data_url(grey)).getpixel((0, 0)) == (200, 200, 200)

    assert image_to_data_url(rgba, format="jpeg").startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError, match="unsupported image format"):
        image_to_data_url(rgba, format="tiff")
    with pytest.raises(TypeError, match="PIL image"):
        image_to_data_url(b"not an image")  # type: ignore[arg-type]


def test_to_openai_messages_layout() -> None:
    red, blue = Image.new("RGB", (8, 6), "red"), Image.new("RGB", (3, 9), "blue")
    request = GenerationRequest(
        prompt="Compare <image> with <image>.", images=[red, blue], system="Be brief."
    )
    system, user = to_openai_messages(request)
    assert system == {"role": "system", "content": "Be brief."}
    assert user["role"] == "user"
    kinds = [part["type"] for part in user["content"]]
    assert kinds == ["text", "image_url", "text", "image_url", "text"]
    assert user["content"][0]["text"] == "Compare "
    assert _decode(user["content"][1]["image_url"]["url"]).size == (8, 6)
    assert _decode(user["content"][3]["image_url"]["url"]).size == (3, 9)

    no_system = to_openai_messages(GenerationRequest(prompt="hi"))
    assert no_system == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_to_template_messages_uses_bare_image_items() -> None:
    request = GenerationRequest(
        prompt="<image>\nHow many?", images=[Image.new("RGB", (2, 2))], system="S"
    )
    assert to_template_messages(request) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nHow many?"}]},
    ]


def test_mismatch_error_names_the_request() -> None:
    request = GenerationRequest(
        prompt="<image> <image>", images=[Image.new("RGB", (2, 2))], request_id="q-17"
    )
    with pytest.raises(
        ValueError, match=r"request 'q-17': prompt has 2 <image> placeholder\(s\) but 1"
    ):
        to_openai_messages(request)
