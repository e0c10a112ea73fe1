"""The SFT recipe: long-CoT cold start with assistant-only loss (docs/METHOD.md section 8).

One process or N (``accelerate launch`` / ``torchrun``, DDP over NCCL or
gloo) run the same code. The dataset is never loaded: each process reads and
encodes the samples of its own micro-batches when they are drawn, in
DataLoader workers (``mmr1.sft.stream``); a sample longer than
``cutoff_len`` is dropped from its micro-batch and counted. Per optimiser step:

1. Each process takes its chunk of the global batch (``mmr1.sft.sampling``)
   as ``grad_accum`` micro-batches and counts their target tokens; the counts
   are summed over processes (``N_global``) *before* any forward pass.
2. Each micro-batch's loss is ``sum_CE * world_size / N_global``; backward
   accumulates gradients (without DDP synchronisation until the last
   micro-batch). DDP averages over processes, so the gradient is that of
   ``sum_CE(global batch) / N_global``: the token mean over the whole global
   batch, whatever its split into processes and micro-batches. A micro-batch
   whose samples were all dropped runs the data's filler sample at weight 0.
3. Clip the global grad norm (logged); if it is not finite the update is
   skipped (counted), otherwise AdamW steps; the LR schedule steps either way.

Evaluation (every ``eval_every`` steps and at the end) computes the
token-weighted ``eval_loss`` on the held-out split (sharded over processes)
and, on the main process, greedy answers for up to ``eval_max_items`` items
scored by the project's reward (``eval_accuracy``, ``eval_format``). The best
evaluation by ``best_metric`` is saved to ``output_dir/best``; the last
weights to ``output_dir/final``; resumable checkpoints to
``output_dir/checkpoints/step-XXXXXX`` (``mmr1.trainer.checkpoint``).

Resuming reloads weights, optimizer, scheduler, RNG states, the step and the
drop count; the data position follows from the step. On CPU a resumed run
reaches bitwise the weights of an uninterrupted one.

Under DeepSpeed (ZeRO-2 or ZeRO-3, ``accelerate launch`` with
``deployments/accelerate/deepspeed_zero*.yaml``) the same steps hold, done by
the engine inside the last micro-batch's ``accelerator.backward``
(``mmr1.trainer.deepspeed``): its config gets ``grad_accum``, the micro-batch
and ``gradient_clipping = max_grad_norm`` before the model loads; it clips,
steps or skips a non-finite update, and the recipe reads its grad norm and
verdict. The LR schedule stays the recipe's, stepped once per update as
above (the engine never sees it). Checkpoints hold the engine's own
``save_checkpoint`` (fp32 master weights and every process's optimizer
partition) instead of ``optimizer.pt``. Under ZeRO-3, where each process holds
a shard of every parameter, weights are gathered for ``save_pretrained``, and
evaluation runs the same forward passes on every process (ZeRO-3 gathers a
layer's parameters collectively at each forward).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list

from mmr1.models.loader import Policy
from mmr1.sft.data import IGNORE_INDEX, MicroBatch
from mmr1.sft.evaluation import answerable, generation_metrics, heldout_loss, improves
from mmr1.sft.loss import chunked_cross_entropy, token_cross_entropy
from mmr1.sft.schedule import build_scheduler
from mmr1.sft.stream import SFTData
from mmr1.trainer.checkpoint import (
    TrainerState,
    check_resumable,
    gathered_state_dict,
    load_rng_state,
    load_training_state,
    prune_checkpoints,
    read_trainer_state,
    save_model,
    step_dir_name,
    write_checkpoint,
)
from mmr1.trainer.deepspeed import (
    accumulation_context,
    check_zero3_saving,
    engine_step_outcome,
    prepare_deepspeed_config,
    zero_stage,
)
from mmr1.trainer.job import adamw, load_trainable, open_job
from schemas.sft import SFTConfig, SFTResult

logger = logging.getLogger(__name__)

MetricsCallback = Callable[[dict[str, float], int], None]
_SCHEDULER_ORDER_WARNING = "Detected call of `lr_scheduler.step()` before `optimizer.step()`"
#: Steps whose too-long samples are named in a warning (the count is always logged).
_DROP_WARNINGS = 5


class SFTRecipe:
    """Supervised fine-tuning of one policy on one SFT dataset (module docstring).

    Use :func:`run_sft`, or ``recipe.setup(resume=...)`` then ``recipe.train()``.
    ``metrics_callback(metrics, step)`` runs on the main process only, after
    each log step and each evaluation; an exception from it stops training.
    """

    def __init__(
        self,
        config: SFTConfig,
        model_path: Path,
        dataset_path: Path,
        output_dir: Path,
        metrics_callback: MetricsCallback | None = None,
    ) -> None:
        self.config = config
        self.model_path = Path(model_path)
        self.dataset_path = Path(dataset_path)
        self.output_dir = Path(output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"
        self.metrics_callback = metrics_callback
        self.accelerator: Accelerator | None = None

    # ----------------------------------------------------------------------- setup

    def setup(self, *, resume: bool = True) -> None:
        """Build accelerator, model, data and optimizer; resume from the newest checkpoint."""
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
        acc = self.accelerator
        self.deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        self.zero3 = False
        if self.deepspeed:
            ds = prepare_deepspeed_config(
                acc,
                self.model_path,
                micro_batch_size=cfg.micro_batch_size,
                accumulation_steps=cfg.grad_accum,
                max_grad_norm=cfg.max_grad_norm,
            )
            check_zero3_saving(ds)
            self.zero3 = zero_stage(ds) == 3
        self._setup_model(resume_from or self.model_path)
        self._setup_data()
        self._setup_optimizer()
        self.model, self.optimizer = acc.prepare(self.policy.model, self.optimizer)
        self.scheduler = build_scheduler(
            self.optimizer,
            total_steps=self.total_steps,
            warmup_ratio=cfg.warmup_ratio,
            kind=cfg.scheduler,
            min_lr_ratio=cfg.min_lr_ratio,
        )
        self.state = TrainerState(
            step=0,
            global_batch_size=self.global_batch_size,
            world_size=acc.num_processes,
            samples_seen=0,
            epoch=0,
            epoch_offset=0,
            data_seed=cfg.seed,
            train_samples=len(self.data.train),
            total_steps=self.total_steps,
        )
        self._last_saved_step: int | None = None
        self._drop_warnings = 0
        if resume_from is not None:
            self.load_checkpoint(resume_from)

    def _setup_model(self, path: Path) -> None:
        """Load fp32 master weights (from the base model, or the checkpoint being resumed)."""
        cfg = self.config
        self.policy = load_trainable(
            path,
            self.accelerator,
            freeze_vision=cfg.freeze_vision,
            gradient_checkpointing=cfg.gradient_checkpointing,
            zero3=self.zero3,
        )

    def _setup_data(self) -> None:
        """Open the dataset lazily, split it (seeded hash), check it, plan the steps."""
        cfg = self.config
        self.data = SFTData(self.dataset_path, self.policy, cfg)
        if cfg.best_metric == "eval_accuracy" and not answerable(self.data.eval_records(), 1):
            raise ValueError(
                "best_metric='eval_accuracy' but no held-out record is a single "
                "[system?, human, gpt] exchange that greedy generation can answer"
            )
        if self.zero3 and self.policy.is_vlm and self.accelerator.num_processes > 1:
            self.data.check_zero3_images()
        world = self.accelerator.num_processes if self.accelerator else 1
        self.global_batch_size = cfg.global_batch_size(world)
        self.total_steps = cfg.max_steps or max(
            1, math.ceil(cfg.epochs * len(self.data.train) / self.global_batch_size)
        )

    def _setup_optimizer(self) -> None:
        """AdamW over trainable parameters (:func:`mmr1.trainer.job.adamw`)."""
        cfg = self.config
        self.optimizer = adamw(
            self.policy.model,
            lr=cfg.lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
            vision_lr_scale=cfg.vision_lr_scale,
        )

    # ----------------------------------------------------------------------- train

    def _emit(self, metrics: dict[str, float], step: int) -> None:
        if self.metrics_callback is not None and self.accelerator.is_main_process:
            self.metrics_callback(metrics, step)

    def _loss_on(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.accelerator.device
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        labels = batch["labels"].to(device)
        if self.config.loss_chunk_size is None:
            logits = model(**inputs, use_cache=False).logits
            return token_cross_entropy(logits, labels)
        return chunked_cross_entropy(
            model, inputs, labels, chunk_size=self.config.loss_chunk_size, module_head=self.zero3
        )

    def train(self) -> SFTResult:
        """Run to ``total_steps`` (from the resumed step), evaluate, save; return the result."""
        if self.accelerator is None:
            raise RuntimeError("call setup() before train()")
        acc, cfg, state = self.accelerator, self.config, self.state
        n_train, n_eval = len(self.data.train), len(self.data.eval)
        eval_enabled = n_eval > 0
        self._emit(
            {
                "train_samples": float(n_train),
                "eval_samples": float(n_eval),
                "total_steps": float(self.total_steps),
            },
            state.step,
        )
        if acc.is_main_process:
            logger.info(
                "SFT: %d train / %d eval samples (read and encoded when drawn, %d worker(s)), "
                "%d steps of %d samples on %d process(es), from step %d",
                n_train,
                n_eval,
                cfg.num_workers,
                self.total_steps,
                self.global_batch_size,
                acc.num_processes,
                state.step,
            )
        batches = iter(
            self.data.train_loader(
                start_step=state.step,
                stop_step=self.total_steps,
                rank=acc.process_index,
                world_size=acc.num_processes,
            )
        )
        window = torch.zeros(3, dtype=torch.float64)  # global loss sum, targets, tokens
        window_time, run_tokens, run_time = 0.0, 0.0, 0.0
        self.model.train()
        while state.step < self.total_steps:
            started = time.perf_counter()
            lr = self.scheduler.get_last_lr()[0]
            step = self._optimizer_step([next(batches) for _ in range(cfg.grad_accum)])
            elapsed = time.perf_counter() - started
            window += torch.tensor(step[:3], dtype=torch.float64)
            window_time += elapsed
            run_time += elapsed
            run_tokens += step[2]

            if state.step % cfg.log_every == 0 or state.step == self.total_steps:
                loss_total, target_total, token_total = window.tolist()
                metrics = {
                    "loss": loss_total / max(target_total, 1.0),
                    "lr": lr,
                    "grad_norm": step[3],
                    "tokens_per_s": token_total / max(window_time, 1e-9),
                    "samples_seen": float(state.samples_seen),
                    "epoch": state.samples_seen / n_train,
                    "skipped_steps": float(state.skipped_steps),
                    "dropped_too_long": float(state.dropped_too_long),
                }
                state.history.append({"step": state.step, **metrics})
                self._emit(metrics, state.step)
                window.zero_()
                window_time = 0.0
            if eval_enabled and state.step % cfg.eval_every == 0:
                self._evaluate_and_select()
            if state.step % cfg.save_every == 0:
                self.save_checkpoint()

        if eval_enabled and state.last_eval_step != state.step:
            self._evaluate_and_select()
        if self._last_saved_step != state.step:
            self.save_checkpoint()
        return self._finish(run_tokens / run_time if run_time > 0 else 0.0)

    def _optimizer_step(self, micro_batches: list[MicroBatch]) -> tuple[float, float, float, float]:
        """One optimiser step (module docstring, steps 1-3); advances ``self.state``.

        Returns ``(loss sum, labelled tokens, non-pad tokens)`` summed over all
        processes, and the global gradient norm before clipping.
        """
        acc, cfg, state = self.accelerator, self.config, self.state
        device = acc.device
        kept = [mb.tensors for mb in micro_batches if mb.tensors is not None]
        local = torch.tensor(
            [
                sum(float((mb["labels"][:, 1:] != IGNORE_INDEX).sum()) for mb in kept),
                sum(float(mb["attention_mask"].sum()) for mb in kept),
                sum(mb.dropped_first_epoch for mb in micro_batches),
            ],
            dtype=torch.float64,
            device=device,
        )
        targets, tokens, dropped = acc.reduce(local, "sum").tolist()
        self._note_drops(micro_batches, int(dropped))
        scale = acc.num_processes / max(targets, 1.0)
        if self.deepspeed:
            # The engine divides each micro-batch's loss by its accumulation steps
            # (grad_accum); the scale above already makes the sum the token mean.
            scale *= acc.gradient_accumulation_steps
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for index, micro in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            # All samples too long: the filler keeps this process's backward calls in step.
            batch, weight = (
                (micro.tensors, scale) if micro.tensors is not None else (self.data.filler, 0.0)
            )
            with accumulation_context(acc, self.model, last=last, deepspeed=self.deepspeed):
                micro_loss, _ = self._loss_on(self.model, batch)
                acc.backward(micro_loss * weight)
            if micro.tensors is not None:
                loss_sum += micro_loss.detach().double()
        if self.deepspeed:
            # The engine clipped and stepped (or skipped) inside the last backward.
            grad_norm, applied = engine_step_outcome(acc, self.model)
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
            grad_norm = acc.clip_grad_norm_(params, max_norm)
            applied = bool(torch.isfinite(grad_norm))
            if applied:
                self.optimizer.step()
        if not applied:
            state.skipped_steps += 1
            logger.warning("step %d: non-finite grad norm, update skipped", state.step + 1)
        if not self.deepspeed:
            self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # The schedule advances on skipped steps too; torch warns if the first one is.
            warnings.filterwarnings("ignore", re.escape(_SCHEDULER_ORDER_WARNING))
            self.scheduler.step()
        state.step += 1
        state.samples_seen = state.step * self.global_batch_size
        state.epoch, state.epoch_offset = self.data.stream.position(state.samples_seen)
        global_loss = float(acc.reduce(loss_sum, "sum"))
        return global_loss, targets, tokens, float(grad_norm)

    def _note_drops(self, micro_batches: list[MicroBatch], new_drops: int) -> None:
        """Count too-long samples met for the first time (all processes); name the first few."""
        self.state.dropped_too_long += new_drops
        ids = [i for mb in micro_batches for i in mb.dropped_ids]
        if ids and self._drop_warnings < _DROP_WARNINGS:
            self._drop_warnings += 1
            logger.warning(
                "step %d: sample(s) longer than cutoff_len=%d tokens dropped (%s); %d so far%s",
                self.state.step + 1,
                self.config.cutoff_len,
                ", ".join(ids[:3]),
                self.state.dropped_too_long,
                "; later drops are only counted (metric dropped_too_long)"
                if self._drop_warnings == _DROP_WARNINGS
                else "",
            )

    def _finish(self, tokens_per_s: float) -> SFTResult:
        acc, state = self.accelerator, self.state
        final = self.output_dir / "final"
        best = self.output_dir / "best"
        save_model(self.accelerator, self.model, self.policy.processor, final, zero3=self.zero3)
        result = SFTResult(
            final_checkpoint=str(final),
            best_checkpoint=str(best if state.best_step is not None else final),
            best_metric=state.best_metric,
            steps=state.step,
            history=state.history,
            eval_history=state.eval_history,
            dropped_too_long=state.dropped_too_long + state.eval_dropped_too_long,
            train_samples=len(self.data.train),
            eval_samples=len(self.data.eval),
            tokens_per_s=tokens_per_s,
            skipped_steps=state.skipped_steps,
        )
        if acc.is_main_process:
            (self.output_dir / "result.json").write_text(result.model_dump_json(indent=2))
        return result

    # -------------------------------------------------------------------- evaluate

    def evaluate(self) -> dict[str, float]:
        """Held-out ``eval_loss`` (token-weighted), greedy ``eval_accuracy`` and ``eval_format``."""
        acc, cfg = self.accelerator, self.config
        model = acc.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        # ZeRO-3 gathers each layer's parameters collectively when it runs, so every
        # process must run the same forwards (same batches, hence the same modules,
        # the vision tower included): each one evaluates everything. Otherwise the
        # held-out set is sharded and greedy answers come from the main process.
        n_eval = len(self.data.eval)
        if self.zero3:
            mine = list(range(n_eval))
        else:
            mine = list(range(acc.process_index, n_eval, acc.num_processes))
        dropped = torch.zeros(1, dtype=torch.float64, device=acc.device)

        def batches() -> Iterator[dict[str, torch.Tensor]]:
            for micro in self.data.eval_loader(mine):
                dropped[0] += micro.dropped
                if micro.tensors is not None:  # the same on every process under ZeRO-3
                    yield micro.tensors

        totals = torch.cat([heldout_loss(model, batches(), acc.device), dropped])
        if not self.zero3:
            totals = acc.reduce(totals, "sum")
        loss_total, count_total, dropped_total = totals.tolist()
        self.state.eval_dropped_too_long = int(dropped_total)
        metrics = {"eval_loss": loss_total / max(count_total, 1.0)}
        if cfg.eval_max_items > 0:
            generated: list[Any] = [None]
            # Under ZeRO-3 with several processes transformers' generate keeps them in
            # step (synced_gpus) until the last one has finished its batch.
            if acc.is_main_process or self.zero3:
                policy = Policy(
                    model=model,
                    processor=self.policy.processor,
                    device=acc.device,
                    is_vlm=self.policy.is_vlm,
                )
                generated[0] = generation_metrics(
                    policy,
                    answerable(self.data.eval_records(), cfg.eval_max_items),
                    max_new_tokens=cfg.eval_max_new_tokens,
                    image_root=self.data.eval.encoder.image_root,
                )
            broadcast_object_list(generated, from_process=0)
            metrics.update(generated[0] or {})
        model.train(was_training)
        return metrics

    def _evaluate_and_select(self) -> None:
        acc, cfg, state = self.accelerator, self.config, self.state
        metrics = self.evaluate()
        state.last_eval_step = state.step
        state.eval_history.append({"step": state.step, **metrics})
        self._emit(metrics, state.step)
        value = metrics.get(cfg.best_metric)
        if value is None or not math.isfinite(value):
            return
        if improves(value, state.best_metric, cfg.best_metric):
            state.best_metric, state.best_step = value, state.step
            save_model(
                acc, self.model, self.policy.processor, self.output_dir / "best", zero3=self.zero3
            )
            if acc.is_main_process:
                logger.info("step %d: new best %s = %.4f", state.step, cfg.best_metric, value)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-XXXXXX`` atomically and prune old ones (all processes)."""
        acc = self.accelerator
        final = write_checkpoint(
            acc,
            self.checkpoint_root / step_dir_name(self.state.step),
            model=acc.unwrap_model(self.model),
            processor=self.policy.processor,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=self.state,
            engine=self.model if self.deepspeed else None,
            state_dict=gathered_state_dict(self.accelerator, self.model, zero3=self.zero3),
        )
        if acc.is_main_process:
            prune_checkpoints(self.checkpoint_root, self.config.keep_last)
        acc.wait_for_everyone()
        self._last_saved_step = self.state.step
        return final

    def load_checkpoint(self, path: Path) -> None:
        """Restore optimizer, scheduler, RNG and loop state from ``path``.

        The weights were already loaded from the same directory by
        :meth:`_setup_model` (``setup`` does both); under DeepSpeed the engine
        reloads them too, with its fp32 master copy and optimizer partitions.
        """
        acc = self.accelerator
        check_resumable(
            read_trainer_state(path),
            path,
            global_batch_size=self.global_batch_size,
            train_samples=len(self.data.train),
            seed=self.config.seed,
            total_steps=self.total_steps,
        )
        state = load_training_state(
            path,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            engine=self.model if self.deepspeed else None,
        )
        state.total_steps = self.total_steps
        load_rng_state(path, acc.process_index)
        self.state = state
        self._last_saved_step = state.step
        if acc.is_main_process:
            logger.info("resumed from %s at step %d", path, state.step)


def run_sft(
    config: SFTConfig,
    *,
    model_path: Path,
    dataset_path: Path,
    output_dir: Path,
    metrics_callback: MetricsCallback | None = None,
    resume: bool = True,
) -> SFTResult:
    """Fine-tune ``model_path`` on ``dataset_path``; artefacts and result.json in ``output_dir``.

    ``resume=True`` continues from the newest complete checkpoint in
    ``output_dir/checkpoints`` (a fresh start if there is none); ``False``
    deletes those checkpoints and starts over.
    """
    threads = torch.get_num_threads()
    recipe = SFTRecipe(config, model_path, dataset_path, output_dir, metrics_callback)
    try:
        recipe.setup(resume=resume)
        return recipe.train()
    finally:
        torch.set_num_threads(threads)  # config.torch_threads must not outlive the run


def read_result(output_dir: Path) -> SFTResult:
    """The :class:`SFTResult` a finished run wrote to ``output_dir/result.json``."""
    path = Path(output_dir) / "result.json"
    return SFTResult.model_validate(json.loads(path.read_text()))
