"""Suppression comments, found with the tokenizer (a `# noqa` inside a string is text, not a
comment, and suppresses nothing):

- `# allocaudit: ignore[AA101]` or `# noqa: AA101` on the first or the last line of the
  flagged code; a bare `# allocaudit: ignore` or `# noqa` suppresses every code there, as in ruff;
- `# allocaudit: file-ignore[AA101]` anywhere in a file suppresses those codes in the whole
  file (a bare `# allocaudit: file-ignore`, every code), like ruff's `# ruff: noqa: CODE`.

`unused` lists what suppressed nothing, for AA001 (ruff's RUF100).
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass
from typing import Iterable, Optional

# Codes look like codes (`AA101`, `E501`): words after them are an explanation, not codes.
_CODES = r"[A-Za-z]+[0-9]+(?:\s*,\s*[A-Za-z]+[0-9]+|\s+[A-Za-z]+[0-9]+\b)*"
_DIRECTIVE = re.compile(
    rf"#\s*(?:allocaudit:\s*(?P<kind>file-ignore|ignore)(?:\[(?P<bracket>[^\]]*)\])?|noqa\b(?::\s*(?P<colon>{_CODES}))?)",
    re.IGNORECASE,
)
# A quick test of the raw bytes before the tokenizer runs (most files have no directive).
_HINT = re.compile(rb"noqa|allocaudit:", re.IGNORECASE)


@dataclass(frozen=True)
class Directive:
    """One suppression comment. ``codes`` None: every code."""

    line: int
    col: int  # 1-based, in characters, where the directive starts
    end_col: int
    text: str
    codes: Optional[frozenset[str]]
    file_level: bool
    own: bool  # `allocaudit:` syntax: no other tool reads it, so even a bare one can be judged unused


class Suppressions:
    """The directives of one file."""

    def __init__(self, directives: Iterable[Directive]) -> None:
        self.directives = tuple(directives)
        self._by_line: dict[int, list[Directive]] = {}
        for directive in self.directives:
            if not directive.file_level:
                self._by_line.setdefault(directive.line, []).append(directive)
        self._file = [d for d in self.directives if d.file_level]

    @classmethod
    def of(cls, text: str, data: Optional[bytes] = None) -> "Suppressions":
        """The directives in a file's ``text`` (``data``, its bytes, only serves a quick test)."""
        if data is not None and not _HINT.search(data):
            return cls(())
        return cls(_directives(text))

    def suppressing(self, code: str, line: int, end_line: int) -> list[Directive]:
        """The directives that suppress ``code`` reported over lines ``line``..``end_line``."""
        found = [d for d in self._file if d.codes is None or code in d.codes]
        for number in {line, end_line}:
            found += [d for d in self._by_line.get(number, ()) if d.codes is None or code in d.codes]
        return found

    def unused(self, used: set[tuple[Directive, str]], reported: set[Directive], judged: frozenset[str]) -> list[tuple[Directive, str]]:
        """(directive, code) pairs that suppressed nothing, for codes in ``judged`` (allocaudit's
        own; another tool's code in `# noqa: E501, AA101` is that tool's business), and
        (directive, "") for an `allocaudit:` directive without codes that suppressed nothing.
        A bare `# noqa` is never judged: other linters read it too."""
        found = []
        for directive in self.directives:
            if directive.codes is None:
                if directive.own and directive not in reported:
                    found.append((directive, ""))
                continue
            for code in sorted(directive.codes & judged):
                if (directive, code) not in used:
                    found.append((directive, code))
        return found


def _directives(text: str) -> list[Directive]:
    found = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):  # the parser accepted the file; the tokenizer should too
        return found
    for token in tokens:
        if token.type != tokenize.COMMENT:
            continue
        for match in _DIRECTIVE.finditer(token.string):
            kind = (match.group("kind") or "").lower()
            listed = match.group("bracket") if kind else match.group("colon")
            codes = frozenset(c.upper() for c in re.findall(r"[A-Za-z]+[0-9]+", listed)) if listed is not None else None
            if codes is not None and not codes:  # `ignore[]` names nothing and suppresses nothing
                continue
            row, col = token.start
            found.append(
                Directive(
                    line=row,
                    col=col + match.start() + 1,
                    end_col=col + match.end() + 1,
                    text=match.group(0),
                    codes=codes,
                    file_level=kind == "file-ignore",
                    own=bool(kind),
                )
            )
    return found
