"""Results of a scan as plain values: what every formatter and the codemod consume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

# A fixable finding's `fix_safety`, as the JSON report writes it (the analysis decides which:
# auditor/analysis/fix_safety.py).
SAFE = "safe"
UNSAFE = "unsafe"


@dataclass(frozen=True)
class Finding:
    """One reported site. Lines and columns are 1-based; columns count characters."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int
    code: str
    message: str
    api: Optional[str] = None
    device_form: Optional[str] = None
    device: Optional[str] = None
    site_class: Optional[str] = None
    function: Optional[str] = None
    confidence: Optional[str] = None
    fixable: bool = False
    not_fixable_reason: Optional[str] = None
    notes: tuple[str, ...] = ()
    fix_safety: Optional[str] = None  # SAFE or UNSAFE for a fixable finding
    unsafe_reason: Optional[str] = None
    # The static size estimate of an allocation site: "grows", "unknown" (may grow),
    # "model-sized" (fixed but maybe large) or "fixed"; and the dimension or shape behind it.
    size: Optional[str] = None
    size_evidence: Optional[str] = None
    # Why `fix` rewrites a fixable finding: its size estimate, or what a profile measured.
    fix_reason: Optional[str] = None

    def fix_applies(self, unsafe_fixes: Optional[bool]) -> bool:
        """Whether `allocaudit fix` rewrites this finding: a safe fix always, an unsafe one
        with `--unsafe-fixes` (ruff's applicability)."""
        return self.fixable and (self.fix_safety == SAFE or bool(unsafe_fixes))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


@dataclass(frozen=True)
class FileError:
    """A file that could not be scanned, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanResult:
    findings: list[Finding] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    files_scanned: int = 0
    files_analysed: int = 0  # files that passed the text prefilter (the others are only parsed)
    files_skipped: int = 0  # Python files out of scope (`--all` scans them)
    scope: dict[str, int] = field(default_factory=dict)  # files read per reason (discovery's ScopeReason.kind)
    cache_hits: int = 0
    # Files whose settings say `unsafe-fixes` (true: apply them; false: not, and no hints).
    unsafe_fixes: dict[str, bool] = field(default_factory=dict)

    def fix_applies(self, finding: Finding) -> bool:
        """Whether `allocaudit fix`, with the settings of the finding's file, rewrites it."""
        return finding.fix_applies(self.unsafe_fixes.get(finding.path))

    def hidden_fix(self, finding: Finding) -> bool:
        """An unsafe fix that `fix` holds back and that `--unsafe-fixes` would apply
        (ruff's "hidden fix"); not hinted at where unsafe-fixes is set to false."""
        return finding.fixable and not self.fix_applies(finding) and self.unsafe_fixes.get(finding.path) is None

    @property
    def exit_code(self) -> int:
        """0 clean, 1 findings, 2 errors (errors win)."""
        if self.errors:
            return 2
        return 1 if self.findings else 0
