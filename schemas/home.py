"""Where the pipeline keeps its state: one root directory (``MMR1_HOME``)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_HOME = Path("~/.mmr1")


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


class HomeConfig(BaseModel):
    """All state of a pipeline installation lives under ``root``.

    Each location can be moved on its own (field or environment variable); by
    default it is derived from ``root``. Nothing else is written outside the
    home except Prefect's own home (``PREFECT_HOME``).
    """

    model_config = ConfigDict(frozen=True)

    root: Path = Field(
        default_factory=lambda: _env_path("MMR1_HOME") or DEFAULT_HOME.expanduser(),
        description="Root of all pipeline state (env MMR1_HOME; default ~/.mmr1).",
    )
    catalog_path: Path | None = Field(
        default=None,
        description="DuckDB catalog file (env MMR1_CATALOG; default ROOT/catalog.duckdb).",
    )
    datasets_dir: Path | None = Field(
        default=None,
        description="Versioned datasets (env MMR1_DATASETS_DIR; default ROOT/datasets).",
    )
    checkpoints_dir: Path | None = Field(
        default=None,
        description="Model checkpoints (env MMR1_CHECKPOINTS_DIR; default ROOT/checkpoints).",
    )
    runs_dir: Path | None = Field(
        default=None,
        description="Per-run scratch space: rollouts, shards, logs "
        "(env MMR1_RUNS_DIR; default ROOT/runs).",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (env MLFLOW_TRACKING_URI; default sqlite:///ROOT/mlflow.db).",
    )
    mlflow_artifacts_dir: Path | None = Field(
        default=None,
        description="MLflow artifact root for experiments created here (env MMR1_MLFLOW_ARTIFACTS; "
        "default ROOT/mlartifacts).",
    )

    @model_validator(mode="after")
    def _derive_defaults(self) -> HomeConfig:
        root = self.root.expanduser().resolve()
        object.__setattr__(self, "root", root)
        derived = {
            "catalog_path": (_env_path("MMR1_CATALOG"), root / "catalog.duckdb"),
            "datasets_dir": (_env_path("MMR1_DATASETS_DIR"), root / "datasets"),
            "checkpoints_dir": (_env_path("MMR1_CHECKPOINTS_DIR"), root / "checkpoints"),
            "runs_dir": (_env_path("MMR1_RUNS_DIR"), root / "runs"),
            "mlflow_artifacts_dir": (_env_path("MMR1_MLFLOW_ARTIFACTS"), root / "mlartifacts"),
        }
        for name, (from_env, default) in derived.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, (from_env or default).resolve())
        if self.mlflow_tracking_uri is None:
            uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
            object.__setattr__(self, "mlflow_tracking_uri", uri)
        return self

    # The validator guarantees these are set; the properties give typed access.
    @property
    def catalog(self) -> Path:
        assert self.catalog_path is not None
        return self.catalog_path

    @property
    def datasets(self) -> Path:
        assert self.datasets_dir is not None
        return self.datasets_dir

    @property
    def checkpoints(self) -> Path:
        assert self.checkpoints_dir is not None
        return self.checkpoints_dir

    @property
    def runs(self) -> Path:
        assert self.runs_dir is not None
        return self.runs_dir

    @property
    def tracking_uri(self) -> str:
        assert self.mlflow_tracking_uri is not None
        return self.mlflow_tracking_uri

    @property
    def artifacts(self) -> Path:
        assert self.mlflow_artifacts_dir is not None
        return self.mlflow_artifacts_dir

    def ensure(self) -> HomeConfig:
        """Create the directories (idempotent) and return self."""
        for path in (self.root, self.datasets, self.checkpoints, self.runs, self.artifacts):
            path.mkdir(parents=True, exist_ok=True)
        self.catalog.parent.mkdir(parents=True, exist_ok=True)
        return self
