"""Base class of every stage config: unknown keys are errors, never silently ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """A config section. A typo in a preset or ``--set`` key fails validation, naming the key."""

    model_config = ConfigDict(extra="forbid")
