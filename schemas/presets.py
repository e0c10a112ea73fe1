"""Load stage configs from preset names or YAML files, with ``key=value`` overrides.

Presets are data (``schemas/presets/<name>.yaml``), validated by the stage's
pydantic model; code never branches on a preset's name. They ship inside the
``schemas`` package so an installed (non-editable) pipeline finds them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

PRESETS_DIR = Path(__file__).parent / "presets"

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(ValueError):
    """A config file, preset or override is invalid; the message says which and why."""


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=3`` -> ``("a.b", 3)``; the value is parsed as YAML (numbers, lists, booleans)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. rl_pool.n_items=64")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(
    model: type[ConfigT],
    source: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> ConfigT:
    """Build ``model`` from a preset name or YAML file (or defaults), then apply overrides.

    ``source`` is a path to a YAML file, or the name of a preset in
    ``schemas/presets/``. Validation errors name the source and the field.
    """
    data: dict[str, Any] = {}
    origin = "defaults"
    if source is not None:
        path = Path(source)
        if not path.suffix and not path.exists():
            path = PRESETS_DIR / f"{source}.yaml"
            if not path.exists():
                raise ConfigError(
                    f"no config file or preset named {str(source)!r}; "
                    f"presets: {', '.join(available_presets()) or 'none'}"
                )
        elif not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        data = _read_yaml(path)
        origin = str(path)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{origin}: invalid {model.__name__}: {problems}") from exc
