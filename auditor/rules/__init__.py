"""Every rule allocaudit has, by code. Each rule is one module of this package, found here:
a module (other than ``base``) defines exactly one `Rule` subclass."""

from __future__ import annotations

import importlib
import pkgutil

from allocaudit.auditor.rules.base import FixAvailability, FixKind, Report, Rule


def _discover() -> tuple[type[Rule], ...]:
    """The rule of every module of this package, sorted by code."""
    found: dict[str, type[Rule]] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name == "base" or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        rules = [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Rule) and value.__module__ == module.__name__
        ]
        if len(rules) != 1:
            raise ImportError(f"rule module {module.__name__} must define exactly one Rule subclass, not {len(rules)}")
        rule = rules[0]
        if rule.CODE in found:
            raise ImportError(f"rule code {rule.CODE} is defined twice: {found[rule.CODE].__module__} and {module.__name__}")
        found[rule.CODE] = rule
    return tuple(found[code] for code in sorted(found))


ALL_RULES: tuple[type[Rule], ...] = _discover()
RULES_BY_CODE: dict[str, type[Rule]] = {rule.CODE: rule for rule in ALL_RULES}
# What `allocaudit fix` rewrites: the findings of these rules that the analysis marks fixable.
FIXABLE_CODES: tuple[str, ...] = tuple(rule.CODE for rule in ALL_RULES if rule.FIX is not FixAvailability.NONE)
FIX_KINDS: dict[str, FixKind] = {rule.CODE: rule.FIX_KIND for rule in ALL_RULES if rule.FIX is not FixAvailability.NONE}

__all__ = ["ALL_RULES", "FIXABLE_CODES", "FIX_KINDS", "RULES_BY_CODE", "FixAvailability", "FixKind", "Report", "Rule"]
