"""Human output, like ruff: `path:line:col: CODE message`, then a summary."""

from __future__ import annotations

from collections import Counter

from allocaudit.auditor.findings import ScanResult
from allocaudit.auditor.rules import RULES_BY_CODE


def render_text(result: ScanResult, statistics: bool = False) -> str:
    if statistics:
        return _statistics(result)
    out = [f"{f.path}:{f.line}:{f.col}: {f.code} {'[*] ' if f.fixable else ''}{f.message}" for f in result.findings]
    out += [f"{e.path}: error: {e.reason}" for e in result.errors]
    out.append(_summary(result))
    return "\n".join(out) + "\n"


def _summary(result: ScanResult) -> str:
    parts = []
    if result.findings:
        fixable = sum(f.fixable for f in result.findings)
        noun = "finding" if len(result.findings) == 1 else "findings"
        parts.append(f"Found {len(result.findings)} {noun} in {result.files_scanned} files scanned.")
        if fixable:
            parts.append(f"[*] {fixable} fixable with `allocaudit fix`.")
    else:
        parts.append(f"No findings in {result.files_scanned} files scanned.")
    if result.errors:
        noun = "file" if len(result.errors) == 1 else "files"
        parts.append(f"{len(result.errors)} {noun} could not be scanned.")
    return " ".join(parts)


def _statistics(result: ScanResult) -> str:
    counts = Counter(f.code for f in result.findings)
    fixable = Counter(f.code for f in result.findings if f.fixable)
    classes = Counter(f.site_class for f in result.findings if f.site_class)
    rows = []
    for code, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        rule = RULES_BY_CODE[code]
        mark = f"[*] {fixable[code]} fixable" if fixable[code] else ""
        rows.append(f"{count:6d}\t{code}\t{rule.NAME}\t{mark}".rstrip())
    for site_class, count in sorted(classes.items()):
        rows.append(f"{count:6d}\t{site_class} sites")
    if result.errors:
        rows.append(f"{len(result.errors):6d}\tfiles could not be scanned")
    rows.append(_summary(result))
    return "\n".join(rows) + "\n"
