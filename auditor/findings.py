"""Results of a scan as plain values: what every formatter and the codemod consume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


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
    files_skipped: int = 0  # Python files outside the include globs (`--all` scans them)
    cache_hits: int = 0

    @property
    def exit_code(self) -> int:
        """0 clean, 1 findings, 2 errors (errors win)."""
        if self.errors:
            return 2
        return 1 if self.findings else 0
