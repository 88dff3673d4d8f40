"""Every rule allocaudit has, by code. Each rule is one module with its cases."""

from __future__ import annotations

from allocaudit.auditor.rules.base import Report, Rule
from allocaudit.auditor.rules.escaping_allocation import EscapingAllocation
from allocaudit.auditor.rules.init_allocation import InitAllocation
from allocaudit.auditor.rules.workspace_allocation import WorkspaceAllocation

ALL_RULES: tuple[type[Rule], ...] = (
    WorkspaceAllocation,
    EscapingAllocation,
    InitAllocation,
)
RULES_BY_CODE: dict[str, type[Rule]] = {rule.CODE: rule for rule in ALL_RULES}

__all__ = ["ALL_RULES", "RULES_BY_CODE", "Report", "Rule"]
