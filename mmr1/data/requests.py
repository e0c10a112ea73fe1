"""Generation requests from curation frames, and what of a backend identifies a run.

Shared by the steps that sample from a model over a frame (pass-rate
estimation, long-CoT generation): every request is the training prompt
(``mmr1.prompts.training_prompt``) with the row's images decoded to RGB.
"""

from __future__ import annotations

import polars as pl

from mmr1.data.io import decode_image
from mmr1.generation import GenerationBackend
from mmr1.prompts import training_prompt
from schemas.generation import GenerationRequest
from schemas.records import ImageData

#: Backend settings that change how requests travel, not what is sampled.
TRANSPORT_FIELDS = frozenset(
    {"timeout_s", "max_retries", "backoff_s", "concurrency", "api_key_env", "api_key_secret_block"}
)


def backend_identity(backend: GenerationBackend, model: str | None = None) -> dict[str, object]:
    """What of a backend enters a step fingerprint: its name and sampling-relevant config.

    Transport settings (timeouts, retries, concurrency, key names) are left
    out, so raising a timeout does not invalidate finished shards. ``model``
    stands for the config's ``model`` when that is where the weights happen to
    lie (a catalog checkpoint's directory): pass the checkpoint's content hash,
    so that a home moved elsewhere keeps its finished shards.
    """
    config = getattr(backend, "config", None)
    settings = config.model_dump(mode="json") if hasattr(config, "model_dump") else {}
    identity: dict[str, object] = {
        "name": getattr(backend, "name", type(backend).__name__),
        **{k: v for k, v in settings.items() if k not in TRANSPORT_FIELDS},
    }
    if model is not None:
        identity["model"] = model
    return identity


def build_requests(rows: pl.DataFrame, system: str | None = None) -> list[GenerationRequest]:
    """One training-prompt request per row (``row_id``, ``problem``, ``choices``, ``images``).

    ``request_id`` is the row id; ``system`` is sent as a system message when given.
    """
    requests = []
    for row in rows.select("row_id", "problem", "choices", "images").iter_rows(named=True):
        images = []
        for j, image in enumerate(row["images"] or []):
            try:
                images.append(decode_image(ImageData(**image)))
            except ValueError as exc:
                raise ValueError(f"row {row['row_id']!r}: field 'images'[{j}]: {exc}") from None
        requests.append(
            GenerationRequest(
                prompt=training_prompt(row["problem"], row["choices"]),
                images=images,
                system=system,
                request_id=row["row_id"],
            )
        )
    return requests
