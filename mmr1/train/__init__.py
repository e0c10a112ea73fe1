"""Training recipes. SFT (the long-CoT cold start) lives here; see ``mmr1.train.sft``.

Modules, one job each:

- ``data``: records -> chat-templated tokens with assistant-only labels, samples
  encoded when drawn (too-long ones dropped and counted), right-padding collator;
- ``rows``: random access to the rows of a parquet SFT dataset, nothing loaded;
- ``sft_data``: the recipe's data (hashed split, loaders, the zero-weight filler);
- ``sampling``: which samples each process trains on at each step;
- ``schedule``: warmup + cosine / linear / constant learning rates;
- ``checkpoint``: atomic, resumable checkpoints;
- ``sft``: the recipe (:class:`SFTRecipe`, :func:`run_sft`);
- ``launch`` / ``sft_main``: the ``accelerate launch`` subprocess entry point.

Names are imported lazily so ``python -m mmr1.train.sft_main`` does not import
its own module twice and ``launch_command`` does not pull in torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmr1.train.launch import launch_command
    from mmr1.train.sft import SFTRecipe, read_result, run_sft
    from schemas.sft import SFTConfig, SFTResult

_EXPORTS = {
    "SFTConfig": "schemas.sft",
    "SFTResult": "schemas.sft",
    "SFTRecipe": "mmr1.train.sft",
    "read_result": "mmr1.train.sft",
    "run_sft": "mmr1.train.sft",
    "launch_command": "mmr1.train.launch",
}

__all__ = [
    "SFTConfig",
    "SFTRecipe",
    "SFTResult",
    "launch_command",
    "read_result",
    "run_sft",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmr1.train' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
