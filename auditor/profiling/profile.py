"""A profile as plain values: per source site, what was allocated at run time.

Imports no torch: `scan --profile` reads a profile written on another machine. The JSON form
is versioned (`SCHEMA_VERSION`, checked against `SCHEMA` on load); the version changes
whenever a field is removed, renamed or changes meaning. An added optional field keeps it, so
the schema allows properties it does not list and the loader ignores them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from allocaudit.auditor.formats.json_report import TOOL_SCHEMA
from allocaudit.auditor.plural import plural

SCHEMA_VERSION = 1
MAX_SHAPES = 16  # distinct (shape, dtype) pairs kept per site; the rest are only counted
CACHE_KINDS = ("hit", "miss", "growth", "fallback")


class ProfileError(ValueError):
    """A profile file that cannot be read, or is not a profile of this schema version."""


@dataclass
class CacheCounts:
    """`get_empty` requests made at one site, as the runtime's observer hook reported them."""

    requests: int = 0
    requested_bytes: int = 0
    hits: int = 0
    misses: int = 0
    growths: int = 0
    fallbacks: int = 0
    cache_names: list[str] = field(default_factory=list)


@dataclass
class Site:
    """One source line of user code that allocated, or asked a workspace cache, at run time.

    ``calls`` and ``bytes`` count factory ops (``aten.empty``, ``aten.zeros_like``, ...)
    whose result was a new tensor on a device the profile kept; allocations that the runtime
    cache made on behalf of a `get_empty` call here (a miss or a growth) are included and
    also counted in ``runtime_bytes``. ``shapes`` are ``"(2, 3) float32"`` strings.
    """

    path: str
    line: int
    function: str
    calls: int = 0
    bytes: int = 0
    runtime_bytes: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    shapes: list[str] = field(default_factory=list)
    more_shapes: int = 0  # distinct (shape, dtype) pairs beyond MAX_SHAPES
    devices: list[str] = field(default_factory=list)
    captured_calls: int = 0  # calls made while the current CUDA stream was capturing a graph
    captured_bytes: int = 0
    cache: Optional[CacheCounts] = None
    stack: list[str] = field(default_factory=list)  # "path:line in function", innermost first

    @property
    def key(self) -> tuple[str, int]:
        return (self.path, self.line)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Profile:
    """Everything one profiled run measured."""

    command: list[str]
    device_filter: str
    torch_version: str
    devices_seen: list[str]
    exit_code: Optional[int]
    exception: Optional[str]  # "TypeName: message" when the program raised
    duration_s: float
    sites: list[Site]
    memory_snapshot: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    tool_version: str = "0+unknown"

    @property
    def total_calls(self) -> int:
        return sum(s.calls for s in self.sites)

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.sites)

    def top(self, n: Optional[int] = None) -> list[Site]:
        """Sites by bytes, then calls, largest first."""
        ranked = sorted(self.sites, key=lambda s: (-s.bytes, -s.calls, s.path, s.line))
        return ranked if n is None else ranked[:n]

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "allocaudit", "version": self.tool_version},
            "command": list(self.command),
            "device_filter": self.device_filter,
            "torch_version": self.torch_version,
            "devices_seen": list(self.devices_seen),
            "exit_code": self.exit_code,
            "exception": self.exception,
            "duration_s": round(self.duration_s, 6),
            "memory_snapshot": self.memory_snapshot,
            "notes": list(self.notes),
            "summary": {"sites": len(self.sites), "calls": self.total_calls, "bytes": self.total_bytes},
            "sites": [s.to_dict() for s in self.top()],
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Profile":
        validate(data)
        # A later version 1 may add fields: read the ones this version knows.
        site_fields = {f.name for f in fields(Site)} - {"cache"}
        cache_fields = {f.name for f in fields(CacheCounts)}
        sites = []
        for row in data["sites"]:
            cache = row["cache"]
            counts = CacheCounts(**{k: v for k, v in cache.items() if k in cache_fields}) if cache is not None else None
            sites.append(Site(**{k: v for k, v in row.items() if k in site_fields}, cache=counts))
        return cls(
            command=data["command"],
            device_filter=data["device_filter"],
            torch_version=data["torch_version"],
            devices_seen=data["devices_seen"],
            exit_code=data["exit_code"],
            exception=data["exception"],
            duration_s=data["duration_s"],
            sites=sites,
            memory_snapshot=data["memory_snapshot"],
            notes=data["notes"],
            tool_version=data["tool"]["version"],
        )


_COUNT = {"type": "integer", "minimum": 0}
_STRINGS = {"type": "array", "items": {"type": "string"}}
SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "allocaudit profile",
    "type": "object",
    "required": [
        "schema_version", "tool", "command", "device_filter", "torch_version", "devices_seen",
        "exit_code", "exception", "duration_s", "memory_snapshot", "notes", "summary", "sites",
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "tool": TOOL_SCHEMA,
        "command": _STRINGS,
        "device_filter": {"enum": ["cuda", "cpu", "any"]},
        "torch_version": {"type": "string"},
        "devices_seen": _STRINGS,
        "exit_code": {"type": ["integer", "null"]},
        "exception": {"type": ["string", "null"]},
        "duration_s": {"type": "number", "minimum": 0},
        "memory_snapshot": {"type": ["string", "null"]},
        "notes": _STRINGS,
        "summary": {
            "type": "object",
            "required": ["sites", "calls", "bytes"],
            "properties": {"sites": _COUNT, "calls": _COUNT, "bytes": _COUNT},
        },
        "sites": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "path", "line", "function", "calls", "bytes", "runtime_bytes", "ops", "shapes",
                    "more_shapes", "devices", "captured_calls", "captured_bytes", "cache", "stack",
                ],
                "properties": {
                    "path": {"type": "string"},
                    "line": {"type": "integer", "minimum": 0},
                    "function": {"type": "string"},
                    "calls": _COUNT,
                    "bytes": _COUNT,
                    "runtime_bytes": _COUNT,
                    "ops": {"type": "object", "additionalProperties": _COUNT},
                    "shapes": _STRINGS,
                    "more_shapes": _COUNT,
                    "devices": _STRINGS,
                    "captured_calls": _COUNT,
                    "captured_bytes": _COUNT,
                    "cache": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": [
                                    "requests", "requested_bytes", "hits", "misses", "growths",
                                    "fallbacks", "cache_names",
                                ],
                                "properties": {
                                    "requests": _COUNT,
                                    "requested_bytes": _COUNT,
                                    "hits": _COUNT,
                                    "misses": _COUNT,
                                    "growths": _COUNT,
                                    "fallbacks": _COUNT,
                                    "cache_names": _STRINGS,
                                },
                            },
                        ]
                    },
                    "stack": _STRINGS,
                },
            },
        },
    },
}


def validate(data: Any) -> None:
    """Raise `ProfileError` unless ``data`` is a profile of this schema version.

    The checks are the schema's own, written out so that reading a profile needs no
    jsonschema (the tests validate every written profile against `SCHEMA` with it).
    """
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ProfileError("not an allocaudit profile (no schema_version)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ProfileError(
            f"profile schema version {data['schema_version']!r}; this allocaudit reads version {SCHEMA_VERSION}"
        )
    missing = [k for k in SCHEMA["required"] if k not in data]
    if missing:
        raise ProfileError(f"profile lacks {', '.join(missing)}")
    if not isinstance(data["sites"], list):
        raise ProfileError("profile 'sites' is not a list")
    site_keys = set(SCHEMA["properties"]["sites"]["items"]["required"])
    for i, row in enumerate(data["sites"]):
        if not isinstance(row, dict) or not site_keys <= set(row):
            raise ProfileError(f"profile site #{i} does not have the fields {sorted(site_keys)}")
        if not isinstance(row["path"], str) or not isinstance(row["line"], int):
            raise ProfileError(f"profile site #{i} has a bad path or line")


def load(path: str) -> Profile:
    """Read a profile written by `allocaudit profile --out PATH`."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ProfileError(f"profile {path} is not JSON: {exc}") from None
    try:
        return Profile.from_dict(data)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    except (TypeError, KeyError) as exc:
        raise ProfileError(f"{path}: malformed profile: {exc}") from None


def write(profile: Profile, path: str) -> None:
    """Write atomically, so that a crash while writing leaves no half profile."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(profile.to_dict(), handle, indent=1)
        handle.write("\n")
    os.replace(tmp, path)


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def display_path(path: str, root: Optional[str] = None) -> str:
    """``path`` relative to ``root`` (default: the current folder) when it lies under it."""
    root = os.path.abspath(root or os.getcwd())
    absolute = os.path.abspath(path)
    if absolute.startswith(root + os.sep):
        return os.path.relpath(absolute, root)
    return path


def table_rows(profile: Profile, limit: Optional[int] = 20) -> list[tuple[str, ...]]:
    """The terminal table's rows: site, function, calls, bytes, shapes, captured, cache."""
    rows = []
    for s in profile.top(limit):
        shapes = ", ".join(s.shapes[:2]) + (f" (+{len(s.shapes) - 2 + s.more_shapes})" if len(s.shapes) > 2 or s.more_shapes else "")
        cache = "" if s.cache is None else f"{s.cache.hits}/{s.cache.misses}/{s.cache.growths}/{s.cache.fallbacks}"
        rows.append((
            f"{display_path(s.path)}:{s.line}", s.function, str(s.calls), format_bytes(s.bytes),
            shapes, str(s.captured_calls) if s.captured_calls else "", cache,
        ))
    return rows


TABLE_HEADER = ("site", "function", "calls", "bytes", "shapes", "in graph", "get_empty h/m/g/f")


def render_text(profile: Profile, limit: Optional[int] = 20) -> str:
    """A plain-text table (Markdown pipes), as the README and BENCHMARKS.md show it."""
    lines = [
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for row in table_rows(profile, limit):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines.append(
        f"\n{plural(len(profile.sites), 'site')}, {plural(profile.total_calls, 'allocation')}, "
        f"{format_bytes(profile.total_bytes)} ({profile.device_filter})"
    )
    return "\n".join(lines) + "\n"


def render_rich(profile: Profile, console: Any, limit: Optional[int] = 20) -> None:
    """The terminal table: top sites by bytes, on ``console`` (a rich Console)."""
    from rich.table import Table

    table = Table(title=f"allocaudit profile: top sites by bytes (device {profile.device_filter})", title_justify="left")
    for i, name in enumerate(TABLE_HEADER):
        table.add_column(name, justify="right" if i in (2, 3, 5, 6) else "left", overflow="fold")
    for row in table_rows(profile, limit):
        table.add_row(*row)
    console.print(table)
    summary = (
        f"{plural(len(profile.sites), 'site')}, {plural(profile.total_calls, 'allocation')}, {format_bytes(profile.total_bytes)}"
    )
    if limit is not None and len(profile.sites) > limit:
        summary += f" (the {limit} largest shown)"
    console.print(summary)
    for note in profile.notes:
        console.print(f"note: {note}")
