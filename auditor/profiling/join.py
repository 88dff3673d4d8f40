"""The join of a static scan with a profile: which findings matter, which never ran, what was missed.

A pure function of a `ScanResult` and a `Profile`. A finding and a run-time site are the same
allocation when they are in the same file and the site's line lies within the finding's span
(a call written over several lines is charged to one of them at run time).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

from allocaudit.auditor.findings import Finding, ScanResult
from allocaudit.auditor.plural import plural
from allocaudit.auditor.profiling.profile import Profile, Site, display_path, format_bytes

JOIN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Measured:
    """A static finding with what the profile measured at its line(s)."""

    finding: Finding
    calls: int
    bytes: int
    sites: tuple[Site, ...]


@dataclass
class Joined:
    executed: list[Measured] = field(default_factory=list)  # by bytes, then calls, largest first
    never_executed: list[Finding] = field(default_factory=list)
    missed: list[Site] = field(default_factory=list)  # allocated at run time, reported by no finding
    other_findings: list[Finding] = field(default_factory=list)  # not about one allocation (cache rules)


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _under_any(path: str, roots: Sequence[str]) -> bool:
    real = _real(path)
    for root in roots:
        r = _real(root)
        if real == r or real.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def join(scan: ScanResult, profile: Profile) -> Joined:
    """Rank the scan's allocation findings by measured bytes and calls; list the rest."""
    by_file: dict[str, list[Site]] = {}
    for s in profile.sites:
        if s.calls or s.cache is not None:
            by_file.setdefault(_real(s.path), []).append(s)
    result = Joined()
    matched: set[int] = set()
    for finding in scan.findings:
        if finding.api is None:
            result.other_findings.append(finding)
            continue
        sites = tuple(
            s for s in by_file.get(_real(finding.path), ())
            if finding.line <= s.line <= max(finding.end_line, finding.line)
        )
        if not sites:
            result.never_executed.append(finding)
            continue
        matched.update(id(s) for s in sites)
        result.executed.append(Measured(finding, sum(s.calls for s in sites), sum(s.bytes for s in sites), sites))
    result.executed.sort(key=lambda m: (-m.bytes, -m.calls, m.finding.path, m.finding.line))
    result.missed = [
        s for s in profile.top() if id(s) not in matched and s.calls and s.ops.keys() - {"allocaudit.runtime"}
    ]
    return result


def _shapes(sites: Sequence[Site]) -> str:
    shapes = [shape for s in sites for shape in s.shapes]
    more = len(shapes) - 3 + sum(s.more_shapes for s in sites)
    return ", ".join(shapes[:3]) + (f" (+{more} more)" if more > 0 else "")


def render_text(joined: Joined, profile_path: str, scanned: Sequence[str] = (), stack_lines: int = 4) -> str:
    """``scan --profile``'s text report: the three lists, each line `path:line:col: ...` like ruff."""
    out = []
    out.append(f"Findings ranked by measured allocations (profile {profile_path}):")
    if not joined.executed:
        out.append("  none of the findings ran in the profiled program")
    for m in joined.executed:
        f = m.finding
        mark = " [*]" if f.fixable else ""
        out.append(
            f"{display_path(f.path)}:{f.line}:{f.col}: {f.code}{mark} {plural(m.calls, 'call')}, {format_bytes(m.bytes)}"
            f" ({_shapes(m.sites)}) in {f.function}"
        )
    out.append("")
    out.append(f"Findings never executed in the profiled run ({len(joined.never_executed)}):")
    for f in joined.never_executed:
        out.append(f"{display_path(f.path)}:{f.line}:{f.col}: {f.code} {f.function}: {f.message}")
    out.append("")
    out.append(f"Allocations at run time that the scan did not report ({len(joined.missed)}):")
    for s in joined.missed:
        scope = "" if not scanned or _under_any(s.path, scanned) else " [outside the scanned paths]"
        ops = ", ".join(sorted(s.ops))
        out.append(
            f"{display_path(s.path)}:{s.line}: {plural(s.calls, 'call')}, {format_bytes(s.bytes)} in {s.function}"
            f" ({ops}; {_shapes([s])}; {', '.join(s.devices)}){scope}"
        )
        for frame in s.stack[1:stack_lines]:
            out.append(f"    called from {_display_frame(frame)}")
    if joined.missed:
        out.append(
            "  (one-off and escaping allocations are reported only with --select ALL: AA102, AA103 are off by default)"
        )
    if joined.other_findings:
        out.append("")
        out.append(f"{plural(len(joined.other_findings), 'finding')} about hand-written caches: not allocation sites, not ranked.")
    return "\n".join(out) + "\n"


def _display_frame(frame: str) -> str:
    location, _, function = frame.partition(" in ")
    path, _, line = location.rpartition(":")
    return f"{display_path(path)}:{line} in {function}"


def render_json(joined: Joined, profile_path: str) -> str:
    data = {
        "schema_version": JOIN_SCHEMA_VERSION,
        "profile": profile_path,
        "executed": [
            {**m.finding.to_dict(), "measured": {"calls": m.calls, "bytes": m.bytes, "sites": [s.to_dict() for s in m.sites]}}
            for m in joined.executed
        ],
        "never_executed": [f.to_dict() for f in joined.never_executed],
        "missed": [s.to_dict() for s in joined.missed],
        "other_findings": [f.to_dict() for f in joined.other_findings],
    }
    return json.dumps(data, indent=1) + "\n"


def render(scan: ScanResult, profile: Profile, profile_path: str, output_format: str = "text", scanned: Optional[Sequence[str]] = None) -> str:
    """The whole ``scan --profile`` report in ``output_format`` (``text`` or ``json``)."""
    joined = join(scan, profile)
    if output_format == "json":
        return render_json(joined, profile_path)
    if output_format == "text":
        return render_text(joined, profile_path, scanned or ())
    raise ValueError(f"scan --profile writes text or json, not {output_format}")
