"""Curation and SFT at MMR1-SFT scale on CPU: wall time and peak memory of each phase.

    .venv/bin/python bench/bench_scale.py                  # 200,000 rows
    .venv/bin/python bench/bench_scale.py --rows 1600000   # the size of MMR1-SFT

Phases, each in a fresh process under a small wrapper that reports its peak
memory:

1. ``data``: writes ``--rows`` text-only rows in the MMR1-SFT layout
   (``conversations`` = one human turn, one gpt turn ``<think>...</think>
   <answer>... \\boxed{X}</answer>``; ``images`` empty; no answer column, so the
   answer is the CoT's), registers a small benchmark (``--benchmark-rows``
   text questions, kind ``benchmark``) and a tiny Qwen2.5-VL base model
   (``mmr1.models.build_tiny_model`` + ``register_model``). Injected, known:
   ~3% exact duplicates, ~2% near duplicates (one word of the question
   changed), ~1% rows asking a benchmark question, ~2% CoTs without the
   ``<think>`` format, ~0.5% gpt turns with no final answer.
2. ``curate``: ``mmr1 curate sft --config <yaml>`` (the real command path):
   teacher ``existing``, difficulty off, decontamination against that benchmark.
3. ``sft``: ``mmr1 sft`` on the curated dataset from the registered base with
   ``--set train.max_steps=2`` (no eval split, no intermediate saves).

Reported per phase: wall time, peak RSS (``ru_maxrss`` of the phase's process
tree: the largest single process, which is the pipeline's own process; the
Prefect temporary server runs beside it) and the peak of the summed RSS of the
tree (psutil, polled every 0.2 s), plus ``uptime``'s load average before and
after, because the machine may be shared. Targets (2 CPU cores, 200k rows):
curation < 15 min and < 6 GiB; SFT < 4 min and < 3 GiB; at 1.6M rows memory at
most ~2x the 200k figure.

Everything lives under ``--work`` (default: a directory under /tmp, removed
unless ``--keep``), with its own ``MMR1_HOME``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3


# ------------------------------------------------------------------------------ data


def _words(rng: Any, vocabulary: list[str], counts: Any) -> list[str]:
    """Texts of ``counts[i]`` words drawn Zipf-like from ``vocabulary``."""
    import numpy as np

    total = int(counts.sum())
    ids = (rng.random(total) ** 2.5 * len(vocabulary)).astype(np.int64)
    words = np.asarray(vocabulary, dtype=object)[ids]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [" ".join(words[bounds[i] : bounds[i + 1]]) for i in range(len(counts))]


def _vocabulary(rng: Any, size: int = 30_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    lengths = rng.integers(2, 10, size)
    picks = rng.integers(0, 26, (size, 10))
    words = {"".join(letters[c] for c in picks[i, : lengths[i]]) + str(i % 7) for i in range(size)}
    return sorted(words)


#: Injected kinds of rows and their shares.
KINDS = {"exact": 0.03, "near": 0.02, "contaminated": 0.01, "bad_format": 0.02, "no_answer": 0.005}
_CHUNK = 50_000  # rows generated and written at a time


def _kinds(rng: Any, n: int) -> list[str | None]:
    """The injected kind of each of ``n`` rows (None: an ordinary row)."""
    import numpy as np

    edges = np.cumsum(list(KINDS.values()))
    picks = np.searchsorted(edges, rng.random(n), side="right")
    names = list(KINDS)
    return [names[k] if k < len(names) else None for k in picks]


def _gpt(kind: str | None, thought: str, answer: str) -> str:
    if kind == "bad_format":
        return f"{thought} So the answer is \\boxed{{{answer}}}."
    if kind == "no_answer":
        return f"<think>{thought}</think>"
    return f"<think>{thought}</think><answer>The answer is \\boxed{{{answer}}}.</answer>"


def _chunk_rows(
    rng: Any, vocabulary: list[str], start: int, n: int, bench: list[str], state: dict[str, Any]
) -> list[list[dict[str, str]]]:
    """Conversations of rows ``start .. start + n``; copies come from ``state["recent"]``."""
    questions = _words(rng, vocabulary, rng.integers(30, 80, n))
    thoughts = _words(rng, vocabulary, rng.integers(120, 260, n))
    answers = rng.integers(0, 1000, n)
    recent: list[tuple[str, str]] = state["recent"]
    conversations = []
    for i, kind in enumerate(_kinds(rng, n)):
        question, answer = f"Question {start + i}: {questions[i]}", str(answers[i])
        if kind in ("exact", "near") and not recent:
            kind = None
        if kind in ("exact", "near"):
            question, answer = recent[int(rng.integers(len(recent)))]
            if kind == "near":  # one word changed (not the "Question N:" prefix)
                words = question.split(" ")
                words[2 + int(rng.integers(len(words) - 2))] = vocabulary[
                    int(rng.integers(len(vocabulary)))
                ]
                question = " ".join(words)
        elif kind == "contaminated":
            question = bench[int(rng.integers(len(bench)))]
        if kind is None:
            recent.append((question, answer))
        else:
            state["injected"][kind] += 1
        gpt = _gpt(kind, thoughts[i], answer)
        conversations.append([{"from": "human", "value": question}, {"from": "gpt", "value": gpt}])
    state["recent"] = recent[-2_000:]
    return conversations


def write_data(out: Path, rows: int, benchmark_rows: int, seed: int) -> dict[str, int]:
    """The MMR1-SFT-layout parquet and the benchmark's RL parquet; returns the injected counts."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmr1.data.io import write_rl_dataset
    from schemas.records import RLRecord

    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary(rng)
    lengths = rng.integers(20, 40, benchmark_rows)
    bench = [f"Benchmark item {i}: {t}" for i, t in enumerate(_words(rng, vocabulary, lengths))]
    records = (RLRecord(id=f"b{i}", problem=q, answer=str(i % 10)) for i, q in enumerate(bench))
    write_rl_dataset(records, out / "benchmark")
    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("conversations", pa.list_(turn)), ("images", pa.list_(image))])
    state: dict[str, Any] = {"recent": [], "injected": dict.fromkeys(KINDS, 0)}
    with pq.ParquetWriter(out / "mmr1-sft.parquet", schema, compression="zstd") as writer:
        for start in range(0, rows, _CHUNK):
            n = min(_CHUNK, rows - start)
            conversations = _chunk_rows(rng, vocabulary, start, n, bench, state)
            table = pa.table({"conversations": conversations, "images": [[]] * n}, schema=schema)
            writer.write_table(table, row_group_size=10_000)
    return state["injected"]


def phase_data(args: argparse.Namespace) -> None:
    """Write the data, register the benchmark and the base model; print their refs as JSON."""
    from mmr1.catalog import Catalog
    from mmr1.hashing import hash_directory
    from mmr1.models import build_tiny_model
    from mmr1.models.registry import register_model
    from schemas.home import HomeConfig
    from schemas.models import TinyVLMConfig

    work = Path(args.work)
    injected = write_data(work, args.rows, args.benchmark_rows, args.seed)
    home = HomeConfig().ensure()
    catalog = Catalog(home.catalog)
    bench = catalog.register_dataset(
        name="scale-bench",
        kind="benchmark",
        uri=str(work / "benchmark"),
        content_hash=hash_directory(work / "benchmark"),
        row_count=args.benchmark_rows,
        columns={"problem": "string", "answer": "string"},
    )
    model_dir = build_tiny_model(TinyVLMConfig(), work / "tiny-base")
    model = register_model(catalog, str(model_dir), name="tiny-base")
    refs = {"benchmark": f"dataset:{bench.ref}", "base_model": model.ref, "injected": injected}
    (work / "refs.json").write_text(json.dumps(refs))


# ------------------------------------------------------------------------- measuring


def _high_water(pid: int) -> int:
    """VmHWM (peak RSS) of a live process in bytes, 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(command: list[str]) -> None:
    """Run ``command``; print its wall time and peak memory as one JSON line (wrapper mode)."""
    import psutil

    began = time.perf_counter()
    child = subprocess.Popen(command)
    peak_sum = 0
    peak_single = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak_sum, peak_single
        try:
            root = psutil.Process(child.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                total = 0
                for proc in tree:
                    try:
                        total += proc.memory_info().rss
                        peak_single = max(peak_single, _high_water(proc.pid))
                    except psutil.NoSuchProcess:
                        pass
                peak_sum = max(peak_sum, total)
            except psutil.NoSuchProcess:
                return
            done.wait(0.2)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    code = child.wait()
    wall = time.perf_counter() - began
    done.set()
    watcher.join()
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    result = {
        "code": code,
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(max(maxrss, peak_single) / GIB, 3),
        "peak_tree_sum_gib": round(peak_sum / GIB, 3),
    }
    print("MEASURE " + json.dumps(result), flush=True)


def _run_phase(name: str, command: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    load_before = os.getloadavg()
    wrapper = [sys.executable, str(Path(__file__).resolve()), "--measure", "--", *command]
    with log.open("w") as handle:
        done = subprocess.run(
            wrapper, env=env, stdout=subprocess.PIPE, stderr=handle, text=True, check=False
        )
    with log.open("a") as handle:
        handle.write(done.stdout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("MEASURE ")]
    if not lines:
        raise RuntimeError(f"phase {name}: no measurement (see {log})")
    result = json.loads(lines[-1].removeprefix("MEASURE "))
    result["load_before"] = [round(x, 2) for x in load_before]
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if result["code"] != 0:
        raise RuntimeError(f"phase {name} failed with exit code {result['code']}: see {log}")
    result["stdout"] = done.stdout
    return result


def _curate_config(work: Path, refs: dict[str, Any], args: argparse.Namespace) -> Path:
    config = {
        "output_name": "scale-sft",
        "sources": [{"kind": "local", "name": "mmr1-sft", "path": str(work / "mmr1-sft.parquet")}],
        "difficulty": {"enabled": False},
        "decontamination": {"enabled": True, "benchmarks": [refs["benchmark"]]},
        "cot": {"teacher": {"kind": "existing"}, "shard_size": args.shard_size},
        "batch_rows": args.batch_rows,
    }
    path = work / "curate-sft.yaml"  # JSON is YAML
    path.write_text(json.dumps(config, indent=2))
    return path


def _written_ref(stdout: str) -> str:
    """The ``wrote dataset:...`` ref a command printed."""
    for line in stdout.splitlines():
        if line.startswith("wrote "):
            return line.split()[1]
    raise RuntimeError("the curate command printed no 'wrote <ref>' line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--benchmark-rows", type=int, default=500)
    parser.add_argument("--batch-rows", type=int, default=2048, help="curation batch_rows")
    parser.add_argument("--shard-size", type=int, default=4096, help="cot.shard_size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="working directory (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--phases", default="data,curate,sft", help="comma-separated subset")
    parser.add_argument("--sft-set", action="append", default=[], help="extra mmr1 sft --set")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.command)
        return
    if args.phase == "data":
        phase_data(args)
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="mmr1-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    env = dict(os.environ, MMR1_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    mmr1 = [sys.executable, "-m", "cli"]
    phases = args.phases.split(",")
    results: dict[str, dict[str, Any]] = {}
    print(f"bench_scale: {args.rows:,} rows, work dir {work}", flush=True)
    try:
        if "data" in phases:
            command = [sys.executable, str(Path(__file__).resolve()), "--phase", "data"]
            command += ["--rows", str(args.rows), "--benchmark-rows", str(args.benchmark_rows)]
            command += ["--seed", str(args.seed), "--work", str(work)]
            results["data"] = _run_phase("data", command, env, work / "data.log")
        refs = json.loads((work / "refs.json").read_text())
        if "curate" in phases:
            config = _curate_config(work, refs, args)
            command = [*mmr1, "curate", "sft", "--config", str(config)]
            results["curate"] = _run_phase("curate", command, env, work / "curate.log")
        if "sft" in phases:
            curate_log = (work / "curate.log").read_text()
            dataset = _written_ref(curate_log)
            settings = [
                f"dataset={dataset}",
                f"base_model={refs['base_model']}",
                "output_name=scale-tiny-sft",
                "train.max_steps=2",
                "train.eval_fraction=0",
                "train.save_every=1000000",
                *args.sft_set,
            ]
            command = [*mmr1, "sft", *(part for s in settings for part in ("--set", s))]
            results["sft"] = _run_phase("sft", command, env, work / "sft.log")
    finally:
        for result in results.values():
            result.pop("stdout", None)
        print(json.dumps({"rows": args.rows, "phases": results}, indent=2))
        for name, r in results.items():
            print(
                f"{name:7s} wall {r['wall_s']:8.1f} s  peak RSS {r['peak_rss_gib']:6.3f} GiB  "
                f"tree sum {r['peak_tree_sum_gib']:6.3f} GiB  load {r['load_before']} -> "
                f"{r['load_after']}"
            )
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
