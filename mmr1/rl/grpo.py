"""GRPO with Variance-Aware Sampling: the training loop (docs/METHOD.md sections 6-7).

The pool is read once and prompts longer than ``max_prompt_length`` (image
tokens included) are dropped before the sampler is built, counted in the
result and listed in ``dropped_prompts.parquet`` (:mod:`mmr1.rl.pool`).

One step, for a global batch of B prompts drawn by ``MixedVarianceSampler``
(identical on every rank; rank r takes the contiguous slice r of B / W):

1. **Rollouts**: G samples per prompt from the current policy, through a
   :class:`~mmr1.rl.rollout.RolloutSource` (the trained module itself, or a
   colocated vLLM engine synced lazily after updates). Prompts are generated in
   chunks of ``rollout_batch_size``; chunk c of the global batch samples with
   ``derive_seed(seed, "grpo", step, c)``, so the samples do not depend on the
   number of processes when (B / W) is a multiple of it. The hf backend cuts a
   chunk into ``generate`` calls of at most ``generation_batch_size`` sequences.
2. **Rewards** from the shared verifier (parallel, time-bounded), then group
   advantages ``(r - mean_g) / (std_g + eps)``.
3. **Updates** (:class:`~mmr1.rl.update.PolicyUpdater`): log-probs of the policy
   and the frozen reference, then ``ppo_epochs`` passes of clipped AdamW steps
   over mini-batches, each the configured loss aggregation over the global
   mini-batch (skipped on a non-finite gradient norm; DDP or DeepSpeed ZeRO-1/2).
4. **VPS**: the sampled prompts' scores are updated from their G rollouts
   (``online_vps``); every ``vps_update_every`` steps the pool is re-scored,
   by rolling out the current policy or by reading the newest catalog table.

Checkpoints (``checkpoints/step-XXXXXX``) hold the weights (``save_pretrained``),
optimizer (under DeepSpeed: the engine's own per-rank checkpoint), sampler
state (scores, position, generator), trainer state (step, history, VPS tables
used) and per-rank RNG; a killed run restarted with the
same arguments continues from the newest one and, on CPU, ends with the same
weights as an uninterrupted run (every random choice is a function of the seed
and the step).
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch
from accelerate.utils import DistributedType

from mmr1.data.requests import build_requests
from mmr1.data.shards import derive_seed
from mmr1.models.loader import Policy, vision_special_token_ids
from mmr1.rewards import score_batch
from mmr1.rl.advantages import group_advantages
from mmr1.rl.batch import Rollout, encode_prompt
from mmr1.rl.pool import DROPPED_FILE, select_pool
from mmr1.rl.report import rollout_stats, write_samples
from mmr1.rl.rollout import RolloutSource
from mmr1.rl.state import GRPOState, read_grpo_checkpoint, write_grpo_checkpoint
from mmr1.rl.update import PolicyUpdater, UpdateOutcome, configure_deepspeed, load_reference
from mmr1.trainer.checkpoint import (
    prune_checkpoints,
    save_pretrained_atomic,
    step_dir_name,
)
from mmr1.trainer.job import adamw, load_trainable, open_job
from mmr1.vas.estimate import estimate_vps, read_pool_frame, read_vps_table, score_groups
from mmr1.vas.sampler import MixedVarianceSampler
from schemas.generation import CompletionSample, GenerationRequest
from schemas.grpo import GRPOConfig, GRPOResult
from schemas.rewards import RewardScore
from schemas.vas import SamplerConfig, VPSEstimateConfig

logger = logging.getLogger(__name__)

MetricsCallback = Callable[[dict[str, float], int], None]
CheckpointCallback = Callable[[Path, int], None]
#: Returns ``(ref, path)`` of the newest VPS table for the pool, or None.
VPSTableLookup = Callable[[], tuple[str, Path] | None]
#: ``(responses, golds, choices) -> scores``; default: ``score_batch`` with the config's rewards.
RewardFn = Callable[[list[str], list[str], list[list[str] | None]], list[RewardScore]]


class GRPOTrainer:
    """GRPO-with-VAS on one RL pool (module docstring). Use :func:`run_grpo`."""

    def __init__(
        self,
        config: GRPOConfig,
        model_path: Path,
        dataset_path: Path,
        output_dir: Path,
        *,
        vps_table: tuple[str, Path] | None = None,
        vps_lookup: VPSTableLookup | None = None,
        metrics_callback: MetricsCallback | None = None,
        checkpoint_callback: CheckpointCallback | None = None,
        reward_fn: RewardFn | None = None,
    ) -> None:
        self.config = config
        self.reward_fn = reward_fn or (
            load_reward_function(config.reward_function) if config.reward_function else None
        )
        self.model_path = Path(model_path)
        self.dataset_path = Path(dataset_path)
        self.output_dir = Path(output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"
        self.initial_vps = vps_table
        self.vps_lookup = vps_lookup
        self.metrics_callback = metrics_callback
        self.checkpoint_callback = checkpoint_callback

    # ----------------------------------------------------------------------- setup

    def setup(self, *, resume: bool = True) -> None:
        """Build accelerator, model, data (pool and sampler), optimizer and rollouts, in the
        steps the SFT recipe takes too; resume from the newest checkpoint."""
        cfg = self.config
        self.accelerator, resume_from = open_job(
            model_path=self.model_path,
            checkpoint_root=self.checkpoint_root,
            precision=cfg.precision,
            freeze_vision=cfg.freeze_vision,
            seed=cfg.seed,
            resume=resume,
            torch_threads=cfg.torch_threads,
        )
        self._check_batch_split()
        self._setup_model(resume_from or self.model_path)
        self._setup_data()
        self._setup_optimizer()
        self._setup_state(resume_from)
        self._setup_rollouts(resume_from or self.model_path)

    def _check_batch_split(self) -> None:
        """The global batch, and each mini-batch, must split evenly over the processes."""
        cfg, processes = self.config, self.accelerator.num_processes
        if cfg.prompts_per_step % processes:
            raise ValueError(
                f"prompts_per_step ({cfg.prompts_per_step}) must be divisible by the number "
                f"of processes ({processes})"
            )
        mini = cfg.mini_batch_prompts or cfg.prompts_per_step
        if mini % processes or cfg.prompts_per_step % mini:
            raise ValueError(
                f"mini_batch_prompts ({mini}) must divide prompts_per_step "
                f"({cfg.prompts_per_step}) and be divisible by the processes ({processes})"
            )

    def _setup_model(self, path: Path) -> None:
        """The policy (fp32 master weights, from the start model or the resumed checkpoint)."""
        cfg = self.config
        self.policy = load_trainable(
            path,
            self.accelerator,
            freeze_vision=cfg.freeze_vision,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        self.suppress_ids = vision_special_token_ids(self.policy.tokenizer)
        pad = self.policy.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.policy.tokenizer.eos_token_id)

    def _setup_data(self) -> None:
        """The RL pool's kept prompts and the Variance-Aware Sampler over them."""
        cfg = self.config
        self._load_pool()
        self.sampler = MixedVarianceSampler(
            self.pool.height,
            SamplerConfig(
                batch_size=cfg.prompts_per_step,
                mix_ratio=cfg.mix_ratio if cfg.sampling_mode == "vas" else 0.0,
                floor=cfg.vps_floor,
                prior=cfg.vps_prior,
                seed=cfg.seed,
                drop_last=True,
            ),
        )

    def _setup_optimizer(self) -> None:
        """AdamW, DeepSpeed's config (ZeRO-1/2), ``prepare``, the frozen reference, the updater."""
        cfg, acc = self.config, self.accelerator
        model = self.policy.model
        optimizer = adamw(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        if self.deepspeed:
            mini = cfg.mini_batch_prompts or cfg.prompts_per_step
            per_rank_rows = mini // acc.num_processes * cfg.group_size
            configure_deepspeed(
                acc,
                cfg,
                micro_steps=math.ceil(per_rank_rows / cfg.micro_batch_size),
                hidden_size=model.config.get_text_config().hidden_size,
            )
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.reference = (
            load_reference(acc, self.model, self.model_path) if cfg.kl_coef > 0 else None
        )
        self.updater = PolicyUpdater(
            cfg,
            acc,
            self.model,
            self.optimizer,
            reference=self.reference,
            suppress_ids=self.suppress_ids,
            pad_id=self.pad_id,
            is_vlm=self.policy.is_vlm,
            deepspeed=self.deepspeed,
        )

    def _setup_state(self, resume_from: Path | None) -> None:
        """A fresh trainer state seeded by the initial VPS table, or the resumed one."""
        cfg, acc = self.config, self.accelerator
        self.state = GRPOState(
            prompts=self.pool.height, seed=cfg.seed, prompts_per_step=cfg.prompts_per_step
        )
        if resume_from is None:
            if self.initial_vps is not None:
                self._apply_vps_table(*self.initial_vps)
            return
        self._load_checkpoint(resume_from)
        if acc.is_main_process and self.checkpoint_callback is not None:
            # A run killed after saving this checkpoint but before the callback finished
            # (e.g. between its snapshot and its catalog entry) left it unregistered:
            # register it now, before later ones, so the catalog matches an uninterrupted
            # run's. The callback is idempotent (same content, same version).
            self.checkpoint_callback(resume_from, self.state.step)

    def _setup_rollouts(self, start: Path) -> None:
        """Where rollouts come from: the module being trained (hf) or a colocated vLLM engine."""
        acc = self.accelerator
        self.rollouts = RolloutSource.build(
            self.config,
            policy=Policy(
                model=acc.unwrap_model(self.model),
                processor=self.policy.processor,
                device=acc.device,
                is_vlm=self.policy.is_vlm,
            ),
            start=start,
            process_index=acc.process_index,
        )

    def _load_pool(self) -> None:
        """The pool's kept prompts (``max_prompt_length``); the dropped ones are counted, logged
        and listed in ``dropped_prompts.parquet`` (:mod:`mmr1.rl.pool`)."""
        pool = read_pool_frame(self.dataset_path)
        if pool.is_empty():
            raise ValueError(f"RL pool {self.dataset_path} is empty")
        selection = select_pool(pool, self.policy, self.config.max_prompt_length)
        self.pool = selection.pool
        self.dropped_prompts = selection.counts()
        self.dropped_ids = set(selection.dropped["row_id"].to_list())
        if self.dropped_ids:
            logger.warning(
                "dropped %d of %d prompts of %s before training: %s (max_prompt_length %s)",
                len(self.dropped_ids),
                pool.height,
                self.dataset_path,
                self.dropped_prompts,
                self.config.max_prompt_length,
            )
            if self.accelerator.is_main_process:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                selection.dropped.write_parquet(self.output_dir / DROPPED_FILE)
        if self.pool.is_empty():
            raise ValueError(
                f"every prompt of {self.dataset_path} is longer than max_prompt_length "
                f"({self.config.max_prompt_length} tokens): {self.dropped_prompts}"
            )
        self.prompt_index = {pid: i for i, pid in enumerate(self.pool["row_id"].to_list())}

    def close(self) -> None:
        """Release the rollout backend (a vLLM engine's GPU memory)."""
        rollouts = getattr(self, "rollouts", None)
        if rollouts is not None:
            rollouts.close()
            self.rollouts = None

    # ------------------------------------------------------------------ VPS tables

    def _apply_vps_table(self, ref: str, path: Path) -> None:
        table = read_vps_table(path)
        indices, scores, unknown = [], [], []
        for prompt_id, vps in zip(table["prompt_id"], table["vps"], strict=True):
            index = self.prompt_index.get(prompt_id)
            if index is None:
                if prompt_id not in self.dropped_ids:  # dropped ones were scored, not trained
                    unknown.append(prompt_id)
            else:
                indices.append(index)
                scores.append(float(vps))
        if unknown:
            raise ValueError(
                f"VPS table {ref} scores {len(unknown)} prompt(s) not in the pool "
                f"{self.dataset_path} (first: {unknown[0]!r}); it was estimated on other data"
            )
        self.sampler.update_scores(indices, scores)
        self.state.vps_tables.append(ref)
        logger.info("VPS scores of %d prompts from %s", len(indices), ref)

    def _refresh_vps(self) -> dict[str, float]:
        """Re-score the pool (``vps_refresh``); returns cost metrics."""
        cfg, acc = self.config, self.accelerator
        began = time.perf_counter()
        synced = 0.0
        if cfg.vps_refresh == "catalog":
            found = self.vps_lookup() if self.vps_lookup is not None else None
            if found is None or found[0] in self.state.vps_tables[-1:]:
                logger.info("VPS refresh: no newer catalog table; keeping the current scores")
                return {"vps_refresh/s": time.perf_counter() - began, "vps_refresh/new": 0.0}
            self._apply_vps_table(*found)
        else:
            rank, world = acc.process_index, acc.num_processes
            shard = self.pool[rank::world]
            estimate_config = VPSEstimateConfig(
                rollouts=cfg.vps_rollouts,
                sampling=cfg.sampling,
                shard_size=max(1, cfg.rollout_batch_size),
                seed=derive_seed(cfg.seed, "vps-refresh", self.state.step),
                score=cfg.vps,
                rewards=cfg.rewards,
                restart=True,
            )
            out_dir = self.output_dir / "vps" / f"{step_dir_name(self.state.step)}-rank{rank}"
            synced = self._sync_rollouts()
            estimate = estimate_vps(
                shard,
                self.rollouts.backend,
                estimate_config,
                out_dir,
                dataset_ref=str(self.dataset_path),
                checkpoint_ref=f"policy@step-{self.state.step}",
            )
            pairs = [
                (self.prompt_index[pid], float(vps))
                for pid, vps in zip(estimate.table["prompt_id"], estimate.table["vps"], strict=True)
            ]
            self._update_sampler_scores(pairs)
            self.state.vps_tables.append(f"estimated@step-{self.state.step}")
        self.state.refreshes += 1
        return {
            "vps_refresh/s": time.perf_counter() - began,
            "vps_refresh/new": 1.0,
            "vps_refresh/weight_sync_s": synced,
        }

    # ----------------------------------------------------------------------- train

    def train(self) -> GRPOResult:
        cfg, acc = self.config, self.accelerator
        saved: list[str] = []
        while self.state.step < cfg.steps:
            metrics = self.step()
            if (
                cfg.vps_update_every
                and self.state.step % cfg.vps_update_every == 0
                and self.state.step < cfg.steps
            ):
                metrics |= self._refresh_vps()
            self.state.history.append({"step": float(self.state.step), **metrics})
            if self.state.step % cfg.log_every == 0 or self.state.step == cfg.steps:
                self._emit(metrics)
            if self.state.step % cfg.save_every == 0 or self.state.step == cfg.steps:
                saved.append(str(self.save_checkpoint()))
        final = self.output_dir / "final"
        if acc.is_main_process:
            save_pretrained_atomic(acc.unwrap_model(self.model), self.policy.processor, final)
        acc.wait_for_everyone()
        result = GRPOResult(
            final_checkpoint=str(final),
            steps=self.state.step,
            history=self.state.history,
            vps_tables=self.state.vps_tables,
            refreshes=self.state.refreshes,
            skipped_updates=self.state.skipped_updates,
            saved=saved,
            pool_prompts=self.pool.height,
            dropped_prompts=self.dropped_prompts,
        )
        if acc.is_main_process:
            (self.output_dir / "result.json").write_text(result.model_dump_json(indent=2))
        return result

    def _emit(self, metrics: dict[str, float]) -> None:
        if self.metrics_callback is not None and self.accelerator.is_main_process:
            self.metrics_callback(metrics, self.state.step)

    def step(self) -> dict[str, float]:
        """One rollout batch: generate, score, update, refresh scores. Returns the metrics."""
        cfg, acc = self.config, self.accelerator
        timings: dict[str, float] = {"weight_sync": self._sync_rollouts()}
        began = time.perf_counter()
        global_batch = self.sampler.next_batch()
        per_rank = cfg.prompts_per_step // acc.num_processes
        offset = acc.process_index * per_rank
        local = global_batch[offset : offset + per_rank]
        rows = self.pool[local]
        requests = build_requests(rows)
        samples = self._generate(requests, offset)
        timings["generate"] = time.perf_counter() - began

        began = time.perf_counter()
        g = cfg.group_size
        flat = [s for group in samples for s in group]
        scores = self._score(rows, flat)
        rewards = torch.tensor([s.overall for s in scores], dtype=torch.float32)
        advantages = group_advantages(rewards, g, scale=cfg.advantage_scale)
        timings["score"] = time.perf_counter() - began

        outcome = self._update(requests, flat, advantages, timings)
        vps_before = self.sampler.scores
        pool_vps = float(vps_before.mean())
        sampled_vps = float(vps_before[global_batch].mean())
        if cfg.online_vps:
            self._update_online_vps(local, scores, samples)

        self.state.step += 1
        stats = rollout_stats(acc, flat, scores, rewards, g)
        if acc.is_main_process and (
            self.state.step % cfg.samples_every == 0 or self.state.step == cfg.steps
        ):
            out = self.output_dir / "samples" / step_dir_name(self.state.step)
            write_samples(out, rows, samples, scores, g)
        tokens = stats.pop("_tokens")
        return {
            **stats,
            **outcome.metrics,
            "vps/sampled_mean": sampled_vps,
            "vps/pool_mean": pool_vps,
            **{f"time/{k}_s": v for k, v in timings.items()},
            "time/step_s": sum(timings.values()),
            "tokens_per_s": tokens / timings["generate"] if timings["generate"] > 0 else 0.0,
        }

    def _generate(
        self, requests: list[GenerationRequest], offset: int
    ) -> list[list[CompletionSample]]:
        """G samples per request, in chunks of ``rollout_batch_size`` prompts seeded per chunk."""
        cfg = self.config
        samples: list[list[CompletionSample]] = []
        for start in range(0, len(requests), cfg.rollout_batch_size):
            sampling = cfg.sampling.model_copy(
                update={
                    "n": cfg.group_size,
                    "seed": derive_seed(cfg.seed, "grpo", self.state.step, offset + start),
                    "return_logprobs": False,
                }
            )
            chunk = requests[start : start + cfg.rollout_batch_size]
            samples.extend(c.samples for c in self.rollouts.backend.generate(chunk, sampling))
        return samples

    def _score(self, rows: pl.DataFrame, flat: list[CompletionSample]) -> list[RewardScore]:
        """Reward of each sample (G consecutive per row) against its row's answer and choices."""
        g = self.config.group_size
        golds = [a for a in rows["answer"].to_list() for _ in range(g)]
        choices = [c for c in rows["choices"].to_list() for _ in range(g)]
        texts = [s.text for s in flat]
        if self.reward_fn is not None:
            return self.reward_fn(texts, golds, choices)
        return score_batch(texts, golds, choices, config=self.config.rewards)

    def _update(
        self,
        requests: list[GenerationRequest],
        flat: list[CompletionSample],
        advantages: torch.Tensor,
        timings: dict[str, float],
    ) -> UpdateOutcome:
        """Train on the samples with their advantages (truncated ones masked if so configured)."""
        cfg, g = self.config, self.config.group_size
        prompts = [encode_prompt(self.policy, r) for r in requests]
        rollouts = [
            Rollout(
                prompt=i // g,
                response_ids=list(sample.token_ids),
                advantage=float(advantages[i]),
                train=not (cfg.truncated == "mask" and sample.finish_reason == "length"),
            )
            for i, sample in enumerate(flat)
        ]
        outcome = self.updater.update(prompts, rollouts, timings, step=self.state.step + 1)
        if outcome.applied:
            self.rollouts.mark_stale()
        self.state.skipped_updates += outcome.skipped
        return outcome

    def _update_online_vps(
        self, local: list[int], scores: list[RewardScore], samples: list[list[CompletionSample]]
    ) -> None:
        """New VPS of the sampled prompts from their G rollouts, gathered from every rank."""
        g = self.config.group_size
        accuracies = [
            [s.accuracy for s in scores[i * g : (i + 1) * g]] for i in range(len(samples))
        ]
        trajectories = [[list(s.token_ids) for s in group] for group in samples]
        scored = score_groups(accuracies, trajectories, self.config.vps)
        pairs = [(local[i], vps) for i, (_, _, _, vps) in enumerate(scored)]
        self._update_sampler_scores(pairs)

    def _update_sampler_scores(self, pairs: list[tuple[int, float]]) -> None:
        """Give the sampler every rank's (prompt index, VPS) pairs, in rank order."""
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            gathered = gather_object([pairs])  # one list per rank, in rank order
            pairs = [(int(i), float(v)) for rank_pairs in gathered for i, v in rank_pairs]
        self.sampler.update_scores([i for i, _ in pairs], [v for _, v in pairs])

    def _sync_rollouts(self) -> float:
        """Bring the rollout backend in step with the policy (before generating); seconds."""
        return self.rollouts.sync(self.accelerator.unwrap_model(self.model))

    # ----------------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-XXXXXX`` atomically (all processes must call this)."""
        acc = self.accelerator
        final = write_grpo_checkpoint(
            acc,
            self.checkpoint_root / step_dir_name(self.state.step),
            model=acc.unwrap_model(self.model),
            processor=self.policy.processor,
            optimizer=self.optimizer,
            sampler=self.sampler,
            state=self.state,
            engine=self.model if self.deepspeed else None,
        )
        if acc.is_main_process:
            prune_checkpoints(self.checkpoint_root, self.config.keep_last)
            if self.checkpoint_callback is not None:
                self.checkpoint_callback(final, self.state.step)
        acc.wait_for_everyone()
        return final

    def _load_checkpoint(self, path: Path) -> None:
        self.state = read_grpo_checkpoint(
            path,
            expected=(self.pool.height, self.config.seed, self.config.prompts_per_step),
            optimizer=self.optimizer,
            sampler=self.sampler,
            rank=self.accelerator.process_index,
            engine=self.model if self.deepspeed else None,
        )
        logger.info("resumed from %s at step %d", path, self.state.step)


def load_reward_function(spec: str) -> RewardFn:
    """Import ``package.module:function``; errors name the spec."""
    module_name, _, attr = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"reward_function {spec!r} cannot be imported: {exc}") from exc
    if not callable(function):
        raise ValueError(f"reward_function {spec!r} is not callable")
    return function  # type: ignore[no-any-return]


def run_grpo(
    config: GRPOConfig,
    *,
    model_path: Path,
    dataset_path: Path,
    output_dir: Path,
    vps_table: tuple[str, Path] | None = None,
    vps_lookup: VPSTableLookup | None = None,
    metrics_callback: MetricsCallback | None = None,
    checkpoint_callback: CheckpointCallback | None = None,
    reward_fn: RewardFn | None = None,
    resume: bool = True,
) -> GRPOResult:
    """Train ``model_path`` on the RL pool at ``dataset_path``; artefacts in ``output_dir``.

    ``vps_table`` = (ref, path) seeds the sampler's scores (ignored when
    resuming, the checkpoint has them); ``vps_lookup`` serves
    ``vps_refresh='catalog'``. ``resume=True`` continues from the newest
    complete checkpoint in ``output_dir/checkpoints``. ``reward_fn`` replaces
    the shared verifier (custom rewards; it must be deterministic for exact resume).
    """
    threads = torch.get_num_threads()
    trainer = GRPOTrainer(
        config,
        model_path,
        dataset_path,
        output_dir,
        vps_table=vps_table,
        vps_lookup=vps_lookup,
        metrics_callback=metrics_callback,
        checkpoint_callback=checkpoint_callback,
        reward_fn=reward_fn,
    )
    try:
        trainer.setup(resume=resume)
        return trainer.train()
    finally:
        trainer.close()
        torch.set_num_threads(threads)
