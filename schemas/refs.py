"""The one grammar of references a user writes: catalog refs and model sources.

Catalog refs: ``[kind:]name[@version]``. ``name`` alone means the latest
version; ``name@3`` pins version 3; the kind prefix (``dataset:``,
``checkpoint:``, ``vps:``) says which table to look in when a name exists in
several.

Model sources (every config field that names a checkpoint): a catalog ref, a
local checkpoint directory or a Hugging Face hub id. How a string is read:

==============================  ================================================
``checkpoint:NAME[@V]``         catalog (explicit)
``hf:ORG/NAME[@REVISION]``      hub id (explicit)
``/abs``, ``./rel``, ``~/x``    local directory
``NAME[@V]`` (no slash)         catalog
``ORG/NAME[@X]``                the catalog name if one exists, else a local
                                directory of that relative path if one exists,
                                else a hub id (``@X`` is then its revision)
==============================  ================================================

This module only classifies text (schemas validate with it, and it needs no
catalog); ``mmr1.models.registry`` resolves a source against the catalog, the
file system and the hub, registering outside checkpoints on the fly.

Config fields carry their role as ``Annotated`` metadata (:class:`RefField`),
so one walker (:func:`ref_fields`) finds every input and output ref of any
config: the command line checks inputs before starting Prefect, and the paper
preset chains are checked the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, get_args, get_origin

from pydantic import AfterValidator, BaseModel

KINDS: tuple[str, ...] = ("dataset", "checkpoint", "vps")

# Names may carry hub-style slashes ("org/set") but never ':' or '@', which delimit refs.
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*"
_NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
_REF_RE = re.compile(rf"^(?:(?P<kind>[a-z]+):)?(?P<name>{NAME_PATTERN})(?:@(?P<version>[0-9]+))?$")
# A hub repo id: exactly one slash between two non-empty parts (huggingface_hub's alphabet).
_HUB_ID = r"[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*"
_HUB_RE = re.compile(rf"^(?P<repo>{_HUB_ID})(?:@(?P<revision>[A-Za-z0-9_.\-/]+))?$")
HUB_PREFIX = "hf:"


class Ref(NamedTuple):
    """A parsed catalog ref. ``kind`` and ``version`` are None when the ref leaves them out."""

    kind: str | None
    name: str
    version: int | None

    def __str__(self) -> str:
        prefix = f"{self.kind}:" if self.kind else ""
        suffix = f"@{self.version}" if self.version is not None else ""
        return f"{prefix}{self.name}{suffix}"

    def bare(self) -> str:
        """``name[@version]`` without the kind prefix."""
        return str(self._replace(kind=None))


def parse_ref(ref: str) -> Ref:
    """Split ``[kind:]name[@version]``; raise ``ValueError`` naming ``ref`` if malformed.

    >>> parse_ref("checkpoint:sft@2")
    Ref(kind='checkpoint', name='sft', version=2)
    """
    if not isinstance(ref, str):
        raise ValueError(f"catalog ref must be a string, got {ref!r}")
    match = _REF_RE.match(ref.strip())
    if match is None:
        raise ValueError(
            f"malformed catalog ref {ref!r}: expected [kind:]name[@version], e.g. "
            "'rl-pool', 'rl-pool@3' or 'dataset:rl-pool@3'"
        )
    kind = match["kind"]
    if kind is not None and kind not in KINDS:
        raise ValueError(
            f"malformed catalog ref {ref!r}: unknown kind {kind!r} (expected one of "
            f"{', '.join(KINDS)})"
        )
    version = int(match["version"]) if match["version"] is not None else None
    if version is not None and version < 1:
        raise ValueError(f"malformed catalog ref {ref!r}: versions start at 1")
    return Ref(kind, match["name"], version)


def check_name(name: str, *, what: str = "name") -> str:
    """Validate a name about to be registered (same alphabet as refs)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid catalog {what} {name!r}: use letters, digits and '_', '.', '-', '/' "
            "(no ':' or '@', which delimit refs)"
        )
    return name


# ------------------------------------------------------------------ model sources


@dataclass(frozen=True)
class ModelSource:
    """How a checkpoint field's text reads, before looking anything up.

    ``kind``: ``catalog``, ``local`` or ``hub`` when the text says so; ``name``
    when it could be a catalog name, a relative directory or a hub id (the
    resolver decides in that order). ``ref`` is set when a catalog reading
    exists, ``hub_id``/``revision`` when a hub reading exists.
    """

    text: str
    kind: Literal["catalog", "local", "hub", "name"]
    ref: Ref | None = None
    path: str | None = None
    hub_id: str | None = None
    revision: str | None = None


def parse_model_source(text: str) -> ModelSource:
    """Classify a checkpoint field's text; raise ``ValueError`` naming it if it is none.

    >>> parse_model_source("hf:Qwen/Qwen2.5-VL-7B-Instruct").kind
    'hub'
    >>> parse_model_source("tiny-sft@2").ref
    Ref(kind=None, name='tiny-sft', version=2)
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a checkpoint must be a catalog ref, directory or hub id, got {text!r}")
    text = text.strip()
    if text.startswith(HUB_PREFIX):
        match = _HUB_RE.match(text[len(HUB_PREFIX) :])
        if match is None:
            raise ValueError(f"malformed hub id {text!r}: expected hf:ORG/NAME[@REVISION]")
        return ModelSource(text, "hub", hub_id=match["repo"], revision=match["revision"])
    if text.startswith(("/", "./", "../", "~")) or text in (".", ".."):
        return ModelSource(text, "local", path=text)
    prefix = text.split(":", 1)[0] if ":" in text else None
    if prefix is not None:
        ref = parse_ref(text)  # raises for unknown kinds and bad syntax
        if ref.kind != "checkpoint":
            raise ValueError(f"{text!r} names a {ref.kind}, not a checkpoint")
        return ModelSource(text, "catalog", ref=ref)
    hub = _HUB_RE.match(text)
    try:
        ref = parse_ref(text)
    except ValueError:
        ref = None
    if hub is None:
        if ref is None:
            raise ValueError(
                f"{text!r} is not a catalog ref (NAME[@VERSION]), a directory or a hub id "
                "(ORG/NAME)"
            )
        if "/" not in ref.name:
            return ModelSource(text, "catalog", ref=ref)
        return ModelSource(text, "name", ref=ref, path=text)
    return ModelSource(
        text, "name", ref=ref, path=text, hub_id=hub["repo"], revision=hub["revision"]
    )


def _check_model_source(text: str) -> str:
    parse_model_source(text)
    return text.strip()


def _check_catalog_ref(text: str) -> str:
    parse_ref(text)
    return text.strip()


# ------------------------------------------------------------------ ref fields


@dataclass(frozen=True)
class RefField:
    """Metadata on a config field: it reads (``input``) or names the output of (``output``)
    a catalog entry of ``kind``."""

    kind: Literal["dataset", "checkpoint", "vps"]
    role: Literal["input", "output"]


#: A checkpoint to read: catalog ref, local directory or hub id (see module doc).
CheckpointInput = Annotated[
    str, RefField("checkpoint", "input"), AfterValidator(_check_model_source)
]
#: A dataset / VPS table to read: a catalog ref.
DatasetInput = Annotated[str, RefField("dataset", "input"), AfterValidator(_check_catalog_ref)]
VPSInput = Annotated[str, RefField("vps", "input"), AfterValidator(_check_catalog_ref)]
#: The catalog name a stage registers its output under.
CheckpointOutput = Annotated[
    str, RefField("checkpoint", "output"), AfterValidator(lambda v: check_name(v))
]
DatasetOutput = Annotated[
    str, RefField("dataset", "output"), AfterValidator(lambda v: check_name(v))
]
VPSOutput = Annotated[str, RefField("vps", "output"), AfterValidator(lambda v: check_name(v))]


@dataclass(frozen=True)
class FoundRef:
    """One ref-valued field of a config instance: where it is and what it holds."""

    path: str
    kind: str
    role: str
    value: str


def _marker(annotation: Any, metadata: Sequence[Any] = ()) -> RefField | None:
    """The :class:`RefField` in a field's metadata or anywhere inside its annotation."""
    for item in metadata:
        if isinstance(item, RefField):
            return item
    if get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        return _marker(inner, extra)
    for arg in get_args(annotation):  # X | None, list[X]
        found = _marker(arg)
        if found is not None:
            return found
    return None


def ref_fields(config: BaseModel, *, prefix: str = "") -> Iterator[FoundRef]:
    """Every set field of ``config`` (recursively) marked with :class:`RefField`.

    Lists of refs (``checkpoints: list[CheckpointInput]``) yield one entry per
    item; unset optional fields (None) are skipped. ``path`` is dotted, with
    ``[i]`` for list items (``evaluate.checkpoints[1]``).
    """
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        path = f"{prefix}.{name}" if prefix else name
        marker = _marker(info.annotation, info.metadata)
        items = list(enumerate(value)) if isinstance(value, list | tuple) else None
        if marker is not None and isinstance(value, str):
            yield FoundRef(path, marker.kind, marker.role, value)
        elif marker is not None and items is not None:
            for i, item in items:
                yield FoundRef(f"{path}[{i}]", marker.kind, marker.role, item)
        elif isinstance(value, BaseModel):
            yield from ref_fields(value, prefix=path)
        elif items is not None:
            for i, item in items:
                if isinstance(item, BaseModel):
                    yield from ref_fields(item, prefix=f"{path}[{i}]")
