"""What a rule is: a code, a one-line summary, an `explain` text, the cases it must pass
and flag, and a check over a module's facts.

Cases are source snippets. A VALID case must give no finding of the rule's code; in an
INVALID case every line that ends with the comment ``# expect`` must be flagged, and no
other line. tests/auditor/test_rule_cases.py turns every case of every rule into a test.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Iterator, Optional

from allocaudit.auditor.analysis.sites import AllocationSite, ModuleFacts


@dataclass(frozen=True)
class Report:
    """What a rule reports: the node to point at, the message, and the site it is about."""

    node: ast.AST
    message: str
    site: Optional[AllocationSite] = None


class FixAvailability(Enum):
    """Whether `allocaudit fix` rewrites what a rule reports (ruff's fix availability)."""

    NONE = "none"  # the rule only reports
    SOMETIMES = "sometimes"  # the findings whose site the analysis marks fixable ([*] in the output)


class Rule:
    CODE: ClassVar[str]
    NAME: ClassVar[str]
    SUMMARY: ClassVar[str]
    EXPLAIN: ClassVar[str]
    # Rules off by default report inventory rather than problems; `--select` turns them on.
    DEFAULT: ClassVar[bool] = True
    FIX: ClassVar[FixAvailability] = FixAvailability.NONE
    VALID: ClassVar[tuple[str, ...]] = ()
    INVALID: ClassVar[tuple[str, ...]] = ()

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        raise NotImplementedError


def describe_device(site: AllocationSite) -> str:
    device = site.device
    if device.form == "variable":
        return f"device `{device.text}` unresolved"
    if device.form == "inherited" and device.text and not device.text.endswith(".device"):
        return f"device {device.text}"
    if device.text and device.text.startswith("."):
        return f"moved with {device.text}"
    return f"device {device.text}" if device.text else f"device {device.form}"


def evidence(site: AllocationSite) -> str:
    """The evidence for a site's class, its device and any notes, for a message's parentheses."""
    return "; ".join((site.evidence, describe_device(site), *site.notes))
