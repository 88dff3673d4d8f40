"""Formatters: functions of a ScanResult to text. They do no analysis."""

from __future__ import annotations

from allocaudit.auditor.formats.github import render_github
from allocaudit.auditor.formats.json_report import render_json
from allocaudit.auditor.formats.sarif import render_sarif
from allocaudit.auditor.formats.text import render_text

RENDERERS = {
    "text": render_text,
    "json": render_json,
    "sarif": render_sarif,
    "github": render_github,
}

__all__ = ["RENDERERS"]
