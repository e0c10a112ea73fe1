"""SFT throughput and peak memory: tiny Qwen2.5-VL (image items) vs a text-only tiny Qwen2.

    .venv/bin/python bench/bench_sft.py                      # both, 30 steps of 16 samples
    .venv/bin/python bench/bench_sft.py --steps 50 --micro 32 --threads 2
    .venv/bin/python bench/bench_sft.py --mode vlm           # one model only
    .venv/bin/python bench/bench_sft.py --scale 200000       # 2 steps on 200k text-only rows
    .venv/bin/python bench/bench_sft.py --scale 200000 1600000 --workers 1

``--scale N ...`` measures what the dataset size costs: it writes N text-only
rows in the MMR1-SFT layout (:func:`write_text_rows`, with pyarrow, in row
groups of 256 like ``mmr1.data.io``) and, in a fresh process per size
(:func:`measure_sft_steps`, callable from other benchmarks), runs the recipe
on the tiny VLM for 2 steps of the paper's effective batch (micro 1 x accum 32,
eval split 1%). Reported: wall time of the child (start to finish: imports,
model load, data setup, 2 steps, held-out loss over the 1% split, final save),
the time until step 2 ended, and peak RSS of the child and of its DataLoader
workers.

Each model trains in its own child process (so peak RSS is its own) through
the real recipe (``mmr1.sft.recipe.SFTRecipe``: collation, forward, assistant-only
loss, backward, AdamW) on synthetic SFT records: with one 56 px image each
(4 image tokens) for the VLM, the same conversations without the image for the
text-only model (a ``Qwen2ForCausalLM`` of the same text size and tokenizer).
Reported: non-padding tokens per second and optimiser steps per second over
the training loop only (setup, evaluation and saving excluded), and peak
memory: ``ru_maxrss`` of the child, plus the CUDA allocator peak on a GPU (the
CPU allocator keeps no peak statistic).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mmr1.data.io import write_sft_dataset  # noqa: E402
from mmr1.data.synthetic import generate_items, to_sft_record  # noqa: E402
from mmr1.models import build_tiny_model  # noqa: E402
from mmr1.models.tokenizer import EOS_TOKEN, PAD_TOKEN, load_tokenizer  # noqa: E402
from mmr1.sft.recipe import SFTRecipe  # noqa: E402
from schemas.models import TinyVLMConfig  # noqa: E402
from schemas.records import ChatTurn, SFTRecord  # noqa: E402
from schemas.sft import SFTConfig  # noqa: E402
from schemas.synthetic import SyntheticConfig  # noqa: E402


def build_text_model(out_dir: Path) -> Path:
    """A Qwen2ForCausalLM with the tiny VLM's text sizes and the same tokenizer + template."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    vlm = TinyVLMConfig()
    tokenizer = load_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=vlm.hidden_size,
        intermediate_size=vlm.intermediate_size,
        num_hidden_layers=vlm.num_hidden_layers,
        num_attention_heads=vlm.num_attention_heads,
        num_key_value_heads=vlm.num_key_value_heads,
        max_position_embeddings=vlm.max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        bos_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(vlm.seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def records(n: int, with_images: bool) -> list[SFTRecord]:
    out = []
    for item in generate_items(SyntheticConfig(n_items=n, families=["shape_color"])):
        record = to_sft_record(item)
        if not with_images:
            turns = [
                ChatTurn.model_validate(
                    {"from": t.from_, "value": t.value.replace("<image>", "(picture)")}
                )
                for t in record.conversations
            ]
            record = record.model_copy(update={"conversations": turns, "images": []})
        out.append(record)
    return out


def run_child(mode: str, args: argparse.Namespace) -> dict:
    """Train ``args.steps`` steps of one model; returns the measurements."""
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if mode == "vlm":
            model = build_tiny_model(TinyVLMConfig(), root / "model")
        else:
            model = build_text_model(root / "model")
        data = root / "data"
        write_sft_dataset(records(args.records, with_images=mode == "vlm"), data)
        config = SFTConfig(
            lr=1e-3,
            micro_batch_size=args.micro,
            grad_accum=1,
            max_steps=args.steps,
            eval_fraction=0.0,
            save_every=10**6,
            log_every=10**6,
            warmup_ratio=0.0,
            torch_threads=args.threads or None,
        )
        recipe = SFTRecipe(config, model, data, root / "run")
        recipe.setup(resume=False)
        start = time.perf_counter()
        result = recipe.train()
        wall = time.perf_counter() - start
        drawn = [recipe.data.train[i] for i in range(min(64, len(recipe.data.train)))]
        lengths = [d.num_tokens for d in drawn]
    measured = {
        "mode": mode,
        "params": sum(p.numel() for p in recipe.policy.model.parameters()),
        "steps": result.steps,
        "samples_per_step": args.micro,
        "mean_tokens_per_sample": sum(lengths) / len(lengths),
        "tokens_per_s": result.tokens_per_s,
        "steps_per_s_loop": result.steps / max(wall, 1e-9),
        "final_loss": result.history[-1]["loss"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if torch.cuda.is_available():
        measured["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return measured


# ----------------------------------------------------------------------------- scale


def write_text_rows(out_dir: Path, n_rows: int, *, seed: int = 0, chunk: int = 65_536) -> Path:
    """``n_rows`` text-only SFT rows (``mmr1.data.io.SFT_SCHEMA``) in ``out_dir/data.parquet``.

    Human turn: a training prompt; gpt turn: ``<think>`` + about 2,500 characters
    drawn from a pool of 2,048 reasoning texts (teacher traces of the synthetic
    families, so the tiny tokenizer splits them as it was trained to) +
    ``<answer>``. Written ``chunk`` rows at a time, so memory stays bounded.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmr1.data.io import HF_METADATA, PARQUET_OPTIONS, SFT_SCHEMA, TURN_TYPE
    from mmr1.data.synthetic import text_corpus

    corpus = text_corpus(600, seed=seed)
    prompts = [p.replace("<image>", "the picture") for p in corpus[0::3]]
    traces = corpus[2::3]
    rng = np.random.default_rng(seed)
    pool = [" ".join(traces[k] for k in rng.integers(0, len(traces), 10)) for _ in range(2048)]
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = SFT_SCHEMA.with_metadata(HF_METADATA)
    options = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
    with pq.ParquetWriter(out_dir / "data.parquet", schema, **options) as writer:
        for start in range(0, n_rows, chunk):
            rows = range(start, min(start + chunk, n_rows))
            n = len(rows)
            picks = rng.integers(0, len(pool), n)
            human = [f"Problem {i}. {prompts[i % len(prompts)]}" for i in rows]
            gpt = [
                f"<think>{pool[k]}</think><answer>\\boxed{{{i % 97}}}</answer>"
                for i, k in zip(rows, picks.tolist(), strict=True)
            ]
            turns = pa.StructArray.from_arrays(
                [
                    pa.array(["human", "gpt"] * n),
                    pa.array([t for pair in zip(human, gpt, strict=True) for t in pair]),
                ],
                fields=list(TURN_TYPE),
            )
            offsets = pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32))
            table = pa.Table.from_arrays(
                [
                    pa.array([f"scale-{i}" for i in rows]),
                    pa.ListArray.from_arrays(offsets, turns),
                    pa.array([[] for _ in rows], type=SFT_SCHEMA.field("images").type),
                    pa.array([str(i % 97) for i in rows]),
                    pa.array(["free_form"] * n),
                    pa.array(["bench-scale"] * n),
                ],
                schema=schema,
            )
            writer.write_table(table, row_group_size=PARQUET_OPTIONS["row_group_size"])
    return out_dir


def scale_child(args: argparse.Namespace) -> dict:
    """In a fresh process: the recipe for ``args.steps`` steps on ``args.data``.

    Times are counted from ``args.launched`` (the parent's ``time.time()`` just
    before it started this process: start-up and imports included).
    """
    started = args.launched or time.time()
    torch.set_num_threads(args.threads)
    config = SFTConfig(
        lr=1e-5,
        micro_batch_size=1,
        grad_accum=32,
        max_steps=args.steps,
        cutoff_len=2048,  # the tiny model's positions
        eval_fraction=args.eval_fraction,
        eval_max_items=0,
        save_every=10**6,
        log_every=1,
        torch_threads=args.threads,
        num_workers=args.workers,
    )
    marks: dict[str, float] = {}

    def mark(metrics: dict[str, float], step: int) -> None:
        if "loss" in metrics:
            marks[f"step_{step}_s"] = time.time() - started

    recipe = SFTRecipe(config, args.model, args.data, args.out, metrics_callback=mark)
    recipe.setup(resume=False)
    marks["setup_s"] = time.time() - started
    result = recipe.train()
    return {
        "rows": recipe.data.rows.num_rows,
        "train_samples": result.train_samples,
        "steps": result.steps,
        "loss": result.history[-1]["loss"],
        **marks,
        "child_s": time.time() - started,
        "cpu_s": sum(
            usage.ru_utime + usage.ru_stime
            for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        ),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # Forked processes (DataLoader workers; also helpers some imports fork) start
        # with the parent's pages shared copy-on-write, which their RSS counts again.
        "children_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def measure_sft_steps(
    data_dir: Path,
    model_dir: Path,
    *,
    steps: int = 2,
    threads: int = 2,
    workers: int = 0,
    eval_fraction: float = 0.01,
) -> dict:
    """Time and peak RSS of a fresh process running ``steps`` SFT steps on ``data_dir``.

    Returns the child's report: ``setup_s`` (model and data ready), ``step_<k>_s``
    (step k done) and ``child_s`` (finished: final held-out loss and save
    included), all counted from the launch, so interpreter start-up and imports
    are in; ``cpu_s``; ``peak_rss_mib``; ``children_peak_rss_mib``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, __file__, "--scale-child", "--data", str(data_dir)]
        command += ["--model", str(model_dir), "--out", str(Path(tmp) / "run")]
        command += ["--steps", str(steps), "--threads", str(threads), "--workers", str(workers)]
        command += ["--eval-fraction", str(eval_fraction), "--launched", repr(time.time())]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"SFT scale child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_scale(args: argparse.Namespace) -> None:
    root = Path(args.work or tempfile.mkdtemp(prefix="bench-sft-scale-"))
    model = root / "model"
    if not (model / "config.json").is_file():
        build_tiny_model(TinyVLMConfig(), model)
    for n in args.scale:
        data = root / f"rows-{n}"
        if not (data / "data.parquet").is_file():
            start = time.perf_counter()
            write_text_rows(data, n)
            size = (data / "data.parquet").stat().st_size / 2**20
            print(f"wrote {n} rows ({size:.0f} MiB) in {time.perf_counter() - start:.0f} s")
        m = measure_sft_steps(
            data,
            model,
            steps=args.steps,
            threads=args.threads,
            workers=args.workers,
            eval_fraction=args.eval_fraction,
        )
        step_key = f"step_{args.steps}_s"
        print(
            f"{n:>9} rows: {m['steps']} steps x 32 samples: step {args.steps} done "
            f"{m[step_key]:.1f} s after launch (ready to train at {m['setup_s']:.1f} s), "
            f"finished at {m['child_s']:.1f} s (final held-out loss, save), "
            f"{m['cpu_s']:.0f} CPU s; peak RSS "
            f"{m['peak_rss_mib']:.0f} MiB (largest forked child: "
            f"{m['children_peak_rss_mib']:.0f} MiB)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["both", "vlm", "text"], default="both")
    parser.add_argument("--steps", type=int, default=None, help="30 (2 with --scale)")
    parser.add_argument("--micro", type=int, default=16, help="samples per step (accum 1)")
    parser.add_argument("--records", type=int, default=256)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (0: torch's default). 1 by default (2 with --scale): a model this "
        "small gains little from a second thread, and two threads collapse (~20x slower) when "
        "another process holds one of two cores",
    )
    parser.add_argument("--json", action="store_true", help="child mode: print one JSON line")
    parser.add_argument("--scale", type=int, nargs="+", default=None, help="rows per dataset")
    parser.add_argument("--workers", type=int, default=0, help="--scale: DataLoader workers")
    parser.add_argument("--eval-fraction", type=float, default=0.01, help="--scale: held out")
    parser.add_argument("--work", default=None, help="--scale: keep model and data here")
    parser.add_argument("--scale-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    scale = bool(args.scale or args.scale_child)
    args.steps = args.steps if args.steps is not None else (2 if scale else 30)
    args.threads = args.threads if args.threads is not None else (2 if scale else 1)

    if args.scale_child:
        print(json.dumps(scale_child(args)))
        return
    if args.scale:
        run_scale(args)
        return
    if args.json:
        print(json.dumps(run_child(args.mode, args)))
        return
    modes = ["vlm", "text"] if args.mode == "both" else [args.mode]
    for mode in modes:
        command = [sys.executable, __file__, "--json", "--mode", mode]
        command += ["--steps", str(args.steps), "--micro", str(args.micro)]
        command += ["--records", str(args.records)]
        command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{mode} benchmark failed:\n{done.stderr[-3000:]}")
        m = json.loads(done.stdout.strip().splitlines()[-1])
        cuda = f", CUDA peak {m['cuda_peak_mib']:.0f} MiB" if "cuda_peak_mib" in m else ""
        print(
            f"{m['mode']:>4}: {m['params'] / 1e6:.2f}M params, {m['steps']} steps x "
            f"{m['samples_per_step']} samples (~{m['mean_tokens_per_sample']:.0f} tokens each): "
            f"{m['tokens_per_s']:.0f} tok/s, {m['steps_per_s_loop']:.2f} steps/s, "
            f"final loss {m['final_loss']:.3f}, peak RSS {m['peak_rss_mib']:.0f} MiB{cuda}"
        )


if __name__ == "__main__":
    main()
