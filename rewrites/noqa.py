"""`allocaudit scan --add-noqa`: a `# noqa: CODE` comment where each finding is, as ruff's
`--add-noqa` does, so a large codebase can adopt allocaudit at zero findings and fix its
sites one at a time.

The comment goes at the end of the finding's first line, or of its last line where the first
ends inside a string or a backslash continuation (both lines suppress). A `# noqa: CODES`
already there gains the new codes; any other comment is kept and the directive follows it.
"""

from __future__ import annotations

import io
import tokenize
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from allocaudit.auditor.findings import FileError, Finding
from allocaudit.auditor.suppression import Suppressions
from allocaudit.rewrites.files import SourceError, WriteError, read_source, write_atomic

# Not placed: AA001 is about a comment itself, and a file that does not parse (AA999) has no
# line a comment could be trusted on.
NOT_PLACED = ("AA001", "AA999")


@dataclass
class NoqaResult:
    added: int = 0  # directives added or extended
    files: list[str] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)


def add_noqa(findings: Iterable[Finding], max_size: dict[str, int]) -> NoqaResult:
    """Suppress ``findings`` in place; ``max_size`` is each file's max-file-size."""
    result = NoqaResult()
    by_path: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        if finding.code not in NOT_PLACED:
            by_path[finding.path].append(finding)
    for path, file_findings in sorted(by_path.items()):
        try:
            source = read_source(path, max_size[path])
            text, added = with_noqa(source.text, file_findings)
            if added:
                data = source.encode(text)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    compile(data, path, "exec", dont_inherit=True)
                write_atomic(source, data)
                result.added += added
                result.files.append(path)
        except (SourceError, WriteError) as exc:
            result.errors.append(FileError(path, f"{exc}: no noqa added"))
        except SyntaxError as exc:
            result.errors.append(FileError(path, f"internal error: the file would not compile with the comments ({exc.msg}): not written"))
    return result


def with_noqa(text: str, findings: Iterable[Finding]) -> tuple[str, int]:
    """``text`` with the directives for ``findings``, and how many lines got one."""
    lines = io.StringIO(text, newline="").readlines()
    unusable = _lines_ending_in_strings(text)
    wanted: dict[int, set[str]] = defaultdict(set)
    for finding in findings:
        for number in (finding.line, finding.end_line):
            if number not in unusable and not lines[number - 1].rstrip("\r\n").endswith("\\"):
                wanted[number].add(finding.code)
                break
    existing = Suppressions.of(text).directives
    for number, codes in wanted.items():
        line = lines[number - 1]
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        noqa = next((d for d in existing if d.line == number and not d.own and d.codes is not None), None)
        if noqa is not None:
            merged = ", ".join(sorted(noqa.codes | codes))
            body = body[: noqa.col - 1] + f"# noqa: {merged}" + body[noqa.end_col - 1 :]
        else:
            body = body.rstrip() + "  # noqa: " + ", ".join(sorted(codes))
        lines[number - 1] = body + ending
    return "".join(lines), len(wanted)


def _lines_ending_in_strings(text: str) -> set[int]:
    """Lines whose end lies inside a string token (a triple-quoted string, an f-string that
    spans lines): a comment there would be text."""
    inside: set[int] = set()
    starts: list[int] = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.STRING:
            inside.update(range(token.start[0], token.end[0]))
        elif token.type == getattr(tokenize, "FSTRING_START", None):  # Python 3.12+
            starts.append(token.start[0])
        elif token.type == getattr(tokenize, "FSTRING_END", None) and starts:
            inside.update(range(starts.pop(), token.end[0]))
    return inside
