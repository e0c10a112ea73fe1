"""Base class of every stage config: unknown keys are errors, never silently ignored."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """A config section. A typo in a preset or ``--set`` key fails validation, naming the key."""

    model_config = ConfigDict(extra="forbid")


class StageConfig(ConfigModel):
    """The config of a stage flow.

    ``REQUIRED`` names its input refs: a run of the flow on its own needs them,
    while inside the ``mmr1-pipeline`` flow they stay unset and the pipeline
    sets them from the refs of earlier stages (``schemas.pipeline.STAGE_IO``).
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def missing_inputs(self) -> list[str]:
        """The fields of ``REQUIRED`` left unset (None or an empty list)."""
        return [name for name in self.REQUIRED if getattr(self, name) in (None, [])]
