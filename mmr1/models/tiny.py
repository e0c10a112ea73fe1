"""Build the offline tiny Qwen2.5-VL: random weights, shipped tokenizer, real architecture.

No model hub is needed: the config comes from :class:`schemas.models.TinyVLMConfig`,
the vocabulary from ``mmr1/models/assets/tokenizer.json``. The same config gives
byte-identical files (weights included) on the same torch/transformers
versions, so the catalog's content hash identifies the build. Random init is
not stable *across* library versions: never hard-code losses of a fresh model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mmr1.models.processor import ImageOnlyQwenVLProcessor, make_image_processor
from mmr1.models.tokenizer import (
    EOS_TOKEN,
    IMAGE_TOKEN,
    PAD_TOKEN,
    VIDEO_TOKEN,
    VISION_END_TOKEN,
    VISION_START_TOKEN,
    load_tokenizer,
)
from schemas.models import TinyVLMConfig


def tiny_model_config(config: TinyVLMConfig, tokenizer) -> Qwen2_5_VLConfig:
    """The transformers config of the tiny model, with token ids from ``tokenizer``."""
    ids = {
        tok: tokenizer.convert_tokens_to_ids(tok)
        for tok in (
            EOS_TOKEN,
            PAD_TOKEN,
            IMAGE_TOKEN,
            VIDEO_TOKEN,
            VISION_START_TOKEN,
            VISION_END_TOKEN,
        )
    }
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": config.num_key_value_heads,
            "max_position_embeddings": config.max_position_embeddings,
            "max_window_layers": config.num_hidden_layers,
            "initializer_range": config.initializer_range,
            # transformers maps the legacy "mrope" type onto its default rope with sections.
            "rope_scaling": {
                "type": "mrope",
                "mrope_section": list(config.mrope_section),
                "rope_theta": config.rope_theta,
            },
            "bos_token_id": ids[PAD_TOKEN],
            "eos_token_id": ids[EOS_TOKEN],
            "pad_token_id": ids[PAD_TOKEN],
        },
        vision_config={
            "depth": config.vision_depth,
            "hidden_size": config.vision_hidden_size,
            "intermediate_size": config.vision_intermediate_size,
            "num_heads": config.vision_num_heads,
            "patch_size": config.patch_size,
            "spatial_merge_size": config.spatial_merge_size,
            "temporal_patch_size": config.temporal_patch_size,
            "window_size": config.window_size,
            "out_hidden_size": config.hidden_size,
            "fullatt_block_indexes": list(config.fullatt_block_indexes),
            "initializer_range": config.initializer_range,
        },
        image_token_id=ids[IMAGE_TOKEN],
        video_token_id=ids[VIDEO_TOKEN],
        vision_start_token_id=ids[VISION_START_TOKEN],
        vision_end_token_id=ids[VISION_END_TOKEN],
        tie_word_embeddings=config.tie_word_embeddings,
    )


def build_tiny_processor(config: TinyVLMConfig) -> ImageOnlyQwenVLProcessor:
    """Shipped (or configured) tokenizer + Qwen2-VL image processor with the config's bounds."""
    tokenizer = load_tokenizer(config.tokenizer_path)
    image_processor = make_image_processor(
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
        patch_size=config.patch_size,
        temporal_patch_size=config.temporal_patch_size,
        merge_size=config.spatial_merge_size,
    )
    return ImageOnlyQwenVLProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_tiny_model(config: TinyVLMConfig, out_dir: Path) -> Path:
    """Write a randomly initialised tiny Qwen2.5-VL (safetensors) and its processor to ``out_dir``.

    Deterministic: the weights come from ``torch.manual_seed(config.seed)``
    inside a forked RNG (the caller's global RNG state is left untouched).
    Load the result with ``mmr1.models.load_policy(out_dir)``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    processor = build_tiny_processor(config)
    tokenizer = processor.tokenizer
    model_config = tiny_model_config(config, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = Qwen2_5_VLForConditionalGeneration(model_config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        bos_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
