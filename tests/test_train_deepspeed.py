"""The recipes' DeepSpeed helpers: "auto" entries, boundaries, the engine's verdict,
checkpoint checks (no DeepSpeed needed; the runs are in test_train_sft_deepspeed.py)."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from mmr1.trainer.checkpoint import DEEPSPEED_TAG, load_training_state
from mmr1.trainer.deepspeed import (
    accumulation_context,
    check_zero3_images,
    check_zero3_saving,
    engine_step_outcome,
    fill_auto_entries,
    keep_used_weight_conversions,
    zero_stage,
)

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


def test_zero3_entries_follow_accelerates_rules() -> None:
    ds = _fill(
        {
            "zero_optimization": {
                "stage": 3,
                "reduce_bucket_size": "auto",
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
            }
        },
        hidden_size=10,
    )
    zero = ds["zero_optimization"]
    assert zero["reduce_bucket_size"] == 100
    assert zero["stage3_prefetch_bucket_size"] == 90  # int(0.9 * h * h)
    assert zero["stage3_param_persistence_threshold"] == 100  # 10 * h
    kept = _fill({"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": 7}})
    assert kept["zero_optimization"] == {"stage": 3, "stage3_prefetch_bucket_size": 7}


def test_no_clipping_is_deepspeeds_zero_and_a_set_value_is_refused() -> None:
    assert _fill({}, max_grad_norm=None)["gradient_clipping"] == 0.0
    with pytest.raises(ValueError, match=r"gradient_clipping=1\.0 but max_grad_norm is None"):
        _fill({"gradient_clipping": 1.0}, max_grad_norm=None)


def test_the_shipped_zero3_config_fills_completely_and_saves_whole_weights() -> None:
    ds = _fill(json.loads((ACCELERATE_CONFIGS / "ds_zero3.json").read_text()))
    check_zero3_saving(ds)
    assert zero_stage(ds) == 3
    assert ds.pop("bf16") == {"enabled": "auto"}
    assert "auto" not in json.dumps(ds)


def test_zero3_without_gathered_saving_is_refused() -> None:
    check_zero3_saving({"zero_optimization": {"stage": 2}})  # only ZeRO-3 shards weights
    with pytest.raises(ValueError, match="stage3_gather_16bit_weights_on_model_save"):
        check_zero3_saving({"zero_optimization": {"stage": 3}})
    with pytest.raises(ValueError, match="stage3_gather_16bit_weights_on_model_save"):
        check_zero3_saving(
            {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": False}}
        )


def _accelerator() -> Accelerator:
    AcceleratorState._reset_state()  # another test may have left a bf16 state behind
    return Accelerator(cpu=True)


def test_accumulation_context_marks_the_boundary_or_skips_the_all_reduce() -> None:
    accelerator = _accelerator()
    model = torch.nn.Linear(2, 2)
    accelerator.gradient_state._set_sync_gradients(True)
    with accumulation_context(accelerator, model, last=False, deepspeed=True):
        assert not accelerator.sync_gradients  # the engine will not step after this backward
    with accumulation_context(accelerator, model, last=True, deepspeed=True):
        assert accelerator.sync_gradients
    # Without DeepSpeed the flag is left alone; the context is no_sync until the last one.
    accelerator.gradient_state._set_sync_gradients(True)
    with accumulation_context(accelerator, model, last=False, deepspeed=False):
        assert accelerator.sync_gradients
    last = accumulation_context(accelerator, model, last=True, deepspeed=False)
    assert isinstance(last, nullcontext)


class _Engine:
    def __init__(self, norm: object, applied: bool) -> None:
        self.norm, self.applied = norm, applied

    def get_global_grad_norm(self) -> object:
        return self.norm

    def was_step_applied(self) -> bool:
        return self.applied


def test_engine_step_outcome_reads_the_norm_and_verdict() -> None:
    accelerator = _accelerator()
    accelerator.gradient_state._set_sync_gradients(False)
    assert engine_step_outcome(accelerator, _Engine(torch.tensor(2.5), True)) == (2.5, True)
    assert accelerator.sync_gradients  # back to "outside an accumulation"
    norm, applied = engine_step_outcome(accelerator, _Engine(float("inf"), False))
    assert norm == math.inf and not applied
    norm, applied = engine_step_outcome(accelerator, _Engine(None, True))
    assert math.isnan(norm) and applied


def test_only_the_weight_conversions_that_applied_are_kept() -> None:
    used, unused = SimpleNamespace(was_used=lambda: True), SimpleNamespace(was_used=lambda: False)
    model = SimpleNamespace(_weight_conversions=[used, unused, used])
    keep_used_weight_conversions(model)
    assert model._weight_conversions == [used, used]
    bare = SimpleNamespace()
    keep_used_weight_conversions(bare)  # a model built in code records none
    assert not hasattr(bare, "_weight_conversions")


def _checkpoint_dir(tmp_path: Path, *, engine_state: bool) -> Path:
    directory = tmp_path / "step-000001"
    directory.mkdir()
    if engine_state:
        (directory / DEEPSPEED_TAG).mkdir()
    return directory


def test_a_deepspeed_checkpoint_does_not_resume_without_deepspeed(tmp_path: Path) -> None:
    directory = _checkpoint_dir(tmp_path, engine_state=True)
    with pytest.raises(ValueError, match="resume under the same DeepSpeed config"):
        load_training_state(directory, optimizer=None, scheduler=None)


def test_a_plain_checkpoint_does_not_resume_under_deepspeed(tmp_path: Path) -> None:
    directory = _checkpoint_dir(tmp_path, engine_state=False)
    with pytest.raises(ValueError, match="no deepspeed/ engine checkpoint"):
        load_training_state(directory, optimizer=None, scheduler=None, engine=_Engine(0.0, True))


def test_text_only_samples_are_refused_for_zero3() -> None:
    with pytest.raises(ValueError, match=r"sft-data: 1 training sample\(s\) have no image.*'txt'"):
        check_zero3_images(1, "txt", source=Path("sft-data"))
    check_zero3_images(0, None, source=Path("sft-data"))
