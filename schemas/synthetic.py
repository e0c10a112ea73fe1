"""Configuration of the synthetic multimodal task generator (``mmr1.data.synthetic``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from schemas.base import ConfigModel
from schemas.registry import SYNTHETIC_FAMILIES

#: Smallest and largest option count: the colour palette has six entries, so
#: a colour question cannot offer more distinct options than that.
MIN_CHOICES = 2
MAX_CHOICES = 6

#: Qwen2.5-VL merges 2x2 patches of 14 px: one image token per 28x28 pixels.
IMAGE_TOKEN_PIXELS = 28


class SyntheticTasks(ConfigModel):
    """The task distribution: which families, at which difficulties, in which form.

    What a pool and a benchmark must share to measure the same skills (the
    demo's benchmark takes its distribution from one of these).
    """

    families: list[str] = Field(
        default_factory=SYNTHETIC_FAMILIES.names,
        description=(
            "Task families to draw from, assigned round-robin by item index (default: every "
            "family registered in mmr1/data/families.py: shape_color, count_shapes, bar_chart, "
            "compare_length, digit_arithmetic, tallest_bar). shape_color and tallest_bar are "
            "what a tiny VLM learns in minutes (the demo's families); count_shapes stays at "
            "chance."
        ),
    )
    difficulties: list[int] = Field(
        default_factory=lambda: [1, 2, 3],
        description=(
            "Difficulty levels (1 easy .. 3 hard) sampled uniformly per item; they change "
            "distractor counts, bar counts, digit counts and length gaps."
        ),
    )
    multiple_choice_ratio: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Probability that an item is multiple choice (answer = option letter).",
    )
    image_size: int = Field(
        default=56,
        description=(
            "Square image side in pixels, a multiple of 28 and at least 56; "
            "56 px gives 4 image tokens in Qwen2.5-VL."
        ),
    )
    n_choices: int = Field(
        default=4,
        description=(
            f"Options per multiple-choice item ({MIN_CHOICES}..{MAX_CHOICES}); families with "
            "fewer possible answers (e.g. two segments) offer all of them."
        ),
    )

    @field_validator("families")
    @classmethod
    def _check_families(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("families must name at least one family")
        for name in value:
            SYNTHETIC_FAMILIES.check(name)
        if len(set(value)) != len(value):
            raise ValueError(f"families must not repeat a name, got {value}")
        return value

    @field_validator("difficulties")
    @classmethod
    def _check_difficulties(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("difficulties must list at least one level (1, 2 or 3)")
        bad = [level for level in value if level not in (1, 2, 3)]
        if bad:
            raise ValueError(f"difficulty levels must be 1, 2 or 3, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"difficulties must not repeat a level, got {value}")
        return value

    @field_validator("image_size")
    @classmethod
    def _check_image_size(cls, value: int) -> int:
        if value < 2 * IMAGE_TOKEN_PIXELS or value % IMAGE_TOKEN_PIXELS:
            raise ValueError(
                f"image_size must be a multiple of {IMAGE_TOKEN_PIXELS} and at least "
                f"{2 * IMAGE_TOKEN_PIXELS} pixels, got {value}"
            )
        return value

    @field_validator("n_choices")
    @classmethod
    def _check_n_choices(cls, value: int) -> int:
        if not MIN_CHOICES <= value <= MAX_CHOICES:
            raise ValueError(f"n_choices must lie in [{MIN_CHOICES}, {MAX_CHOICES}], got {value}")
        return value

    def image_tokens(self) -> int:
        """Image tokens one item costs in Qwen2.5-VL: (size / 28) squared."""
        return (self.image_size // IMAGE_TOKEN_PIXELS) ** 2


class SyntheticConfig(SyntheticTasks):
    """What to generate: how many items of which task distribution, from which seed.

    Item ``i`` depends only on ``seed``, ``i`` and the distribution fields
    (families, difficulties, ratio, image size, options), never on ``n_items``,
    so a larger pool extends a smaller one.
    """

    n_items: int = Field(ge=1, description="Number of items to generate.")
    seed: int = Field(
        default=0,
        ge=0,
        description="Seed of the item stream; item i is drawn from an RNG derived from (seed, i).",
    )
