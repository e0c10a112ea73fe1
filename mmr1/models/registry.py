"""Outside checkpoints in the catalog: a hub id or a local directory becomes a ``base`` entry.

Every config field that names a checkpoint accepts a catalog ref, a local
directory or a hub id (grammar in :mod:`schemas.refs`). Whatever is not in the
catalog yet is registered here, so lineage stays complete whatever the user
typed: a hub id through its snapshot in the local HF cache (provenance: hub id,
requested and resolved revision), a directory where it is. Identity is the
content (:func:`mmr1.models.hub.checkpoint_content_hash`): registering the same
files again returns the same version, and a checkpoint field naming content
the catalog already holds (under any name) resolves to that entry.
``copy=True`` copies the files under the home first (for checkpoints that must
outlive an HF cache or a mounted volume).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from mmr1.catalog import Catalog, CatalogNotFoundError
from mmr1.models.hub import (
    ModelSourceError,
    ResolvedModel,
    check_checkpoint_dir,
    checkpoint_content_hash,
    checkpoint_files,
    default_name,
    hub_model_available,
    hub_snapshot,
)
from mmr1.storage import content_addressed
from schemas.catalog import CheckpointEntry
from schemas.refs import ModelSource, check_name, parse_model_source


def _local(path: str) -> ResolvedModel:
    directory = Path(path).expanduser().resolve()
    return ResolvedModel(
        directory=directory,
        provenance={"source": "local", "path": str(directory)},
        default_name=default_name(directory.name),
    )


def _catalog_entry(catalog: Catalog, source: ModelSource) -> CheckpointEntry | None:
    if source.ref is None:
        return None
    try:
        return catalog.get_checkpoint(str(source.ref))
    except CatalogNotFoundError:
        if source.kind == "catalog":
            raise
        return None


def _outside(source: ModelSource, *, cache_dir: Path | None = None) -> ResolvedModel:
    """The files of a source that is not a catalog entry (a directory or a hub repo)."""
    if source.kind == "local":
        return _local(source.path or source.text)
    if source.kind == "hub":
        assert source.hub_id is not None
        return hub_snapshot(source.hub_id, source.revision, cache_dir=cache_dir)
    if source.path is not None and Path(source.path).expanduser().is_dir():
        return _local(source.path)
    if source.hub_id is not None:
        return hub_snapshot(source.hub_id, source.revision, cache_dir=cache_dir)
    raise CatalogNotFoundError(
        f"no checkpoint named {source.text!r} in the catalog (register one with "
        "`mmr1 model register SOURCE`, or give a directory or a hub id ORG/NAME)"
    )


# ------------------------------------------------------------------ registering


def register_model(
    catalog: Catalog,
    source: str,
    *,
    name: str | None = None,
    revision: str | None = None,
    copy: bool = False,
    checkpoints_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> CheckpointEntry:
    """Register a hub id or local checkpoint directory as a ``base`` checkpoint.

    Idempotent: the same content under the same name returns the existing
    version. ``revision`` overrides one given in ``source`` (``ORG/NAME@REV``).
    ``copy`` copies the loadable files into ``checkpoints_dir`` (required then)
    and registers the copy.
    """
    parsed = parse_model_source(source)
    if parsed.kind == "catalog":
        raise ModelSourceError(f"{source!r} is a catalog ref already; nothing to register")
    if revision is not None:
        if parsed.hub_id is None:
            raise ModelSourceError(f"--revision applies to hub ids; {source!r} is a directory")
        parsed = ModelSource(parsed.text, "hub", hub_id=parsed.hub_id, revision=revision)
    resolved = _outside(parsed, cache_dir=cache_dir)
    check_checkpoint_dir(resolved.directory, source)
    entry_name = check_name(name or resolved.default_name)
    digest = checkpoint_content_hash(resolved.directory)
    uri = resolved.directory
    if copy:
        if checkpoints_dir is None:
            raise ValueError("register_model(copy=True) needs checkpoints_dir")
        versions = catalog.list_checkpoints(name=entry_name)
        existing = [e for e in versions if e.content_hash == digest]
        if existing and not Path(existing[0].uri).is_relative_to(checkpoints_dir):
            raise ModelSourceError(
                f"{entry_name}@{existing[0].version} already holds this content at "
                f"{existing[0].uri} (not a copy); register the copy under another --name"
            )
        uri, _, _ = content_addressed(
            checkpoints_dir, entry_name.replace("/", "--"), _copier(resolved.directory)
        )
    return catalog.register_checkpoint(
        name=entry_name,
        stage="base",
        uri=str(uri),
        content_hash=digest,
        config={**resolved.provenance, "copied": copy},
    )


def _copier(directory: Path) -> Callable[[Path], None]:
    def copy_files(out: Path) -> None:
        for rel in checkpoint_files(directory):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(directory / rel, out / rel)  # follows cache symlinks

    return copy_files


def resolve_checkpoint(
    catalog: Catalog, text: str, *, cache_dir: Path | None = None
) -> CheckpointEntry:
    """The catalog entry a checkpoint field names, registering an outside source on the fly.

    A catalog ref is looked up; a directory or hub id is registered under its
    default name (:func:`default_name`; the same content returns the same
    version). Raises ``CatalogNotFoundError`` / ``ModelSourceError`` naming ``text``.
    """
    parsed = parse_model_source(text)
    found = _catalog_entry(catalog, parsed)
    if found is not None:
        return found
    resolved = _outside(parsed, cache_dir=cache_dir)
    check_checkpoint_dir(resolved.directory, text)
    digest = checkpoint_content_hash(resolved.directory)
    same = [e for e in catalog.list_checkpoints() if e.content_hash == digest]
    if same:  # e.g. registered before with `mmr1 model register ... --name`
        return same[0]
    return catalog.register_checkpoint(
        name=resolved.default_name,
        stage="base",
        uri=str(resolved.directory),
        content_hash=digest,
        config={**resolved.provenance, "copied": False},
    )


def check_checkpoint_source(catalog: Catalog | None, text: str) -> str | None:
    """Why ``text`` names no usable checkpoint, or None. Cheap: nothing is registered
    or downloaded (a hub id is checked against the cache, or one metadata request)."""
    try:
        parsed = parse_model_source(text)
        if catalog is not None and _catalog_entry(catalog, parsed) is not None:
            return None
    except (CatalogNotFoundError, ValueError) as exc:
        return str(exc)
    if parsed.kind == "catalog":
        return f"no checkpoint {text!r} in the catalog"
    local = parsed.path is not None and Path(parsed.path).expanduser().is_dir()
    if parsed.kind == "local" or (local and parsed.kind == "name"):
        try:
            check_checkpoint_dir(Path(parsed.path or text).expanduser(), text)
        except ModelSourceError as exc:
            return str(exc)
        return None
    if parsed.hub_id is not None:
        return hub_model_available(parsed.hub_id, parsed.revision)
    return (
        f"no checkpoint named {text!r} in the catalog and no such directory (register one "
        "with `mmr1 model register SOURCE`)"
    )
