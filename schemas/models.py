"""Architecture of the offline tiny Qwen2.5-VL (the default policy on CPU machines)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TinyVLMConfig(BaseModel):
    """A randomly initialised Qwen2.5-VL small enough to train on two CPU cores.

    The shape follows the real model (M-RoPE text decoder, windowed ViT with a
    2x2 patch merger); only the sizes shrink. The same config always builds
    byte-identical weights (see ``mmr1.models.build_tiny_model``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Text decoder.
    hidden_size: int = Field(default=128, ge=8, description="Text decoder hidden size.")
    intermediate_size: int = Field(default=512, ge=8, description="Text decoder MLP width.")
    num_hidden_layers: int = Field(default=2, ge=1, description="Text decoder layers.")
    num_attention_heads: int = Field(default=4, ge=1, description="Text query heads.")
    num_key_value_heads: int = Field(
        default=2, ge=1, description="Text key/value heads (grouped-query attention)."
    )
    mrope_section: list[int] = Field(
        default=[4, 6, 6],
        description="M-RoPE split of the rotary half-dimension into (temporal, height, width); "
        "must sum to head_dim / 2.",
    )
    rope_theta: float = Field(default=1_000_000.0, gt=0, description="Text RoPE base.")
    max_position_embeddings: int = Field(
        default=2048, ge=64, description="Longest text position the decoder is built for."
    )
    tie_word_embeddings: bool = Field(
        default=True, description="Share the input embedding and the LM head (saves parameters)."
    )

    # Vision tower.
    vision_depth: int = Field(default=2, ge=1, description="Vision transformer blocks.")
    vision_hidden_size: int = Field(default=64, ge=8, description="Vision transformer width.")
    vision_intermediate_size: int = Field(default=128, ge=8, description="Vision MLP width.")
    vision_num_heads: int = Field(default=2, ge=1, description="Vision attention heads.")
    patch_size: int = Field(default=14, ge=1, description="Pixels per ViT patch side.")
    spatial_merge_size: int = Field(
        default=2, ge=1, description="Patches merged per side into one LLM image token."
    )
    temporal_patch_size: int = Field(
        default=2, ge=1, description="Frames per patch (an image is repeated to fill it)."
    )
    window_size: int = Field(default=112, ge=1, description="Window-attention side in pixels.")
    fullatt_block_indexes: list[int] = Field(
        default=[1], description="Vision blocks that use full attention instead of windows."
    )

    # Image processor.
    min_pixels: int = Field(
        default=56 * 56,
        ge=1,
        description="Smallest resized image area; 56x56 gives a 4x4 patch grid = 4 image tokens.",
    )
    max_pixels: int = Field(
        default=112 * 112,
        ge=1,
        description="Largest resized image area (112x112 = 16 image tokens); bigger images shrink.",
    )

    # Tokenizer and init.
    tokenizer_path: str | None = Field(
        default=None,
        description="tokenizer.json to use; None: the one shipped in mmr1/models/assets.",
    )
    seed: int = Field(default=0, description="Seed of the random weight initialisation.")
    initializer_range: float = Field(
        default=0.02, gt=0, description="Std of the normal weight initialisation."
    )

    @property
    def head_dim(self) -> int:
        """Per-head width of the text decoder."""
        return self.hidden_size // self.num_attention_heads

    @model_validator(mode="after")
    def _check_shapes(self) -> TinyVLMConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not divisible by "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if len(self.mrope_section) != 3 or sum(self.mrope_section) != self.head_dim // 2:
            raise ValueError(
                f"mrope_section={self.mrope_section} must have 3 parts summing to "
                f"head_dim/2 = {self.head_dim // 2}"
            )
        if self.vision_hidden_size % self.vision_num_heads:
            raise ValueError(
                f"vision_hidden_size={self.vision_hidden_size} is not divisible by "
                f"vision_num_heads={self.vision_num_heads}"
            )
        bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.vision_depth]
        if bad:
            raise ValueError(
                f"fullatt_block_indexes {bad} out of range for vision_depth={self.vision_depth}"
            )
        if self.min_pixels > self.max_pixels:
            raise ValueError(
                f"min_pixels={self.min_pixels} is larger than max_pixels={self.max_pixels}"
            )
        return self
