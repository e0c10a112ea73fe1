"""Faster LaTeX parsing for math-verify, with results identical to the stock parser.

math-verify turns LaTeX into SymPy with ``latex2sympy2_extended``, an ANTLR
grammar. Profiling :func:`mmr1.rewards.verify.check_answer` on the mix of
``bench/bench_verifier.py`` shows two costs that have nothing to do with the
answer's mathematics:

1. **ANTLR full-context prediction.** The parser runs in ANTLR's default
   ``LL`` mode, which on this grammar falls back to full-context (LL) prediction
   at many decisions; an interval such as ``[3, 7)`` spends ~30 ms there.
   ANTLR's documented two-stage strategy parses in ``SLL`` mode first and
   re-parses in ``LL`` mode only when ``SLL`` reports a syntax error. ANTLR
   guarantees that an ``SLL`` parse either fails or yields the very tree the
   ``LL`` parse would, so the outcome (tree, or the syntax error the stock
   parser raises) is unchanged. Cost: a second parse of inputs that are not
   valid LaTeX, ~1 ms.
2. **Numbers through SymPy's string parser.** Every number literal becomes
   ``sympy.Number(text)``, which runs the full ``parse_expr`` tokenizer
   (~0.5 ms per literal). For ASCII digit strings (``12``) and plain decimals
   (``0.37``) the result is exactly ``Integer(int(text))`` / ``Float(text)``
   (same class, value and precision), built without the tokenizer; any other
   literal still goes through ``sympy.Number``.

Together they cut math-verify items from ~3-30 ms to ~1-4 ms each. Nothing
here changes a verdict: ``tests/test_rewards_fastparse.py`` compares the
patched and stock parsers on a corpus of answers (``srepr`` of the SymPy
result, or the error), and ``bench/bench_verifier.py --compare`` does the same
for full verdicts on the benchmark mix.

:func:`install` patches ``latex2sympy2_extended``'s parser class in this process
(idempotent); :func:`uninstall` restores it. :mod:`mmr1.rewards.verify` installs
on import, so every process that verifies answers (workers, the in-process
fallback, evaluation scorers) parses the same way. If the library's internals
differ from what this module expects (another version), :func:`install` leaves
it alone and returns False.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")
_ORIGINALS: dict[str, Callable[..., Any]] = {}


def _converter_class() -> type | None:
    """latex2sympy2_extended's converter class, if it has the methods we patch."""
    try:
        from latex2sympy2_extended import latex2sympy2
    except ImportError:
        return None
    cls = getattr(latex2sympy2, "_Latex2Sympy", None)
    if cls is None or not all(hasattr(cls, name) for name in ("create_parser", "parse_number")):
        return None
    return cls


def _two_stage_create_parser(self: Any, latex_str: str) -> Any:
    """The stock parser, whose ``math()`` (the start rule) tries SLL before LL."""
    from antlr4.atn.PredictionMode import PredictionMode

    create = _ORIGINALS["create_parser"]
    parser = create(self, latex_str)
    parser._interp.predictionMode = PredictionMode.SLL
    sll_math = parser.math

    def math() -> Any:
        try:
            return sll_math()
        except Exception:  # an SLL syntax error (the listeners raise): redo in LL mode
            # Timeouts (math-verify's TimeoutException, the pool's deadline) derive
            # from BaseException and propagate without a second parse.
            return create(self, latex_str).math()

    parser.math = math
    return parser


def _fast_parse_number(self: Any, text: str) -> Any:
    """``sympy.Number(text)`` without the tokenizer for plain integers and decimals."""
    import sympy

    digits = text.replace(",", "")
    if digits.isascii():
        if digits.isdigit():
            return sympy.Integer(int(digits))
        if _DECIMAL.fullmatch(digits):
            return sympy.Float(digits)
    return _ORIGINALS["parse_number"](self, text)


def install() -> bool:
    """Patch the parser (idempotent). False when the library does not look as expected."""
    cls = _converter_class()
    if cls is None:
        logger.info("latex2sympy2_extended not as expected; LaTeX parsing left unpatched")
        return False
    if not _ORIGINALS:
        _ORIGINALS["create_parser"] = cls.create_parser
        _ORIGINALS["parse_number"] = cls.parse_number
        cls.create_parser = _two_stage_create_parser
        cls.parse_number = _fast_parse_number
    return True


def uninstall() -> None:
    """Restore the stock parser methods (for comparisons and tests)."""
    cls = _converter_class()
    if cls is not None and _ORIGINALS:
        cls.create_parser = _ORIGINALS.pop("create_parser")
        cls.parse_number = _ORIGINALS.pop("parse_number")


def installed() -> bool:
    """Whether the patched parser is active in this process."""
    return bool(_ORIGINALS)
