"""Configs of the curation flows (``curate_rl``, ``curate_sft``) and their steps.

Defaults follow docs/METHOD.md sections 1-2 (pixel bounds, pass-rate buckets);
every value is a field so presets and the Prefect UI can change it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from schemas.base import ConfigModel
from schemas.generation import BackendConfig, SamplingParams
from schemas.synthetic import SyntheticConfig

RECORD_FIELDS = ("id", "problem", "answer", "images", "choices", "type", "source")


class _Source(ConfigModel):
    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Short label of this source; quarantined rows and row ids carry it.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Record field -> source column, for sources whose columns differ "
        "(e.g. {'problem': 'question', 'images': 'decoded_image'}). Fields: "
        + ", ".join(RECORD_FIELDS),
    )
    limit: int | None = Field(default=None, ge=1, description="Read at most this many rows.")

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(RECORD_FIELDS))
        if unknown:
            raise ValueError(
                f"column mapping names unknown record fields {unknown}; known: {RECORD_FIELDS}"
            )
        return value


class HubSource(_Source):
    """A Hugging Face dataset (``datasets.load_dataset``), e.g. ``MMR1/MMR1-RL``."""

    kind: Literal["hub"] = "hub"
    dataset_id: str = Field(description="Hub id, e.g. MMR1/MMR1-RL.")
    split: str = "train"
    subset: str | None = Field(default=None, description="Config name, if the dataset has several.")
    revision: str | None = None


class LocalSource(_Source):
    """A local parquet / jsonl / arrow file, a directory of them, or a ``save_to_disk`` dir."""

    kind: Literal["local"] = "local"
    path: str = Field(description="File or directory.")
    format: Literal["auto", "parquet", "jsonl", "arrow", "disk"] = Field(
        default="auto", description="auto: from the suffix ('disk' for save_to_disk directories)."
    )
    image_root: str | None = Field(
        default=None,
        description="Directory that relative image paths are resolved against "
        "(default: the source file's directory).",
    )


class SyntheticSource(_Source):
    """The built-in synthetic generator (``mmr1.data.synthetic``)."""

    kind: Literal["synthetic"] = "synthetic"
    synthetic: SyntheticConfig = Field(default_factory=lambda: SyntheticConfig(n_items=256))


SourceConfig = Annotated[HubSource | LocalSource | SyntheticSource, Field(discriminator="kind")]


class ValidationConfig(ConfigModel):
    """Row checks and normalisation (images resized into the pixel bounds, RGB)."""

    min_pixels: int = Field(default=7_056, ge=1, description="docs/METHOD.md: 84 x 84.")
    max_pixels: int = Field(default=1_048_576, ge=1, description="docs/METHOD.md: 1024 x 1024.")
    max_decoded_pixels: int = Field(
        default=64_000_000,
        ge=1,
        description="Refuse to decode images larger than this (decompression-bomb guard).",
    )
    max_image_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    max_images_per_row: int = Field(default=16, ge=1)
    max_problem_chars: int = Field(default=20_000, ge=1)
    max_answer_chars: int = Field(default=1_000, ge=1, description="RL answers must be short.")
    workers: int = Field(default=2, ge=1, description="Threads decoding images.")

    @model_validator(mode="after")
    def _bounds(self) -> ValidationConfig:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        return self


class DedupConfig(ConfigModel):
    """Exact and near-duplicate removal; duplicates are quarantined pointing at the kept row.

    Every rule (exact and near) requires the same normalised answer (stripped,
    lower-cased): near texts or images with different answers are kept.
    """

    exact: bool = True
    near_text: bool = Field(default=True, description="MinHash/LSH over word shingles.")
    shingle_words: int = Field(default=3, ge=1, description="Words per shingle.")
    num_perm: int = Field(default=64, ge=8, description="MinHash permutations.")
    bands: int = Field(default=16, ge=1, description="LSH bands (num_perm must divide evenly).")
    text_threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Estimated Jaccard (of word shingles) at or above which texts match. "
        "0.8: on the 100k-row curation bench, one-word edits of ~60-word questions are "
        "found 95% of the time (84% at 0.85) with no rows removed that were not duplicates; "
        "near rows must also share the normalised answer.",
    )
    near_image: bool = Field(default=True, description="Perceptual hash over images.")
    image_hamming: int = Field(
        default=4, ge=0, le=64, description="Max Hamming distance of 64-bit image hashes."
    )
    seed: int = 0

    @model_validator(mode="after")
    def _bands_divide(self) -> DedupConfig:
        if self.num_perm % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide num_perm ({self.num_perm})")
        return self


class DecontaminationConfig(ConfigModel):
    """Drop rows that overlap an evaluation benchmark registered in the catalog.

    Rules (``mmr1.data.decontam``): text evidence specific to one benchmark item
    is contamination on its own: the same question when it has at least
    ``ngram`` words and at most ``max_template_count`` benchmark items ask it,
    or at least ``min_overlap`` shared rare ``ngram``-grams (in at most
    ``max_template_count`` benchmark questions). Templated or short questions,
    and shared template n-grams, count only with image evidence against the
    same benchmark row (an identical image, or perceptual hashes within
    ``image_hamming`` bits; for an equal question also no images on either
    side). An identical image (SHA-256) is contamination on its own.
    """

    enabled: bool = True
    benchmarks: list[str] | None = Field(
        default=None,
        description="Catalog refs of benchmark datasets; None: every dataset of kind 'benchmark'.",
    )
    ngram: int = Field(
        default=8,
        ge=3,
        description="Word n-gram length for text overlap. A question equal to a benchmark "
        "question is contaminated whatever the images if it has at least this many words and "
        "at most max_template_count benchmark items ask it; a shorter (or templated) equal "
        "question only with image evidence against a benchmark row asking it: an identical "
        "image, phashes within image_hamming bits, or no images on either side.",
    )
    min_overlap: int = Field(
        default=1,
        ge=1,
        description="Distinct ngram-grams shared with one benchmark question needed for an "
        "overlap: that many rare ones (in at most max_template_count benchmark questions) are "
        "contamination on their own; that many in all, fewer of them rare, only with an "
        "identical image or phashes within image_hamming bits against the same benchmark row.",
    )
    max_template_count: int = Field(
        default=1,
        ge=1,
        description="Benchmark items (rows; identical question + image digests count once) a "
        "question or n-gram may occur in and still count as evidence on its own. Text in more "
        "items is template text ('as shown in the figure find x'): the same template about a "
        "different picture is not a leak, so it counts only with image evidence.",
    )
    image_hamming: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Max Hamming distance of 64-bit perceptual hashes (0: identical hashes) "
        "for an image to count as the same as a benchmark image. A phash match alone is not "
        "contamination (grayscale hashes: colour-only variants of one layout match); it "
        "counts only with a text match with the same benchmark row. An identical image "
        "(sha256 equal) is contamination whatever the question. Above about 8 bits the "
        "phash joins get expensive on heavily templated text.",
    )


class DifficultyConfig(ConfigModel):
    """Pass rate from K rollouts of a model, then easy/medium/hard buckets (docs/METHOD.md 2)."""

    enabled: bool = True
    model: str | None = Field(
        default=None,
        description="Catalog checkpoint ref or path for an `hf` backend; ignored if backend set.",
    )
    backend: BackendConfig | None = Field(
        default=None, description="Explicit generation backend (vllm/openai/hf)."
    )
    rollouts: int = Field(default=8, ge=1, description="K rollouts per prompt.")
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=1.0, max_new_tokens=512)
    )
    easy_at: float = Field(default=0.8, ge=0, le=1, description="pass rate >= this: easy.")
    hard_at: float = Field(default=0.2, ge=0, le=1, description="pass rate <= this: hard.")
    keep: list[Literal["easy", "medium", "hard"]] = Field(
        default_factory=lambda: ["medium", "hard"]
    )
    balance_by_type: bool = Field(default=True, description="Uniform across `type` labels.")
    target_size: int | None = Field(
        default=None, ge=1, description="Rows to keep after balancing (None: all)."
    )
    shard_size: int = Field(default=64, ge=1, description="Prompts per resumable shard.")

    @model_validator(mode="after")
    def _order(self) -> DifficultyConfig:
        if self.hard_at >= self.easy_at:
            raise ValueError(f"hard_at ({self.hard_at}) must be below easy_at ({self.easy_at})")
        return self


class SyntheticTeacher(ConfigModel):
    """The programmatic solver of synthetic items (the demo's teacher)."""

    kind: Literal["synthetic"] = "synthetic"


class ModelTeacher(ConfigModel):
    """A model writing long CoTs through a generation backend (openai, vllm, hf)."""

    kind: Literal["model"] = "model"
    backend: BackendConfig
    system: str | None = Field(default=None, description="Optional system message.")


TeacherConfig = Annotated[SyntheticTeacher | ModelTeacher, Field(discriminator="kind")]


class CoTConfig(ConfigModel):
    """Long-CoT generation with rejection sampling (docs/METHOD.md 2-3)."""

    teacher: TeacherConfig = Field(default_factory=SyntheticTeacher)
    max_attempts: int = Field(
        default=4, ge=1, description="R: samples tried per question until one verifies."
    )
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.7, max_new_tokens=4096)
    )
    min_chars: int = Field(default=0, ge=0, description="Reject shorter CoTs.")
    max_chars: int | None = Field(default=None, ge=1, description="Reject longer CoTs.")
    max_repetition: float | None = Field(
        default=None,
        le=0,
        description="Reject CoTs whose repetition penalty is below this (e.g. -0.1).",
    )
    shard_size: int = Field(default=64, ge=1, description="Questions per resumable shard.")


class CurateRLConfig(ConfigModel):
    """Parameters of ``curate_rl`` (rendered as a form in the Prefect UI)."""

    output_name: str = Field(default="rl-pool", description="Catalog name of the RL pool.")
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [SyntheticSource(name="synthetic")], min_length=1
    )
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig)
    seed: int = 0


class CurateSFTConfig(CurateRLConfig):
    """Parameters of ``curate_sft``: the RL steps, then long-CoT generation."""

    output_name: str = Field(default="sft-cot", description="Catalog name of the SFT dataset.")
    difficulty: DifficultyConfig = Field(
        default_factory=lambda: DifficultyConfig(keep=["medium", "hard"])
    )
    cot: CoTConfig = Field(default_factory=CoTConfig)
