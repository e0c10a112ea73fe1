"""Tiny offline Qwen2.5-VL: tokenizer, chat template, processor, builder and loader."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmr1.hashing import hash_directory
from mmr1.models import build_tiny_model, load_policy, load_processor, load_tokenizer
from mmr1.models.loader import resolve_dtype, vision_special_token_ids
from mmr1.models.processor import (
    ImageOnlyQwenVLProcessor,
    build_messages,
    repeat_multimodal_batch,
)
from mmr1.models.tokenizer import FORMAT_TOKENS, SPECIAL_TOKENS, train_tokenizer
from schemas.models import TinyVLMConfig

ONE_IMAGE_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>\nWhat colour is it?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def noise_image(size: tuple[int, int] = (56, 56), seed: int = 0) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), mode="RGB")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def processor(tiny_dir: Path) -> ImageOnlyQwenVLProcessor:
    return load_processor(tiny_dir)


# -- tokenizer -------------------------------------------------------------------------


def test_control_and_format_tokens_are_single_tokens(tokenizer) -> None:
    for token in SPECIAL_TOKENS + FORMAT_TOKENS:
        ids = tokenizer(f"a{token}b", add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_tokens_to_ids(token) in ids, token
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.padding_side == "left"
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]


def test_format_tags_survive_skip_special_tokens(tokenizer) -> None:
    text = "<think>2+2=4</think><answer>\\boxed{4}</answer>"
    ids = tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize(
    "text",
    [
        "Héllo wörld, naïve café",
        "e\u0301 (decomposed) vs \u00e9 (composed)",
        "日本語のテキスト and 中文 and 한국어",
        "emoji 😀👍🏽 family 👨‍👩‍👧",
        "tabs\tand\r\nnewlines\n\n  trailing spaces   ",
        "maths: ∑_{i=1}^{n} i² = n(n+1)/2, \\frac{a}{b}, x ≤ y ≠ z",
        "\x00\x07 control bytes \u200b zero-width \ufeff bom",
    ],
)
def test_round_trip_arbitrary_unicode(tokenizer, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_train_tokenizer_is_deterministic_and_keeps_specials() -> None:
    corpus = ["the cat sat on the mat", "2 + 2 = 4", "a circle and a square"] * 20
    first, second = train_tokenizer(corpus, vocab_size=300), train_tokenizer(corpus, vocab_size=300)
    assert first.to_str() == second.to_str()
    assert [first.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert all(first.token_to_id(t) is not None for t in FORMAT_TOKENS)


# -- chat template and messages -----------------------------------------------------------


def test_chat_template_one_image_exact(tokenizer) -> None:
    messages = build_messages("<image>\nWhat colour is it?", n_images=1)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == ONE_IMAGE_PROMPT


def test_chat_template_system_string_content_and_assistant_turn(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>t</think><answer>x</answer>"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n<think>t</think><answer>x</answer><|im_end|>\n"
    )


def test_build_messages_orders_images_and_text() -> None:
    messages = build_messages("A <image> then <image>.", n_images=2, system="S")
    assert messages[0] == {"role": "system", "content": "S"}
    assert messages[1]["content"] == [
        {"type": "text", "text": "A "},
        {"type": "image"},
        {"type": "text", "text": " then "},
        {"type": "image"},
        {"type": "text", "text": "."},
    ]
    with pytest.raises(ValueError, match=r"2 <image> placeholder\(s\) but 1 image\(s\)"):
        build_messages("<image><image>", n_images=1)


# -- processor ---------------------------------------------------------------------------


def test_56px_image_gives_four_image_tokens(processor) -> None:
    batch = processor(text=[ONE_IMAGE_PROMPT], images=[noise_image()], return_tensors="pt")
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "pixel_values",
        "image_grid_thw",
    }
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert batch["pixel_values"].shape == (16, 3 * 2 * 14 * 14)
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    is_image = batch["input_ids"] == image_id
    assert int(is_image.sum()) == 4
    assert torch.equal(batch["mm_token_type_ids"].bool(), is_image)


def test_processor_resizes_within_bounds_and_pads_left(processor) -> None:
    texts = [ONE_IMAGE_PROMPT, "<|im_start|>user\nno image<|im_end|>\n"]
    batch = processor(text=texts, images=[noise_image((300, 150))], return_tensors="pt")
    t, h, w = batch["image_grid_thw"][0].tolist()
    assert t == 1 and h * w * 14 * 14 <= TinyVLMConfig().max_pixels
    assert int(batch["mm_token_type_ids"][0].sum()) == h * w // 4
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][1, -1] == 1
    with pytest.raises(ValueError, match="1 <\\|image_pad\\|> placeholders but 2 images"):
        processor(text=[ONE_IMAGE_PROMPT], images=[noise_image(), noise_image()])


def test_processor_save_and_load_round_trip(processor, tmp_path: Path) -> None:
    processor.save_pretrained(tmp_path)
    loaded = ImageOnlyQwenVLProcessor.from_pretrained(tmp_path)
    image = noise_image((84, 56))
    a = processor(text=[ONE_IMAGE_PROMPT], images=[image])
    b = loaded(text=[ONE_IMAGE_PROMPT], images=[image])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.chat_template == processor.chat_template


def test_repeat_multimodal_batch_keeps_images_with_their_rows(processor) -> None:
    texts = [
        "<|image_pad|><|image_pad|>two",
        "none",
        "<|vision_start|><|image_pad|><|vision_end|>one",
    ]
    images = [noise_image((56, 56), 1), noise_image((112, 56), 2), noise_image((56, 84), 3)]
    batch = processor(text=texts, images=images, return_tensors="pt")
    out = repeat_multimodal_batch(
        batch, 2, image_token_id=processor.image_token_id, spatial_merge_size=2
    )
    assert torch.equal(out["input_ids"], batch["input_ids"].repeat_interleave(2, 0))
    blocks = torch.split(batch["pixel_values"], batch["image_grid_thw"].prod(-1).tolist())
    expected = torch.cat([blocks[0], blocks[1], blocks[0], blocks[1], blocks[2], blocks[2]])
    assert torch.equal(out["pixel_values"], expected)
    grid = batch["image_grid_thw"]
    assert out["image_grid_thw"].tolist() == grid[[0, 1, 0, 1, 2, 2]].tolist()


# -- model -------------------------------------------------------------------------------


def test_build_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(TinyVLMConfig(), tmp_path / "again")
    other = build_tiny_model(TinyVLMConfig(seed=1), tmp_path / "other")
    assert hash_directory(again) == hash_directory(tiny_dir)
    assert hash_directory(other) != hash_directory(tiny_dir)
    assert (tiny_dir / "model.safetensors").is_file()
    generation = json.loads((tiny_dir / "generation_config.json").read_text())
    tokenizer = load_tokenizer()
    assert generation["eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert generation["pad_token_id"] == tokenizer.convert_tokens_to_ids("<|endoftext|>")


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="mrope_section"):
        TinyVLMConfig(mrope_section=[4, 4, 4])
    with pytest.raises(ValueError, match="fullatt_block_indexes"):
        TinyVLMConfig(fullatt_block_indexes=[5])


def test_forward_backward_reaches_every_parameter(tiny_dir: Path) -> None:
    policy = load_policy(tiny_dir, for_training=True)
    model, processor = policy.model, policy.processor
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.6e6 < n_params < 1.2e6
    messages = build_messages("<image>\nWhat colour?", 1) + [
        {"role": "assistant", "content": "<think>red</think><answer>\\boxed{A}</answer>"}
    ]
    text = processor.apply_chat_template(messages)
    batch = processor(text=[text], images=[noise_image()], return_tensors="pt")
    loss = model(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert no_grad == []
    assert any(name.startswith("model.visual.") for name, _ in model.named_parameters())


def test_rescoring_matches_generation_only_with_mm_token_type_ids(tiny_dir: Path) -> None:
    """docs/STACK.md trap: re-scoring without ``mm_token_type_ids`` silently moves positions."""
    from mmr1.generation.hf import HFBackend
    from schemas.generation import GenerationRequest, HFBackendConfig, SamplingParams

    backend = HFBackend(HFBackendConfig(model=str(tiny_dir)))
    model, processor = backend.policy.model, backend.policy.processor
    image, prompt, temperature = noise_image(seed=7), "<image>\nWhat colour?", 0.7
    sampling = SamplingParams(n=1, temperature=temperature, top_p=0.9, max_new_tokens=24, seed=3)
    sample = backend.generate([GenerationRequest(prompt=prompt, images=[image])], sampling)[0]
    sample = sample.samples[0]

    text = processor.apply_chat_template(build_messages(prompt, 1), add_generation_prompt=True)
    batch = processor(text=[text], images=[image], return_tensors="pt")
    prompt_len = batch["input_ids"].shape[1]
    completion = torch.tensor([sample.token_ids])
    input_ids = torch.cat([batch["input_ids"], completion], dim=1)
    mm_token_type_ids = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(completion)], 1)
    suppressed = vision_special_token_ids(processor)

    def rescore(**extra: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = model(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                pixel_values=batch["pixel_values"],
                image_grid_thw=batch["image_grid_thw"],
                **extra,
            ).logits[0, prompt_len - 1 : -1]
        logits[:, suppressed] = float("-inf")
        logprobs = torch.log_softmax(logits / temperature, dim=-1)
        return logprobs.gather(-1, completion[0, :, None]).squeeze(-1)

    generated = torch.tensor(sample.logprobs)
    assert (rescore(mm_token_type_ids=mm_token_type_ids) - generated).abs().max() < 1e-4
    assert (rescore() - generated).abs().max() > 1e-4
    backend.close()


# -- loader ------------------------------------------------------------------------------


def test_loader_picks_our_processor_from_the_files(tiny_dir: Path) -> None:
    policy = load_policy(tiny_dir)
    assert isinstance(policy.processor, ImageOnlyQwenVLProcessor)
    assert type(policy.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert policy.is_vlm and policy.device == torch.device("cpu")
    assert policy.dtype == torch.float32
    assert not policy.model.training
    assert not any(p.requires_grad for p in policy.model.parameters())
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    ids = vision_special_token_ids(policy.tokenizer)
    assert len(ids) == 5 and policy.model.config.image_token_id in ids


def test_loader_uses_auto_processor_for_other_checkpoints(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_dir, other)
    (other / "processor_config.json").unlink()
    # Without torchvision a Qwen-VL checkpoint gets the image-only processor, which needs the
    # image settings this copy lost: a clear error, not AutoProcessor's bare tokenizer.
    with pytest.raises(ValueError, match="no image processor settings"):
        load_processor(other)

    # Where torchvision is installed, AutoProcessor decides; a bare tokenizer is refused.
    monkeypatch.setattr("mmr1.models.loader.is_torchvision_available", lambda: True)
    with pytest.raises(RuntimeError, match="returned only a tokenizer"):
        load_processor(other)

    calls: list[str] = []

    class FakeAutoProcessor:
        @staticmethod
        def from_pretrained(path: str) -> ImageOnlyQwenVLProcessor:
            calls.append(path)
            return ImageOnlyQwenVLProcessor.from_pretrained(tiny_dir)

    monkeypatch.setattr("mmr1.models.loader.AutoProcessor", FakeAutoProcessor)
    policy = load_policy(other)
    assert calls == [str(other)] and policy.is_vlm
