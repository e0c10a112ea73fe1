"""Every field a user can set has a description (the Prefect run form and ``--help`` text).

Walks every config model: the flows' parameter models and everything reachable
from them through field types (unions, lists, dicts, Annotated), plus every
``ConfigModel`` subclass in ``schemas/``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
import typing

from pydantic import BaseModel

import schemas
from schemas.base import ConfigModel
from schemas.curation import CurateRLConfig, CurateSFTConfig
from schemas.eval import EvaluateConfig
from schemas.grpo import GRPOStageConfig
from schemas.pipeline import PipelineConfig
from schemas.sft_flow import SFTStageConfig
from schemas.vas import VPSEstimateConfig

FLOW_CONFIGS = (
    CurateRLConfig,
    CurateSFTConfig,
    SFTStageConfig,
    VPSEstimateConfig,
    GRPOStageConfig,
    EvaluateConfig,
    PipelineConfig,
)


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    if isinstance(annotation, types.UnionType):
        for arg in annotation.__args__:
            found += _models_in(arg)
    return found


def config_models() -> set[type[BaseModel]]:
    """Every model reachable from the flows' configs, plus every ConfigModel in schemas/."""
    todo: list[type[BaseModel]] = list(FLOW_CONFIGS)
    for module in pkgutil.iter_modules(schemas.__path__):
        loaded = importlib.import_module(f"schemas.{module.name}")
        todo += [
            obj
            for obj in vars(loaded).values()
            if inspect.isclass(obj) and issubclass(obj, ConfigModel) and obj is not ConfigModel
        ]
    seen: set[type[BaseModel]] = set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for info in model.model_fields.values():
            todo += _models_in(info.annotation)
    return seen


def test_the_walk_reaches_nested_configs() -> None:
    names = {m.__name__ for m in config_models()}
    # Through a plain field, a union, a list of a discriminated union, nested sections.
    assert {"SamplingParams", "HFBackendConfig", "SyntheticSource", "GRPOConfig"} <= names


def test_every_config_field_has_a_description() -> None:
    missing = sorted(
        f"{model.__module__}.{model.__name__}.{name}"
        for model in config_models()
        for name, info in model.model_fields.items()
        if not (info.description or "").strip()
    )
    assert not missing, f"{len(missing)} config fields without a description:\n" + "\n".join(
        missing
    )
