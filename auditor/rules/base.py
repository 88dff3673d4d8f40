"""What a rule is: a code, a one-line summary, an `explain` text, whether `fix` rewrites
what it reports, the cases it must pass and flag, and a check over a module's facts.

Cases are source snippets, written as dedented triple-quoted strings (as in Fixit). A
``Valid`` case must give no finding of the rule's code; in an ``Invalid`` case every line
that ends with the comment ``# expect`` must be flagged, and no other line, and every
finding must match what the case states about it. tests/auditor/test_rule_cases.py turns
every case of every rule into a test.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Iterator, Optional

from allocaudit.auditor.analysis import devices
from allocaudit.auditor.analysis.fix_safety import UNSAFE, FixSafety
from allocaudit.auditor.analysis.sites import AllocationSite, ModuleFacts, SiteClass


@dataclass(frozen=True)
class Report:
    """What a rule reports: the node to point at, the message, and the site it is about."""

    node: ast.AST
    message: str
    site: Optional[AllocationSite] = None
    # Whether this rule's own fix applies, and why not; None: the site's (the get_empty rewrite).
    fixable: Optional[bool] = None
    not_fixable_reason: Optional[str] = None


def _dedent(code: str) -> str:
    """A triple-quoted case as the module it stands for: the first line break and the
    common indentation dropped."""
    return textwrap.dedent(code[1:] if code.startswith("\n") else code)


@dataclass(frozen=True)
class Valid:
    """Code the rule must not flag."""

    code: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", _dedent(self.code))


@dataclass(frozen=True)
class Invalid:
    """Code the rule must flag on exactly the lines that end with `# expect`. What else is
    given is checked on every finding: a part of its message, its site class, whether it
    is fixable and, if not, the reason (exactly), whether its fix is safe and, if not,
    why (exactly); ``fix`` is the whole module after `allocaudit fix` (safe fixes only).
    ``all_sizes`` scans it as `--all-sizes` does, for a case about how a fix is written
    rather than which sizes it pays to fix."""

    code: str
    message: Optional[str] = None
    site_class: Optional[SiteClass] = None
    fixable: Optional[bool] = None
    reason: Optional[str] = None
    fix_safety: Optional[FixSafety] = None
    unsafe_reason: Optional[str] = None
    fix: Optional[str] = None
    all_sizes: bool = False

    def __post_init__(self) -> None:
        if self.reason is not None and self.fixable is not False:
            raise ValueError("a case with a not-fixable reason states fixable=False")
        if self.unsafe_reason is not None and self.fix_safety != UNSAFE:
            raise ValueError("a case with an unsafe reason states fix_safety='unsafe'")
        object.__setattr__(self, "code", _dedent(self.code))
        if self.fix is not None:
            object.__setattr__(self, "fix", _dedent(self.fix))


class FixAvailability(Enum):
    """Whether `allocaudit fix` rewrites what a rule reports (ruff's fix availability)."""

    NONE = "none"  # the rule only reports
    # The findings whose site the analysis marks fixable; each fix is safe ([*] in the
    # output, applied by `fix`) or unsafe ([!], applied with `--unsafe-fixes`).
    SOMETIMES = "sometimes"


class FixKind(Enum):
    """What `allocaudit fix` does to a fixable finding of a rule."""

    REUSE = "reuse"  # the allocation becomes a call of the runtime cache (get_empty, get_empty_like)
    DELETE = "delete"  # the statement that allocates is deleted


class Rule:
    CODE: ClassVar[str]
    NAME: ClassVar[str]
    SUMMARY: ClassVar[str]
    EXPLAIN: ClassVar[str]
    # Rules off by default report inventory rather than problems; `--select` turns them on.
    DEFAULT: ClassVar[bool] = True
    FIX: ClassVar[FixAvailability] = FixAvailability.NONE
    FIX_KIND: ClassVar[FixKind] = FixKind.REUSE
    # What the scan's text prefilter must let through: the rule can only report in a file that
    # holds one of these bytes (`FACTORY_HINTS` for a rule about allocation sites). The other
    # files are parsed but not analysed. Empty: the rule reads no analysis (comments, the parser).
    HINTS: ClassVar[tuple[bytes, ...]] = ()
    VALID: ClassVar[tuple[Valid, ...]] = ()
    INVALID: ClassVar[tuple[Invalid, ...]] = ()

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        raise NotImplementedError


def describe_device(site: AllocationSite) -> str:
    device = site.device
    if device.form == devices.VARIABLE:
        return f"device `{device.text}` unresolved"
    if device.form == devices.INHERITED and device.text and not device.text.endswith(".device"):
        return f"device {device.text}"
    if device.text and device.text.startswith("."):
        return f"moved with {device.text}"
    return f"device {device.text}" if device.text else f"device {device.form}"


def evidence(site: AllocationSite) -> str:
    """The evidence for a site's class, its device and any notes, for a message's parentheses."""
    return "; ".join((site.evidence, describe_device(site), *site.notes))
