"""`--format sarif`: SARIF 2.1.0, as GitHub code scanning reads it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

from allocaudit.auditor.findings import ScanResult
from allocaudit.auditor.rules import ALL_RULES
from allocaudit.auditor.version import VERSION

INFORMATION_URI = "https://github.com/allocaudit/allocaudit"
_LEVEL = {"high": "warning", "medium": "warning", "low": "note"}


def _uri(path: str) -> tuple[str, bool]:
    """A URI relative to the working directory (%SRCROOT%) where possible, else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, os.getcwd())
    if not relative.startswith(".."):
        return quote(Path(relative).as_posix()), True
    return Path(absolute).as_uri(), False


def _location(path: str, region: dict | None = None) -> dict:
    uri, relative = _uri(path)
    artifact = {"uri": uri, **({"uriBaseId": "%SRCROOT%"} if relative else {})}
    physical: dict = {"artifactLocation": artifact}
    if region:
        physical["region"] = region
    return {"physicalLocation": physical}


def to_sarif(result: ScanResult) -> dict:
    index = {rule.CODE: i for i, rule in enumerate(ALL_RULES)}
    rules = [
        {
            "id": rule.CODE,
            "name": rule.NAME,
            "shortDescription": {"text": rule.SUMMARY},
            "fullDescription": {"text": rule.EXPLAIN.split("\n\n")[0].replace("\n", " ")},
            "help": {"text": rule.EXPLAIN},
            "defaultConfiguration": {"level": "warning", "enabled": rule.DEFAULT},
        }
        for rule in ALL_RULES
    ]
    results = []
    for f in result.findings:
        region = {"startLine": f.line, "startColumn": f.col, "endLine": f.end_line, "endColumn": f.end_col}
        properties = {
            key: value
            for key, value in f.to_dict().items()
            if key in (
                "api", "device_form", "device", "site_class", "function", "confidence", "fixable", "not_fixable_reason", "notes",
                "fix_safety", "unsafe_reason", "size", "size_evidence", "fix_reason",
            )
        }
        results.append(
            {
                "ruleId": f.code,
                "ruleIndex": index[f.code],
                "level": _LEVEL.get(f.confidence or "high", "warning"),
                "message": {"text": f.message},
                "locations": [_location(f.path, region)],
                "properties": properties,
            }
        )
    notifications = [
        {"level": "error", "message": {"text": f"{e.path}: {e.reason}"}, "locations": [_location(e.path)]}
        for e in result.errors
    ]
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "allocaudit", "version": VERSION, "informationUri": INFORMATION_URI, "rules": rules}},
                "originalUriBaseIds": {"%SRCROOT%": {"uri": Path(os.getcwd()).as_uri() + "/"}},
                "invocations": [{"executionSuccessful": not result.errors, "toolExecutionNotifications": notifications}],
                "results": results,
            }
        ],
    }


def render_sarif(result: ScanResult, statistics: bool = False) -> str:
    return json.dumps(to_sarif(result), indent=2) + "\n"
