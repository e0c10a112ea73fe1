"""Registries of named plug-ins: one list of names, which configs validate against.

A registry is created here, in the lowest layer, with the module that fills it
(its *provider*); the library registers implementations into it by decorator
(``@LOSS_AGGREGATIONS.register("token-mean")``), and a config field validates a
name against it (``Annotated[str, LOSS_AGGREGATIONS.field()]``). Adding a loss
aggregation is then one decorated function: no schema edit, no second list.
The first lookup imports the provider (by name: schemas never import the
library), so validation sees every registered name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pydantic import AfterValidator

T = TypeVar("T")


class Registry(Generic[T]):
    """Implementations of one kind of plug-in, by name, filled by ``provider`` on import."""

    def __init__(self, kind: str, provider: str) -> None:
        self.kind = kind
        self.provider = provider
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding an implementation under ``name``; a taken name raises."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add

    def _loaded(self) -> dict[str, T]:
        if not self._items:
            importlib.import_module(self.provider)
        return self._items

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._loaded())

    def check(self, name: str) -> str:
        """``name`` if registered; else ``ValueError`` listing the known names."""
        if name not in self._loaded():
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return name

    def field(self) -> AfterValidator:
        """A pydantic validator for a config field naming one of these."""
        return AfterValidator(self.check)

    def __getitem__(self, name: str) -> T:
        return self._loaded()[self.check(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def items(self) -> list[tuple[str, T]]:
        return list(self._loaded().items())


#: How GRPO scales the centred rewards of a group (``mmr1.rl.advantages``).
ADVANTAGE_SCALES: Registry[Any] = Registry("advantage scale", "mmr1.rl.advantages")
#: How per-token policy losses become one scalar (``mmr1.rl.losses``).
LOSS_AGGREGATIONS: Registry[Any] = Registry("loss aggregation", "mmr1.rl.losses")
#: Trajectory diversity measures of VPS (``mmr1.vas.vps``).
TDS_METHODS: Registry[Any] = Registry("trajectory diversity method", "mmr1.vas.vps")
#: Evaluation benchmark adapters (``mmr1.eval.benchmarks``).
BENCHMARKS: Registry[Any] = Registry("benchmark", "mmr1.eval.benchmarks")
#: Task families of the synthetic generator (``mmr1.data.families``).
SYNTHETIC_FAMILIES: Registry[Any] = Registry("synthetic task family", "mmr1.data.families")
