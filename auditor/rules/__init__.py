"""Every rule allocaudit has, by code. Each rule is one module with its cases."""

from __future__ import annotations

from allocaudit.auditor.rules.base import FixAvailability, FixKind, Report, Rule
from allocaudit.auditor.rules.cache_device_check import CacheDeviceCheck
from allocaudit.auditor.rules.cache_dtype_check import CacheDtypeCheck
from allocaudit.auditor.rules.cache_graph_hazard import CacheGraphHazard
from allocaudit.auditor.rules.cache_never_released import CacheNeverReleased
from allocaudit.auditor.rules.cache_rezero import CacheRezero
from allocaudit.auditor.rules.cache_unbounded_growth import CacheUnboundedGrowth
from allocaudit.auditor.rules.dead_allocation import DeadAllocation
from allocaudit.auditor.rules.escaping_allocation import EscapingAllocation
from allocaudit.auditor.rules.init_allocation import InitAllocation
from allocaudit.auditor.rules.unparsable_file import UnparsableFile
from allocaudit.auditor.rules.unused_suppression import UnusedSuppression
from allocaudit.auditor.rules.workspace_aliasing import WorkspaceAliasing
from allocaudit.auditor.rules.workspace_allocation import WorkspaceAllocation

ALL_RULES: tuple[type[Rule], ...] = (
    UnusedSuppression,
    WorkspaceAllocation,
    EscapingAllocation,
    InitAllocation,
    DeadAllocation,
    CacheDtypeCheck,
    CacheDeviceCheck,
    CacheRezero,
    CacheUnboundedGrowth,
    CacheGraphHazard,
    WorkspaceAliasing,
    CacheNeverReleased,
    UnparsableFile,
)
RULES_BY_CODE: dict[str, type[Rule]] = {rule.CODE: rule for rule in ALL_RULES}
# What `allocaudit fix` rewrites: the findings of these rules that the analysis marks fixable.
FIXABLE_CODES: tuple[str, ...] = tuple(rule.CODE for rule in ALL_RULES if rule.FIX is not FixAvailability.NONE)
FIX_KINDS: dict[str, FixKind] = {rule.CODE: rule.FIX_KIND for rule in ALL_RULES if rule.FIX is not FixAvailability.NONE}

__all__ = ["ALL_RULES", "FIXABLE_CODES", "FIX_KINDS", "RULES_BY_CODE", "FixAvailability", "FixKind", "Report", "Rule"]
