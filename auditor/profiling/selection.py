"""Which sites `fix --profile` rewrites: those that ran in the profile, with enough bytes per call.

A pure function of a `ScanResult` and a `Profile`, through the join `scan --profile` uses
(`join.join`): a fixable finding that the join finds no run-time site for did not run; one
whose measured bytes per call (bytes over calls, every run-time site in its span together)
are under the file's `min-bytes` is too small to pay. Both stay findings, not fixable, with
that reason; the others keep their fix and say what was measured (`fix_reason`). The
selection only removes: a site the static size estimate left out stays out (`--all-sizes`
lets it in, and then the profile decides), and a deletion of a dead allocation (AA104) is
not a reuse, so it always pays.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from allocaudit.auditor.findings import Finding, ScanResult
from allocaudit.auditor.plural import plural
from allocaudit.auditor.profiling.join import Measured, join
from allocaudit.auditor.profiling.profile import Profile, format_bytes
from allocaudit.auditor.rules import FIX_KINDS, FixKind

NOT_RUN = "did not run in the profile {profile}"
TOO_SMALL = "{per_call} per call in the profile {profile}, under min-bytes {min_bytes}"
RAN = "profile: {per_call} per call, {total} in {calls}"


def per_call(measured: Measured) -> int:
    """The bytes a site allocated per call, on average over the profiled run."""
    return measured.bytes // measured.calls if measured.calls else 0


@dataclass
class Selection:
    """The scan with the profile's choice applied, and what the profile measured per finding."""

    scan: ScanResult
    measured: dict[tuple[str, int, int], Measured] = field(default_factory=dict)  # (path, line, col)
    not_run: int = 0
    too_small: int = 0

    def bytes_of(self, path: str, line: int, col: int) -> int:
        """The measured bytes of the finding at that place (0 if it did not run): `fix`
        lists the sites it rewrote largest first."""
        found = self.measured.get((path, line, col))
        return found.bytes if found is not None else 0


def select(scan: ScanResult, profile: Profile, profile_path: str, min_bytes: Callable[[str], int]) -> Selection:
    """Keep the fixes of ``scan`` whose sites ran in ``profile`` and allocated at least
    ``min_bytes(path)`` bytes per call."""
    joined = join(scan, profile)
    by_finding = {id(m.finding): m for m in joined.executed}
    selection = Selection(scan)
    findings: list[Finding] = []
    for finding in scan.findings:
        measured = by_finding.get(id(finding))
        if measured is not None:
            selection.measured[(finding.path, finding.line, finding.col)] = measured
        if finding.fixable and FIX_KINDS.get(finding.code) is FixKind.REUSE:
            finding = _judged(finding, measured, profile_path, min_bytes(finding.path), selection)
        findings.append(finding)
    selection.scan = replace(scan, findings=findings)
    return selection


def _judged(finding: Finding, measured, profile_path: str, min_bytes: int, selection: Selection) -> Finding:
    if measured is None:
        selection.not_run += 1
        return _left_out(finding, NOT_RUN.format(profile=profile_path))
    each = per_call(measured)
    if each < min_bytes:
        selection.too_small += 1
        reason = TOO_SMALL.format(per_call=format_bytes(each), profile=profile_path, min_bytes=format_bytes(min_bytes))
        return _left_out(finding, reason)
    chosen = RAN.format(per_call=format_bytes(each), total=format_bytes(measured.bytes), calls=plural(measured.calls, "call"))
    return replace(finding, fix_reason=chosen)


def _left_out(finding: Finding, reason: str) -> Finding:
    return replace(finding, fixable=False, not_fixable_reason=reason, fix_safety=None, unsafe_reason=None, fix_reason=None)


def describe(selection: Selection, command: str) -> str:
    """The closing line of `scan --profile`: how many fixes ``command`` (`allocaudit fix
    --profile P ...`) applies, and how many the profile left out."""
    applied = sum(selection.scan.fix_applies(f) for f in selection.scan.findings)
    left = [plural(selection.not_run, "site") + " that did not run"] if selection.not_run else []
    left += [f"{selection.too_small} under min-bytes"] if selection.too_small else []
    line = f"[*] {applied} fixable with `{command}`"
    return line + (f" (left out: {', '.join(left)})." if left else ".")
