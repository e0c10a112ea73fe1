"""Checkpoint files on disk and on the Hugging Face hub, without the catalog.

- :func:`hub_snapshot`: a hub repo's loadable files (configs, safetensors,
  tokenizer, templates) in the local HF cache, resolved with
  ``huggingface_hub.snapshot_download`` the normal way: ``HF_HUB_OFFLINE=1``
  with a populated cache works, a connected machine downloads what is missing.
- :func:`local_checkpoint`: a directory or hub id -> the directory to load from.
- :func:`checkpoint_content_hash`: the identity of a checkpoint: SHA-256 over
  the relative path and content hash of every loadable file. Files in the HF
  cache are symlinks to blobs named by their SHA-256 (LFS files, i.e. the
  weights), so hashing a 15 GB hub checkpoint reads only its small files, and a
  local copy of the same snapshot hashes the same.
- :func:`check_checkpoint_dir`: is a directory a loadable checkpoint?
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmr1.hashing import hash_file

#: Files a checkpoint is loaded from (weights, configs, tokenizer, templates, remote code).
LOADABLE_PATTERNS: tuple[str, ...] = (
    "*.json",
    "*.safetensors",
    "*.jinja",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "*.py",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


class ModelSourceError(ValueError):
    """A checkpoint source cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a source's files are, and where they came from."""

    directory: Path
    provenance: dict[str, Any]
    default_name: str


# ------------------------------------------------------------------ content identity


def checkpoint_files(directory: Path) -> list[Path]:
    """The loadable files of a checkpoint directory (relative paths, sorted).

    Hidden files and folders (``.cache``, ``.git``) are skipped.
    """
    directory = Path(directory)
    found = set()
    for pattern in LOADABLE_PATTERNS:
        for path in directory.rglob(pattern):
            rel = path.relative_to(directory)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                found.add(rel)
    return sorted(found)


def _file_digest(path: Path) -> str:
    """SHA-256 of a file; free for HF-cache symlinks whose blob is named by its SHA-256."""
    if path.is_symlink():
        target = path.resolve()
        if target.parent.name == "blobs" and _SHA256_NAME.match(target.name):
            return target.name
    return hash_file(path)


def checkpoint_content_hash(directory: Path) -> str:
    """SHA-256 over ``relative path NUL sha256(content)`` of every loadable file, sorted."""
    digest = hashlib.sha256()
    for rel in checkpoint_files(directory):
        digest.update(rel.as_posix().encode() + b"\0" + _file_digest(directory / rel).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def check_checkpoint_dir(directory: Path, label: str) -> dict[str, Any]:
    """Raise ``ModelSourceError`` unless ``directory`` holds a loadable checkpoint.

    Returns its ``config.json``. Needs ``config.json`` and weights (safetensors
    or ``.bin``); a vision-language config (``vision_config``) also needs image
    processor settings (hub layout: ``preprocessor_config.json``; transformers 5
    saves them inside ``processor_config.json``).
    """
    if not directory.is_dir():
        raise ModelSourceError(f"{label}: {directory} is not a directory")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ModelSourceError(f"{label}: no config.json in {directory} (not a checkpoint)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelSourceError(f"{label}: {config_file} is not valid JSON: {exc}") from None
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in directory.iterdir()):
        raise ModelSourceError(f"{label}: no weights (*.safetensors or *.bin) in {directory}")
    if "vision_config" in config and not has_image_processor(directory):
        raise ModelSourceError(
            f"{label}: {directory} holds a vision-language model but no image processor "
            "settings (preprocessor_config.json, or processor_config.json with image_processor)"
        )
    return config


def has_image_processor(directory: Path) -> bool:
    """Whether a checkpoint directory holds image processor settings (either layout)."""
    if (directory / "preprocessor_config.json").is_file():
        return True
    processor = directory / "processor_config.json"
    try:
        return processor.is_file() and "image_processor" in json.loads(processor.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def default_name(text: str) -> str:
    """Catalog name for an outside checkpoint: the repo or directory name, lower-cased.

    ``Qwen/Qwen2.5-VL-7B-Instruct`` -> ``qwen2.5-vl-7b-instruct`` (the name the
    paper presets read).
    """
    base = text.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^a-z0-9_.\-]+", "-", base.lower()).strip("-.") or "model"
    return name if re.match(r"^[a-z0-9_]", name) else f"m{name}"


def hub_snapshot(
    hub_id: str, revision: str | None = None, *, cache_dir: Path | None = None
) -> ResolvedModel:
    """The loadable files of a hub repo at ``revision`` in the local HF cache.

    Offline (``HF_HUB_OFFLINE=1``) the cache must hold them; online, what is
    missing is downloaded. Raises ``ModelSourceError`` with the hub's reason.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(
            hub_id,
            revision=revision,
            allow_patterns=list(LOADABLE_PATTERNS),
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    except LocalEntryNotFoundError as exc:
        raise ModelSourceError(
            f"hub model {hub_id!r}{f'@{revision}' if revision else ''} is not in the local HF "
            f"cache and the hub cannot be reached (offline: HF_HUB_OFFLINE=1?): {exc}"
        ) from None
    except Exception as exc:  # HTTP errors, an unreachable hub (httpx), bad ids
        raise ModelSourceError(f"hub model {hub_id!r}: {type(exc).__name__}: {exc}") from None
    directory = Path(str(path))
    return ResolvedModel(
        directory=directory,
        provenance={
            "source": "hub",
            "hub_id": hub_id,
            "requested_revision": revision or "main",
            "revision": directory.name,
        },
        default_name=default_name(hub_id),
    )


def hub_model_available(hub_id: str, revision: str | None = None) -> str | None:
    """Why ``hub_id`` cannot be used, or None; never downloads weights.

    Offline: its ``config.json`` must be in the cache. Online: the hub must
    know the repo (one metadata request).
    """
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    if isinstance(cached, str):
        return None
    if constants.HF_HUB_OFFLINE:
        return (
            f"hub model {hub_id!r} is not in the local HF cache ({constants.HF_HUB_CACHE}) "
            "and HF_HUB_OFFLINE=1"
        )
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(hub_id, revision=revision)
    except Exception as exc:  # HTTP errors, unreachable hub (httpx), bad ids
        return (
            f"hub model {hub_id!r} is not in the local HF cache and the hub did not confirm it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )
    return None


def local_checkpoint(path_or_hub_id: str | Path) -> Path:
    """The directory to load a checkpoint from: the path itself, or the hub id's snapshot."""
    local = Path(path_or_hub_id).expanduser()
    if local.is_dir():
        return local
    return hub_snapshot(str(path_or_hub_id)).directory
