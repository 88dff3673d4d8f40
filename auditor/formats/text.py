"""Human output, like ruff: `path:line:col: CODE message`, then a summary."""

from __future__ import annotations

from collections import Counter

from allocaudit.auditor.analysis.fixability import left_out_by_size
from allocaudit.auditor.findings import UNSAFE, Finding, ScanResult
from allocaudit.auditor.plural import plural
from allocaudit.auditor.rules import RULES_BY_CODE


def render_text(result: ScanResult, statistics: bool = False) -> str:
    if statistics:
        return _statistics(result)
    out = [f"{f.path}:{f.line}:{f.col}: {f.code} {fix_mark(result, f)}{f.message}" for f in result.findings]
    out += [f"{e.path}: error: {e.reason}" for e in result.errors]
    out.append(summary(result))
    return "\n".join(out) + "\n"


SAFE_MARK = "[*] "  # `allocaudit fix` rewrites it
HIDDEN_MARK = "[!] "  # an unsafe fix: only `--unsafe-fixes` rewrites it


def fix_mark(result: ScanResult, finding: Finding) -> str:
    """`[*] ` for a fix that `allocaudit fix` applies (with --unsafe-fixes: unsafe ones too),
    `[!] ` for an unsafe fix it holds back, else nothing."""
    if result.fix_applies(finding):
        return SAFE_MARK
    return HIDDEN_MARK if result.hidden_fix(finding) else ""


def fixes_line(result: ScanResult) -> str:
    """ruff's line about fixes: how many `fix` applies, how many `--unsafe-fixes` would add,
    and how many sites it leaves out because their size does not grow with the batch."""
    applied = sum(result.fix_applies(f) for f in result.findings)
    hidden = sum(result.hidden_fix(f) for f in result.findings)
    small = sum(left_out_by_size(f.not_fixable_reason) for f in result.findings)
    hints = [f"{plural(hidden, 'hidden fix', 'hidden fixes')} can be enabled with the `--unsafe-fixes` option"] if hidden else []
    if small:
        hints.append(f"{plural(small, 'site')} of a size that does not grow with the batch left out: `--all-sizes` fixes them")
    hint = f" ({'; '.join(hints)})" if hints else ""
    if applied:
        return f"[*] {applied} fixable with `allocaudit fix`{hint}."
    return f"No fixes available{hint}." if hints else ""


def summary(result: ScanResult) -> str:
    """The closing line: what was found, in how many files, what the scope left out."""
    scanned = f"{plural(result.files_scanned, 'file')} scanned"
    if result.files_skipped:
        scanned += f"; {plural(result.files_skipped, 'file')} out of scope skipped (--all scans them)"
    parts = []
    if result.findings:
        parts.append(f"Found {plural(len(result.findings), 'finding')} in {scanned}.")
        fixes = fixes_line(result)
        if fixes:
            parts.append(fixes)
    else:
        parts.append(f"No findings in {scanned}.")
    if result.errors:
        parts.append(f"{plural(len(result.errors), 'file')} could not be scanned.")
    return " ".join(parts)


def _statistics(result: ScanResult) -> str:
    rows = []
    applied = Counter(f.code for f in result.findings if result.fix_applies(f))
    hidden = Counter(f.code for f in result.findings if result.hidden_fix(f))
    for row in statistics_rows(result):
        code = row["code"]
        marks = [f"[*] {applied[code]} fixable"] if applied[code] else []
        marks += [f"[!] {hidden[code]} unsafe"] if hidden[code] else []
        rows.append(f"{row['count']:6d}\t{code}\t{row['name']}\t{', '.join(marks)}".rstrip())
    for site_class, count in sorted(Counter(f.site_class for f in result.findings if f.site_class).items()):
        rows.append(f"{count:6d}\t{site_class} sites")
    for reason, count in result.scope.items():
        rows.append(f"{count:6d}\t{'file' if count == 1 else 'files'} in scope by {reason}")
    if result.errors:
        rows.append(f"{len(result.errors):6d}\t{'file' if len(result.errors) == 1 else 'files'} could not be scanned")
    rows.append(summary(result))
    return "\n".join(rows) + "\n"


def statistics_rows(result: ScanResult) -> list[dict]:
    """One row per code, most frequent first: code, rule name, count, fixable count, and
    how many of those fixes are unsafe."""
    counts = Counter(f.code for f in result.findings)
    fixable = Counter(f.code for f in result.findings if f.fixable)
    unsafe = Counter(f.code for f in result.findings if f.fixable and f.fix_safety == UNSAFE)
    return [
        {"code": code, "name": RULES_BY_CODE[code].NAME, "count": count, "fixable": fixable[code], "unsafe_fixable": unsafe[code]}
        for code, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
