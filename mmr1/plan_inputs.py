"""What ``mmr1 plan`` reads: the stage config, the model's shapes, the launch layout; its report.

The estimates themselves are in :mod:`mmr1.plan`. Nothing here loads weights,
registers or downloads anything, or starts Prefect:

- the model's ``config.json`` is found through the catalog entry the config
  names (if the home's catalog exists and has it), a local directory, or a hub
  id already in the local HF cache; otherwise a known base model (Qwen2.5-VL
  3B / 7B, ``mmr1/models/assets/model_shapes.json``) is chosen by the size in
  the name (``mmr1-7b-sft`` -> 7B) or by ``--model``;
- the layout (DDP, FSDP, DeepSpeed ZeRO stage and offload) comes from the
  Accelerate config file the launch names, and its DeepSpeed JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from mmr1.plan import GIB, Layout, ModelShape, Plan, VisionShape, gib, plan_grpo, plan_sft
from schemas.launch import LaunchConfig
from schemas.presets import ConfigError, load_config
from schemas.refs import parse_model_source

#: The checkout that holds ``deployments/`` (config files are named relative to it).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
KNOWN_SHAPES = Path(__file__).parent / "models" / "assets" / "model_shapes.json"


class PlanError(ValueError):
    """A plan cannot be made; the message says which input is missing or wrong."""


# ------------------------------------------------------------------ model shapes


def shape_from_config(data: dict[str, Any], where: str = "config.json") -> ModelShape:
    """A :class:`ModelShape` from a transformers ``config.json`` (nested or flat text fields)."""
    text = {**data, **(data.get("text_config") or {})}
    try:
        vision = data.get("vision_config")
        return ModelShape(
            hidden_size=int(text["hidden_size"]),
            intermediate_size=int(text["intermediate_size"]),
            num_layers=int(text["num_hidden_layers"]),
            num_heads=int(text["num_attention_heads"]),
            num_kv_heads=int(text.get("num_key_value_heads") or text["num_attention_heads"]),
            vocab_size=int(text["vocab_size"]),
            tie_word_embeddings=bool(
                data.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
            ),
            head_dim=text.get("head_dim"),
            vision=VisionShape(
                depth=int(vision["depth"]),
                hidden_size=int(vision["hidden_size"]),
                intermediate_size=int(vision["intermediate_size"]),
                out_hidden_size=int(vision["out_hidden_size"]),
                patch_size=int(vision.get("patch_size", 14)),
                temporal_patch_size=int(vision.get("temporal_patch_size", 2)),
                in_channels=int(vision.get("in_channels", vision.get("in_chans", 3))),
                spatial_merge_size=int(vision.get("spatial_merge_size", 2)),
            )
            if vision
            else None,
        )
    except KeyError as exc:
        raise PlanError(f"{where}: no {exc.args[0]!r}; cannot size the model") from None


def known_shapes() -> dict[str, dict[str, Any]]:
    """The known base models' config data, by name (``qwen2.5-vl-7b``, ...)."""
    data = json.loads(KNOWN_SHAPES.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _known_by_size(text: str) -> str | None:
    """The known model whose size (``7b``) appears in ``text`` (``mmr1-7b-sft``), if one does."""
    sizes = re.findall(r"(?<![0-9.])(\d+(?:\.\d+)?)b(?![a-z0-9])", text.lower())
    names = [n for n in known_shapes() if any(n.endswith(f"-{s}b") for s in sizes)]
    return names[0] if len(names) == 1 else None


def _config_json(text: str, catalog_path: Path | None) -> Path | None:
    """``config.json`` of the checkpoint ``text`` names, where it is reachable without downloads."""
    try:
        source = parse_model_source(text)
    except ValueError:
        return None
    if source.ref is not None and catalog_path is not None and catalog_path.is_file():
        from mmr1.catalog import Catalog, CatalogError

        try:
            entry = Catalog(catalog_path).get_checkpoint(str(source.ref))
            return Path(entry.uri) / "config.json"
        except (CatalogError, ValueError):
            pass
    if source.path is not None and Path(source.path).expanduser().is_dir():
        return Path(source.path).expanduser() / "config.json"
    if source.hub_id is not None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source.hub_id, "config.json", revision=source.revision)
        if isinstance(cached, str):
            return Path(cached)
    return None


def resolve_shape(text: str, catalog_path: Path | None) -> tuple[ModelShape, str]:
    """The shape of the model ``text`` names (a checkpoint field or ``--model``), and whence."""
    if text in known_shapes():
        return shape_from_config(known_shapes()[text], text), f"{text} (known sizes)"
    path = _config_json(text, catalog_path)
    if path is not None and path.is_file():
        data = json.loads(path.read_text())
        return shape_from_config(data, str(path)), f"{text} ({path})"
    known = _known_by_size(text)
    if known is None:
        raise PlanError(
            f"cannot size model {text!r}: no config.json reachable (catalog entry, directory or "
            f"hub id in the local cache) and no known size in its name; pass --model "
            f"{'|'.join(known_shapes())}|DIRECTORY"
        )
    return shape_from_config(known_shapes()[known], known), f"{text} -> {known} (known sizes)"


# ------------------------------------------------------------------ launch layout


def _find(path: str) -> Path:
    for candidate in (Path(path).expanduser(), PROJECT_ROOT / path):
        if candidate.is_file():
            return candidate
    raise PlanError(f"no file {path!r} (looked in the working directory and {PROJECT_ROOT})")


def layout_for(launch: LaunchConfig, precision: str) -> Layout:
    """How the launch holds model states: its Accelerate config's type and DeepSpeed JSON."""
    bf16 = precision in ("bf16", "auto")  # auto: bf16 on the GPUs a plan is for
    if launch.accelerate_config is None:
        return Layout("ddp", bf16, source="no accelerate config")
    path = _find(launch.accelerate_config)
    data = yaml.safe_load(path.read_text()) or {}
    kind = str(data.get("distributed_type", "NO")).upper()
    if kind == "FSDP":
        return Layout("fsdp", bf16, source=str(path))
    if kind != "DEEPSPEED":
        return Layout("ddp", bf16, source=str(path))
    ds = dict(data.get("deepspeed_config") or {})
    stage = int(ds.get("zero_stage", 0))
    offload_opt = str(ds.get("offload_optimizer_device", "none")).lower() in ("cpu", "nvme")
    offload_par = str(ds.get("offload_param_device", "none")).lower() in ("cpu", "nvme")
    source = str(path)
    if ds.get("deepspeed_config_file"):
        ds_path = _find(str(ds["deepspeed_config_file"]))
        ds_json = json.loads(ds_path.read_text())
        zero = ds_json.get("zero_optimization") or {}
        stage = int(zero.get("stage", stage))
        offload_opt = (zero.get("offload_optimizer") or {}).get("device", "none") in ("cpu", "nvme")
        offload_par = (zero.get("offload_param") or {}).get("device", "none") in ("cpu", "nvme")
        if (ds_json.get("bf16") or {}).get("enabled") is False:
            bf16 = False
        source = f"{path} + {ds_path.name}"
    return Layout("zero", bf16, stage, offload_opt, offload_par, source)


# ------------------------------------------------------------------ configs


def load_stage(config_ref: str, overrides: Sequence[str]) -> tuple[str, BaseModel]:
    """``("grpo" | "sft", config)``: the stage model the file or preset validates against."""
    from schemas.grpo import GRPOStageConfig
    from schemas.sft_flow import SFTStageConfig

    errors = []
    for stage, model in (("grpo", GRPOStageConfig), ("sft", SFTStageConfig)):
        try:
            return stage, load_config(model, config_ref, overrides)
        except ConfigError as exc:
            errors.append(f"not a {stage} config: {str(exc).splitlines()[0]}")
    raise ConfigError(f"{config_ref}: " + "; ".join(errors))


def make_plan(
    config_ref: str,
    overrides: Sequence[str] = (),
    *,
    gpus: int | None = None,
    gpu_memory_gib: float = 80.0,
    model: str | None = None,
    catalog_path: Path | None = None,
) -> Plan:
    """The plan of a GRPO or SFT config; ``gpus`` defaults to its ``launch.num_processes``."""
    stage, config = load_stage(config_ref, overrides)
    launch: LaunchConfig = config.launch  # type: ignore[attr-defined]
    train: Any = config.train  # type: ignore[attr-defined]
    source = model or (config.init_model if stage == "grpo" else config.base_model)  # type: ignore[attr-defined]
    shape, described = resolve_shape(str(source), catalog_path)
    layout = layout_for(launch, train.precision)
    planner = plan_grpo if stage == "grpo" else plan_sft
    return planner(
        train,
        shape,
        layout,
        gpus=gpus or launch.num_processes,
        gpu_memory=int(gpu_memory_gib * GIB),
        model=described,
    )


def render(plan: Plan) -> str:
    """The plan as a text table (GiB per GPU), tokens per step, notes and problems."""
    shape = plan.shape
    lines = [
        f"{plan.stage} plan: model {plan.model}",
        f"  {shape.params / 1e9:.2f}B parameters ({shape.language_params / 1e9:.2f}B language, "
        f"{shape.vision_params / 1e9:.2f}B vision); {plan.gpus} GPUs x "
        f"{plan.gpu_memory / GIB:.0f} GiB ({gib(plan.usable)} usable); {plan.layout.describe()} "
        f"[{plan.layout.source}]",
        "",
    ]
    names: list[str] = []
    for phase in plan.phases:
        names += [c.name for c in phase.components if c.name not in names]
    width = max(len(n) for n in [*names, "total"]) + 2
    lines.append("per-GPU memory, GiB".ljust(width) + "".join(f"{p.name:>20}" for p in plan.phases))
    for name in names:
        cells = [phase.get(name) for phase in plan.phases]
        lines.append(
            f"  {name}".ljust(width) + "".join(f"{(gib(c.bytes) if c else '-'):>20}" for c in cells)
        )
    lines.append("  total".ljust(width) + "".join(f"{gib(p.total):>20}" for p in plan.phases))
    verdicts = ["fits" if p.total <= plan.usable else "DOES NOT FIT" for p in plan.phases]
    lines.append("".ljust(width) + "".join(f"{v:>20}" for v in verdicts))
    details = [
        f"  {phase.name} {c.name}: {c.detail}"
        for phase in plan.phases
        for c in phase.components
        if c.detail
    ]
    lines += ["", "where:", *dict.fromkeys(details)] if details else []
    lines += ["", "tokens:"]
    lines += [f"  {k.replace('_', ' ')}: {v:,}" for k, v in plan.tokens.items()]
    lines += [f"note: {n}" for n in plan.notes]
    lines += [f"does not fit: {p}" for p in plan.problems]
    return "\n".join(lines)
