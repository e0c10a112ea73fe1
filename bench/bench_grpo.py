"""GRPO step time vs TRL's ``GRPOTrainer``, and zero-variance groups under uniform vs VAS.

    .venv/bin/python bench/bench_grpo.py                       # both parts (~3-4 min, 1 thread)
    .venv/bin/python bench/bench_grpo.py --trl-python .bench-venv/bin/python
    .venv/bin/python bench/bench_grpo.py --skip-vas            # part 1 only
    .venv/bin/python bench/bench_grpo.py --skip-trl            # no TRL, our side + part 2

**Part 1, ours vs TRL.** The same tiny Qwen2.5-VL directory (``build_tiny_model``),
the same synthetic RL pool (``write_pool``, one 56 px image per prompt, the
training prompt of ``mmr1.prompts``), B = 4 prompts x G = 4 rollouts per step,
at most 32 new tokens, temperature 1.0, top-p 1.0, no top-k, one optimiser
step per rollout batch (one PPO epoch, one mini-batch, all 16 sequences in one
forward/backward), k3 KL with coefficient 0.01 against the frozen start
(TRL: ``beta=0.01``, which makes it build a reference model too), PPO clip 0.2,
token-mean loss (TRL: ``loss_type="dapo"``), group-scaled advantages, AdamW
lr 1e-5, weight decay 0.01, grad clip 1.0, constant schedule, fp32, no gradient
checkpointing, and the same deterministic reward: ``len(text) / 100`` (it varies
within groups, so both do a real update). The vision special tokens are
suppressed during generation on both sides (ours always does; TRL through
``generation_kwargs={"suppress_tokens": ...}``), otherwise a random policy can
emit ``<|image_pad|>`` and re-scoring crashes. Our side runs plain GRPO
(``sampling_mode=uniform``, ``online_vps=False``) so the two do the same work;
part 2 reports what VAS adds to a step.

TRL is not a dependency of this project: its part runs in a separate
interpreter (``--trl-python``, default ``.bench-venv/bin/python`` when it exists
and imports trl) as ``bench_grpo.py --part trl`` on the model and pool the
parent wrote. Build that environment with::

    python3 -m venv .bench-venv
    .bench-venv/bin/pip install "torch==2.13.0"     # the CPU wheel, as the Makefile does
    .bench-venv/bin/pip install -e .                 # our library (and transformers)
    .bench-venv/bin/pip install "trl==1.16.0"        # never trl[vlm]: it pulls torchvision

TRL's VLM path is used: a dataset of ``{"prompt": messages, "images": [PIL]}``
with the messages of ``to_template_messages`` and our image-only processor as
``processing_class``, behind a small adapter (``_trl_processor``) because TRL
tokenises prompts through ``processor.apply_chat_template(..., tokenize=True,
return_dict=True)``, which ours only renders.

Measured per optimiser step, after ``--warmup`` steps: wall time between the
ends of consecutive steps (generation, reward, reference and policy forwards,
backward, AdamW step, logging: everything the trainer does), the median over
``--steps`` steps; generation tokens/s = generated tokens (through the first
EOS, which is counted) / time inside ``model.generate``, the median over steps.
Both sides use ``--threads`` torch threads (default 1, so a concurrent job on
the machine disturbs both equally).

**Part 2, zero-variance groups: uniform vs VAS.** The tiny random model never
produces a verifiable answer, so the paper's reward is 0 everywhere and every
group has zero variance whatever the sampler does. The bench instead gives
every prompt of a ``--vas-pool``-prompt pool a true pass rate p drawn (seeded)
from the mixture of ``bench_vas.py`` (40% hard ~ Beta(0.3, 5), 35% easy ~
Beta(5, 0.3), 25% ~ Beta(1, 1)) and a ``reward_fn`` that scores each rollout
with a seeded Bernoulli(p) of its prompt (accuracy = overall = 0 or 1). The
trainer passes the reward only answers, so the prompt of each group is read
off the sampler: the bench wraps ``trainer.sampler.next_batch`` to remember the
batch it drew (single process: the batch is the rollout order). Then the real
trainer runs ``--vas-steps`` steps of ``--vas-batch`` prompts x G =
``--vas-group`` rollouts with ``online_vps=True`` (each step's G rollouts
update the sampled prompts' VPS, TDS included, through ``score_groups``) and
``vps_update_every=None`` (a full re-estimation would score with the real
verifier, i.e. all zeros), once with ``sampling_mode=uniform`` and once with
``vas`` (lambda = 0.5), same seed. Reported: the mean ``zero_variance_frac``
the trainer logs, the expected fraction ``mean p^G + (1-p)^G`` over the prompts
actually drawn (less noisy), both over all steps and over the second half (VPS
scores start unknown, at the prior, so VAS only helps once prompts were seen),
and the median step time of each mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmr1.data.io import write_rl_dataset  # noqa: E402
from mmr1.data.synthetic import iter_records  # noqa: E402
from mmr1.models import build_tiny_model  # noqa: E402
from schemas.models import TinyVLMConfig  # noqa: E402
from schemas.rewards import RewardScore  # noqa: E402
from schemas.synthetic import SyntheticConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRL_PYTHON = REPO / ".bench-venv" / "bin" / "python"


def length_reward(
    responses: list[str], golds: list[str], choices: list[list[str] | None]
) -> list[RewardScore]:
    """``len(text) / 100``: deterministic and different within every group."""
    return [RewardScore(accuracy=0.0, format=0.0, overall=len(t) / 100.0) for t in responses]


def prepare(workdir: Path, pool_items: int, seed: int) -> tuple[Path, Path]:
    """The tiny model and the RL pool both trainers read (written once, by the parent)."""
    model_dir = workdir / "model"
    pool_dir = workdir / "pool"
    if not (model_dir / "config.json").exists():
        build_tiny_model(TinyVLMConfig(), model_dir)
    if not pool_dir.exists():
        records = list(iter_records(SyntheticConfig(n_items=pool_items, seed=seed)))
        write_rl_dataset(records, pool_dir)
    return model_dir, pool_dir


def _summary(walls: list[float], gen_s: list[float], tokens: list[float], warmup: int) -> dict:
    walls, gen_s, tokens = walls[warmup:], gen_s[warmup:], tokens[warmup:]
    rates = [t / g for t, g in zip(tokens, gen_s, strict=True) if g > 0]
    return {
        "steps_timed": len(walls),
        "step_s_median": statistics.median(walls),
        "step_s_all": [round(w, 4) for w in walls],
        "generate_s_median": statistics.median(gen_s),
        "gen_tokens_per_s_median": statistics.median(rates),
        "gen_tokens_per_step_mean": statistics.fmean(tokens),
    }


# --------------------------------------------------------------------------- ours


def run_ours(args: argparse.Namespace, model_dir: Path, pool_dir: Path, out: Path) -> dict:
    from mmr1.rl.grpo import GRPOTrainer
    from schemas.generation import SamplingParams
    from schemas.grpo import GRPOConfig

    torch.set_num_threads(args.threads)
    n = args.prompts * args.group
    config = GRPOConfig(
        seed=args.seed,
        steps=args.warmup + args.steps,
        prompts_per_step=args.prompts,
        group_size=args.group,
        micro_batch_size=n,
        rollout_batch_size=args.prompts,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens),
        kl_coef=args.beta,
        lr=args.lr,
        weight_decay=0.01,
        max_grad_norm=1.0,
        precision="fp32",
        sampling_mode="uniform",
        online_vps=False,
        vps_update_every=None,
        samples_every=10**6,
        save_every=10**6,
        torch_threads=args.threads,
    )
    trainer = GRPOTrainer(config, model_dir, pool_dir, out, reward_fn=length_reward)
    trainer.setup(resume=False)
    walls, gen_s, tokens, lengths = [], [], [], []
    for _ in range(args.warmup + args.steps):
        began = time.perf_counter()
        metrics = trainer.step()
        walls.append(time.perf_counter() - began)
        gen_s.append(metrics["time/generate_s"])
        tokens.append(metrics["response/length_mean"] * n)
        lengths.append(metrics["response/length_mean"])
    return {
        "impl": "mmr1",
        **_summary(walls, gen_s, tokens, args.warmup),
        "completion_length_mean": statistics.fmean(lengths[args.warmup :]),
    }


# ---------------------------------------------------------------------------- TRL


def _trl_processor(model_dir: Path) -> Any:
    """Our image-only processor, plus the batched ``tokenize=True`` chat template TRL calls."""
    from mmr1.models.processor import ImageOnlyQwenVLProcessor

    class TRLAdapter(ImageOnlyQwenVLProcessor):
        def apply_chat_template(  # type: ignore[override]
            self,
            conversation: Any,
            *,
            add_generation_prompt: bool = False,
            tokenize: bool = False,
            return_dict: bool = False,
            **kwargs: Any,
        ) -> Any:
            for key in ("chat_template", "tools", "padding", "return_tensors"):
                kwargs.pop(key, None)
            batched = bool(conversation) and isinstance(conversation[0], list)
            conversations = conversation if batched else [conversation]
            texts = [
                super(TRLAdapter, self).apply_chat_template(
                    c, add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs
                )
                for c in conversations
            ]
            if not tokenize:
                return texts if batched else texts[0]
            images = [
                part["image"]
                for c in conversations
                for message in c
                if isinstance(message["content"], list)
                for part in message["content"]
                if part.get("type") == "image"
            ]
            encoded = self(text=texts, images=images or None, padding=False, return_tensors=None)
            result = {k: encoded[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
            if images:
                pixels = self.image_processor(images=images, return_tensors="pt")
                result["pixel_values"] = pixels["pixel_values"]
                result["image_grid_thw"] = pixels["image_grid_thw"]
            if not batched:
                result = {k: v if isinstance(v, torch.Tensor) else v[0] for k, v in result.items()}
            return result if return_dict else result["input_ids"]

    return TRLAdapter.from_pretrained(model_dir)


def run_trl(args: argparse.Namespace, model_dir: Path, pool_dir: Path, out: Path) -> dict:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from mmr1.data.requests import build_requests
    from mmr1.generation.messages import to_template_messages
    from mmr1.models.loader import vision_special_token_ids
    from mmr1.vas.estimate import read_pool_frame

    torch.set_num_threads(args.threads)
    processor = _trl_processor(model_dir)
    requests = build_requests(read_pool_frame(pool_dir))
    if args.trl_text_only:
        rows = [
            {"prompt": [{"role": "user", "content": r.prompt.replace("<image>", "")}]}
            for r in requests
        ]
    else:
        rows = [{"prompt": to_template_messages(r), "images": r.images} for r in requests]
    dataset = Dataset.from_list(rows)

    def reward(completions: list, **_: Any) -> list[float]:
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [len(t) / 100.0 for t in texts]

    n = args.prompts * args.group
    config = GRPOConfig(
        output_dir=str(out),
        seed=args.seed,
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=n,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=args.group,
        num_iterations=1,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        generation_kwargs={"suppress_tokens": vision_special_token_ids(processor.tokenizer)},
        beta=args.beta,
        epsilon=0.2,
        loss_type="dapo",
        scale_rewards="group",
        learning_rate=args.lr,
        weight_decay=0.01,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        bf16=False,
        fp16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=processor,
    )

    # Time model.generate and count its tokens (through the first EOS, as ours does).
    model = trainer.accelerator.unwrap_model(trainer.model)
    eos = set(trainer.eos_token_ids)
    gen: dict[str, Any] = {"s": 0.0, "tokens": 0, "keys": None}
    original_generate = model.generate

    def timed_generate(*a: Any, **kw: Any) -> torch.Tensor:
        if gen["keys"] is None:  # evidence that the images reach generation
            gen["keys"] = sorted(k for k in kw if k != "generation_config")
            gen["prompt_tokens"] = int(kw["attention_mask"][0].sum())
        began = time.perf_counter()
        output = original_generate(*a, **kw)
        gen["s"] += time.perf_counter() - began
        completion = output[:, kw["input_ids"].shape[1] :]
        for row in completion.tolist():
            cut = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
            gen["tokens"] += cut
        return output

    model.generate = timed_generate

    walls: list[float] = []
    gen_s: list[float] = []
    tokens: list[float] = []

    class Timer(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            self.last = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            now = time.perf_counter()
            walls.append(now - self.last)
            self.last = now
            gen_s.append(gen["s"])
            tokens.append(float(gen["tokens"]))
            gen["s"], gen["tokens"] = 0.0, 0

    trainer.add_callback(Timer())
    trainer.train()
    lengths = [t / n for t in tokens[args.warmup :]]
    return {
        "impl": f"trl {trl.__version__}",
        "vlm": not args.trl_text_only,
        "generate_inputs": gen["keys"],
        "prompt_tokens_first_row": gen["prompt_tokens"],
        **_summary(walls, gen_s, tokens, args.warmup),
        "completion_length_mean": statistics.fmean(lengths),
    }


def trl_python(args: argparse.Namespace) -> tuple[str | None, str]:
    """The interpreter for the TRL part, or None and why not."""
    if args.skip_trl:
        return None, "--skip-trl"
    candidate = args.trl_python or (str(DEFAULT_TRL_PYTHON) if DEFAULT_TRL_PYTHON.exists() else "")
    if not candidate:
        return None, f"no --trl-python and no {DEFAULT_TRL_PYTHON}"
    if not Path(candidate).exists():
        return None, f"{candidate} does not exist"
    probe = subprocess.run(
        [candidate, "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return None, f"{candidate} cannot import trl: {probe.stderr.strip().splitlines()[-1:]}"
    return candidate, f"{candidate} (trl {probe.stdout.strip()})"


def run_trl_subprocess(python: str, args: argparse.Namespace, workdir: Path) -> dict:
    result_file = workdir / "trl.json"
    command = [
        python,
        str(Path(__file__).resolve()),
        "--part",
        "trl",
        "--workdir",
        str(workdir),
        "--result",
        str(result_file),
        *[
            f"--{k}={getattr(args, k.replace('-', '_'))}"
            for k in (
                "threads",
                "steps",
                "warmup",
                "prompts",
                "group",
                "max-new-tokens",
                "beta",
                "lr",
                "seed",
                "pool",
            )
        ],
        *(["--trl-text-only"] if args.trl_text_only else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        return {"error": f"TRL part failed (exit {proc.returncode}):\n{tail}"}
    return json.loads(result_file.read_text())


# ------------------------------------------------------------------ uniform vs VAS


def simulate_pass_rates(num_prompts: int, seed: int) -> np.ndarray:
    """True pass rates: 40% near 0, 35% near 1, 25% spread (``bench_vas.py``'s mixture)."""
    rng = np.random.default_rng([seed, 1])
    component = rng.choice(3, size=num_prompts, p=[0.40, 0.35, 0.25])
    hard = rng.beta(0.3, 5.0, size=num_prompts)
    easy = rng.beta(5.0, 0.3, size=num_prompts)
    spread = rng.beta(1.0, 1.0, size=num_prompts)
    return np.choose(component, [hard, easy, spread])


class BernoulliReward:
    """Rollout k of the group of pool prompt i is correct with probability ``p[i]`` (seeded)."""

    def __init__(self, pass_rates: np.ndarray, group_size: int, seed: int) -> None:
        self.p = pass_rates
        self.g = group_size
        self.rng = np.random.default_rng([seed, 2])
        self.batch: list[int] = []

    def __call__(
        self, responses: list[str], golds: list[str], choices: list[list[str] | None]
    ) -> list[RewardScore]:
        if len(responses) != len(self.batch) * self.g:
            raise RuntimeError(f"{len(responses)} responses for a batch of {len(self.batch)}")
        scores = []
        for index in self.batch:
            for hit in self.rng.random(self.g) < self.p[index]:
                value = float(hit)
                scores.append(RewardScore(accuracy=value, format=1.0, overall=value))
        return scores


def run_vas_mode(
    mode: str, args: argparse.Namespace, model_dir: Path, pool_dir: Path, out: Path
) -> dict:
    from mmr1.rl.grpo import GRPOTrainer
    from schemas.generation import SamplingParams
    from schemas.grpo import GRPOConfig

    torch.set_num_threads(args.threads)
    g = args.vas_group
    pass_rates = simulate_pass_rates(args.vas_pool, args.seed)
    reward = BernoulliReward(pass_rates, g, args.seed)
    config = GRPOConfig(
        seed=args.seed,
        steps=args.vas_steps,
        prompts_per_step=args.vas_batch,
        group_size=g,
        micro_batch_size=16,
        rollout_batch_size=args.vas_batch,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens),
        kl_coef=args.beta,
        lr=args.lr,
        precision="fp32",
        sampling_mode=mode,
        mix_ratio=0.5,
        online_vps=True,
        vps_update_every=None,
        samples_every=10**6,
        save_every=10**6,
        torch_threads=args.threads,
    )
    trainer = GRPOTrainer(config, model_dir, pool_dir, out, reward_fn=reward)
    trainer.setup(resume=False)
    draw = trainer.sampler.next_batch

    def remembering_next_batch() -> list[int]:
        batch = draw()
        reward.batch = [int(i) for i in batch]
        return batch

    trainer.sampler.next_batch = remembering_next_batch  # type: ignore[method-assign]
    zero_var, expected, walls, distinct = [], [], [], []
    for _ in range(args.vas_steps):
        began = time.perf_counter()
        metrics = trainer.step()
        walls.append(time.perf_counter() - began)
        p = pass_rates[reward.batch]
        zero_var.append(metrics["zero_variance_frac"])
        expected.append(float(np.mean(p**g + (1 - p) ** g)))
        distinct.append(len(set(reward.batch)))
    half = args.vas_steps // 2
    return {
        "mode": mode,
        "zero_var_mean": statistics.fmean(zero_var),
        "zero_var_mean_2nd_half": statistics.fmean(zero_var[half:]),
        "expected_zero_var_mean": statistics.fmean(expected),
        "expected_zero_var_mean_2nd_half": statistics.fmean(expected[half:]),
        "distinct_prompts_per_batch": statistics.fmean(distinct),
        "step_s_median": statistics.median(walls),
        "zero_var_per_step": [round(z, 3) for z in zero_var],
    }


def run_vas(args: argparse.Namespace, workdir: Path) -> dict:
    model_dir = workdir / "model"
    pool_dir = workdir / "vas-pool"
    if not pool_dir.exists():
        records = list(iter_records(SyntheticConfig(n_items=args.vas_pool, seed=args.seed)))
        write_rl_dataset(records, pool_dir)
    p = simulate_pass_rates(args.vas_pool, args.seed)
    pool_z = float(np.mean(p**args.vas_group + (1 - p) ** args.vas_group))
    modes = {
        mode: run_vas_mode(mode, args, model_dir, pool_dir, workdir / f"vas-{mode}")
        for mode in ("uniform", "vas")
    }
    return {"pool_expected_zero_var": pool_z, **modes}


# ---------------------------------------------------------------------------- main


def print_part1(ours: dict, trl_result: dict | None, trl_note: str) -> None:
    print("== Part 1: GRPO step, ours vs TRL (median over timed steps)")
    header = f"{'trainer':<14}{'step s':>9}{'generate s':>12}{'gen tok/s':>11}{'len':>7}"
    print(header)
    rows = [ours] + ([trl_result] if trl_result and "error" not in trl_result else [])
    for r in rows:
        name = r["impl"] + ("" if r.get("vlm", True) else " (text)")
        print(
            f"{name:<14}{r['step_s_median']:>9.3f}{r['generate_s_median']:>12.3f}"
            f"{r['gen_tokens_per_s_median']:>11.0f}{r['completion_length_mean']:>7.1f}"
        )
    if trl_result is None:
        print(f"TRL not run: {trl_note}")
    elif "error" in trl_result:
        print(trl_result["error"])
    else:
        step_ratio = ours["step_s_median"] / trl_result["step_s_median"]
        tok_ratio = ours["gen_tokens_per_s_median"] / trl_result["gen_tokens_per_s_median"]
        print(
            f"ratio ours/TRL: step time {step_ratio:.2f}x (<1: ours faster), "
            f"generation tokens/s {tok_ratio:.2f}x (>1: ours faster)"
        )


def print_part2(vas: dict, args: argparse.Namespace) -> None:
    print(
        f"== Part 2: zero-variance groups, {args.vas_steps} steps of {args.vas_batch} prompts "
        f"x G={args.vas_group}, pool {args.vas_pool} (expected over the pool: "
        f"{vas['pool_expected_zero_var']:.3f})"
    )
    print(
        f"{'sampling':<10}{'zero-var':>10}{'2nd half':>10}{'expected':>10}{'exp 2nd':>10}"
        f"{'distinct':>10}{'step s':>9}"
    )
    for mode in ("uniform", "vas"):
        r = vas[mode]
        print(
            f"{mode:<10}{r['zero_var_mean']:>10.3f}{r['zero_var_mean_2nd_half']:>10.3f}"
            f"{r['expected_zero_var_mean']:>10.3f}{r['expected_zero_var_mean_2nd_half']:>10.3f}"
            f"{r['distinct_prompts_per_batch']:>10.2f}{r['step_s_median']:>9.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "ours", "trl", "vas"], default="all")
    parser.add_argument("--workdir", type=Path, help="model + pool (default: a temp dir)")
    parser.add_argument("--result", type=Path, help="--part trl/ours/vas: write JSON here")
    parser.add_argument("--trl-python", help="interpreter with trl (default: .bench-venv)")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--skip-vas", action="store_true")
    parser.add_argument(
        "--trl-text-only", action="store_true", help="TRL on text-only prompts (no images)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=4, help="B prompts per step")
    parser.add_argument("--group", type=int, default=4, help="G rollouts per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--beta", type=float, default=0.01, help="KL coefficient")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=64, help="part 1 pool size")
    parser.add_argument("--vas-pool", type=int, default=32)
    parser.add_argument("--vas-batch", type=int, default=8)
    parser.add_argument("--vas-group", type=int, default=8)
    parser.add_argument("--vas-steps", type=int, default=20)
    parser.add_argument("--json", type=Path, help="--part all: write every result here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model_dir, pool_dir = prepare(workdir, args.pool, args.seed)
        if args.part != "all":
            runner = {
                "ours": lambda: run_ours(args, model_dir, pool_dir, workdir / "ours"),
                "trl": lambda: run_trl(args, model_dir, pool_dir, workdir / "trl"),
                "vas": lambda: run_vas(args, workdir),
            }[args.part]
            result = runner()
            text = json.dumps(result, indent=2)
            if args.result:
                args.result.write_text(text)
            print(text)
            return

        python, note = trl_python(args)
        print(
            f"threads={args.threads} B={args.prompts} G={args.group} "
            f"max_new_tokens={args.max_new_tokens} beta={args.beta} lr={args.lr} "
            f"warmup={args.warmup} timed steps={args.steps}; TRL interpreter: {note}"
        )
        ours = run_ours(args, model_dir, pool_dir, workdir / "ours")
        trl_result = run_trl_subprocess(python, args, workdir) if python else None
        print_part1(ours, trl_result, note)
        results: dict[str, Any] = {"ours": ours, "trl": trl_result or {"skipped": note}}
        if not args.skip_vas:
            vas = run_vas(args, workdir)
            print_part2(vas, args)
            results["vas"] = vas
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
