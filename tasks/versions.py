"""The code version and stage keys: what decides whether earlier work can be reused.

A key hashes what determines an output: for a pipeline stage its name, its
resolved config (which names the pinned versions of its inputs) and the code
version (:func:`mmr1.hashing.code_version`: the pipeline's packages with their
assets, and the versions of the libraries that shape results). Evaluation
results are keyed the same way, so a resumed evaluation records each result once.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from mmr1.hashing import code_version as hash_code
from mmr1.hashing import hash_bytes

CODE_PACKAGES = ("mmr1", "schemas", "tasks", "flows")
# Presets reach a stage through its resolved config, which the key holds already:
# editing an unrelated preset must not invalidate every stage.
UNKEYED_DIRS = ("presets",)
# Libraries whose version changes what a stage computes (models, training, rollouts,
# answer verification), and this project's own version. Missing ones are left out.
KEY_DISTRIBUTIONS = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "math-verify",
    "vllm",
    "deepspeed",
    "mmr1-pipeline",
)


def code_version() -> str:
    """The code part of every stage key (cached per process)."""
    return hash_code(CODE_PACKAGES, KEY_DISTRIBUTIONS, exclude_dirs=UNKEYED_DIRS)


def stage_key(stage: str, config: BaseModel) -> str:
    payload = json.dumps(
        {"stage": stage, "config": config.model_dump(mode="json"), "code": code_version()},
        sort_keys=True,
    )
    return hash_bytes(payload.encode())
