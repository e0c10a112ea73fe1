"""DeepSpeed through Accelerate: the config entries a recipe must fill itself.

Accelerate resolves a DeepSpeed config's ``"auto"`` values from a prepared
dataloader and ``model.config.hidden_size``. Our trainers prepare no dataloader
and a Qwen2.5-VL config keeps ``hidden_size`` in ``text_config``, where
Accelerate does not look (``prepare`` then fails on ``"auto"`` bucket sizes), so
the recipe fills them before ``prepare``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def zero_stage(ds_config: Mapping[str, Any]) -> int:
    """The ZeRO stage of a DeepSpeed config (0 when it has no ``zero_optimization``)."""
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def fill_auto_entries(
    ds_config: dict[str, Any],
    *,
    micro_batch_size: int,
    accumulation_steps: int,
    max_grad_norm: float,
    hidden_size: int,
    num_processes: int,
) -> None:
    """Replace the ``"auto"`` entries of ``ds_config`` in place with the recipe's values.

    - ``train_micro_batch_size_per_gpu`` = rows per forward/backward;
    - ``gradient_accumulation_steps`` = micro-batches per optimiser update (the
      engine steps at that boundary);
    - ``gradient_clipping`` = ``max_grad_norm`` (an explicit, different value is an
      error: the recipe's setting would silently not apply);
    - ``train_batch_size`` = micro x accumulation x processes;
    - ZeRO ``reduce_bucket_size`` = hidden_size ** 2 (Accelerate's own rule).
    """
    zero = ds_config.get("zero_optimization")
    if isinstance(zero, dict) and zero.get("reduce_bucket_size") == "auto":
        zero["reduce_bucket_size"] = hidden_size * hidden_size
    wanted = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": accumulation_steps,
        "gradient_clipping": max_grad_norm,
    }
    for key, value in wanted.items():
        if ds_config.get(key, "auto") == "auto":
            ds_config[key] = value
        elif key == "gradient_clipping" and float(ds_config[key]) != float(value):
            raise ValueError(
                f"the DeepSpeed config sets gradient_clipping={ds_config[key]} but "
                f'max_grad_norm is {value}: set it to "auto" (or to the same value)'
            )
    if ds_config.get("train_batch_size", "auto") == "auto":
        ds_config["train_batch_size"] = (
            ds_config["train_micro_batch_size_per_gpu"]
            * ds_config["gradient_accumulation_steps"]
            * num_processes
        )
