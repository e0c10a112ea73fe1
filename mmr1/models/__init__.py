"""Models: the tiny offline Qwen2.5-VL, its tokenizer and processor, and the one loader.

Names are imported lazily: importing the package costs nothing until a name is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmr1.models.loader import Policy, load_policy, load_processor, vision_special_token_ids
    from mmr1.models.tiny import build_tiny_model
    from mmr1.models.tokenizer import load_tokenizer

_EXPORTS = {
    "Policy": "mmr1.models.loader",
    "load_policy": "mmr1.models.loader",
    "load_processor": "mmr1.models.loader",
    "vision_special_token_ids": "mmr1.models.loader",
    "build_tiny_model": "mmr1.models.tiny",
    "load_tokenizer": "mmr1.models.tokenizer",
}

__all__ = [
    "Policy",
    "build_tiny_model",
    "load_policy",
    "load_processor",
    "load_tokenizer",
    "vision_special_token_ids",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmr1.models' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
