"""Real-layout inputs without a hub: a tiny Qwen2.5-VL in the hub layout, in a local HF cache.

``write_hub_layout_checkpoint`` writes the files ``Qwen/Qwen2.5-VL-3B-Instruct``
ships (sharded safetensors with an index, ``preprocessor_config.json`` naming
``Qwen2_5_VLProcessor``, a ``Qwen2Tokenizer`` config with ``vocab.json`` and
``merges.txt``, ``chat_template.json``) around the tiny model's weights and
tokenizer. ``install_in_hf_cache`` lays a directory out the way
``huggingface_hub`` caches a repo (content-named blobs, a snapshot of symlinks,
``refs/main``), so ``HF_HUB_OFFLINE=1`` resolves the hub id from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mmr1.models import build_tiny_model
from schemas.models import TinyVLMConfig

TINY_REPO = "Qwen/Qwen2.5-VL-3B-Instruct"


def write_hub_layout_checkpoint(out: Path, config: TinyVLMConfig | None = None) -> Path:
    """The tiny model's weights and tokenizer in the file layout of a Qwen2.5-VL hub repo."""
    from transformers import AutoModelForImageTextToText

    config = config or TinyVLMConfig()
    built = build_tiny_model(config, out.parent / f".{out.name}-build")
    out.mkdir(parents=True, exist_ok=True)
    model = AutoModelForImageTextToText.from_pretrained(str(built))
    model.save_pretrained(out, max_shard_size="2MB")  # model-0000k-of-0000n + index
    assert (out / "model.safetensors.index.json").is_file()
    tokenizer = json.loads((built / "tokenizer.json").read_text())
    (out / "tokenizer.json").write_text(json.dumps(tokenizer))
    (out / "vocab.json").write_text(json.dumps(tokenizer["model"]["vocab"]))
    merges = tokenizer["model"]["merges"]
    lines = [" ".join(m) if isinstance(m, list) else m for m in merges]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n")
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "errors": "replace",
                "model_max_length": 131072,
                "split_special_tokens": False,
                "clean_up_tokenization_spaces": False,
            }
        )
    )
    template = (built / "chat_template.jinja").read_text()
    (out / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "min_pixels": config.min_pixels,
                "max_pixels": config.max_pixels,
                "patch_size": config.patch_size,
                "temporal_patch_size": config.temporal_patch_size,
                "merge_size": config.spatial_merge_size,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor",
            }
        )
    )
    for name in ("config.json", "generation_config.json"):
        (out / name).write_bytes((built / name).read_bytes())
    return out


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def install_in_hf_cache(files: Path, repo_id: str, hub_cache: Path) -> Path:
    """Lay ``files`` out as ``huggingface_hub`` caches ``repo_id``; return the snapshot dir.

    Weights (safetensors) are LFS files, cached under their SHA-256; the others
    under their git blob SHA-1, as the hub names them. The commit id is derived
    from the content.
    """
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    blobs = repo / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    entries = []
    for path in sorted(p for p in files.rglob("*") if p.is_file()):
        data = path.read_bytes()
        lfs = path.suffix == ".safetensors"
        etag = hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data)
        (blobs / etag).write_bytes(data)
        entries.append((path.relative_to(files), etag))
    commit = hashlib.sha1(json.dumps([(str(r), e) for r, e in entries]).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for rel, etag in entries:
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(os.path.relpath(blobs / etag, link.parent), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def hub_cache_dir() -> Path:
    """The hub cache of this test session (``$HF_HOME/hub``, set by conftest)."""
    return Path(os.environ["HF_HOME"]) / "hub"
