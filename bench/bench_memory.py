"""Peak memory of GRPO's response log-probs (+ entropy) at paper lengths: chunked vs full logits.

    .venv/bin/python bench/bench_memory.py                  # ~5-10 min on 2 cores, 1 thread
    .venv/bin/python bench/bench_memory.py --chunk 256 --response 2048

The micro-batch of issue 13: B = 4 rows, R = 4,096 response tokens (T = R + 1 =
4,097 positions turned into logits), V = 151,936 (Qwen2.5's vocabulary), after a
64-token prompt, on a Qwen2 text model with hidden size 64 and 2 layers (so the
vocabulary projection dominates, as it does for the logits at 7B). Every row is
a real response (no padding): the worst case.

Variants, each in a **fresh subprocess** whose peak resident set is read from
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (allocator-independent: it sees
every page the process touched, torch's CPU allocations included):

- ``baseline``: imports, model and batch, nothing computed;
- ``forward``: the model up to its final hidden states (what every variant pays);
- ``chunked``: :func:`mmr1.rl.batch.response_logprobs` with ``chunk_size``
  positions at a time, log-probs + entropy, no gradient (old / reference log-probs);
- ``chunked-grad``: the same with gradients, then ``backward`` (the update pass);
- ``full`` / ``full-grad``: the computation before chunking (the model's full
  logits for the last R + 1 positions, ``/ T``, vision ids masked,
  log-softmax, gather, entropy from the whole softmax). At R = 4,096 one such
  tensor is 4 x 4,097 x 151,936 x 4 bytes = 9.96 GB: these run at
  ``--full-responses`` (default 64, 128, 256) and the peak above the baseline
  is fitted linearly in R and extrapolated, never run at paper length when the
  prediction exceeds ``--max-run-gib`` (default 20).

Prints one line per variant and a summary; ``--json PATH`` also writes them.
The target (issue 13) is chunked peak RSS < 2 GiB at paper length.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

GIB = 1024**3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--response", type=int, default=4096, help="R: response tokens per row.")
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=512, help="logprob_chunk_size.")
    parser.add_argument("--full-responses", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--max-run-gib", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- one variant, in its own process ----------------------------------------------------------


def build(args: argparse.Namespace):  # noqa: ANN201 - (model, batch, suppress ids)
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=args.prompt + args.response + 8,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config).float().train()
    rows, width_p, width_r = args.rows, args.prompt, args.response
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, args.vocab, (rows, width_p + width_r), generator=generator)
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "response_ids": input_ids[:, width_p:].clone(),
        "response_mask": torch.ones(rows, width_r),
    }
    suppress = list(range(args.vocab - 5, args.vocab))  # stand-ins for the vision ids
    return model, batch, suppress


def full_logits(model, batch, suppress, temperature: float):  # noqa: ANN001, ANN201
    """The pre-chunking computation (the trainer's code before issue 13)."""
    import torch

    width_r = batch["response_ids"].shape[1]
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    logits = model(**inputs, logits_to_keep=width_r + 1, use_cache=False).logits[:, :-1]
    logits = logits.float() / temperature
    logits[..., suppress] = float("-inf")
    normaliser = torch.logsumexp(logits, dim=-1)
    chosen = logits.gather(-1, batch["response_ids"].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        logp = logits - normaliser.unsqueeze(-1)
        entropy = -torch.where(probs > 0, probs * logp, torch.zeros_like(probs)).sum(-1)
    return chosen - normaliser, entropy


def run_variant(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from mmr1.models.head import final_hidden_states, output_head
    from mmr1.rl.batch import response_logprobs

    torch.set_num_threads(args.threads)
    model, batch, suppress = build(args)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    began = time.perf_counter()
    grad = args.variant.endswith("-grad")
    with torch.set_grad_enabled(grad):
        if args.variant == "forward":
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
            head = output_head(model)
            final_hidden_states(model, head, inputs, keep=args.response + 1)
        elif args.variant.startswith("chunked"):
            logp, _ = response_logprobs(
                model,
                batch,
                temperature=0.6,
                suppress_ids=suppress,
                with_entropy=True,
                chunk_size=args.chunk,
            )
        elif args.variant.startswith("full"):
            logp, _ = full_logits(model, batch, suppress, 0.6)
        elif args.variant != "baseline":
            raise ValueError(f"unknown variant {args.variant!r}")
        if grad:
            (logp * batch["response_mask"]).sum().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"baseline_bytes": baseline, "peak_bytes": peak, "seconds": time.perf_counter() - began}


# -- the driver ---------------------------------------------------------------------------------


def measure(args: argparse.Namespace, variant: str, response: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        *("--rows", str(args.rows), "--response", str(response), "--prompt", str(args.prompt)),
        *("--vocab", str(args.vocab), "--hidden", str(args.hidden), "--chunk", str(args.chunk)),
        *("--threads", str(args.threads)),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(variant=variant, response=response)
    above = (result["peak_bytes"] - result["baseline_bytes"]) / GIB
    print(
        f"{variant:>13}  R={response:>5}  peak RSS {result['peak_bytes'] / GIB:6.2f} GiB  "
        f"(+{above:5.2f} over baseline {result['baseline_bytes'] / GIB:.2f})  "
        f"{result['seconds']:6.1f} s",
        flush=True,
    )
    return result


def extrapolate(points: list[dict[str, float]], response: int) -> tuple[float, float]:
    """Least-squares line of (peak - baseline) against R + 1: value at ``response``, slope."""
    xs = [p["response"] + 1.0 for p in points]
    ys = [p["peak_bytes"] - p["baseline_bytes"] for p in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    return mean_y + slope * (response + 1 - mean_x), slope


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return 0
    tensor = args.rows * (args.response + 1) * args.vocab * 4
    print(
        f"B={args.rows} R={args.response} (T={args.response + 1}) V={args.vocab} "
        f"hidden={args.hidden} chunk={args.chunk}; one full fp32 logits tensor = "
        f"{tensor / 1e9:.2f} GB ({tensor / GIB:.2f} GiB); chunk tensor = "
        f"{args.chunk * args.vocab * 4 / GIB:.2f} GiB"
    )
    results = [
        measure(args, v, args.response) for v in ("baseline", "forward", "chunked", "chunked-grad")
    ]
    summary: dict[str, float] = {}
    for variant in ("full", "full-grad"):
        points = [measure(args, variant, r) for r in args.full_responses]
        results += points
        above, slope = extrapolate(points, args.response)
        baseline = results[0]["baseline_bytes"]
        predicted = baseline + above
        summary[f"{variant}_predicted_peak_gib"] = predicted / GIB
        summary[f"{variant}_logit_tensors_per_position"] = slope / (args.rows * args.vocab * 4)
        print(
            f"{variant:>13}  R={args.response:>5}  predicted peak RSS {predicted / GIB:6.2f} GiB "
            f"(fit over R={args.full_responses}: {slope / (args.rows * args.vocab * 4):.2f} "
            f"full-logits tensors)",
            flush=True,
        )
        if predicted / GIB <= args.max_run_gib:
            results.append(measure(args, variant, args.response))
    for r in results:
        if r["response"] == args.response and r["variant"].startswith("chunked"):
            summary[f"{r['variant']}_peak_gib"] = r["peak_bytes"] / GIB
    print(json.dumps(summary, indent=2))
    target = max(summary.get("chunked_peak_gib", 0.0), summary.get("chunked-grad_peak_gib", 0.0))
    verdict = "under" if target < 2 else "OVER"
    print(f"chunked peak RSS {target:.2f} GiB: {verdict} the 2 GiB target")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
