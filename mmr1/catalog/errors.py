"""Errors of the catalog. All derive from ``CatalogError``."""

from __future__ import annotations


class CatalogError(Exception):
    """Base class of every error the catalog raises on purpose."""


class CatalogNotFoundError(CatalogError, LookupError):
    """A ref names nothing in the catalog; the message lists what does exist."""


class CatalogAmbiguousRefError(CatalogError, ValueError):
    """An unprefixed ref matches entries of several kinds; add ``dataset:``, ``checkpoint:``
    or ``vps:``."""


class CatalogLockTimeout(CatalogError, TimeoutError):
    """The catalog file stayed locked by another process (or thread) past the deadline."""
