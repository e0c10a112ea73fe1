"""Format reward, repetition penalty, score_response/score_batch and the deadline pool."""

from __future__ import annotations

import os
import threading
import time

import pytest

import mmr1.rewards.score as score_module
from mmr1.rewards import (
    RewardConfig,
    RewardScore,
    format_reward,
    repetition_penalty,
    score_batch,
    score_response,
)
from mmr1.rewards.pool import DeadlinePool

# Pure-Python SymPy work that takes seconds (no guard catches it): only a deadline stops it.
SLOW_ANSWER = "(a+b+c+d+e)^{24}"
# Needs math-verify, so it goes to a worker (plain numbers and letters are settled inline).
HALF = r"\boxed{\frac{1}{2}}"


def good(answer: str, think: str = "reasoning") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


# -- format ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (good(r"\boxed{5}"), 1.0),
        ("  \n<think>a</think><answer>b</answer>\n  ", 1.0),
        ("<think>\nmulti\nline\n</think>\n\n<answer>\n5\n</answer>", 1.0),
        ("<think></think><answer></answer>", 1.0),
        ("<answer>5</answer>", 0.0),  # missing think
        ("<think>a</think>", 0.0),  # missing answer
        ("<think>a</think><answer>1</answer><answer>2</answer>", 0.0),  # two answers
        ("<think>a</think><think>b</think><answer>1</answer>", 0.0),  # two thinks
        ("<think>a</think><answer>1</answer> trailing", 0.0),  # text after </answer>
        ("hello <think>a</think><answer>1</answer>", 0.0),  # text before <think>
        ("<think>a</think> so <answer>1</answer>", 0.0),  # text between blocks
        ("<answer>1</answer><think>a</think>", 0.0),  # wrong order
        ("<think>a<answer>1</answer></think>", 0.0),  # answer inside think
        ("<think>a</think><answer>1", 0.0),  # unclosed answer
        ("", 0.0),
    ],
)
def test_format_reward(response: str, expected: float) -> None:
    assert format_reward(response) == expected


# -- repetition ------------------------------------------------------------------------


def test_repetition_penalty_short_and_unique_text_is_zero() -> None:
    assert repetition_penalty("only a few words here", n=40) == 0.0
    words = " ".join(f"w{i}" for i in range(200))
    assert repetition_penalty(words, n=40) == 0.0


def test_repetition_penalty_hand_computed() -> None:
    # 6 words "a b a b a b", n=2: bigrams ab ba ab ba ab -> 5 total, 2 unique.
    assert repetition_penalty("a b a b a b", n=2) == pytest.approx(-0.5 * (1 - 2 / 5))
    # Exactly n words: one n-gram, unique.
    assert repetition_penalty("x y z", n=3) == 0.0


def test_repetition_penalty_degenerate_loop_tends_to_minus_half() -> None:
    looped = " ".join(["the same sentence again"] * 2000)
    value = repetition_penalty(looped, n=40)
    assert -0.5 <= value < -0.49


def test_repetition_penalty_rejects_bad_n() -> None:
    with pytest.raises(ValueError, match="n must be >= 1"):
        repetition_penalty("a b", n=0)


# -- score_response --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "gold", "choices", "accuracy", "fmt"),
    [
        (good(r"\boxed{\frac{1}{2}}"), "0.5", None, 1.0, 1.0),
        (good(r"\boxed{50\%}"), "0.5", None, 1.0, 1.0),
        (good(r"\boxed{A}"), "A", None, 1.0, 1.0),
        (good("(A)"), "A", None, 1.0, 1.0),
        (good("A."), "A", None, 1.0, 1.0),
        (good("the red one"), "B", ["blue", "the red one"], 1.0, 1.0),
        (good("Yes"), "No", None, 0.0, 1.0),
        (good("a cat"), "a dog", None, 0.0, 1.0),
        (r"no tags but \boxed{1,000}", "1000", None, 1.0, 0.0),
        ("no answer at all", "5", None, 0.0, 0.0),
    ],
)
def test_score_response(
    response: str, gold: str, choices: list[str] | None, accuracy: float, fmt: float
) -> None:
    score = score_response(response, gold, choices)
    assert isinstance(score, RewardScore)
    assert (score.accuracy, score.format) == (accuracy, fmt)
    assert score.overall == accuracy + fmt
    assert score.timed_out is False


def test_score_response_weights_and_repetition() -> None:
    looped = " ".join(["step"] * 100)
    response = good(r"\boxed{3}", think=looped)
    config = RewardConfig(accuracy_weight=2.0, format_weight=0.5, repetition_weight=1.0,
                          repetition_ngram=4, num_workers=0)  # fmt: skip
    score = score_response(response, "3", config=config)
    assert score.repetition < -0.4
    assert score.overall == pytest.approx(2.0 * 1.0 + 0.5 * 1.0 + score.repetition)
    assert score.extracted == "3"


def test_score_response_no_answer_extracted() -> None:
    score = score_response("<think>hm</think><answer> </answer>", "5")
    assert score.extracted is None
    assert (score.accuracy, score.format, score.overall) == (0.0, 1.0, 1.0)


# -- score_batch -----------------------------------------------------------------------


def test_score_batch_keeps_input_order() -> None:
    n = 120
    responses = [good(f"\\boxed{{{i}}}") for i in range(n)]
    golds = [str(i) if i % 3 else str(i + 1) for i in range(n)]  # every third item wrong
    scores = score_batch(responses, golds, timeout_s=5)
    assert [s.extracted for s in scores] == [str(i) for i in range(n)]
    assert [s.accuracy for s in scores] == [0.0 if i % 3 == 0 else 1.0 for i in range(n)]


def test_thousand_simple_items_take_seconds() -> None:
    n = 1000
    responses = [good(rf"\boxed{{{i}}}") if i % 2 else good(rf"\boxed{{\frac{{{i}}}{{4}}}}")
                 for i in range(n)]  # fmt: skip
    golds = [str(i) if i % 2 else str(i / 4) for i in range(n)]
    score_batch(responses[:2], golds[:2])  # pool start-up is not what we time
    start = time.perf_counter()
    scores = score_batch(responses, golds)
    assert time.perf_counter() - start < 20.0
    assert all(s.accuracy == 1.0 for s in scores)


def test_score_batch_inline_matches_workers() -> None:
    responses = [good(r"\boxed{\frac{1}{2}}"), good("B"), good("Yes"), "junk"]
    golds = ["0.5", "B", "No", "1"]
    inline = score_batch(responses, golds, config=RewardConfig(num_workers=0))
    pooled = score_batch(responses, golds, config=RewardConfig(num_workers=2))
    assert inline == pooled
    assert [s.accuracy for s in inline] == [1.0, 1.0, 0.0, 0.0]


def test_score_batch_choices_are_per_item() -> None:
    responses = [good("green"), good("green"), good("C")]
    choices = [["red", "green"], None, ["x", "y", "z"]]
    scores = score_batch(responses, ["B", "B", "C"], choices=choices)
    assert [s.accuracy for s in scores] == [1.0, 0.0, 1.0]


def test_score_batch_validates_lengths() -> None:
    with pytest.raises(ValueError, match="2 responses but 1 golds"):
        score_batch(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="choices"):
        score_batch(["a"], ["a"], choices=[None, None])
    with pytest.raises(ValueError, match="timeout_s"):
        score_batch(["a"], ["a"], timeout_s=0)
    assert score_batch([], []) == []


def test_adversarial_answers_finish_within_deadline_as_wrong() -> None:
    timeout_s = 2.0
    responses = [
        good(r"\boxed{9^{9^{9^{9^{9}}}}}"),
        good(r"\boxed{" + "9" * 100_000 + "}"),
        good("<" * 100_000),
        good(r"\boxed{(10^{6})!}"),
        good(r"\boxed{2}"),
    ]
    golds = ["1", "1", "1", "1", "2"]
    start = time.perf_counter()
    scores = score_batch(responses, golds, timeout_s=timeout_s)
    elapsed = time.perf_counter() - start
    # The power tower alone would run for hours; slack covers a cold worker start on a
    # busy machine.
    assert elapsed < timeout_s + 30.0
    assert [s.accuracy for s in scores] == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_deadline_kills_stuck_worker_and_later_items_still_score() -> None:
    config = RewardConfig(num_workers=2)
    score_batch([good(HALF)], ["0.5"], config=config)  # warm the shared pool
    pool = score_module._POOL
    assert pool is not None
    kills_before, pids_before = pool.kills, set(pool.pids)
    responses = [good(rf"\boxed{{{SLOW_ANSWER}}}")] + [good(f"\\boxed{{{i}}}") for i in range(20)]
    golds = ["1"] + [str(i) for i in range(20)]
    start = time.perf_counter()
    # 0.3 s deadline vs a 1 s math-verify alarm inside the worker: the parent must kill it.
    scores = score_batch(responses, golds, timeout_s=0.3, config=config)
    elapsed = time.perf_counter() - start
    assert scores[0].timed_out is True
    assert scores[0].accuracy == 0.0
    assert scores[0].overall == 1.0  # format still counts
    assert all(s.accuracy == 1.0 and not s.timed_out for s in scores[1:])
    assert pool.kills == kills_before + 1
    assert set(pool.pids) != pids_before  # the stuck worker was replaced
    assert elapsed < 30.0  # loose for a busy machine: the kill itself is asserted above
    # The replacement works on the next call too.
    assert score_batch([good("7")], ["7"], config=config)[0].accuracy == 1.0


def test_pool_is_reused_across_calls() -> None:
    score_batch([good(HALF)], ["0.5"])  # a math item: letters and numbers never reach the pool
    pids = score_module._POOL.pids
    score_batch([good(r"\boxed{\frac{3}{4}}")], ["0.75"])
    assert score_module._POOL.pids == pids
    assert all(pid is not None and pid != os.getpid() for pid in pids)


def test_score_batch_from_threads() -> None:
    results: dict[int, list[float]] = {}

    def run(k: int) -> None:
        scores = score_batch([good(f"\\boxed{{{k}}}"), good("0")], [str(k), "1"])
        results[k] = [s.accuracy for s in scores]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {k: [1.0, 0.0] for k in range(3)}


def test_reward_config_validation() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        RewardConfig(timeout_s=0)
    with pytest.raises(ValueError, match="num_workers"):
        RewardConfig(num_workers=-1)
    with pytest.raises(ValueError, match="extra"):
        RewardConfig(acuracy_weight=1.0)
    assert RewardConfig().repetition_weight == 0.0  # off by default, as in the paper


# -- DeadlinePool ----------------------------------------------------------------------


def test_deadline_pool_timeout_crash_error_and_order() -> None:
    with DeadlinePool(time.sleep, 2) as pool:
        start = time.perf_counter()
        outcomes = pool.map([(0.01,), (30,), (0.01,), (30,), (0.02,)], timeout_s=0.5)
        assert time.perf_counter() - start < 3.0
        assert [o.status for o in outcomes] == ["ok", "timeout", "ok", "timeout", "ok"]
        assert pool.kills == 2
        assert [o.status for o in pool.map([(0.0,)] * 4, timeout_s=5)] == ["ok"] * 4
    with DeadlinePool(os._exit, 1) as pool:
        assert [o.status for o in pool.map([(3,), (4,)], timeout_s=5)] == ["crashed", "crashed"]
    with DeadlinePool(int, 1) as pool:
        outcomes = pool.map([("12",), ("x",), ("7",)], timeout_s=5)
        assert [(o.status, o.value) for o in outcomes] == [("ok", 12), ("error", None), ("ok", 7)]
        assert "ValueError" in outcomes[1].error


def test_deadline_pool_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_workers"):
        DeadlinePool(time.sleep, 0)
    pool = DeadlinePool(time.sleep, 1)
    with pytest.raises(ValueError, match="timeout_s"):
        pool.map([(0,)], timeout_s=0)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.map([(0,)], timeout_s=1)
