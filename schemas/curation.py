"""Configs of the curation flows (``curate_rl``, ``curate_sft``) and their steps.

Defaults follow docs/METHOD.md sections 1-2 (pixel bounds, pass-rate buckets);
every value is a field so presets and the Prefect UI can change it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from schemas.base import ConfigModel
from schemas.generation import BackendConfig, SamplingParams
from schemas.refs import CheckpointInput, DatasetInput, DatasetOutput
from schemas.synthetic import SyntheticConfig

RECORD_FIELDS = ("id", "problem", "answer", "images", "choices", "type", "source", "conversations")


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
    allow_empty: bool = Field(
        default=False,
        description="Accept a source with no rows. By default an empty source (a wrong path "
        "pattern, an empty split) is refused with an error naming it.",
    )

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(RECORD_FIELDS))
        if unknown:
            raise ValueError(
                f"column mapping names unknown record fields {unknown}; known: {RECORD_FIELDS}"
            )
        return value


class _DataSource(_Source):
    """A source of existing rows (hub or local files), in one of two row layouts."""

    layout: Literal["auto", "record", "sharegpt"] = Field(
        default="auto",
        description="Row layout. 'record': problem/answer columns (MMR1-RL, benchmarks). "
        "'sharegpt': a conversations column of {from: human|gpt, value} turns (MMR1-SFT): the "
        "human turn is the prompt, the gpt turn a chain of thought that teacher 'existing' "
        "keeps, the answer the source's answer column or else the CoT's final answer. 'auto': "
        "sharegpt when the source has the conversations column but no problem column.",
    )


class HubSource(_DataSource):
    """A Hugging Face dataset (``datasets.load_dataset``), e.g. ``MMR1/MMR1-RL``."""

    kind: Literal["hub"] = Field(default="hub", description="Source type: a hub dataset.")
    dataset_id: str = Field(description="Hub id, e.g. MMR1/MMR1-RL.")
    split: str = Field(default="train", description="Split to read.")
    subset: str | None = Field(default=None, description="Config name, if the dataset has several.")
    revision: str | None = Field(
        default=None, description="Git revision (branch, tag, commit) to pin; None: the latest."
    )


class LocalSource(_DataSource):
    """A local parquet / jsonl / arrow file, a directory of them, or a ``save_to_disk`` dir."""

    kind: Literal["local"] = Field(default="local", description="Source type: local files.")
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

    kind: Literal["synthetic"] = Field(
        default="synthetic", description="Source type: the built-in synthetic generator."
    )
    synthetic: SyntheticConfig = Field(
        default_factory=lambda: SyntheticConfig(n_items=256),
        description="What to generate: item count, families, seed.",
    )


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
    max_image_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1, description="Larger encoded images are quarantined."
    )
    max_images_per_row: int = Field(
        default=16, ge=1, description="Rows with more images are quarantined."
    )
    max_problem_chars: int = Field(
        default=20_000, ge=1, description="Rows with a longer problem text are quarantined."
    )
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

    exact: bool = Field(
        default=True,
        description="Drop rows with the same normalised problem, answer and image set.",
    )
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
    seed: int = Field(default=0, description="Seed of the MinHash permutations.")

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

    enabled: bool = Field(default=True, description="Run the step (false: keep every row).")
    benchmarks: list[DatasetInput] | None = Field(
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

    enabled: bool = Field(
        default=True, description="Run the step (false: keep every row, no pass rates)."
    )
    model: CheckpointInput | None = Field(
        default=None,
        description="Checkpoint for an `hf` backend: catalog ref, local directory or hub id; "
        "ignored if backend is set.",
    )
    backend: BackendConfig | None = Field(
        default=None, description="Explicit generation backend (vllm/openai/hf)."
    )
    rollouts: int = Field(default=8, ge=1, description="K rollouts per prompt.")
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=1.0, max_new_tokens=512),
        description="How the K rollouts are sampled.",
    )
    easy_at: float = Field(default=0.8, ge=0, le=1, description="pass rate >= this: easy.")
    hard_at: float = Field(default=0.2, ge=0, le=1, description="pass rate <= this: hard.")
    keep: list[Literal["easy", "medium", "hard"]] = Field(
        default_factory=lambda: ["medium", "hard"],
        description="Buckets kept; the others are quarantined with their pass rate.",
    )
    balance_by: list[Literal["type", "answer", "source"]] = Field(
        default_factory=lambda: ["type"],
        description="With `target_size`: each combination of these columns' values gets an "
        "equal share of the kept rows (water-filling); [] keeps a seeded uniform subset. "
        "[type, answer] also evens out the answers within each type, so that RL cannot gain "
        "reward by learning the pool's answer prior.",
    )
    target_size: int | None = Field(
        default=None, ge=1, description="Rows to keep after balancing (None: all)."
    )
    shard_size: int = Field(default=64, ge=1, description="Prompts per resumable shard.")

    @field_validator("balance_by")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"balance_by names a column twice: {value}")
        return value

    @model_validator(mode="after")
    def _order(self) -> DifficultyConfig:
        if self.hard_at >= self.easy_at:
            raise ValueError(f"hard_at ({self.hard_at}) must be below easy_at ({self.easy_at})")
        return self


class SyntheticTeacher(ConfigModel):
    """The programmatic solver of synthetic items (the demo's teacher)."""

    kind: Literal["synthetic"] = Field(
        default="synthetic", description="Teacher type: the synthetic items' own solver."
    )


class ModelTeacher(ConfigModel):
    """A model writing long CoTs through a generation backend (openai, vllm, hf)."""

    kind: Literal["model"] = Field(default="model", description="Teacher type: a model.")
    backend: BackendConfig = Field(description="Generation backend serving the teacher model.")
    system: str | None = Field(default=None, description="Optional system message.")


class ExistingTeacher(ConfigModel):
    """Keep the chain of thought the data already has (sources in the ``sharegpt`` layout,
    e.g. the released MMR1-SFT): the gpt turn is judged like a generated CoT (format
    ``<think>...</think><answer>...</answer>`` with a final ``\\boxed{}``, the final answer
    verified against the source's answer column when it has one, the length and repetition
    filters) and kept or quarantined ``cot_rejected``; rows without one are quarantined
    ``no_teacher_solution``."""

    kind: Literal["existing"] = Field(
        default="existing", description="Teacher type: the data's own chains of thought."
    )


TeacherConfig = Annotated[
    SyntheticTeacher | ModelTeacher | ExistingTeacher, Field(discriminator="kind")
]


class CoTConfig(ConfigModel):
    """Long-CoT generation with rejection sampling (docs/METHOD.md 2-3)."""

    teacher: TeacherConfig = Field(
        default_factory=SyntheticTeacher,
        description="Who writes the CoTs: synthetic (solver), model (a backend) or existing.",
    )
    max_attempts: int = Field(
        default=4, ge=1, description="R: samples tried per question until one verifies."
    )
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.7, max_new_tokens=4096),
        description="How the teacher samples each attempt.",
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

    output_name: DatasetOutput = Field(
        default="rl-pool", description="Catalog name of the RL pool."
    )
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [SyntheticSource(name="synthetic")],
        min_length=1,
        description="Where rows come from (hub, local, synthetic); merged in order.",
    )
    validation: ValidationConfig = Field(
        default_factory=ValidationConfig, description="Row checks and image normalisation."
    )
    dedup: DedupConfig = Field(
        default_factory=DedupConfig, description="Exact and near-duplicate removal."
    )
    decontamination: DecontaminationConfig = Field(
        default_factory=DecontaminationConfig,
        description="Removal of rows that overlap benchmarks in the catalog.",
    )
    difficulty: DifficultyConfig = Field(
        default_factory=DifficultyConfig,
        description="Pass rates from K rollouts of a model; easy/medium/hard buckets kept.",
    )
    seed: int = Field(default=0, description="Seed of every random choice of the curation.")
    batch_rows: int = Field(
        default=2048,
        ge=1,
        description="Rows each curation step holds at a time: steps read the previous step's "
        "file, and write their own, in batches of this many rows (a batch's images are decoded "
        "together, so lower it for image-heavy sources: about rows x image bytes x 3 of memory). "
        "The results do not depend on it.",
    )


class CurateSFTConfig(CurateRLConfig):
    """Parameters of ``curate_sft``: the RL steps, then long-CoT generation."""

    output_name: DatasetOutput = Field(
        default="sft-cot", description="Catalog name of the SFT dataset."
    )
    difficulty: DifficultyConfig = Field(
        default_factory=lambda: DifficultyConfig(keep=["medium", "hard"]),
        description="Pass rates from K rollouts of a model; easy/medium/hard buckets kept.",
    )
    cot: CoTConfig = Field(
        default_factory=CoTConfig,
        description="Long-CoT generation with rejection sampling (the SFT targets).",
    )
