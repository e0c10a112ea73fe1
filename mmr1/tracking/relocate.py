"""Keep a moved home's MLflow artifacts in the home.

MLflow stores absolute locations: each experiment's ``artifact_location`` and each
run's ``artifact_uri``. After a home is copied or moved, the SQLite store under it
still points at the old directory, so new runs would write their artifacts there
(or fail where it is gone) and old runs' artifacts would not open from the new one.

For the home's own store (``sqlite:///ROOT/mlflow.db``) the pipeline owns those
paths: an ``mmr1/<flow>`` experiment whose location is ``<old>/<flow>`` while the
home's artifact root is ``<new>`` is rewritten to ``<new>/<flow>``, and so are the
locations of its runs (the files came along with the home; nothing is copied). A
store the user points at (``MLFLOW_TRACKING_URI``) or an experiment laid out
otherwise is left alone.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from dataclasses import dataclass

from schemas.home import HomeConfig

logger = logging.getLogger(__name__)

#: Every experiment of the pipeline is named ``mmr1/<flow name>``.
EXPERIMENT_PREFIX = "mmr1/"
# Seconds to wait for a write lock held by another process of the pipeline.
_LOCK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Relocation:
    """One experiment's artifact root, rewritten from ``old`` to ``new``."""

    experiment: str
    old: str
    new: str
    runs: int


def home_store_path(home: HomeConfig) -> str | None:
    """The home's own SQLite tracking store, or None when the store is elsewhere."""
    default = home.root / "mlflow.db"
    if home.tracking_uri != f"sqlite:///{default}" or not default.is_file():
        return None
    return str(default)


def relocate_artifact_roots(home: HomeConfig) -> list[Relocation]:
    """Point the home's experiments and runs at the home's artifact root; what moved."""
    store = home_store_path(home)
    if store is None:
        return []
    with closing(sqlite3.connect(store, timeout=_LOCK_TIMEOUT_S)) as db, db:
        if not _has_layout(db):
            return []
        rows = db.execute(
            "SELECT experiment_id, name, artifact_location FROM experiments WHERE name LIKE ?",
            (EXPERIMENT_PREFIX + "%",),
        ).fetchall()
        moved = [
            relocation
            for experiment_id, name, location in rows
            if (relocation := _relocate(db, experiment_id, name, location, home)) is not None
        ]
    for relocation in moved:
        logger.info(
            "MLflow experiment %s: artifacts now under %s (was %s; %d runs)",
            relocation.experiment,
            relocation.new,
            relocation.old,
            relocation.runs,
        )
    return moved


def _relocate(
    db: sqlite3.Connection, experiment_id: int, name: str, location: str | None, home: HomeConfig
) -> Relocation | None:
    flow = name[len(EXPERIMENT_PREFIX) :]
    new = (home.artifacts / flow).as_uri()
    if not location or location == new or not location.startswith("file://"):
        return None
    if not location.rstrip("/").endswith("/" + flow):
        return None  # not laid out by this pipeline: leave it
    old = location.rstrip("/")
    db.execute(
        "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
        (new, experiment_id),
    )
    runs = db.execute(
        "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
        "WHERE experiment_id = ? AND artifact_uri LIKE ? ESCAPE '\\'",
        (new, len(old) + 1, experiment_id, _like_prefix(old + "/")),
    ).rowcount
    return Relocation(experiment=name, old=old, new=new, runs=runs)


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching strings that start with ``text`` literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _has_layout(db: sqlite3.Connection) -> bool:
    """The store has the columns this rewrites (MLflow's schema since 1.x)."""
    columns = {
        table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for table in ("experiments", "runs")
    }
    return {"experiment_id", "name", "artifact_location"} <= columns["experiments"] and {
        "experiment_id",
        "artifact_uri",
    } <= columns["runs"]
