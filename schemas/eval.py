"""Evaluation records and configs: benchmark items, per-item scores, benchmark scores.

An adapter (``mmr1.eval.benchmarks``) turns a benchmark's rows into
:class:`EvalItem` records, a scorer turns one response into an :class:`ItemScore`,
and the adapter aggregates those into a :class:`BenchmarkScore` with the
official overall number and its breakdowns. :class:`BenchmarkSpec` configures
one benchmark run; :class:`EvaluateConfig` is the ``evaluate`` flow's parameter
(checkpoints x benchmarks).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.base import ConfigModel, StageConfig
from schemas.generation import BackendConfig, OpenAIBackendConfig, SamplingParams
from schemas.refs import CheckpointInput, DatasetOutput
from schemas.registry import BENCHMARKS

#: A registered benchmark adapter's name (``mmr1.eval.benchmarks``).
BenchmarkName = Annotated[str, BENCHMARKS.field()]
PromptStyle = Literal["mmr1", "official"]
ScorerName = Literal["rule", "llm_judge"]
#: Benchmarks whose official protocol uses an LLM (extractor or judge).
JUDGED_BENCHMARKS = ("mathverse", "mathvista")


class EvalItem(BaseModel):
    """One benchmark question in the common form every adapter produces.

    JSON round-trips: ``images`` serialise as base64.
    """

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    item_id: str = Field(description="Stable id, unique within the benchmark split.")
    question: str = Field(
        description="Question text with one <image> placeholder per image (options not included)."
    )
    images: list[bytes] = Field(
        default_factory=list, description="Encoded images (PNG/JPEG bytes), in placeholder order."
    )
    choices: list[str] | None = Field(
        default=None,
        description="Option texts to render as (A), (B)...; None when free-form or when the "
        "options are only in the image or inline in the question.",
    )
    answer: str = Field(description="Gold answer as the benchmark states it.")
    answer_type: str = Field(
        description="Benchmark answer kind: 'multi_choice', 'integer', 'float', 'list', 'text', "
        "'free_form', 'letters', ... (informational; the scorer reads ``row``)."
    )
    tags: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="Breakdown keys -> value (a list for multi-label keys such as skills).",
    )
    row: dict[str, Any] = Field(
        default_factory=dict,
        description="The original row without its image columns (JSON-able); scorers read it.",
    )
    invalid: str | None = Field(
        default=None,
        description="Why the source row could not be read as an item (file, row, field, "
        "problem), else None. Such an item is kept, scored wrong (as the official scripts "
        "score a row they cannot match) and counted in BenchmarkScore.n_invalid.",
    )


class ItemScore(BaseModel):
    """Outcome of scoring one response."""

    item_id: str
    correct: bool
    extracted: str = Field(description="The answer the scorer compared (after extraction).")
    scorer: str = Field(description="Which scorer decided: 'rule' (or a judge name).")


class BenchmarkScore(BaseModel):
    """Aggregate of one benchmark split: the official overall accuracy and its breakdowns."""

    benchmark: str
    split: str
    scorer: str
    n_items: int = Field(ge=0)
    n_correct: int = Field(ge=0)
    accuracy: float = Field(ge=0.0, le=1.0, description="The official overall number, in [0, 1].")
    macro_over: str | None = Field(
        default=None,
        description="None: accuracy is the mean over items. Else the breakdown key whose "
        "groups' accuracies are averaged (MathVerse versions, ChartQA halves).",
    )
    breakdown: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Breakdown key -> group -> accuracy, "
        "e.g. {'question_type': {'free_form': 0.5}}.",
    )
    counts: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Breakdown key -> group -> number of items."
    )
    n_invalid: int = Field(
        default=0,
        ge=0,
        description="Items whose source row could not be read (EvalItem.invalid); they are "
        "in n_items and scored wrong.",
    )
    invalid: dict[str, str] = Field(
        default_factory=dict, description="Item id -> why its row could not be read."
    )


class BenchmarkSpec(ConfigModel):
    """One benchmark to evaluate: which adapter, which data, which prompt and scorer."""

    name: BenchmarkName = Field(description="Adapter name (mmr1.eval.benchmarks.BENCHMARKS).")
    source: str = Field(
        description="Hub dataset id (e.g. AI4Math/MathVista), or a local parquet/jsonl/json "
        "file or directory, or a save_to_disk directory. Synthetic: the RL-record parquet "
        "file or dataset directory (the flow resolves catalog refs to it)."
    )
    split: str | None = Field(
        default=None, description="Split to evaluate; None: the adapter's default split."
    )
    subset: str | None = Field(
        default=None,
        description="Hub config name; None: the adapter's default (MathVerse: the split name).",
    )
    limit: int | None = Field(
        default=None, ge=1, description="Evaluate only the first N items (quick runs)."
    )
    prompt_style: PromptStyle = Field(
        default="mmr1",
        description="'mmr1': the MMR1 evaluation prompt; 'official': the benchmark's own prompt.",
    )
    scorer: ScorerName = Field(
        default="rule",
        description="'rule': the rule-based scorers of mmr1.eval.scoring. 'llm_judge' "
        "(mathverse, mathvista only): an LLM extracts/judges through ``judge`` "
        "(mmr1.eval.judge); items whose judge reply is unusable fall back to 'rule'.",
    )
    judge: OpenAIBackendConfig | None = Field(
        default=None, description="OpenAI-compatible endpoint of the judge (scorer 'llm_judge')."
    )

    @model_validator(mode="after")
    def _judge_settings(self) -> BenchmarkSpec:
        if self.scorer == "llm_judge":
            if self.name not in JUDGED_BENCHMARKS:
                raise ValueError(
                    f"scorer 'llm_judge' is only for {', '.join(JUDGED_BENCHMARKS)}, "
                    f"not {self.name!r} (its official scoring is rule-based)"
                )
            if self.judge is None:
                raise ValueError("scorer 'llm_judge' needs a 'judge' endpoint config")
        elif self.judge is not None:
            raise ValueError("'judge' is set but scorer is 'rule'; set scorer: llm_judge")
        return self


def _greedy() -> SamplingParams:
    return SamplingParams(n=1, temperature=0.0, max_new_tokens=1024, return_logprobs=False)


class EvaluateConfig(StageConfig):
    """Parameters of the ``evaluate`` flow (a form in the Prefect UI): checkpoints x benchmarks.

    Every checkpoint is evaluated on every benchmark; results go to the catalog
    (linked to the checkpoint version) and a leaderboard is published, with 95%
    intervals and paired tests against ``baseline`` (``mmr1.eval.significance``).
    Paper protocol (docs/BENCHMARKS.md, docs/METHOD.md section 9): greedy decoding,
    the MMR1 prompt, one answer per item (``sampled_k`` 0).
    """

    REQUIRED = ("checkpoints",)

    checkpoints: list[CheckpointInput] = Field(
        default_factory=list,
        description="Checkpoints: catalog refs (NAME[@VERSION]; bare = latest when the flow "
        "starts, then pinned for the whole run), local directories or hub ids. Empty: set by "
        "mmr1-pipeline (its base, SFT and RL models); required when the flow runs on its own.",
    )
    benchmarks: list[BenchmarkSpec] = Field(
        default_factory=lambda: [BenchmarkSpec(name="synthetic", source="synthetic-bench")],
        min_length=1,
        description="Benchmarks, each at most once. A source written 'dataset:NAME[@V]' (any "
        "benchmark), or a synthetic source that is not an existing path, is a catalog "
        "dataset ref resolved to its location.",
    )
    sampling: SamplingParams = Field(
        default_factory=_greedy,
        description="Decoding; the paper evaluates greedily. n must be 1 (one answer per item); "
        "the seed is derived per shard from 'seed'.",
    )
    sampled_k: int = Field(
        default=0,
        ge=0,
        description="Sampled answers per item besides the 'sampling' one (0: none, the paper's "
        "protocol). With k > 0 each result also has sampled accuracy (mean over items of the "
        "fraction of k samples right) with a 95% interval, and paired sampled tests.",
    )
    sampled_temperature: float = Field(
        default=1.0,
        gt=0.0,
        description="Temperature of the sampled answers (top_p 1, max_new_tokens as 'sampling').",
    )
    output_name: DatasetOutput = Field(
        default="evaluation",
        description="Catalog name of the evaluation record: a dataset (kind evaluation) with "
        "one row per checkpoint and benchmark (accuracy, 95% intervals, paired tests), the "
        "checkpoints and benchmarks as parents.",
    )
    baseline: CheckpointInput | None = Field(
        default=None,
        description="Checkpoint the leaderboard's paired tests compare every other "
        "checkpoint with; None: the first of 'checkpoints'.",
    )
    backend: BackendConfig | None = Field(
        default=None,
        description="Generation backend; None: the local 'hf' backend. Its model field is "
        "replaced by each checkpoint's location.",
    )
    batch_size: int = Field(default=16, ge=1, description="Requests per hf forward batch.")
    device: str = Field(default="auto", description="Device of the default hf backend.")
    shard_size: int = Field(
        default=128, ge=1, description="Items per resumable shard of generations."
    )
    seed: int = Field(default=0, description="Base seed; shard s samples with a derived seed.")
    score_workers: int = Field(
        default=2,
        ge=0,
        description="Processes scoring answers under a deadline; 0 scores inline in the task's "
        "thread (fastest, but math-verify's timeout only works in the main thread).",
    )
    score_timeout_s: float = Field(
        default=10.0, gt=0, description="Per-answer scoring deadline with score_workers > 0."
    )
    reference_rows: bool = Field(
        default=True, description="Add the paper's published numbers to the leaderboard."
    )
    restart: bool = Field(
        default=False, description="Discard finished generation shards of an identical run."
    )

    def sampled_params(self) -> SamplingParams | None:
        """Settings of the k sampled answers per item, or None when ``sampled_k`` is 0."""
        if self.sampled_k == 0:
            return None
        return self.sampling.model_copy(
            update={"n": self.sampled_k, "temperature": self.sampled_temperature, "top_p": 1.0}
        )

    @field_validator("checkpoints")
    @classmethod
    def _refs_given(cls, refs: list[str]) -> list[str]:
        for ref in refs:
            if not ref.strip():
                raise ValueError("checkpoint refs must be non-empty (NAME[@VERSION])")
        return refs

    @model_validator(mode="after")
    def _one_answer_per_benchmark(self) -> EvaluateConfig:
        if self.sampling.n != 1:
            raise ValueError(f"sampling.n must be 1 (one answer per item), got {self.sampling.n}")
        names = [spec.name for spec in self.benchmarks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"benchmarks {repeated} appear more than once: evaluate one split per "
                "benchmark per run (a run's MLflow metrics and artifacts are keyed by "
                "benchmark; the leaderboard tells splits apart)"
            )
        return self
