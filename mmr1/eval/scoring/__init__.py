"""Rule-based scorers of the evaluation benchmarks (docs/BENCHMARKS.md), one module each.

Every scorer is a pure function of a model response (or an extraction) and the
benchmark's own row; its module docstring states the official rule it follows
and where a rule-based stand-in replaces an LLM extractor or judge.

- ``chartqa``: relaxed accuracy (5% relative tolerance, else case-insensitive equality);
- ``mathvista``: quick-path extraction, type-wise normalisation, exact equality;
- ``mathvision``: official extraction and MATH normalisation, rounded numeric equality;
- ``logicvista``: chosen letters (or option numbers) as an exact set;
- ``mathverse``: rule-based default (letters; the project's math verifier);
- ``latex_value``: safe numeric evaluation of short LaTeX answers;
- ``text``: shared extraction fallbacks and the nearest choice (Levenshtein
  distance from :mod:`mmr1.edit_distance`).

Every deliberate deviation from the official code is listed in docs/BENCHMARKS.md.
"""

from mmr1.eval.scoring.chartqa import (
    chartqa_extract,
    chartqa_relaxed,
    chartqa_relaxed_any,
    relaxed_match,
)
from mmr1.eval.scoring.latex_value import latex_value
from mmr1.eval.scoring.logicvista import (
    choice_letters,
    logicvista_correct,
    logicvista_extract,
    numbered_options,
)
from mmr1.eval.scoring.mathverse import (
    inline_choices,
    latex_form,
    mathverse_correct,
    mathverse_extract,
)
from mmr1.eval.scoring.mathvision import (
    mathvision_correct,
    mathvision_equal,
    mathvision_extract,
    normalize_answer,
)
from mmr1.eval.scoring.mathvista import mathvista_correct, mathvista_extract, mathvista_normalize
from mmr1.eval.scoring.text import final_answer, levenshtein, nearest_choice

__all__ = [
    "chartqa_extract",
    "chartqa_relaxed",
    "chartqa_relaxed_any",
    "choice_letters",
    "final_answer",
    "inline_choices",
    "latex_form",
    "latex_value",
    "levenshtein",
    "logicvista_correct",
    "logicvista_extract",
    "mathverse_correct",
    "mathverse_extract",
    "mathvision_correct",
    "mathvision_equal",
    "mathvision_extract",
    "mathvista_correct",
    "mathvista_extract",
    "mathvista_normalize",
    "nearest_choice",
    "normalize_answer",
    "numbered_options",
    "relaxed_match",
]
