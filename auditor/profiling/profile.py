"""A profile as plain values: per source site, what was allocated at run time, and when it was freed.

Imports no torch: `scan --profile`, `compare` and `plot` read a profile written on another
machine. The JSON form is versioned (`SCHEMA_VERSION`, checked against `SCHEMA` on load); the
version changes whenever a field is removed, renamed or changes meaning. An added optional
field keeps it, so the schema allows properties it does not list and the loader ignores them.
The lifetime fields (``peak_live_bytes``, ``function_line``, the summary's peaks and the
``timeline``) were added that way: a profile without them is still version 1, and the commands
that need them say so.
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
# Timeline events kept per profile: about 30 bytes of JSON each, so at most a few MiB. Counts,
# totals and peaks cover the whole run; only the picture stops at the cap.
MAX_EVENTS = 100_000

# The kinds of timeline events, the first item of each event row:
ALLOC = "a"  # ["a", t_us, site, nbytes]: a site's allocation (not a runtime cache buffer)
FREE = "f"  # ["f", t_us, site, nbytes]: the last tensor using that allocation's memory died
CACHE = "c"  # ["c", t_us, site or null, held, busy]: a get_empty request; the runtime caches'
#              bytes held and handed out just after it (summed over caches and kept devices)


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
    # The most bytes of this site's allocations alive at once. The runtime cache's buffers are
    # no site's (they serve every name): they are the summary's and the timeline's cache band.
    peak_live_bytes: int = 0
    function_line: int = 0  # the first line of ``function`` (1 for module level; 0: unknown)

    @property
    def key(self) -> tuple[str, int]:
        return (self.path, self.line)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Capture:
    """A CUDA graph capture: between ``capture_begin`` and ``capture_end`` of a `torch.cuda.CUDAGraph`.

    ``start`` and ``end`` are positions in the run's event stream: the events recorded during
    the capture are those at ``start <= position < end`` (none when they are equal).
    """

    start: int
    end: int
    t_start_us: int
    t_end_us: int
    device: str


@dataclass
class Timeline:
    """The run's allocations, frees and get_empty requests in order, up to ``max_events`` of them.

    Each event is a tuple ``(kind, t_us, site, ...)`` (`ALLOC`, `FREE`, `CACHE`), a list in JSON; ``t_us`` counts
    microseconds from the start of recording and ``site`` is an index into the profile's
    ``sites`` as written. ``events`` holds the first ``len(events)`` of ``total_events``; capture
    positions count every event, kept or not.
    """

    events: list[tuple] = field(default_factory=list)
    total_events: int = 0
    max_events: int = MAX_EVENTS
    captures: list[Capture] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.total_events - len(self.events)

    def to_dict(self, site_order: Optional[list[int]] = None) -> dict:
        """As JSON values; ``site_order[i]`` is where site ``i`` of the events is written."""
        events = self.events
        if site_order is not None:
            events = [(e[0], e[1], None if e[2] is None else site_order[e[2]], *e[3:]) for e in events]
        return {
            "max_events": self.max_events,
            "total_events": self.total_events,
            "captures": [asdict(c) for c in self.captures],
            "events": [list(e) for e in events],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Timeline":
        capture_fields = {f.name for f in fields(Capture)}
        return cls(
            events=[tuple(e) for e in data["events"]],
            total_events=data["total_events"],
            max_events=data["max_events"],
            captures=[Capture(**{k: v for k, v in c.items() if k in capture_fields}) for c in data["captures"]],
        )


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
    # The most bytes alive at once: the sites' allocations plus the runtime caches' buffers
    # (held, as their last request reported). None in a profile written without lifetimes.
    peak_live_bytes: Optional[int] = None
    peak_cache_held_bytes: Optional[int] = None
    timeline: Optional[Timeline] = None

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
        ranked = self.top()
        summary = {"sites": len(self.sites), "calls": self.total_calls, "bytes": self.total_bytes}
        if self.peak_live_bytes is not None:
            summary["peak_live_bytes"] = self.peak_live_bytes
        if self.peak_cache_held_bytes is not None:
            summary["peak_cache_held_bytes"] = self.peak_cache_held_bytes
        data = {
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
            "summary": summary,
            "sites": [s.to_dict() for s in ranked],
        }
        if self.timeline is not None:
            # Sites are written largest first; the events name them by their written index.
            position = {id(s): i for i, s in enumerate(ranked)}
            data["timeline"] = self.timeline.to_dict([position[id(s)] for s in self.sites])
        return data

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
        summary = data["summary"]
        timeline = data.get("timeline")
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
            peak_live_bytes=summary.get("peak_live_bytes"),
            peak_cache_held_bytes=summary.get("peak_cache_held_bytes"),
            timeline=Timeline.from_dict(timeline) if timeline is not None else None,
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
            "properties": {
                "sites": _COUNT, "calls": _COUNT, "bytes": _COUNT,
                "peak_live_bytes": _COUNT, "peak_cache_held_bytes": _COUNT,
            },
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
                    "peak_live_bytes": _COUNT,
                    "function_line": _COUNT,
                },
            },
        },
        "timeline": {
            "type": "object",
            "required": ["max_events", "total_events", "captures", "events"],
            "properties": {
                "max_events": _COUNT,
                "total_events": _COUNT,
                "captures": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["start", "end", "t_start_us", "t_end_us", "device"],
                        "properties": {
                            "start": _COUNT, "end": _COUNT, "t_start_us": _COUNT, "t_end_us": _COUNT,
                            "device": {"type": "string"},
                        },
                    },
                },
                "events": {
                    "type": "array",
                    "items": {
                        "oneOf": [
                            {
                                "type": "array",
                                "prefixItems": [{"enum": [ALLOC, FREE]}, _COUNT, _COUNT, _COUNT],
                                "minItems": 4,
                            },
                            {
                                "type": "array",
                                "prefixItems": [{"const": CACHE}, _COUNT, {"type": ["integer", "null"], "minimum": 0}, _COUNT, _COUNT],
                                "minItems": 5,
                            },
                        ]
                    },
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
    timeline = data.get("timeline")
    if timeline is not None:
        keys = SCHEMA["properties"]["timeline"]["required"]
        if not isinstance(timeline, dict) or not set(keys) <= set(timeline):
            raise ProfileError(f"profile timeline does not have the fields {keys}")
        n = len(data["sites"])
        for event in timeline["events"]:
            if not isinstance(event, list) or len(event) < 4 or event[0] not in (ALLOC, FREE, CACHE):
                raise ProfileError(f"profile timeline event {event!r} is not an event")
            if (event[2] is not None or event[0] != CACHE) and not (isinstance(event[2], int) and 0 <= event[2] < n):
                raise ProfileError(f"profile timeline event {event!r} names no site")


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


def dumps(profile: Profile) -> str:
    """The profile as JSON text: indented, but one line per timeline event."""
    data = profile.to_dict()
    if "timeline" not in data:
        return json.dumps(data, indent=1) + "\n"
    events = data["timeline"].pop("events")
    # "timeline" is the last key and "events" its last: the text ends with its (empty) list.
    data["timeline"]["events"] = []
    head, _, tail = json.dumps(data, indent=1).rpartition("[]")
    rows = ",\n".join("   " + json.dumps(e, separators=(",", ":")) for e in events)
    return head + ("[\n" + rows + "\n  ]" if events else "[]") + tail + "\n"


def write(profile: Profile, path: str) -> None:
    """Write atomically, so that a crash while writing leaves no half profile."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(dumps(profile))
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
