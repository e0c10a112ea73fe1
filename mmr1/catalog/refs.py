"""Catalog refs: ``[kind:]name[@version]``.

``name`` alone means the latest version; ``name@3`` pins version 3; the kind
prefix (``dataset:``, ``checkpoint:``, ``vps:``) says which table to look in
when a name exists in several.
"""

from __future__ import annotations

import re
from typing import NamedTuple

KINDS: tuple[str, ...] = ("dataset", "checkpoint", "vps")

# Names may carry hub-style slashes ("org/set") but never ':' or '@', which delimit refs.
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*"
_NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
_REF_RE = re.compile(rf"^(?:(?P<kind>[a-z]+):)?(?P<name>{NAME_PATTERN})(?:@(?P<version>[0-9]+))?$")


class Ref(NamedTuple):
    """A parsed ref. ``kind`` and ``version`` are None when the ref leaves them out."""

    kind: str | None
    name: str
    version: int | None

    def __str__(self) -> str:
        prefix = f"{self.kind}:" if self.kind else ""
        suffix = f"@{self.version}" if self.version is not None else ""
        return f"{prefix}{self.name}{suffix}"


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
