"""Suppression comments: `# allocaudit: ignore[AA101]` and `# noqa: AA101` on the flagged line.

A bare `# allocaudit: ignore` or `# noqa` suppresses every code on its line, as in ruff.
The comment may sit on the first or the last line of a call that spans several lines.
"""

from __future__ import annotations

import re

_DIRECTIVE = re.compile(
    r"#\s*(?:allocaudit:\s*ignore(?P<bracket>\[[^\]]*\])?|noqa(?P<colon>:\s*[A-Za-z0-9]+(?:[\s,]+[A-Za-z0-9]+)*)?)",
    re.IGNORECASE,
)


def suppressed_codes(line: str):
    """Codes a line suppresses: a set of codes, "*" for all, or None when it suppresses nothing."""
    if "#" not in line:
        return None
    codes: set[str] = set()
    for match in _DIRECTIVE.finditer(line):
        listed = match.group("bracket") or match.group("colon")
        if not listed:
            return "*"
        codes.update(c.upper() for c in re.findall(r"[A-Za-z0-9]+", listed.strip("[]:")))
    return codes or None


def is_suppressed(lines: list[str], line: int, end_line: int, code: str) -> bool:
    for number in {line, end_line}:
        if 1 <= number <= len(lines):
            codes = suppressed_codes(lines[number - 1])
            if codes == "*" or (codes and code in codes):
                return True
    return False
