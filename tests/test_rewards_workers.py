"""score_batch works from any kind of caller, on a busy machine, and without workers.

Each caller runs in a fresh interpreter (a subprocess), as a user would: a script
file without an ``if __name__ == "__main__":`` guard, ``python -c``, a script fed
on stdin, and code exec'd in a notebook-like ``__main__`` that has no ``__file__``.
Each scores 200 ordinary items, a power tower and an answer only a deadline stops.
No timing asserts: time limits here are generous ceilings against hangs, and the
deadline is checked through the ``timed_out`` flag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mmr1.rewards.inprocess import run_bounded
from mmr1.rewards.pool import DeadlinePool, WorkerStartError

ROOT = Path(__file__).resolve().parents[1]
RUN_LIMIT_S = 600  # ceiling against a hang, not a speed check

# The caller's code. No main guard, on purpose. Prints one JSON line.
CALLER = textwrap.dedent(
    r"""
    import json
    from mmr1.rewards import RewardConfig, score_batch

    def item(i):
        kind = i % 5
        if kind == 0:
            return rf"\boxed{{\frac{{{i}}}{{4}}}}", str(i / 4)
        if kind == 1:
            return rf"\boxed{{{i}}}", str(i + i % 2)
        if kind == 2:
            return "(B)", "B" if i % 3 else "C"
        if kind == 3:
            return "Yes", "yes" if i % 2 else "No"
        return rf"\boxed{{[0, {i})}}", f"[0,{i})" if i % 4 == 0 else f"(0,{i}]"

    pairs = [item(i) for i in range(200)]
    responses = [f"<think>t</think><answer>{a}</answer>" for a, _ in pairs]
    scores = score_batch(responses, [g for _, g in pairs])
    hard = [r"\boxed{9^{9^{9^{9^{9}}}}}", r"\boxed{(a+b+c+d+e)^{24}}", r"\boxed{\frac{6}{8}}"]
    hard = score_batch(
        [f"<answer>{answer}</answer>" for answer in hard],
        ["1", "1", "0.75"],
        config=RewardConfig(timeout_s=3.0),
    )
    print(json.dumps({
        "accuracy": [s.accuracy for s in scores],
        "timed_out": [s.timed_out for s in scores],
        "hard": [[s.accuracy, s.timed_out] for s in hard],
    }))
    """
)


def expected_accuracy() -> list[float]:
    """What CALLER's 200 items must score (same rules as its ``item``)."""
    out = []
    for i in range(200):
        kind = i % 5
        right = {0: True, 1: i % 2 == 0, 2: i % 3 != 0, 3: i % 2 == 1, 4: i % 4 == 0}[kind]
        out.append(1.0 if right else 0.0)
    return out


def run_caller(
    args: list[str], tmp_path: Path, *, stdin: str | None = None, env: dict | None = None
) -> tuple[dict, str]:
    """Run a fresh interpreter in ``tmp_path``; (its JSON result, its stderr)."""
    proc = subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        timeout=RUN_LIMIT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def assert_scored(result: dict) -> None:
    assert result["accuracy"] == expected_accuracy()
    assert not any(result["timed_out"])
    tower, slow, fraction = result["hard"]
    assert tower == [0.0, False]  # refused by a guard, not by the deadline
    assert slow == [0.0, True]  # a minute or more of SymPy: stopped at the 3 s deadline
    assert fraction == [1.0, False]


def fake_main_command() -> list[str]:
    """A notebook-like run: code exec'd in a ``__main__`` module without ``__file__``."""
    launcher = (
        "import sys, types\n"
        "main = types.ModuleType('__main__')\n"
        "sys.modules['__main__'] = main\n"
        "exec(compile(sys.stdin.read(), '<cell>', 'exec'), main.__dict__)\n"
    )
    return ["-c", launcher]


# -- callers ---------------------------------------------------------------------------


def test_script_file_without_main_guard(tmp_path: Path) -> None:
    script = tmp_path / "score_it.py"
    script.write_text(CALLER)
    result, _ = run_caller([str(script)], tmp_path)
    assert_scored(result)


def test_python_dash_c(tmp_path: Path) -> None:
    result, _ = run_caller(["-c", CALLER], tmp_path)
    assert_scored(result)


def test_script_on_stdin(tmp_path: Path) -> None:
    result, _ = run_caller(["-"], tmp_path, stdin=CALLER)
    assert_scored(result)


def test_notebook_like_main_without_file(tmp_path: Path) -> None:
    result, _ = run_caller(fake_main_command(), tmp_path, stdin=CALLER)
    assert_scored(result)


def test_busy_machine(tmp_path: Path) -> None:
    """CPU hogs on every core while workers start and verify: results stay right."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(max(2, os.cpu_count() or 2))
    ]
    try:
        script = tmp_path / "score_it.py"
        script.write_text(CALLER)
        result, _ = run_caller([str(script)], tmp_path)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert_scored(result)


# -- fallback: no workers --------------------------------------------------------------


def test_fallback_when_workers_cannot_launch(tmp_path: Path) -> None:
    """An interpreter that does not exist: verify in-process, warn once, keep deadlines."""
    script = tmp_path / "score_it.py"
    script.write_text(CALLER)
    env = {"MMR1_VERIFIER_PYTHON": str(tmp_path / "no-such-python")}
    result, stderr = run_caller([str(script)], tmp_path, env=env)
    assert_scored(result)  # incl. the slow answer flagged timed_out by the in-process deadline
    assert stderr.count("answer verification falls back to this process") == 1
    assert "cannot launch a verification worker" in stderr


def test_fallback_when_workers_never_get_ready(tmp_path: Path) -> None:
    """Workers that launch but never report ready (a stand-in for a very loaded machine)."""
    stuck = tmp_path / "stuck-python"
    stuck.write_text("#!/bin/sh\nexec sleep 600\n")
    stuck.chmod(0o755)
    code = (
        "import mmr1.rewards.pool as pool\n"
        "pool.WORKER_START_TIMEOUT_S = 1.0\n" + CALLER  # not 30 s: the test need not wait that long
    )
    env = {"MMR1_VERIFIER_PYTHON": str(stuck)}
    result, stderr = run_caller(["-c", code], tmp_path, env=env)
    assert_scored(result)
    assert stderr.count("answer verification falls back to this process") == 1
    assert "no verification worker was ready within 1 s" in stderr


def test_inline_config_keeps_the_deadline_in_a_thread() -> None:
    """num_workers=0 from a non-main thread: the deadline holds without signals."""
    from mmr1.rewards import RewardConfig, score_batch

    results: list = []
    responses = [
        r"<answer>\boxed{(a+b+c+d+e)^{24}}</answer>",
        r"<answer>\boxed{\frac{1}{2}}</answer>",
    ]

    def run() -> None:
        config = RewardConfig(num_workers=0, timeout_s=3.0)
        results.extend(score_batch(responses, ["1", "0.5"], config=config))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=RUN_LIMIT_S)
    assert [(s.accuracy, s.timed_out) for s in results] == [(0.0, True), (1.0, False)]


def spin(seconds: float) -> float:
    """Pure-Python busy work (interruptible at any bytecode)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds


def test_run_bounded_stops_the_abandoned_task() -> None:
    before = {t.ident for t in threading.enumerate()}
    outcomes = run_bounded(spin, [(0.0,), (600.0,), (0.01,), ("x",)], timeout_s=2.0)
    assert [o.status for o in outcomes] == ["ok", "timeout", "ok", "error"]
    assert outcomes[2].value == 0.01
    assert "TypeError" in outcomes[3].error
    # The helper that held the 600 s task was interrupted, not left spinning.
    leftover = [t for t in threading.enumerate() if t.ident not in before]
    for thread in leftover:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in leftover)


# -- the pool itself -------------------------------------------------------------------


def test_pool_reports_workers_that_die_while_starting() -> None:
    with DeadlinePool(abs, 2, preload=("no_such_module_for_mmr1_tests",)) as pool:
        with pytest.raises(WorkerStartError, match="died while starting") as caught:
            pool.map([(-1,), (-2,)], timeout_s=5)
    assert caught.value.permanent is True
    assert caught.value.outcomes == [None, None]


def test_pool_start_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stuck = tmp_path / "stuck-python"
    stuck.write_text("#!/bin/sh\nexec sleep 600\n")
    stuck.chmod(0o755)
    monkeypatch.setenv("MMR1_VERIFIER_PYTHON", str(stuck))
    with DeadlinePool(abs, 1, start_timeout_s=0.5) as pool:
        with pytest.raises(WorkerStartError, match="ready within") as caught:
            pool.map([(-1,)], timeout_s=5)
        assert caught.value.permanent is False
        pids = pool.pids
    for pid in pids:  # close() killed the stuck "workers"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_pool_print_in_task_does_not_corrupt_results() -> None:
    with DeadlinePool(print, 1) as pool:
        outcomes = pool.map([("noise on stdout",), ("more",)], timeout_s=30)
    assert [(o.status, o.value) for o in outcomes] == [("ok", None), ("ok", None)]


def test_pool_batches_and_requeues_behind_a_stuck_task() -> None:
    """A stuck task in the middle of a batch: the tasks behind it still run, in order."""
    args = [(0.0,)] * 30 + [(600.0,)] + [(0.0,)] * 30
    with DeadlinePool(spin, 1) as pool:
        outcomes = pool.map(args, timeout_s=3.0)
        assert pool.kills == 1
    statuses = [o.status for o in outcomes]
    assert statuses == ["ok"] * 30 + ["timeout"] + ["ok"] * 30
