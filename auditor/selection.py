"""Which rules run: the codes that settings' `select`, `ignore` and `per-file-ignores` name.

Settings hold these as written (`AA1`, `ALL`, `AA101`); the rules they name are known only
here, above both, so that reading a config loads no rule.
"""

from __future__ import annotations

from typing import Iterable

from allocaudit.auditor.rules import ALL_RULES, RULES_BY_CODE
from allocaudit.auditor.settings import ConfigError, Settings


def codes_named(pattern: str, option: str) -> set[str]:
    """`ALL`, a code (`AA101`) or a code prefix (`AA1`) -> the codes it names."""
    pattern = pattern.strip().upper()
    if pattern == "ALL":
        return set(RULES_BY_CODE)
    codes = {code for code in RULES_BY_CODE if code.startswith(pattern)}
    if not codes:
        known = ", ".join(sorted(RULES_BY_CODE))
        raise ConfigError(f"unknown rule code `{pattern}` in {option} (known: {known})")
    return codes


def enabled_codes(settings: Settings) -> frozenset[str]:
    codes = {r.CODE for r in ALL_RULES if r.DEFAULT} if not settings.select else set()
    for pattern in settings.select:
        codes |= codes_named(pattern, "select")
    for pattern in settings.ignore:
        codes -= codes_named(pattern, "ignore")
    return frozenset(codes)


def ignored_codes(patterns: Iterable[str]) -> frozenset[str]:
    """The codes that a list of codes and prefixes (`AA1`, `ALL`) names."""
    codes: set[str] = set()
    for pattern in patterns:
        codes |= codes_named(pattern, "per-file-ignores")
    return frozenset(codes)


def checked(settings: Settings) -> Settings:
    """``settings`` (as read from their config) if every code they name is a rule's, else
    ConfigError naming the config file and the option."""
    if settings.config_file is None:
        enabled_codes(settings)
        return settings
    where = f"{settings.config_file}: [tool.allocaudit] per-file-ignores"
    for glob, codes in settings.per_file_ignores:
        for code in codes:
            codes_named(code, f"{where} `{glob}`")
    try:
        enabled_codes(settings)
    except ConfigError as exc:
        raise ConfigError(f"{settings.config_file}: {exc}") from None
    return settings
