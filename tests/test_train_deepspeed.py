"""Filling a DeepSpeed config's "auto" entries from a recipe (no DeepSpeed needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmr1.train.deepspeed import fill_auto_entries, zero_stage

ACCELERATE_CONFIGS = Path(__file__).resolve().parents[1] / "deployments" / "accelerate"


def _fill(ds: dict, **overrides: float) -> dict:
    values = dict(
        micro_batch_size=4, accumulation_steps=3, max_grad_norm=1.0, hidden_size=16, num_processes=2
    )
    fill_auto_entries(ds, **{**values, **overrides})
    return ds


def test_auto_entries_take_the_recipe_values() -> None:
    ds = _fill(
        {
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "train_batch_size": "auto",
            "zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"},
        }
    )
    assert ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["gradient_clipping"] == 1.0
    assert ds["train_batch_size"] == 4 * 3 * 2
    assert ds["zero_optimization"]["reduce_bucket_size"] == 16 * 16
    assert zero_stage(ds) == 2


def test_missing_entries_are_filled_and_explicit_ones_kept() -> None:
    ds = _fill({"gradient_accumulation_steps": 5, "gradient_clipping": 1.0})
    assert ds["gradient_accumulation_steps"] == 5  # explicit: the config wins
    assert ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["train_batch_size"] == 4 * 5 * 2
    assert zero_stage(ds) == 0


def test_a_clipping_value_other_than_the_recipes_is_refused() -> None:
    with pytest.raises(ValueError, match=r"gradient_clipping=0\.5 but max_grad_norm is 1\.0"):
        _fill({"gradient_clipping": 0.5})


def test_the_shipped_zero2_config_has_no_auto_left_but_precision() -> None:
    ds = _fill(json.loads((ACCELERATE_CONFIGS / "ds_zero2.json").read_text()))
    precision = ds.pop("bf16")
    assert "auto" not in json.dumps(ds)
    assert precision == {"enabled": "auto"}  # Accelerate sets it from mixed_precision
