"""SFT throughput and peak memory: tiny Qwen2.5-VL (image items) vs a text-only tiny Qwen2.

    .venv/bin/python bench/bench_sft.py                      # both, 30 steps of 16 samples
    .venv/bin/python bench/bench_sft.py --steps 50 --micro 32 --threads 2
    .venv/bin/python bench/bench_sft.py --mode vlm           # one model only

Each model trains in its own child process (so peak RSS is its own) through
the real recipe (``mmr1.train.SFTRecipe``: collation, forward, assistant-only
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
from mmr1.train.sft import SFTRecipe  # noqa: E402
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
        lengths = recipe.train_data.lengths
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["both", "vlm", "text"], default="both")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--micro", type=int, default=16, help="samples per step (accum 1)")
    parser.add_argument("--records", type=int, default=256)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch's default). 1 by default: a model this small gains "
        "little from a second thread, and two threads collapse (~20x slower) when another "
        "process holds one of two cores",
    )
    parser.add_argument("--json", action="store_true", help="child mode: print one JSON line")
    args = parser.parse_args(argv)

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
