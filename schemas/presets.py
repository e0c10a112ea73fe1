"""Load stage configs from preset names or YAML files, with ``key=value`` overrides.

Presets are data (``schemas/presets/<name>.yaml``), validated by the stage's
pydantic model; code never branches on a preset's name. They ship inside the
``schemas`` package so an installed (non-editable) pipeline finds them too.

Presets compose rather than copy: a mapping (at the top or in any section)
with a ``preset: NAME`` key stands for that preset's data with the mapping's
other keys merged over it, recursively (mappings merge key by key; lists and
scalars replace). ``NAME`` is a preset name or a YAML path (relative to the
file that names it). So ``grpo-paper-3b`` is ``{preset: grpo-paper-7b,
init_model: mmr1-3b-sft, ...}`` and a pipeline preset names its stages'
presets: ``sft: {preset: sft-paper-7b}``. ``--set`` overrides apply last.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
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


PRESET_KEY = "preset"


def _resolve_path(source: str | Path, relative_to: Path | None = None) -> Path:
    """A YAML file for ``source``: an existing path, else the preset of that name."""
    path = Path(source)
    if relative_to is not None and not path.is_absolute() and path.suffix:
        candidate = relative_to / path
        if candidate.exists():
            return candidate
    if not path.suffix and not path.exists():
        path = PRESETS_DIR / f"{source}.yaml"
        if not path.exists():
            raise ConfigError(
                f"no config file or preset named {str(source)!r}; "
                f"presets: {', '.join(available_presets()) or 'none'}"
            )
    elif not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    return path


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings key by key, anything else replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _expand(data: Any, directory: Path, chain: tuple[Path, ...], where: str) -> Any:
    """``data`` with every ``{preset: NAME, ...}`` mapping replaced by the composed data."""
    if isinstance(data, list):
        return [_expand(item, directory, chain, f"{where}[{i}]") for i, item in enumerate(data)]
    if not isinstance(data, dict):
        return data
    data = {key: _expand(value, directory, chain, f"{where}.{key}") for key, value in data.items()}
    if PRESET_KEY not in data:
        return data
    name = data.pop(PRESET_KEY)
    if not isinstance(name, str):
        raise ConfigError(f"{where or '<root>'}: '{PRESET_KEY}' must name a preset, got {name!r}")
    base_path = _resolve_path(name, directory).resolve()
    if base_path in chain:
        cycle = " -> ".join(p.stem for p in (*chain, base_path))
        raise ConfigError(f"presets include each other in a cycle: {cycle}")
    base = _expand(_read_yaml(base_path), base_path.parent, (*chain, base_path), "")
    return _merge(base, data)


def read_preset(source: str | Path) -> dict[str, Any]:
    """The data of a preset name or YAML file, with its ``preset:`` compositions expanded."""
    path = _resolve_path(source).resolve()
    return _expand(_read_yaml(path), path.parent, (path,), "")


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


def _nest(dotted: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{"a.b": 1, "c": {"d.e": 2}}`` -> ``{"a": {"b": 1}, "c": {"d": {"e": 2}}}``."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{where}: invalid key {key!r} (expected NAME or a.b.c)")
        if isinstance(value, Mapping):
            value = _nest(value, f"{where}.{key}")
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{where}: {key!r} goes inside {part!r}, which is set to a value")
            node = child
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            value = _merge(node[parts[-1]], value)
        node[parts[-1]] = value
    return nested


def apply_overrides(
    data: Mapping[str, Any], overrides: Mapping[str, Any] | Sequence[str]
) -> dict[str, Any]:
    """``data`` (not modified) with ``overrides`` applied.

    ``overrides`` is either ``KEY=VALUE`` strings (``--set``: the value is YAML, a
    mapping value replaces the section) or a mapping, as flows take it from
    Prefect: keys are field names or dotted paths (``{"sampling.max_new_tokens":
    96}`` is ``{"sampling": {"max_new_tokens": 96}}``), and mappings merge into
    the sections they name key by key while lists and scalars replace. So a
    partial override keeps every other value of ``data``.
    """
    merged = copy.deepcopy(dict(data))
    if isinstance(overrides, Mapping):
        return _merge(merged, _nest(overrides, "overrides"))
    if isinstance(overrides, str):
        raise ConfigError(f"overrides {overrides!r}: expected a list of KEY=VALUE or a mapping")
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(merged, key, value)
    return merged


def load_config(
    model: type[ConfigT],
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    *,
    origin: str | None = None,
) -> ConfigT:
    """Build ``model`` from a preset name or YAML file (or defaults), then apply overrides.

    ``source`` is a path to a YAML file, the name of a preset in
    ``schemas/presets/``, or config data already loaded (a mapping); ``preset:``
    keys in it compose other presets (module doc). ``overrides``: see
    :func:`apply_overrides`. Validation errors name the source (``origin`` when
    given) and the field.
    """
    data: dict[str, Any] = {}
    if isinstance(source, Mapping):
        data = _expand(dict(source), PRESETS_DIR, (), "")
        origin = origin or "parameters"
    elif source is not None:
        data = read_preset(source)
        origin = origin or str(_resolve_path(source))
    data = apply_overrides(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{origin or 'defaults'}: invalid {model.__name__}: {problems}") from exc
