"""Check what a config reads before anything starts: catalog refs, checkpoints, files.

The command line runs :func:`check_inputs` on a validated config before it
starts Prefect, so a typo in a ref or a missing file costs a second, not a
server start-up and a page of tracebacks. Checks are cheap and change nothing:
catalog lookups, ``stat`` of local paths, and for a hub id one look into the
local HF cache (or one metadata request when online); nothing is registered or
downloaded here (flows register outside checkpoints when they run).

What is checked, found through the config's annotated fields
(:func:`schemas.refs.ref_fields`) and its source configs:

- checkpoint inputs: a catalog ref that exists, a checkpoint directory, or a hub
  id that is cached (offline) or known to the hub (online);
- dataset and VPS inputs: catalog refs that exist;
- local curation sources (``LocalSource.path``, ``image_root``) and evaluation
  benchmark sources that are paths or ``dataset:`` refs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

from mmr1.catalog import Catalog, CatalogError
from mmr1.models.registry import check_checkpoint_source
from schemas.base import StageConfig
from schemas.curation import LocalSource
from schemas.eval import BenchmarkSpec
from schemas.refs import ref_fields


def _models(config: BaseModel, path: str = "") -> Iterator[tuple[str, BaseModel]]:
    """``config`` and every model nested in it, with dotted paths."""
    yield path, config
    for name in type(config).model_fields:
        value = getattr(config, name)
        child = f"{path}.{name}" if path else name
        if isinstance(value, BaseModel):
            yield from _models(value, child)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _models(item, f"{child}[{i}]")


def _catalog_problem(catalog: Catalog, kind: str, ref: str) -> str | None:
    try:
        if kind == "dataset":
            catalog.get_dataset(ref)
        elif kind == "vps":
            catalog.get_vps_table(ref)
        else:
            catalog.get_checkpoint(ref)
    except (CatalogError, ValueError) as exc:
        return str(exc)
    return None


def _source_problems(config: BaseModel, skip: Callable[[str], bool]) -> Iterator[str]:
    for path, model in _models(config):
        if skip(path):
            continue
        if isinstance(model, LocalSource):
            if not Path(model.path).expanduser().exists():
                yield f"{path}.path: {model.path}: no such file or directory"
            if model.image_root and not Path(model.image_root).expanduser().is_dir():
                yield f"{path}.image_root: {model.image_root}: no such directory"
        elif isinstance(model, BenchmarkSpec) and model.source:
            source = model.source
            looks_local = source.startswith(("/", "./", "../", "~")) or source.endswith(
                (".parquet", ".jsonl", ".json", ".arrow")
            )
            if looks_local and not Path(source).expanduser().exists():
                yield f"{path}.source: {source}: no such file or directory"


def check_inputs(
    config: BaseModel,
    catalog: Catalog,
    *,
    skip: Callable[[str], bool] = lambda path: False,
) -> list[str]:
    """Problems with what ``config`` reads, one line each naming the field; [] if none.

    ``skip(path)`` leaves out fields a caller fills in itself (the pipeline
    chains its stages' inputs), by dotted path (``sft.dataset``).
    """
    problems = [
        f"{name}: not set (a catalog ref the flow reads; mmr1-pipeline sets it, a run on its "
        "own must give it)"
        for name in (config.missing_inputs() if isinstance(config, StageConfig) else [])
        if not skip(name)
    ]
    for found in ref_fields(config):
        if found.role != "input" or skip(found.path):
            continue
        if found.kind == "checkpoint":
            problem = check_checkpoint_source(catalog, found.value)
        else:
            problem = _catalog_problem(catalog, found.kind, found.value)
        if problem:
            problems.append(f"{found.path}: {problem}")
    problems.extend(_source_problems(config, skip))
    return problems
