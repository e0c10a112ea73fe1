"""The Accelerate / DeepSpeed / FSDP launch configs shipped in deployments/ load and agree.

DeepSpeed and multi-GPU runs cannot happen on CPU machines; what can be checked
here is that Accelerate parses each file, that the DeepSpeed JSON files they
name exist with the ZeRO stage the name promises, and that FSDP wraps module
classes that exist in the installed transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "deployments" / "accelerate").glob("*.yaml"))


def test_configs_are_shipped() -> None:
    names = {path.stem for path in CONFIGS}
    assert {"ddp_cpu", "ddp_gpu", "deepspeed_zero2", "deepspeed_zero3", "fsdp"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_parses(path: Path) -> None:
    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
    if config.distributed_type == DistributedType.DEEPSPEED:
        ds_file = ROOT / config.deepspeed_config["deepspeed_config_file"]
        ds = json.loads(ds_file.read_text())
        stage = int(path.stem.removeprefix("deepspeed_zero"))
        assert ds["zero_optimization"]["stage"] == stage
        # "auto" lets Accelerate fill batch sizes and clipping from the SFT config.
        assert ds["gradient_clipping"] == "auto"
    if config.distributed_type == DistributedType.FSDP:
        import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as qwen

        classes = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")
        assert all(hasattr(qwen, name) for name in classes), classes
