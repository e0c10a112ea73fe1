"""Who writes a chain of thought: the programmatic solver or a model behind a backend.

The synthetic teacher needs the facts the drawer recorded, which a curation
frame does not carry; it regenerates the item from its id
(:func:`mmr1.data.synthetic.item_from_id`) and only trusts the regenerated item
when its problem, answer and choices equal the row's (images are not
compared: validation may have resized them). Rows that are not synthetic items,
or whose source used another synthetic distribution than the one supplied,
get no solution.

The model teacher samples through any :class:`GenerationBackend`; the caller
builds the backend (the orchestration layer resolves API keys) and passes it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmr1.data.synthetic import item_from_id, solve
from schemas.synthetic import SyntheticConfig


@dataclass(frozen=True)
class TeacherSolution:
    """A solver trace, or why there is none (``trace`` is None, ``detail`` says why)."""

    trace: str | None
    detail: str = ""


def synthetic_solution(
    row: Mapping[str, Any], templates: Mapping[str, SyntheticConfig] | None = None
) -> TeacherSolution:
    """The programmatic teacher's trace for a frame row (``source``, ``source_row_id``,
    ``problem``, ``answer``, ``choices``).

    ``templates`` maps a source name to the ``SyntheticConfig`` its items were
    generated with; sources not listed use the generator's defaults.
    """
    record_id = str(row["source_row_id"])
    template = (templates or {}).get(row["source"])
    try:
        item = item_from_id(record_id, template)
    except ValueError:
        return TeacherSolution(
            None, f"source {row['source']!r}: {record_id!r} is not a synthetic item id"
        )
    record = item.record
    differs = [
        name
        for name, ours, theirs in (
            ("problem", record.problem.strip(), (row["problem"] or "").strip()),
            ("answer", record.answer, row["answer"]),
            ("choices", record.choices or None, list(row["choices"] or []) or None),
        )
        if ours != theirs
    ]
    if differs:
        return TeacherSolution(
            None,
            f"the regenerated synthetic item {record_id!r} differs from the row in "
            f"{', '.join(differs)}; was source {row['source']!r} generated with another "
            "synthetic config? (pass it in synthetic_configs)",
        )
    return TeacherSolution(solve(item))
