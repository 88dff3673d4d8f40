"""Human output, like ruff: `path:line:col: CODE message`, then a summary."""

from __future__ import annotations

from collections import Counter

from allocaudit.auditor.findings import ScanResult
from allocaudit.auditor.plural import plural
from allocaudit.auditor.rules import RULES_BY_CODE


def render_text(result: ScanResult, statistics: bool = False) -> str:
    if statistics:
        return _statistics(result)
    out = [f"{f.path}:{f.line}:{f.col}: {f.code} {'[*] ' if f.fixable else ''}{f.message}" for f in result.findings]
    out += [f"{e.path}: error: {e.reason}" for e in result.errors]
    out.append(summary(result))
    return "\n".join(out) + "\n"


def summary(result: ScanResult) -> str:
    """The closing line: what was found, in how many files, what the scope left out."""
    scanned = f"{plural(result.files_scanned, 'file')} scanned"
    if result.files_skipped:
        scanned += f"; {plural(result.files_skipped, 'file')} outside the include globs skipped (--all scans them)"
    parts = []
    if result.findings:
        parts.append(f"Found {plural(len(result.findings), 'finding')} in {scanned}.")
        fixable = sum(f.fixable for f in result.findings)
        if fixable:
            parts.append(f"[*] {fixable} fixable with `allocaudit fix`.")
    else:
        parts.append(f"No findings in {scanned}.")
    if result.errors:
        parts.append(f"{plural(len(result.errors), 'file')} could not be scanned.")
    return " ".join(parts)


def _statistics(result: ScanResult) -> str:
    rows = []
    for row in statistics_rows(result):
        mark = f"[*] {row['fixable']} fixable" if row["fixable"] else ""
        rows.append(f"{row['count']:6d}\t{row['code']}\t{row['name']}\t{mark}".rstrip())
    for site_class, count in sorted(Counter(f.site_class for f in result.findings if f.site_class).items()):
        rows.append(f"{count:6d}\t{site_class} sites")
    if result.errors:
        rows.append(f"{len(result.errors):6d}\t{'file' if len(result.errors) == 1 else 'files'} could not be scanned")
    rows.append(summary(result))
    return "\n".join(rows) + "\n"


def statistics_rows(result: ScanResult) -> list[dict]:
    """One row per code, most frequent first: code, rule name, count, fixable count."""
    counts = Counter(f.code for f in result.findings)
    fixable = Counter(f.code for f in result.findings if f.fixable)
    return [
        {"code": code, "name": RULES_BY_CODE[code].NAME, "count": count, "fixable": fixable[code]}
        for code, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
