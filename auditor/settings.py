"""Settings of a scan: defaults, `[tool.allocaudit]` in pyproject.toml, command-line flags."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib

from allocaudit.auditor.analysis.devices import CONFIDENCE_ORDER
from allocaudit.auditor.rules import ALL_RULES, RULES_BY_CODE
from allocaudit.auditor.analysis.functions import AnalysisOptions

# Mixture-of-Experts code lives in paths like these in every engine we know.
DEFAULT_INCLUDE = ("*moe*", "*expert*")
DEFAULT_EXCLUDE = (
    ".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", ".eggs", "__pycache__",
    "build", "dist", "node_modules", "site-packages", ".mypy_cache", ".ruff_cache",
    ".allocaudit_cache",
)
# Functions that run once, not per call.
DEFAULT_NOT_PER_CALL = (
    "__init__", "__new__", "__post_init__", "__setstate__", "create_weights", "load_*",
    "_load_*", "process_weights_after_loading", "reset_parameters", "init_*", "_init_*",
    "warmup*", "_warmup*", "*_warmup", "test_*",
)
# Functions whose job is to build scratch buffers for their caller.
DEFAULT_WORKSPACE_HELPERS = ("*workspace*", "*scratch*")
DEFAULT_MAX_FILE_SIZE = 8 * 1024 * 1024


class ConfigError(Exception):
    """A setting that cannot be used; the message names the file and the key or value."""


@dataclass(frozen=True)
class Settings:
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    select: tuple[str, ...] = ()  # empty: every rule that is on by default
    ignore: tuple[str, ...] = ()
    not_per_call: tuple[str, ...] = DEFAULT_NOT_PER_CALL
    per_call: tuple[str, ...] = ()
    workspace_helpers: tuple[str, ...] = DEFAULT_WORKSPACE_HELPERS
    min_confidence: str = "low"
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    respect_gitignore: bool = True
    all_files: bool = False  # --all: ignore `include`
    root: Optional[str] = None  # the config file's folder; None: each folder given to scan

    def enabled_codes(self) -> frozenset[str]:
        codes = {r.CODE for r in ALL_RULES if r.DEFAULT} if not self.select else set()
        for pattern in self.select:
            codes |= _expand(pattern, "select")
        for pattern in self.ignore:
            codes -= _expand(pattern, "ignore")
        return frozenset(codes)

    def analysis_options(self) -> AnalysisOptions:
        return AnalysisOptions(self.not_per_call, self.per_call, self.workspace_helpers)

    def fingerprint(self) -> str:
        """Digest of everything that changes what a file's scan reports."""
        relevant = asdict(self)
        for key in ("include", "exclude", "respect_gitignore", "all_files", "root"):
            relevant.pop(key)
        relevant["codes"] = sorted(self.enabled_codes())
        return hashlib.blake2b(json.dumps(relevant, sort_keys=True).encode(), digest_size=12).hexdigest()


def _expand(pattern: str, option: str) -> set[str]:
    """`ALL`, a code (`AA101`) or a code prefix (`AA1`) -> the codes it names."""
    pattern = pattern.strip().upper()
    if pattern == "ALL":
        return set(RULES_BY_CODE)
    codes = {code for code in RULES_BY_CODE if code.startswith(pattern)}
    if not codes:
        known = ", ".join(sorted(RULES_BY_CODE))
        raise ConfigError(f"unknown rule code `{pattern}` in {option} (known: {known})")
    return codes


# pyproject key -> (Settings field, whether it extends the default instead of replacing it)
_KEYS = {
    "include": ("include", False),
    "exclude": ("exclude", False),
    "extend-exclude": ("exclude", True),
    "select": ("select", False),
    "extend-select": ("select", True),
    "ignore": ("ignore", False),
    "not-per-call": ("not_per_call", False),
    "extend-not-per-call": ("not_per_call", True),
    "per-call": ("per_call", False),
    "workspace-helpers": ("workspace_helpers", False),
    "min-confidence": ("min_confidence", False),
    "max-file-size": ("max_file_size", False),
    "respect-gitignore": ("respect_gitignore", False),
}


def find_config(start: Path) -> Optional[Path]:
    """The nearest pyproject.toml at or above ``start`` that has a [tool.allocaudit] table."""
    start = start.resolve()
    for folder in (start, *start.parents) if start.is_dir() else start.parents:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{candidate}: cannot read: {exc}") from exc
            if "allocaudit" in data.get("tool", {}):
                return candidate
    return None


def load(config: Optional[Path], base: Settings = Settings()) -> Settings:
    """Settings from ``config`` (a pyproject.toml) over ``base``."""
    if config is None:
        return base
    try:
        table = tomllib.loads(config.read_text(encoding="utf-8")).get("tool", {}).get("allocaudit", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{config}: cannot read: {exc}") from exc
    values: dict[str, Any] = {"root": str(config.parent)}
    for key, value in table.items():
        if key not in _KEYS:
            raise ConfigError(f"{config}: unknown key `{key}` in [tool.allocaudit] (known: {', '.join(_KEYS)})")
        field_name, extend = _KEYS[key]
        values[field_name] = _check(config, key, field_name, value, extend, values.get(field_name, getattr(base, field_name)))
    settings = replace(base, **values)
    settings.enabled_codes()  # unknown codes fail here, naming the option
    return settings


def _check(config: Path, key: str, field_name: str, value: Any, extend: bool, current: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[field_name]
    where = f"{config}: [tool.allocaudit] {key}"
    if "tuple" in str(kind):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, not {value!r}")
        return tuple(current) + tuple(value) if extend else tuple(value)
    if field_name == "min_confidence":
        if value not in CONFIDENCE_ORDER:
            raise ConfigError(f"{where} must be one of {', '.join(CONFIDENCE_ORDER)}, not {value!r}")
        return value
    if field_name == "max_file_size":
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{where} must be a positive number of bytes, not {value!r}")
        return value
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    return value


def split_codes(values: Iterable[str]) -> tuple[str, ...]:
    """`--select AA101,AA102 --select AA2` -> ("AA101", "AA102", "AA2")."""
    return tuple(code.strip() for value in values for code in value.split(",") if code.strip())
