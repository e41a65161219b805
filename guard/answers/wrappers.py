"""Peeling markup off an answer string: markdown, $...$, \\(...\\), \\boxed{...}, \\text{...}."""

from __future__ import annotations

import re

_WRAPPER_CMD_RE = re.compile(r"\\(?:boxed|fbox|text|textrm|textbf|textit|mathrm|mathbf|mbox)\s*\{")
_WRAPPER_PAIRS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ('"', '"'), ("\u201c", "\u201d"))


def strip_wrappers(s: str) -> str:
    """Peel markdown, $...$, \\(...\\), \\boxed{...} and \\text{...} off a whole answer string."""
    previous = None
    while s != previous:
        previous = s
        s = s.strip().strip("*_`").strip()
        s = s.rstrip(".,;!").rstrip()
        for left, right in _WRAPPER_PAIRS:
            inner = s[len(left) : -len(right)]
            if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
                if left == "$" and "$" in inner:
                    continue
                s = inner
                break
        match = _WRAPPER_CMD_RE.match(s)
        if match is not None and matching_brace(s, match.end() - 1) == len(s) - 1:
            s = s[match.end() : -1]
    return s


def matching_brace(text: str, open_index: int) -> int | None:
    """Index of the "}" closing the "{" at `open_index`, None when it is never closed."""
    depth = 0
    index = open_index
    while index < len(text):
        char = text[index]
        if char == "\\":
            # Escaped braces (\{ \}) are set notation, not grouping.
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return None
