"""DeepSpeed through Accelerate: what a recipe must do itself, shared by SFT and GRPO.

Accelerate resolves a DeepSpeed config's ``"auto"`` values from a prepared
dataloader and ``model.config.hidden_size``. Our trainers prepare no dataloader
and a Qwen2.5-VL config keeps ``hidden_size`` in ``text_config``, where
Accelerate does not look (``prepare`` then fails on ``"auto"`` bucket sizes), so
the recipe fills them before ``prepare`` (:func:`fill_auto_entries`).

Under the DeepSpeed plugin ``accelerator.backward`` runs the engine's backward
and, when ``sync_gradients`` is set, its step: gradient clipping (the config's
``gradient_clipping``), the optimiser update, or a skipped update when the
gradients are not finite, then zeroing. A recipe therefore marks the
accumulation boundary per micro-batch (:func:`accumulation_context`) instead
of using ``no_sync``, and reads the norm and the engine's verdict afterwards
(:func:`engine_step_outcome`) instead of clipping and stepping itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from transformers import AutoConfig


def zero_stage(ds_config: Mapping[str, Any]) -> int:
    """The ZeRO stage of a DeepSpeed config (0 when it has no ``zero_optimization``)."""
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def hidden_size_entries(hidden_size: int) -> dict[str, int]:
    """Accelerate's own rules for the ZeRO bucket sizes that depend on the model width.

    ``reduce_bucket_size = h * h``; ZeRO-3 also prefetches ``0.9 * h * h``
    parameters ahead and keeps parameters smaller than ``10 * h`` elements whole
    on every process.
    """
    return {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }


def fill_auto_entries(
    ds_config: dict[str, Any],
    *,
    micro_batch_size: int,
    accumulation_steps: int,
    max_grad_norm: float | None,
    hidden_size: int,
    num_processes: int,
) -> None:
    """Replace the ``"auto"`` entries of ``ds_config`` in place with the recipe's values.

    - ``train_micro_batch_size_per_gpu`` = rows per forward/backward;
    - ``gradient_accumulation_steps`` = micro-batches per optimiser update (the
      engine steps at that boundary);
    - ``gradient_clipping`` = ``max_grad_norm`` (``None``: 0.0, DeepSpeed's "no
      clipping"; an explicit, different value is an error: the recipe's setting
      would silently not apply);
    - ``train_batch_size`` = micro x accumulation x processes;
    - ZeRO bucket sizes from ``hidden_size`` (:func:`hidden_size_entries`).
    """
    zero = ds_config.get("zero_optimization")
    if isinstance(zero, dict):
        for key, value in hidden_size_entries(hidden_size).items():
            if zero.get(key) == "auto":
                zero[key] = value
    clipping = 0.0 if max_grad_norm is None else float(max_grad_norm)
    wanted = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": accumulation_steps,
        "gradient_clipping": clipping,
    }
    for key, value in wanted.items():
        if ds_config.get(key, "auto") == "auto":
            ds_config[key] = value
        elif key == "gradient_clipping" and float(ds_config[key]) != value:
            raise ValueError(
                f"the DeepSpeed config sets gradient_clipping={ds_config[key]} but "
                f'max_grad_norm is {max_grad_norm}: set it to "auto" (or to the same value)'
            )
    if ds_config.get("train_batch_size", "auto") == "auto":
        ds_config["train_batch_size"] = (
            ds_config["train_micro_batch_size_per_gpu"]
            * ds_config["gradient_accumulation_steps"]
            * num_processes
        )


def prepare_deepspeed_config(
    accelerator: Accelerator,
    model_path: Path,
    *,
    micro_batch_size: int,
    accumulation_steps: int,
    max_grad_norm: float | None,
) -> dict[str, Any]:
    """Fill the DeepSpeed plugin's config for a recipe, before the model loads; return it.

    The "auto" entries come from the recipe and the width of ``model_path``'s text
    model (:func:`fill_auto_entries`). transformers reads the config through
    Accelerate's weak reference when it loads a model (under ZeRO-3 it
    partitions the weights at load), so that reference is renewed with the
    filled config.
    """
    plugin = accelerator.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    fill_auto_entries(
        ds,
        micro_batch_size=micro_batch_size,
        accumulation_steps=accumulation_steps,
        max_grad_norm=max_grad_norm,
        hidden_size=AutoConfig.from_pretrained(model_path).get_text_config().hidden_size,
        num_processes=accelerator.num_processes,
    )
    plugin.set_deepspeed_weakref()
    return ds


def check_zero3_saving(ds_config: Mapping[str, Any]) -> None:
    """Refuse a ZeRO-3 config whose weights cannot be gathered for ``save_pretrained``.

    Under ZeRO-3 every process holds a shard of each parameter; a recipe saves
    whole weights through ``accelerator.get_state_dict`` (the engine's
    consolidated 16-bit state dict), which needs
    ``stage3_gather_16bit_weights_on_model_save``. Checked before training
    rather than failing at the first save.
    """
    gather = ds_config.get("zero_optimization", {}).get("stage3_gather_16bit_weights_on_model_save")
    if zero_stage(ds_config) == 3 and gather is not True:
        raise ValueError(
            "the DeepSpeed config uses ZeRO-3 without "
            '"stage3_gather_16bit_weights_on_model_save": true in zero_optimization; the '
            "checkpoints and the final model are written with save_pretrained from gathered "
            "weights, so set it (see deployments/accelerate/ds_zero3.json)"
        )


def check_zero3_images(text_only: int, example: str | None, *, source: Path | str) -> None:
    """Refuse text-only training samples of a VLM under ZeRO-3 with several processes.

    ZeRO-3 gathers a module's parameter shards collectively when the module
    runs, so every process must run the same modules in the same order. A
    Qwen2.5-VL runs its vision tower only on a batch with images: a text-only
    micro-batch on one process next to an image batch on another pairs
    mismatched gathers and hangs. (Evaluation avoids this by running the same
    batches on every process.) ``text_only``: how many training samples have
    no image; ``example``: the id of one of them.
    """
    if text_only:
        raise ValueError(
            f"{source}: {text_only} training sample(s) have no image "
            f"(e.g. {example!r}); under DeepSpeed ZeRO-3 with several processes a "
            "text-only micro-batch next to an image batch deadlocks the parameter "
            "gathers of the vision tower. Use ZeRO-2 (deepspeed_zero2.yaml) or give every "
            "sample an image"
        )


def keep_used_weight_conversions(model: Any) -> None:
    """Make a model loaded under ZeRO-3 save in the key format it was read from.

    ``save_pretrained`` reverts the renamings recorded at load time. transformers'
    ordinary loader records the ones that applied; its ZeRO-3 loader records
    every candidate, legacy ones included, and a Qwen2.5-VL then saves
    ``model.model.layers.*`` keys that load as missing weights. Keep the used
    ones, as the ordinary loader does (transformers 5.24).
    """
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        model._weight_conversions = [c for c in conversions if c.was_used()]


def accumulation_context(
    accelerator: Accelerator, model: Any, *, last: bool, deepspeed: bool
) -> AbstractContextManager[Any]:
    """Context of one micro-batch's forward and backward; ``last`` ends the accumulation.

    DDP: skip the gradient all-reduce until the last micro-batch (``no_sync``).
    DeepSpeed: the flag marks the boundary, where ``accelerator.backward`` lets
    the engine step; the engine reduces gradients as its ZeRO stage requires
    (``no_sync`` does not apply to it).
    """
    if deepspeed:
        accelerator.gradient_state._set_sync_gradients(last)
        return nullcontext()
    return nullcontext() if last else accelerator.no_sync(model)


def engine_step_outcome(accelerator: Accelerator, engine: Any) -> tuple[float, bool]:
    """After an update's last backward under DeepSpeed: (global grad norm, update applied).

    The engine has clipped (to its ``gradient_clipping``), stepped or skipped a
    step whose gradients are not finite (its norm is then ``inf``), and zeroed
    the gradients inside that backward. The norm is the one before clipping, as
    ``clip_grad_norm_`` returns it on the plain path; NaN if the engine computed
    none. Leaves ``sync_gradients`` set, as outside an accumulation.
    """
    accelerator.gradient_state._set_sync_gradients(True)
    norm = engine.get_global_grad_norm()
    value = math.nan if norm is None else float(norm)
    return value, bool(engine.was_step_applied())
