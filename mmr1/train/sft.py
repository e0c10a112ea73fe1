"""The SFT recipe: long-CoT cold start with assistant-only loss (docs/METHOD.md section 8).

One process or N (``accelerate launch`` / ``torchrun``, DDP over NCCL or
gloo) run the same code. Per optimiser step:

1. Each process takes its chunk of the global batch (``mmr1.train.sampling``)
   as ``grad_accum`` micro-batches and counts their target tokens; the counts
   are summed over processes (``N_global``) *before* any forward pass.
2. Each micro-batch's loss is ``sum_CE * world_size / N_global``; backward
   accumulates gradients (without DDP synchronisation until the last
   micro-batch). DDP averages over processes, so the gradient is that of
   ``sum_CE(global batch) / N_global``: the token mean over the whole global
   batch, whatever its split into processes and micro-batches.
3. Clip the global grad norm (logged); if it is not finite the update is
   skipped (counted), otherwise AdamW steps; the LR schedule steps either way.

Evaluation (every ``eval_every`` steps and at the end) computes the
token-weighted ``eval_loss`` on the held-out split (sharded over processes)
and, on the main process, greedy answers for up to ``eval_max_items`` items
scored by the project's reward (``eval_accuracy``, ``eval_format``). The best
evaluation by ``best_metric`` is saved to ``output_dir/best``; the last
weights to ``output_dir/final``; resumable checkpoints to
``output_dir/checkpoints/step-XXXXXX`` (``mmr1.train.checkpoint``).

Resuming reloads weights, optimizer, scheduler, RNG states and the step; the
data position follows from the step. On CPU a resumed run reaches bitwise the
weights of an uninterrupted one.

Under DeepSpeed (ZeRO-2 or ZeRO-3, ``accelerate launch`` with
``deployments/accelerate/deepspeed_zero*.yaml``) the same steps hold, done by
the engine inside the last micro-batch's ``accelerator.backward``
(``mmr1.train.deepspeed``): its config gets ``grad_accum``, the micro-batch
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
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, set_seed
from torch.utils.data import DataLoader

from mmr1.data.io import read_sft_dataset
from mmr1.models.loader import Policy, load_policy
from mmr1.train.checkpoint import (
    TrainerState,
    check_resumable,
    gathered_state_dict,
    latest_checkpoint,
    load_rng_state,
    load_training_state,
    prune_checkpoints,
    read_trainer_state,
    save_model,
    step_dir_name,
    write_checkpoint,
)
from mmr1.train.data import IGNORE_INDEX, SFTCollator, SFTDataset, SFTEncoder
from mmr1.train.deepspeed import (
    accumulation_context,
    check_zero3_images,
    check_zero3_saving,
    engine_step_outcome,
    keep_used_weight_conversions,
    prepare_deepspeed_config,
    zero_stage,
)
from mmr1.train.evaluation import answerable, generation_metrics, heldout_loss, improves
from mmr1.train.job import make_accelerator
from mmr1.train.loss import token_cross_entropy
from mmr1.train.sampling import SampleStream, StepBatchSampler, split_train_eval
from mmr1.train.schedule import build_scheduler
from schemas.sft import SFTConfig, SFTResult

logger = logging.getLogger(__name__)

MetricsCallback = Callable[[dict[str, float], int], None]
_SCHEDULER_ORDER_WARNING = "Detected call of `lr_scheduler.step()` before `optimizer.step()`"


def vision_tower(model: torch.nn.Module) -> torch.nn.Module | None:
    """The vision encoder of a VLM (Qwen2.5-VL in transformers 5: ``model.model.visual``)."""
    for owner in (model, getattr(model, "model", None)):
        tower = getattr(owner, "visual", None) if owner is not None else None
        if isinstance(tower, torch.nn.Module):
            return tower
    return None


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
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.accelerator = make_accelerator(
            self.model_path, precision=cfg.precision, freeze_vision=cfg.freeze_vision
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
        set_seed(cfg.seed)
        resume_from = latest_checkpoint(self.checkpoint_root) if resume else None
        if not resume and acc.is_main_process and self.checkpoint_root.exists():
            logger.warning("resume=False: removing old checkpoints in %s", self.checkpoint_root)
            shutil.rmtree(self.checkpoint_root)
        acc.wait_for_everyone()
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
            train_samples=len(self.train_data),
            total_steps=self.total_steps,
        )
        self._last_saved_step: int | None = None
        if resume_from is not None:
            self.load_checkpoint(resume_from)

    def _setup_model(self, path: Path) -> None:
        """Load fp32 master weights (from the base model, or the checkpoint being resumed)."""
        acc = self.accelerator
        assert acc is not None
        self.policy = load_policy(path, device=acc.device, dtype=torch.float32, for_training=True)
        model = self.policy.model
        if self.zero3:
            keep_used_weight_conversions(model)
        if self.config.freeze_vision:
            tower = vision_tower(model)
            if tower is None:
                raise ValueError(
                    f"freeze_vision=True but {type(model).__name__} ({path}) has no vision tower"
                )
            tower.requires_grad_(False)
        if self.config.gradient_checkpointing:
            # Non-reentrant: works with frozen inputs and with DDP's unused-parameter search.
            # transformers renamed the method (the old name warns from 5.2x on).
            kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def _setup_data(self) -> None:
        """Read, split (seeded), encode and length-filter the dataset; plan the steps."""
        cfg = self.config
        records = read_sft_dataset(self.dataset_path)
        if not records:
            raise ValueError(f"{self.dataset_path}: the SFT dataset has no rows")
        train_idx, eval_idx = split_train_eval(len(records), cfg.eval_fraction, cfg.seed)
        root = self.dataset_path if self.dataset_path.is_dir() else self.dataset_path.parent
        encoder = SFTEncoder(self.policy.processor, is_vlm=self.policy.is_vlm, image_root=root)

        def dataset(indices: list[int]) -> SFTDataset:
            return SFTDataset(
                [records[i] for i in indices],
                encoder,
                cutoff_len=cfg.cutoff_len,
                cache=cfg.cache_examples,
            )

        self.train_data = dataset(train_idx)
        self.eval_data = dataset(eval_idx)
        self.dropped_too_long = (
            self.train_data.stats.dropped_too_long + self.eval_data.stats.dropped_too_long
        )
        if len(self.train_data) == 0:
            raise ValueError(
                f"{self.dataset_path}: no training sample fits cutoff_len={cfg.cutoff_len} "
                f"({self.train_data.stats.dropped_too_long} dropped as too long)"
            )
        if cfg.best_metric == "eval_accuracy" and not answerable(self.eval_data.records, 1):
            raise ValueError(
                "best_metric='eval_accuracy' but no held-out record is a single "
                "[system?, human, gpt] exchange that greedy generation can answer"
            )
        if self.zero3 and self.policy.is_vlm and self.accelerator.num_processes > 1:
            check_zero3_images(self.train_data.records, source=self.dataset_path)
        tokenizer = self.policy.tokenizer
        pad_id = tokenizer.pad_token_id
        self.collator = SFTCollator(
            pad_id if pad_id is not None else tokenizer.eos_token_id, is_vlm=self.policy.is_vlm
        )
        self.stream = SampleStream(len(self.train_data), cfg.seed)
        world = self.accelerator.num_processes if self.accelerator else 1
        self.global_batch_size = cfg.global_batch_size(world)
        self.total_steps = cfg.max_steps or max(
            1, math.ceil(cfg.epochs * len(self.train_data) / self.global_batch_size)
        )

    def _setup_optimizer(self) -> None:
        """AdamW over trainable parameters; matrices decay, biases and norm weights do not."""
        cfg = self.config
        decay, no_decay = [], []
        for param in self.policy.model.parameters():
            if param.requires_grad:
                # A ZeRO-3 parameter is an empty shard; ds_shape is its real shape.
                shape = getattr(param, "ds_shape", param.shape)
                (decay if len(shape) >= 2 else no_decay).append(param)
        groups = [
            {"params": params, "weight_decay": wd}
            for params, wd in ((decay, cfg.weight_decay), (no_decay, 0.0))
            if params
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)

    # ----------------------------------------------------------------------- train

    def _emit(self, metrics: dict[str, float], step: int) -> None:
        if self.metrics_callback is not None and self.accelerator.is_main_process:
            self.metrics_callback(metrics, step)

    def _loss_on(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.accelerator.device
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits
        return token_cross_entropy(logits, batch["labels"].to(device))

    def _train_loader(self) -> DataLoader:
        acc, cfg = self.accelerator, self.config
        sampler = StepBatchSampler(
            self.stream,
            start_step=self.state.step,
            stop_step=self.total_steps,
            micro_batch_size=cfg.micro_batch_size,
            grad_accum=cfg.grad_accum,
            rank=acc.process_index,
            world_size=acc.num_processes,
        )
        return DataLoader(
            self.train_data,
            batch_sampler=sampler,
            collate_fn=self.collator,
            num_workers=cfg.num_workers,
        )

    def train(self) -> SFTResult:
        """Run to ``total_steps`` (from the resumed step), evaluate, save; return the result."""
        if self.accelerator is None:
            raise RuntimeError("call setup() before train()")
        acc, cfg, state = self.accelerator, self.config, self.state
        eval_enabled = len(self.eval_data) > 0
        self._emit(
            {
                "train_samples": float(len(self.train_data)),
                "eval_samples": float(len(self.eval_data)),
                "dropped_too_long": float(self.dropped_too_long),
                "total_steps": float(self.total_steps),
            },
            state.step,
        )
        if acc.is_main_process:
            logger.info(
                "SFT: %d train / %d eval samples (%d dropped as too long), %d steps of %d "
                "samples on %d process(es), from step %d",
                len(self.train_data),
                len(self.eval_data),
                self.dropped_too_long,
                self.total_steps,
                self.global_batch_size,
                acc.num_processes,
                state.step,
            )
        batches = iter(self._train_loader())
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
                    "epoch": state.samples_seen / len(self.train_data),
                    "skipped_steps": float(state.skipped_steps),
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

    def _optimizer_step(
        self, micro_batches: list[dict[str, torch.Tensor]]
    ) -> tuple[float, float, float, float]:
        """One optimiser step (module docstring, steps 1-3); advances ``self.state``.

        Returns ``(loss sum, labelled tokens, non-pad tokens)`` summed over all
        processes, and the global gradient norm before clipping.
        """
        acc, cfg, state = self.accelerator, self.config, self.state
        device = acc.device
        local = torch.tensor(
            [
                sum(float((mb["labels"][:, 1:] != IGNORE_INDEX).sum()) for mb in micro_batches),
                sum(float(mb["attention_mask"].sum()) for mb in micro_batches),
            ],
            dtype=torch.float64,
            device=device,
        )
        targets, tokens = acc.reduce(local, "sum").tolist()
        scale = acc.num_processes / max(targets, 1.0)
        if self.deepspeed:
            # The engine divides each micro-batch's loss by its accumulation steps
            # (grad_accum); the scale above already makes the sum the token mean.
            scale *= acc.gradient_accumulation_steps
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for index, batch in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            with accumulation_context(acc, self.model, last=last, deepspeed=self.deepspeed):
                micro_loss, _ = self._loss_on(self.model, batch)
                acc.backward(micro_loss * scale)
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
        state.epoch, state.epoch_offset = self.stream.position(state.samples_seen)
        global_loss = float(acc.reduce(loss_sum, "sum"))
        return global_loss, targets, tokens, float(grad_norm)

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
            dropped_too_long=self.dropped_too_long,
            train_samples=len(self.train_data),
            eval_samples=len(self.eval_data),
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
        if self.zero3:
            mine = list(range(len(self.eval_data)))
        else:
            mine = list(range(acc.process_index, len(self.eval_data), acc.num_processes))
        batches = (
            self.collator([self.eval_data[i] for i in mine[start : start + cfg.micro_batch_size]])
            for start in range(0, len(mine), cfg.micro_batch_size)
        )
        totals = heldout_loss(model, batches, acc.device)
        if not self.zero3:
            totals = acc.reduce(totals, "sum")
        loss_total, count_total = totals.tolist()
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
                    answerable(self.eval_data.records, cfg.eval_max_items),
                    max_new_tokens=cfg.eval_max_new_tokens,
                    image_root=self.eval_data.encoder.image_root,
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
            train_samples=len(self.train_data),
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
