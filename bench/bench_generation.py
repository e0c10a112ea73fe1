"""Throughput of the ``hf`` generation backend on the tiny offline Qwen2.5-VL.

    .venv/bin/python bench/bench_generation.py                      # 8 prompts x n=8 x 64 tokens
    .venv/bin/python bench/bench_generation.py --threads 2 --repeats 5
    .venv/bin/python bench/bench_generation.py --model /path/to/checkpoint --device cuda

Each prompt carries one image (4 image tokens at 56 px). Reports wall time per
call and generated tokens per second (tokens actually kept, i.e. up to EOS),
after one warm-up call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from mmr1.generation.hf import HFBackend  # noqa: E402
from mmr1.models import build_tiny_model  # noqa: E402
from schemas.generation import GenerationRequest, HFBackendConfig, SamplingParams  # noqa: E402
from schemas.models import TinyVLMConfig  # noqa: E402


def make_requests(count: int, image_size: int) -> list[GenerationRequest]:
    generator = torch.Generator().manual_seed(0)
    requests = []
    for i in range(count):
        pixels = torch.randint(0, 256, (image_size, image_size, 3), generator=generator)
        image = Image.fromarray(pixels.to(torch.uint8).numpy())
        prompt = f"<image>\nQuestion {i}: what is the colour of the big shape?"
        requests.append(GenerationRequest(prompt=prompt, images=[image], request_id=str(i)))
    return requests


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help="checkpoint dir; default: build the tiny model in a tmp dir"
    )
    parser.add_argument("--batch", type=int, default=8, help="prompts per call (one batch)")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_tiny_model(TinyVLMConfig(), Path(tmp) / "tiny"))
        backend = HFBackend(HFBackendConfig(model=model, batch_size=args.batch, device=args.device))
        requests = make_requests(args.batch, args.image_size)
        sampling = SamplingParams(
            n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=0
        )
        backend.generate(requests, sampling)  # warm-up
        times, kept = [], []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            completions = backend.generate(requests, sampling.model_copy(update={"seed": repeat}))
            times.append(time.perf_counter() - start)
            kept.append(sum(len(s.token_ids) for c in completions for s in c.samples))
        backend.close()

    rows = args.batch * args.n
    best, median = min(times), statistics.median(times)
    print(
        f"model={model if args.model else 'tiny (built)'} device={args.device} "
        f"threads={torch.get_num_threads()} rows={args.batch}x{args.n}={rows} "
        f"max_new_tokens={args.max_new_tokens} temperature={args.temperature}"
    )
    print(f"wall per call: median {median:.3f} s, best {best:.3f} s over {args.repeats} calls")
    mean_kept = statistics.mean(kept)
    print(
        f"generated tokens per call: {mean_kept:.0f} "
        f"-> {mean_kept / median:.0f} tok/s (median), {mean_kept / best:.0f} tok/s (best)"
    )


if __name__ == "__main__":
    main()
