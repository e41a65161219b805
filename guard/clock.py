"""Clock-time answers: which strings state a time of day ("2:30 pm") and its 24-hour form."""

from __future__ import annotations

import re

# Minutes, or a meridiem, make digits a clock time: "12:30", "2:30 pm", "7 p.m.", "23:59:30".
_TIME_RE = re.compile(
    r"(?P<h>\d{1,2})(?::(?P<m>\d{2})(?::(?P<s>\d{2}))?)?(?:\s*(?P<meridiem>[ap])\.?m\.?)?", re.IGNORECASE
)
# The same shapes inside prose, for a regex alternation (compile with re.IGNORECASE).
TIME_IN_TEXT = (
    r"(?<![\w.:])\d{1,2}"
    r"(?::\d{2}(?::\d{2})?(?![\d:])(?:\s*[ap]\.?m\b\.?)?|\s*[ap]\.?m\b\.?)"
)


def canonical_time(s: str) -> str | None:
    """24-hour "HH:MM" (":SS" added when non-zero) of a whole string that is a clock time, else None.

    Without am/pm the hours are read as 24-hour: "2:30" is 02:30, not 14:30. Treating it as both
    would make equivalence intransitive, which clustering cannot handle.
    """
    match = _TIME_RE.fullmatch(s.strip())
    if match is None or (match.group("m") is None and match.group("meridiem") is None):
        return None
    hours, minutes, seconds = int(match.group("h")), int(match.group("m") or 0), int(match.group("s") or 0)
    meridiem = (match.group("meridiem") or "").lower()
    if minutes > 59 or seconds > 59 or hours > (12 if meridiem else 23) or (meridiem and hours == 0):
        return None
    if meridiem:
        hours = hours % 12 + (12 if meridiem == "p" else 0)
    return f"{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")
