"""The catalog: a DuckDB manifest of datasets, checkpoints, VPS tables and eval results,
with versions, lineage and quarantined rows. See ``catalog.py`` for the rules."""

from mmr1.catalog.catalog import Catalog, Entry
from mmr1.catalog.errors import (
    CatalogAmbiguousRefError,
    CatalogError,
    CatalogLockTimeout,
    CatalogNotFoundError,
)
from schemas.refs import KINDS, Ref, parse_ref

__all__ = [
    "KINDS",
    "Catalog",
    "CatalogAmbiguousRefError",
    "CatalogError",
    "CatalogLockTimeout",
    "CatalogNotFoundError",
    "Entry",
    "Ref",
    "parse_ref",
]
