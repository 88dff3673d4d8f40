"""`--format json`: a versioned document; SCHEMA is its JSON Schema (draft 2020-12).

Schema version 1. Bump SCHEMA_VERSION on any change that removes or renames a field or
changes its meaning; adding an optional field keeps the version, so no object of the schema
forbids properties it does not list: a reader of version 1 must accept (and may ignore) them.

With `--statistics` the document is STATISTICS_SCHEMA's instead: counts per code, like ruff's
`--statistics --output-format json`.
"""

from __future__ import annotations

import json

from allocaudit.auditor.analysis.fixability import left_out_by_size
from allocaudit.auditor.findings import UNSAFE, ScanResult
from allocaudit.auditor.formats.text import statistics_rows
from allocaudit.auditor.version import VERSION

SCHEMA_VERSION = 1

_NULLABLE_STRING = {"type": ["string", "null"]}
# Which allocaudit wrote a document; shared by every JSON document allocaudit writes.
TOOL_SCHEMA = {
    "type": "object",
    "required": ["name", "version"],
    "properties": {"name": {"const": "allocaudit"}, "version": {"type": "string"}},
}


def _document(title: str, properties: dict) -> dict:
    """A top-level schema: schema_version and tool, then ``properties``, all required."""
    properties = {"schema_version": {"const": SCHEMA_VERSION}, "tool": TOOL_SCHEMA, **properties}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "required": list(properties),
        "properties": properties,
    }


SCHEMA = _document(
    "allocaudit scan report",
    {
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "path", "line", "col", "end_line", "end_col", "code", "message", "api",
                    "device_form", "device", "site_class", "function", "confidence", "fixable",
                    "not_fixable_reason", "notes",
                ],
                "properties": {
                    "path": {"type": "string", "description": "as given on the command line or found under it"},
                    "line": {"type": "integer", "minimum": 1},
                    "col": {"type": "integer", "minimum": 1, "description": "1-based, in characters"},
                    "end_line": {"type": "integer", "minimum": 1},
                    "end_col": {"type": "integer", "minimum": 1},
                    "code": {"type": "string", "pattern": "^AA[0-9]{3}$"},
                    "message": {"type": "string"},
                    "api": {**_NULLABLE_STRING, "description": "torch.zeros, Tensor.new_empty, or a|b for an alias of several"},
                    "device_form": {
                        "enum": ["cuda", "cuda-current", "inherited", "variable", "default", "not-cuda", None],
                    },
                    "device": {**_NULLABLE_STRING, "description": "the device expression as written"},
                    "site_class": {"enum": ["workspace", "escapes", "init", "dead", None]},
                    "function": {**_NULLABLE_STRING, "description": "qualified name; <module> at module level"},
                    "confidence": {"enum": ["high", "medium", "low"]},
                    "fixable": {"type": "boolean"},
                    "not_fixable_reason": _NULLABLE_STRING,
                    "notes": {"type": "array", "items": {"type": "string"}},
                    "fix_safety": {
                        "enum": ["safe", "unsafe", None],
                        "description": "for a fixable finding: `fix` applies a safe fix, an unsafe one only with --unsafe-fixes",
                    },
                    "unsafe_reason": {**_NULLABLE_STRING, "description": "why the fix is unsafe"},
                    "size": {
                        "enum": ["grows", "unknown", "large", "fixed", None],
                        "description": (
                            "the static size estimate of an allocation: grows with the batch, unknown (may grow), fixed but "
                            "maybe large, or fixed (left out of `fix` unless --all-sizes)"
                        ),
                    },
                    "size_evidence": {**_NULLABLE_STRING, "description": "the dimension that grows, or the shape as written"},
                    "fix_reason": {
                        **_NULLABLE_STRING,
                        "description": "why `fix` rewrites a fixable finding: `static: ...` (its size) or `profile: ...` (what was measured)",
                    },
                },
            },
        },
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "reason"],
                "properties": {"path": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
        "summary": {
            "type": "object",
            "required": ["files_scanned", "files_analysed", "findings", "fixable", "errors", "by_code", "by_site_class"],
            "properties": {
                "files_scanned": {"type": "integer"},
                "files_analysed": {"type": "integer"},
                "files_skipped": {"type": "integer", "description": "Python files out of scope (--all scans them)"},
                "files_by_scope_reason": {
                    "type": "object",
                    "description": "files read per reason: `include glob GLOB`, `content MARKER`, `named on the command line`, `--all`",
                    "additionalProperties": {"type": "integer"},
                },
                "findings": {"type": "integer"},
                "fixable": {"type": "integer"},
                "unsafe_fixable": {"type": "integer", "description": "fixable findings whose fix is unsafe"},
                "left_out_by_size": {
                    "type": "integer",
                    "description": "findings `fix` leaves out because their size does not grow with the batch (--all-sizes fixes them)",
                },
                "errors": {"type": "integer"},
                "by_code": {"type": "object", "additionalProperties": {"type": "integer"}},
                "by_site_class": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
    },
)


def to_document(result: ScanResult) -> dict:
    by_code: dict[str, int] = {}
    by_class: dict[str, int] = {}
    for f in result.findings:
        by_code[f.code] = by_code.get(f.code, 0) + 1
        if f.site_class:
            by_class[f.site_class] = by_class.get(f.site_class, 0) + 1
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "allocaudit", "version": VERSION},
        "findings": [f.to_dict() for f in result.findings],
        "errors": [e.to_dict() for e in result.errors],
        "summary": {
            "files_scanned": result.files_scanned,
            "files_analysed": result.files_analysed,
            "files_skipped": result.files_skipped,
            "files_by_scope_reason": result.scope,
            "findings": len(result.findings),
            "fixable": sum(f.fixable for f in result.findings),
            "unsafe_fixable": sum(f.fixable and f.fix_safety == UNSAFE for f in result.findings),
            "left_out_by_size": sum(left_out_by_size(f.not_fixable_reason) for f in result.findings),
            "errors": len(result.errors),
            "by_code": by_code,
            "by_site_class": by_class,
        },
    }


STATISTICS_SCHEMA = _document(
    "allocaudit scan statistics",
    {
        "statistics": {
            "type": "array",
            "description": "one row per rule code, most frequent first",
            "items": {
                "type": "object",
                "required": ["code", "name", "count", "fixable"],
                "properties": {
                    "code": {"type": "string", "pattern": "^AA[0-9]{3}$"},
                    "name": {"type": "string"},
                    "count": {"type": "integer", "minimum": 1},
                    "fixable": {"type": "integer", "minimum": 0},
                    "unsafe_fixable": {"type": "integer", "minimum": 0, "description": "of the fixable, those whose fix is unsafe"},
                },
            },
        },
        "by_site_class": {"type": "object", "additionalProperties": {"type": "integer"}},
        "summary": SCHEMA["properties"]["summary"],
    },
)


def render_json(result: ScanResult, statistics: bool = False) -> str:
    document = to_document(result)
    if statistics:
        document = {
            "schema_version": SCHEMA_VERSION,
            "tool": document["tool"],
            "statistics": statistics_rows(result),
            "by_site_class": document["summary"]["by_site_class"],
            "summary": document["summary"],
        }
    return json.dumps(document, indent=2) + "\n"
