"""A flow's config from its Prefect parameters: ``config``, ``preset`` and ``overrides``.

Every flow takes the same three parameters:

- ``config``: the whole config (the form in the Prefect UI; a deployment's
  default parameters fill it from its preset);
- ``preset``: a preset name (``schemas/presets/``) or YAML path, used *instead*
  of ``config`` when given;
- ``overrides``: a partial config merged over that base, as ``--set`` does on
  the command line: ``{"checkpoint": "tiny-grpo", "sampling.max_new_tokens":
  64}`` or nested ``{"sampling": {"max_new_tokens": 64}}``.

Prefect merges run parameters over a deployment's shallowly, so a partial
``config`` in ``prefect deployment run --params`` replaces the deployment's
config and loses the preset's other values; ``overrides`` is how a run changes
a few fields and keeps the rest (docs/STACK.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from pydantic import BaseModel

from schemas.base import StageConfig
from schemas.presets import ConfigError, apply_overrides, load_config, read_preset

ConfigT = TypeVar("ConfigT", bound=BaseModel)

logger = logging.getLogger(__name__)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return logger


def _base(config: BaseModel | Mapping[str, Any] | None, preset: str | None) -> dict[str, Any]:
    if preset:
        return read_preset(preset)
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    return dict(config or {})


def stage_config(
    model: type[ConfigT],
    config: ConfigT | Mapping[str, Any] | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ConfigT:
    """The config a flow run uses: ``preset`` (else ``config``, else the schema defaults)
    with ``overrides`` merged over it, validated by ``model``.

    Errors (an unknown preset, a misspelt override, an invalid value, an input
    ref left unset) are :class:`schemas.presets.ConfigError` naming the field.
    """
    return require_inputs(_stage_config(model, config, preset, overrides))


def require_inputs(config: ConfigT) -> ConfigT:
    """``config``, or a ``ConfigError`` naming the input refs it leaves unset (StageConfig)."""
    missing = config.missing_inputs() if isinstance(config, StageConfig) else []
    if missing:
        raise ConfigError(
            f"{type(config).__name__}: {', '.join(missing)} not set (catalog refs of what the "
            "flow reads; mmr1-pipeline sets them, a run on its own must give them)"
        )
    return config


def _stage_config(
    model: type[ConfigT],
    config: ConfigT | Mapping[str, Any] | None,
    preset: str | None,
    overrides: Mapping[str, Any] | None,
) -> ConfigT:
    if not preset and not overrides and isinstance(config, model):
        return config
    if preset and config is not None:
        _run_logger().info("preset %r given: it replaces the config parameter", preset)
    origin = f"preset {preset!r}" if preset else "parameters"
    if overrides:
        origin += " with overrides " + ", ".join(sorted(overrides))
    return load_config(model, _base(config, preset), overrides or {}, origin=origin)


def parameter_field(parameters: Mapping[str, Any], path: str) -> Any:
    """The value of config field ``path`` (dotted) that these flow parameters give, or None.

    For run names: no validation, so an invalid combination still yields a name
    (and the run then fails with the validation error).
    """
    try:
        data = apply_overrides(
            _base(parameters.get("config"), parameters.get("preset")),
            parameters.get("overrides") or {},
        )
    except Exception:  # a bad preset or override: the flow reports it
        return None
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
