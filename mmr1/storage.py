"""Content-addressed directories for datasets and checkpoints under the home.

A writer fills a fresh staging directory; its content hash then names the final
directory ``<root>/<name>/<hash[:16]>``. Identical content lands in the same
place (the staging copy is discarded), so re-running a stage is idempotent and
the catalog's "same content -> same version" rule has a matching on-disk rule.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mmr1.hashing import hash_directory

T = TypeVar("T")

HASH_PREFIX_LEN = 16


def content_addressed(root: Path, name: str, write: Callable[[Path], T]) -> tuple[Path, str, T]:
    """Run ``write(staging_dir)``, then move the result to its content-addressed home.

    Returns ``(final_dir, content_hash, write_result)``. ``write`` must put
    everything in the directory it is given; nothing there may depend on the
    final location.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid artifact name {name!r}: use a plain name without '/'")
    parent = Path(root) / name
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        result = write(staging)
        digest = hash_directory(staging)
        final = parent / digest[:HASH_PREFIX_LEN]
        if final.exists():
            shutil.rmtree(staging)
        else:
            try:
                staging.rename(final)
            except OSError:
                # A concurrent writer produced the same content first.
                if not final.exists():
                    raise
                shutil.rmtree(staging)
        return final, digest, result
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
