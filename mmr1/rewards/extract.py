"""Find the final answer in a model response (docs/METHOD.md section 4).

The one answer extractor of the project: rewards and evaluation both call
:func:`extract_final_answer`. Order of preference:

1. the last brace-balanced ``\\boxed{...}`` (or ``\\fbox{...}``) inside the last
   ``<answer>...</answer>`` block;
2. else the last balanced box anywhere in the response;
3. else the stripped content of that ``<answer>`` block;
4. else ``None``.

"Last" means the box that closes last, so an outer box wins over a box nested
in it (``\\boxed{\\boxed{5}}`` gives ``5`` after unwrapping). A box whose braces
never close is skipped. Escaped braces ``\\{`` and ``\\}`` do not count, so
``\\boxed{\\{1, 2\\}}`` gives ``\\{1, 2\\}``.

All scans are single passes over the text (no backtracking regex), so a
100k-character adversarial response costs milliseconds.
"""

from __future__ import annotations

import re

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"

# One token per match: a box opener, an escaped brace/backslash (skipped), or a bare brace.
_BOX_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|\\[{}\\]|[{}]")
_BOX_ONLY = re.compile(r"\\(?:boxed|fbox)\s*\{")


def find_answer_block(response: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` block, unstripped, or None.

    An ``<answer>`` without a closing tag after it (a truncated generation) is
    not a block.
    """
    start = response.rfind(ANSWER_OPEN)
    if start < 0:
        return None
    content_start = start + len(ANSWER_OPEN)
    end = response.find(ANSWER_CLOSE, content_start)
    if end < 0:
        return None
    return response[content_start:end]


def last_boxed(text: str) -> str | None:
    """Content of the balanced ``\\boxed{}``/``\\fbox{}`` that closes last, or None.

    Uses a brace stack over the tokens of ``_BOX_TOKENS``: a box is recorded
    when the brace opened by its ``{`` closes. Stray closing braces are ignored.
    A content that is itself exactly one box is unwrapped.
    """
    if "box" not in text:  # fast path: neither \boxed nor \fbox can occur
        return None
    stack: list[int | None] = []  # content start for a box opener, None for a plain "{"
    best: tuple[int, int] | None = None
    for match in _BOX_TOKENS.finditer(text):
        token = match.group()
        if token[-1] == "{" and token[0] == "\\" and len(token) > 2:
            stack.append(match.end())
        elif token == "{":
            stack.append(None)
        elif token == "}":
            if not stack:
                continue
            content_start = stack.pop()
            if content_start is not None:
                # Boxes close in increasing order of position; the latest one wins.
                best = (content_start, match.start())
        # escaped \{ \} \\ : ignored
    if best is None:
        return None
    content = text[best[0] : best[1]].strip()
    if _is_single_box(content):
        return last_boxed(content)
    return content


def _is_single_box(content: str) -> bool:
    """True when ``content`` is exactly one balanced box from its first to its last char."""
    opener = _BOX_ONLY.match(content)
    if opener is None:
        return False
    depth = 1
    for match in _BOX_TOKENS.finditer(content, opener.end()):
        token = match.group()
        if token == "}":
            depth -= 1
            if depth == 0:
                return match.end() == len(content)
        elif token[-1] == "{" and (token == "{" or len(token) > 2):
            depth += 1
    return False


def extract_final_answer(response: str) -> str | None:
    """The final answer of ``response`` (see the module docstring), stripped, or None.

    >>> extract_final_answer("<think>..</think><answer>so \\\\boxed{\\\\frac{1}{2}}</answer>")
    '\\\\frac{1}{2}'
    >>> extract_final_answer("<answer> B </answer>")
    'B'
    """
    block = find_answer_block(response)
    answer = last_boxed(block) if block is not None else None
    if answer is None:
        answer = last_boxed(response)
    if answer is None and block is not None:
        answer = block.strip()
    # An empty box or an empty <answer> block is no answer.
    return answer or None
