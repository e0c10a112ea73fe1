"""Long-CoT generation: synthetic teacher, openai teacher over HTTP, rejection, kill + resume."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest
from chat_server import MODEL, ChatServer, server_fixture  # noqa: F401  (the `server` fixture)
from curation_rows import records_frame, text_frame
from PIL import Image

from mmr1.cot import generate_cot, judge_cots, to_sft_records
from mmr1.cot.generate import KEPT_COLUMNS, describe_attempts
from mmr1.data.io import read_sft_dataset, write_sft_dataset
from mmr1.data.synthetic import generate_items, item_from_id, solve
from mmr1.generation.openai_compat import OpenAIBackend
from mmr1.prompts import training_prompt
from schemas.curation import CoTConfig, ModelTeacher, SyntheticTeacher
from schemas.generation import (
    Completion,
    CompletionSample,
    GenerationRequest,
    OpenAIBackendConfig,
    SamplingParams,
)
from schemas.rewards import RewardConfig
from schemas.synthetic import SyntheticConfig

ROOT = Path(__file__).resolve().parents[1]
INLINE = RewardConfig(num_workers=0)
QUESTION = re.compile(r"Question (\d+):")


def cot(answer: str, body: str = "Reason it through.") -> str:
    return f"<think>\n{body}\n</think>\n<answer>\\boxed{{{answer}}}</answer>"


# -- synthetic teacher -----------------------------------------------------------------


def test_synthetic_teacher_accepts_every_synthetic_row(tmp_path: Path) -> None:
    items = generate_items(SyntheticConfig(n_items=10, seed=4))
    custom = SyntheticConfig(n_items=2, seed=1, image_size=84, difficulties=[3])
    custom_items = generate_items(custom)
    local = text_frame([("What is 2 + 2?", "4")])
    tampered = records_frame([items[0].record.model_copy(update={"answer": "Z"})], source="edited")
    frame = pl.concat(
        [
            records_frame(i.record for i in items),
            records_frame((i.record for i in custom_items), source="big"),
            local,
            tampered,
        ]
    )
    result = generate_cot(
        frame,
        CoTConfig(teacher=SyntheticTeacher(), shard_size=4),
        tmp_path / "cot",
        seed=0,
        rewards=INLINE,
        synthetic_configs={"big": custom},
    )
    kept = result.kept
    assert kept.columns == list(KEPT_COLUMNS)
    assert kept.height == 12
    assert kept["attempts"].to_list() == [1] * 12
    by_id = {i.record.id: i for i in [*items, *custom_items]}
    for row in kept.iter_rows(named=True):
        assert row["response"] == solve(by_id[row["source_row_id"]])
    assert result.reasons() == {"no_teacher_solution": 2}
    details = dict(zip(result.quarantined["source"], result.quarantined["detail"], strict=True))
    assert "not a synthetic item id" in details["local"]
    assert "differs from the row in answer" in details["edited"]
    # The default distribution does not reproduce the custom source's items.
    assert item_from_id(custom_items[0].record.id) != custom_items[0]

    records = to_sft_records(kept)
    assert [r.id for r in records] == kept["row_id"].to_list()
    first = records[0]
    assert first.conversations[0].from_ == "human"
    assert first.conversations[0].value == training_prompt(
        items[0].record.problem, items[0].record.choices
    )
    assert (first.conversations[1].from_, first.conversations[1].value) == (
        "gpt",
        solve(items[0]),
    )
    assert first.images == items[0].record.images
    write_sft_dataset(records, tmp_path / "sft")
    assert read_sft_dataset(tmp_path / "sft") == records


def test_model_teacher_needs_a_backend(tmp_path: Path) -> None:
    teacher = ModelTeacher(backend=OpenAIBackendConfig(base_url="http://127.0.0.1:9/v1", model="m"))
    with pytest.raises(ValueError, match="pass backend="):
        generate_cot(text_frame([("q", "1")]), CoTConfig(teacher=teacher), tmp_path, seed=0)


# -- judging and filters -----------------------------------------------------------------


class ListBackend:
    """Returns, per call, the next response for each question (by request id)."""

    name = "list"

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.asked: list[tuple[str, int]] = []

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams):
        out = []
        for request in requests:
            n_before = sum(1 for rid, _ in self.asked if rid == request.request_id)
            self.asked.append((request.request_id, sampling.seed))
            replies = self.script[request.request_id]
            text = replies[min(n_before, len(replies) - 1)]
            out.append(
                Completion(request_id=request.request_id, samples=[CompletionSample(text=text)])
            )
        return out

    def close(self) -> None:
        pass


def test_filters_and_attempt_summaries(tmp_path: Path) -> None:
    long_ok = cot("7", "We add three and four, which gives seven in total.")
    loop = cot("7", " ".join(["so seven"] * 25))
    script = {
        "local/q0": [cot("7", "short"), long_ok],  # too short, then fine
        "local/q1": [cot("7", "x" * 500), long_ok],  # too long, then fine
        "local/q2": [loop, long_ok],  # repetitive, then fine
        "local/q3": ["\\boxed{7}", cot("8"), cot("9"), cot("6")],  # never verifies
    }
    frame = text_frame([("What is 3 + 4?", "7")] * 4)
    config = CoTConfig(
        teacher=ModelTeacher(backend=OpenAIBackendConfig(base_url="http://x/v1", model="m")),
        max_attempts=4,
        min_chars=60,
        max_chars=300,
        max_repetition=-0.1,
        shard_size=4,
    )
    backend = ListBackend(script)
    result = generate_cot(frame, config, tmp_path, seed=0, backend=backend, rewards=INLINE)
    assert result.kept["attempts"].to_list() == [2, 2, 2]
    assert result.kept["response"].to_list() == [long_ok] * 3
    (detail,) = result.quarantined["detail"].to_list()
    assert detail == "4 attempts: 3 wrong answer, 1 bad format"
    assert result.reasons() == {"cot_rejected": 1}
    # Round r re-asks only the unresolved questions, with one seed per round.
    rounds = Counter(seed for _, seed in backend.asked)
    assert sorted(rounds.values(), reverse=True) == [4, 4, 1, 1]
    assert judge_cots([loop], ["7"], [None], config, INLINE) == ["repetitive"]
    assert describe_attempts(1, Counter({"too long": 1})) == "1 attempt: 1 too long"


# -- openai teacher over HTTP --------------------------------------------------------------


class Teacher:
    """Answers for the chat server: per question, the i-th *answered* request gets script[i].

    Script letters: R right, W wrong answer, F bad format (the last letter repeats).
    ``rate_limited``: questions whose first request is refused with a 429.
    ``gate``: requests for questions of that shard or later are held until
    ``release`` is set, then refused (503), and not counted as answered.
    """

    def __init__(
        self,
        golds: dict[int, str],
        plans: dict[int, str],
        shard_size: int = 2,
        gate: int | None = None,
        rate_limited: frozenset[int] = frozenset(),
    ) -> None:
        self.golds, self.plans, self.shard_size = golds, plans, shard_size
        self.gate_shard = gate
        self.rate_limited = rate_limited
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.phase = "run"
        self.answered: list[tuple[str, int, int]] = []  # (phase, question, seed)
        self.held: list[int] = []
        self.refused: Counter[int] = Counter()

    def reply_text(self, question: int, attempt: int) -> str:
        plan = self.plans.get(question, "R")
        kind = plan[min(attempt, len(plan) - 1)]
        gold = self.golds[question]
        if kind == "R":
            return cot(gold, f"Working through question {question} step by step.")
        if kind == "W":
            return cot(f"{gold}0", "A slip in the arithmetic.")
        if kind == "F":
            return f"No tags at all, just \\boxed{{{gold}}}"
        raise AssertionError(kind)

    def __call__(self, text: str, body: dict):
        question = int(QUESTION.search(text).group(1))
        if self.gate_shard is not None and question // self.shard_size >= self.gate_shard:
            with self.lock:
                self.held.append(question)
            self.release.wait(60)
            return (503, {}, '{"error": "gone"}')
        with self.lock:
            if question in self.rate_limited and not self.refused[question]:
                self.refused[question] += 1
                return (429, {}, '{"error": "rate limited"}')
            attempt = sum(1 for _, q, _ in self.answered if q == question)
            self.answered.append((self.phase, question, body["seed"]))
        return [self.reply_text(question, attempt)]


def openai_teacher(base_url: str, **overrides) -> ModelTeacher:
    settings = {
        "base_url": base_url,
        "model": MODEL,
        "api_key_env": None,
        "timeout_s": 30.0,
        "max_retries": 2,
        "backoff_s": 0.01,
        "concurrency": 4,
    }
    settings.update(overrides)
    return ModelTeacher(backend=OpenAIBackendConfig(**settings), system="You are a careful tutor.")


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (28, 28), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_openai_teacher_end_to_end(server: ChatServer, tmp_path: Path) -> None:
    # q0 right at once; q1 wrong then right; q2 never verifies; q3 429 then right; q4 MC.
    frame = text_frame(
        [
            ("<image>\nQuestion 0: how many sides has a square?", "4"),
            ("Question 1: what is 6 * 7?", "42"),
            ("Question 2: what is 1 + 1?", "2"),
            ("Question 3: what is 10 - 3?", "7"),
            ("<image>\nQuestion 4: which colour is shown?", "B"),
        ],
        choices=[None, None, None, None, ["red", "blue"]],
    ).with_columns(
        pl.Series(
            "images",
            [
                [{"bytes": png("red"), "path": "a.png"}],
                [],
                [],
                [],
                [{"bytes": png("blue"), "path": None}],
            ],
        )
    )
    teacher = Teacher(
        golds={0: "4", 1: "42", 2: "2", 3: "7", 4: "B"},
        plans={1: "WR", 2: "WFW"},
        rate_limited=frozenset({3}),
    )
    server.state.respond = teacher
    config = CoTConfig(
        teacher=openai_teacher(server.base_url),
        max_attempts=3,
        shard_size=3,
        sampling=SamplingParams(temperature=0.7, max_new_tokens=64),
    )
    with OpenAIBackend(config.teacher.backend) as backend:
        result = generate_cot(
            frame, config, tmp_path / "cot", seed=1, backend=backend, rewards=INLINE
        )

    kept = result.kept
    assert kept["source_row_id"].to_list() == ["q0", "q1", "q3", "q4"]
    assert kept["attempts"].to_list() == [1, 2, 1, 1]
    assert kept["response"][1] == teacher.reply_text(1, 1)
    assert kept["choices"][3].to_list() == ["red", "blue"]
    assert result.quarantined.select("source_row_id", "reason", "detail").rows() == [
        ("q2", "cot_rejected", "3 attempts: 2 wrong answer, 1 bad format")
    ]
    asked = Counter(q for _, q, _ in teacher.answered)
    assert asked == {0: 1, 1: 2, 2: 3, 3: 1, 4: 1}
    assert teacher.refused == {3: 1}  # the 429 was retried by the backend
    # Every request: the training prompt as user text, the system message, the images.
    bodies = [s["json"] for s in server.state.seen]
    assert all(
        b["messages"][0] == {"role": "system", "content": "You are a careful tutor."}
        for b in bodies
    )
    assert all(b["n"] == 1 and b["max_tokens"] == 64 for b in bodies)
    user_text = "".join(
        p["text"] for p in bodies[0]["messages"][1]["content"] if p["type"] == "text"
    )
    assert user_text.startswith(training_prompt("", None).strip())
    assert sorted(len(s.get("image_sizes", [])) for s in server.state.seen)[-1] == 1
    # Different rounds, different seeds.
    seeds_q2 = [seed for _, q, seed in teacher.answered if q == 2]
    assert len(set(seeds_q2)) == 3


CHILD = """
import sys
from pathlib import Path

import polars as pl

from mmr1.cot import generate_cot
from mmr1.generation.openai_compat import OpenAIBackend
from schemas.curation import CoTConfig
from schemas.rewards import RewardConfig

frame_path, config_path, out_dir = sys.argv[1:4]
config = CoTConfig.model_validate_json(Path(config_path).read_text())
with OpenAIBackend(config.teacher.backend) as backend:
    generate_cot(
        pl.read_parquet(frame_path), config, Path(out_dir), seed=3, backend=backend,
        rewards=RewardConfig(num_workers=0),
    )
print("child finished without being killed", file=sys.stderr)
"""


def test_killed_cot_generation_resumes_without_asking_twice(
    server: ChatServer, tmp_path: Path
) -> None:
    golds = {i: str(10 + i) for i in range(8)}
    plans = {1: "WR", 2: "FR", 5: "WWR", 6: "W"}
    frame = text_frame([(f"Question {i}: what is {5 + i} + 5?", golds[i]) for i in range(8)])
    config = CoTConfig(teacher=openai_teacher(server.base_url), max_attempts=3, shard_size=2)
    frame_path, config_path = tmp_path / "frame.parquet", tmp_path / "config.json"
    frame.write_parquet(frame_path)
    config_path.write_text(config.model_dump_json())
    out = tmp_path / "cot"

    teacher = Teacher(golds, plans, shard_size=2, gate=2)
    teacher.phase = "child"
    server.state.respond = teacher
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(frame_path), str(config_path), str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # Shards 0 and 1 on disk and the child blocked inside shard 2: kill it there.
        while not (len(list(out.glob("shard-*.parquet"))) == 2 and teacher.held):
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "child never reached shard 2"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
        teacher.gate_shard = None
        teacher.release.set()  # held handlers answer 503 to a dead client
    assert set(teacher.held) <= {4, 5}  # only the shard in flight was asked, never answered

    teacher.phase = "resume"
    with OpenAIBackend(config.teacher.backend) as backend:
        resumed = generate_cot(frame, config, out, seed=3, backend=backend, rewards=INLINE)

    fresh_teacher = Teacher(golds, plans, shard_size=2)
    server.state.respond = fresh_teacher
    with OpenAIBackend(config.teacher.backend) as backend:
        fresh = generate_cot(
            frame, config, tmp_path / "fresh", seed=3, backend=backend, rewards=INLINE
        )

    assert resumed.kept.equals(fresh.kept)
    assert resumed.quarantined.equals(fresh.quarantined)
    assert resumed.kept["attempts"].to_list() == [1, 2, 2, 1, 1, 3, 1]
    assert resumed.reasons() == {"cot_rejected": 1}
    # No question was answered twice for the same round across the two runs: the answered
    # (question, seed) pairs of kill + resume are exactly those of one uninterrupted run.
    pairs = Counter((q, seed) for _, q, seed in teacher.answered)
    assert pairs == Counter((q, seed) for _, q, seed in fresh_teacher.answered)
    assert max(pairs.values()) == 1
    by_phase = {
        phase: {q for p, q, _ in teacher.answered if p == phase} for phase in ("child", "resume")
    }
    assert by_phase == {"child": {0, 1, 2, 3}, "resume": {4, 5, 6, 7}}
