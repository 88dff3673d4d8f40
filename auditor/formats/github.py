"""`--format github`: GitHub Actions workflow commands, one annotation per finding."""

from __future__ import annotations

from allocaudit.auditor.findings import ScanResult


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(result: ScanResult, statistics: bool = False) -> str:
    lines = []
    for f in result.findings:
        level = "notice" if f.confidence == "low" else "warning"
        lines.append(
            f"::{level} file={_property(f.path)},line={f.line},col={f.col},endLine={f.end_line},"
            f"endColumn={f.end_col},title={_property(f.code)}::{_data(f.code + ' ' + f.message)}"
        )
    for e in result.errors:
        lines.append(f"::error file={_property(e.path)},title=allocaudit::{_data('could not scan: ' + e.reason)}")
    return "\n".join(lines) + ("\n" if lines else "")
