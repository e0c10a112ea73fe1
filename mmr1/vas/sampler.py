"""Variance-Aware Sampling: a batch sampler mixing VPS-weighted and uniform draws.

Per batch of B prompts (docs/METHOD.md section 6):

    B_w = floor(lambda * B)  drawn with replacement, P(i) = (s_i + floor) / sum_j (s_j + floor)
    B_r = B - B_w            the next B_r indices of a seeded permutation of 0..n-1

A pass ends when the permutation is exhausted (the last batch's uniform part may be
short, or is dropped with ``drop_last``); the next pass reshuffles with a seed derived
from (seed, pass). If every score is equal (including all zero) the weighted part is
exactly uniform. Prompts without a score get the config prior. B_w is computed
with ``SamplerConfig.weighted_per_batch`` so that e.g. lambda = 0.29, B = 100 gives 29
(the float product is 28.999...).

Distributed use: all randomness comes from this object's ``torch.Generator`` (never
the global RNG), so samplers built with the same seed, n and score updates on every
rank yield the same *global* batches; each rank takes its own slice, e.g.
``batch[rank::world_size]``. Score updates must therefore be identical on all ranks
(gather them first).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from schemas.vas import SamplerConfig

_GOLDEN = 0x9E3779B97F4A7C15

#: Config fields that shape the stream; a state dict records them and refuses to load
#: into a sampler configured differently (``num_prompts`` and ``seed`` are checked too).
_STREAM_FIELDS = ("batch_size", "mix_ratio", "floor", "prior", "drop_last")


def _pass_seed(seed: int, pass_index: int) -> int:
    """Seed of the permutation of pass ``pass_index`` (a fixed mix of seed and pass)."""
    return (seed * 1_000_003 + (pass_index + 1) * _GOLDEN) % (2**63)


class MixedVarianceSampler(Sampler[list[int]]):
    """Batch sampler over prompt indices 0..n-1; yields lists of ints.

    ``len(self)`` is the number of batches per pass: ceil(n / B_r) (floor with
    ``drop_last``). With lambda = 1 (B_r = 0) there is no uniform part; a pass is then
    defined as ceil(n / B) batches of B weighted draws.
    Iterating yields the rest of the current pass, so an interrupted iteration resumes
    where it stopped, and ``state_dict`` / ``load_state_dict`` reproduce the remaining
    stream exactly.
    """

    def __init__(self, num_prompts: int, config: SamplerConfig) -> None:
        if num_prompts < 1:
            raise ValueError(f"MixedVarianceSampler needs at least one prompt, got {num_prompts}")
        self.num_prompts = num_prompts
        self.config = config
        self.num_weighted = config.weighted_per_batch()
        self.num_uniform = config.batch_size - self.num_weighted
        if len(self) == 0:
            raise ValueError(
                f"drop_last with {num_prompts} prompts and a uniform part of "
                f"{self.num_uniform} per batch yields no batch"
            )
        self._known = torch.zeros(num_prompts, dtype=torch.bool)
        self._raw_scores = torch.zeros(num_prompts, dtype=torch.float64)
        self._generator = torch.Generator().manual_seed(config.seed)
        self._pass = 0
        self._batch = 0
        self._permutation = self._make_permutation()

    def __len__(self) -> int:
        n = self.num_prompts
        if self.num_uniform == 0:
            return math.ceil(n / self.config.batch_size)
        if self.config.drop_last:
            return n // self.num_uniform
        return math.ceil(n / self.num_uniform)

    def _make_permutation(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(_pass_seed(self.config.seed, self._pass))
        return torch.randperm(self.num_prompts, generator=generator)

    def _prior(self) -> float:
        if self.config.prior is not None:
            return self.config.prior
        if not bool(self._known.any()):
            return 1.0
        return float(self._raw_scores[self._known].mean())

    @property
    def scores(self) -> torch.Tensor:
        """Current score per prompt, shape (num_prompts,), unknown prompts at the prior."""
        return torch.where(
            self._known, self._raw_scores, torch.full_like(self._raw_scores, self._prior())
        )

    @property
    def pass_index(self) -> int:
        """Number of completed passes over the permutation."""
        return self._pass

    def update_scores(self, indices: Sequence[int], scores: Sequence[float]) -> None:
        """Set the score (e.g. VPS) of the given prompts; the others keep theirs.

        All values are checked before any is written: an index outside 0..n-1 or a
        NaN, infinite or negative score raises ``ValueError`` naming the index.
        """
        if len(indices) != len(scores):
            raise ValueError(f"got {len(indices)} indices but {len(scores)} scores")
        for index, score in zip(indices, scores, strict=True):
            if not 0 <= int(index) < self.num_prompts:
                raise ValueError(f"prompt index {index} outside 0..{self.num_prompts - 1}")
            if not math.isfinite(float(score)) or float(score) < 0:
                raise ValueError(f"score of prompt {index} is {score!r}; need finite and >= 0")
        for index, score in zip(indices, scores, strict=True):
            self._raw_scores[int(index)] = float(score)
            self._known[int(index)] = True

    def _weights(self) -> torch.Tensor:
        scores = self.scores
        if bool((scores == scores[0]).all()):
            return torch.ones_like(scores)
        return scores + self.config.floor

    def _next_batch(self) -> list[int]:
        weighted: list[int] = []
        if self.num_weighted:
            weighted = torch.multinomial(
                self._weights(), self.num_weighted, replacement=True, generator=self._generator
            ).tolist()
        start = self._batch * self.num_uniform
        uniform = self._permutation[start : start + self.num_uniform].tolist()
        self._batch += 1
        return weighted + uniform

    def _start_next_pass(self) -> None:
        self._pass += 1
        self._batch = 0
        self._permutation = self._make_permutation()

    def next_batch(self) -> list[int]:
        """The next batch of the stream, starting a new pass when the current one is done.

        Training loops that count steps rather than passes call this; it draws
        exactly what iterating would.
        """
        if self._batch >= len(self):
            self._start_next_pass()
        return self._next_batch()

    def __iter__(self) -> Iterator[list[int]]:
        if self._batch >= len(self):
            self._start_next_pass()
        while self._batch < len(self):
            yield self._next_batch()

    def _stream_settings(self) -> dict[str, Any]:
        settings = {"num_prompts": self.num_prompts, "seed": self.config.seed}
        return settings | {name: getattr(self.config, name) for name in _STREAM_FIELDS}

    def state_dict(self) -> dict[str, Any]:
        """Scores, pass, batch position, generator state and the settings that shape the stream.

        The settings are ``num_prompts``, ``seed`` and, under ``"config"``,
        batch_size, mix_ratio, floor, prior and drop_last.
        """
        settings = self._stream_settings()
        return {
            "num_prompts": settings.pop("num_prompts"),
            "seed": settings.pop("seed"),
            "config": settings,
            "raw_scores": self._raw_scores.clone(),
            "known": self._known.clone(),
            "pass": self._pass,
            "batch": self._batch,
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` written by a sampler with the same settings.

        Raises ``ValueError`` naming every setting that differs (n, seed, batch_size,
        mix_ratio, floor, prior, drop_last): the saved positions and generator state
        only reproduce the stream under the settings that produced them. State dicts
        written before the settings were recorded (no ``"config"`` key) are checked on
        n and seed only.
        """
        saved = {"num_prompts": state["num_prompts"], "seed": state["seed"]}
        saved |= state.get("config", {})
        current = self._stream_settings()
        mismatched = [
            f"{name}={saved[name]!r} in the state but {current[name]!r} here"
            for name in current
            if name in saved and saved[name] != current[name]
        ]
        if mismatched:
            raise ValueError(
                "sampler state was saved by a differently configured sampler: "
                + "; ".join(mismatched)
            )
        self._raw_scores = state["raw_scores"].clone().to(torch.float64)
        self._known = state["known"].clone().to(torch.bool)
        self._pass = int(state["pass"])
        self._batch = int(state["batch"])
        self._generator.set_state(state["generator"])
        self._permutation = self._make_permutation()
