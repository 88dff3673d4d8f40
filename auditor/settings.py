"""Settings of a scan: defaults, `[tool.allocaudit]` in pyproject.toml, command-line flags."""

from __future__ import annotations

import hashlib
import json
import keyword
import os
import re
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Iterable, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib

from allocaudit.auditor.analysis.devices import CONFIDENCE_ORDER
from allocaudit.auditor.analysis.functions import AnalysisOptions

# Mixture-of-Experts code lives in paths like these in every engine we know; include globs
# ignore case, so they also match `MoE/` and `SparseMoE.py`. Model libraries keep theirs in
# `models/mixtral/` and the like: `include-by-content` finds those by what the file defines
# or calls (auditor/content_scope.py).
DEFAULT_INCLUDE = ("*moe*", "*expert*")
DEFAULT_EXCLUDE = (
    ".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", ".eggs", "__pycache__",
    "build", "dist", "node_modules", "site-packages", ".mypy_cache", ".ruff_cache",
    ".allocaudit_cache",
)
# Functions that run once, not per call: exact names, as vLLM, SGLang, transformers, DeepSpeed
# and Megatron-LM spell their set-up. Prefix globs caught per-step code there: `load_*` hid
# transformers' `load_balancing_loss_func` (every training step), `init_*` SGLang's
# `init_forward_metadata` (every forward). The warm-up and test globs caught no per-step code.
DEFAULT_NOT_PER_CALL = (
    # object life cycle, parameter initialisation
    "__init__", "__new__", "__post_init__", "__setstate__", "post_init", "reset_parameters",
    "_reset_parameters", "init_weights", "_init_weights", "init_weight", "initialize_weights",
    "_initialize_weights", "tie_weights",
    # weight creation and loading
    "create_weights", "process_weights_after_loading", "weight_loader", "load_weights",
    "_load_weights", "load_weight", "_load_weight", "load_fused_expert_weights", "load_model",
    "_load_model", "load_state_dict", "_load_from_state_dict", "load_checkpoint", "_load_checkpoint",
    # CUDA graph and device set-up
    "init_cuda_graph_state", "init_cuda_graphs", "capture_model", "init_device",
    "init_process_group", "init_kv_buffer",
    # warm-up runs and tests
    "warmup*", "_warmup*", "*_warmup", "test_*",
)
# Functions whose job is to build scratch buffers for their caller.
DEFAULT_WORKSPACE_HELPERS = ("*workspace*", "*scratch*")
DEFAULT_MAX_FILE_SIZE = 8 * 1024 * 1024
# What `fix` imports get_empty from; `allocaudit vendor-runtime` makes a copy with no dependency but torch.
DEFAULT_RUNTIME_MODULE = "allocaudit.runtime"


class ConfigError(Exception):
    """A setting that cannot be used; the message names the file and the key or value."""


@dataclass(frozen=True)
class Settings:
    include: tuple[str, ...] = DEFAULT_INCLUDE
    include_by_content: bool = True  # a file that defines or calls MoE building blocks is in scope too
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
    force_exclude: bool = False  # files named on the command line pass include/exclude too
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (glob, codes) pairs
    # Apply unsafe fixes too (ruff's `unsafe-fixes`); None: no, but say how many were held back.
    unsafe_fixes: Optional[bool] = None
    runtime_module: str = DEFAULT_RUNTIME_MODULE  # the module `fix` imports get_empty from
    # `fix` rewrites allocations of every size, not only those whose size may grow with the batch.
    all_sizes: bool = False
    # With a profile: `fix` rewrites only sites that allocated at least this many bytes per call.
    min_bytes: int = 0
    root: Optional[str] = None  # the folder globs are relative to: the config's, or the project root
    config_file: Optional[str] = None  # the pyproject.toml these settings come from

    # Which files are scanned, which findings are kept afterwards, which fixes apply and what
    # `fix` writes: none of it changes what the analysis of one file reports, so none of it is
    # in the cache's fingerprint.
    SCOPE_FIELDS: ClassVar[tuple[str, ...]] = (
        "include", "include_by_content", "exclude", "respect_gitignore", "all_files", "force_exclude", "per_file_ignores", "root", "config_file",
        "unsafe_fixes", "runtime_module", "min_bytes",
    )

    def analysis_options(self) -> AnalysisOptions:
        return AnalysisOptions(self.not_per_call, self.per_call, self.workspace_helpers, self.all_sizes)

    def fingerprint(self, codes: Iterable[str]) -> str:
        """Digest of everything that changes what a file's scan reports; ``codes``: the
        rules that run (`selection.enabled_codes`)."""
        relevant = asdict(self)
        for key in self.SCOPE_FIELDS:
            relevant.pop(key)
        relevant["codes"] = sorted(codes)
        return hashlib.blake2b(json.dumps(relevant, sort_keys=True).encode(), digest_size=12).hexdigest()


# pyproject key -> (Settings field, whether it extends the default instead of replacing it)
KEYS = {
    "include": ("include", False),
    "extend-include": ("include", True),
    "include-by-content": ("include_by_content", False),
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
    "force-exclude": ("force_exclude", False),
    "per-file-ignores": ("per_file_ignores", False),
    "unsafe-fixes": ("unsafe_fixes", False),
    "runtime-module": ("runtime_module", False),
    "all-sizes": ("all_sizes", False),
    "min-bytes": ("min_bytes", False),
}


def config_in(folder: Path) -> Optional[Path]:
    """``folder``/pyproject.toml if it has a [tool.allocaudit] table. A file that does not
    mention allocaudit is not parsed: a broken pyproject.toml of some other tool is not ours."""
    candidate = folder / "pyproject.toml"
    try:
        text = candidate.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        if not candidate.is_file():
            return None
        raise ConfigError(f"{candidate}: cannot read: {exc}") from exc
    if "allocaudit" not in text:
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{candidate}: cannot read: {exc}") from exc
    tool = data.get("tool", {})
    return candidate if isinstance(tool, dict) and "allocaudit" in tool else None


def load(config: Optional[Path], base: Settings = Settings()) -> Settings:
    """Settings from ``config`` (a pyproject.toml) over ``base``. Rule codes are taken as
    written: `selection.checked` says whether each names a rule."""
    if config is None:
        return base
    try:
        table = tomllib.loads(config.read_text(encoding="utf-8")).get("tool", {}).get("allocaudit", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{config}: cannot read: {exc}") from exc
    values: dict[str, Any] = {"root": os.path.abspath(config.parent), "config_file": str(config)}
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"{config}: unknown key `{key}` in [tool.allocaudit] (known: {', '.join(KEYS)})")
    # `exclude` replaces the defaults and `extend-exclude` adds to them, whichever comes first
    # in the file: replacing keys are read before extending ones.
    for key, value in sorted(table.items(), key=lambda item: KEYS[item[0]][1]):
        field_name, extend = KEYS[key]
        values[field_name] = _check(config, key, field_name, value, extend, values.get(field_name, getattr(base, field_name)))
    # `include` replaces the default scope, content markers included, as `exclude` replaces
    # the default excludes: a table that names its globs gets those globs only, unless it also
    # says `include-by-content = true`. `extend-include` adds globs and keeps the content scope.
    if "include" in table and "include-by-content" not in table:
        values["include_by_content"] = False
    return replace(base, **values)


def _check(config: Path, key: str, field_name: str, value: Any, extend: bool, current: Any) -> Any:
    where = f"{config}: [tool.allocaudit] {key}"
    if field_name == "per_file_ignores":
        return _per_file_ignores(where, value)
    kind = {f.name: f.type for f in fields(Settings)}[field_name]
    if "tuple" in str(kind):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, not {value!r}")
        return tuple(current) + tuple(value) if extend else tuple(value)
    if field_name == "min_confidence":
        if value not in CONFIDENCE_ORDER:
            raise ConfigError(f"{where} must be one of {', '.join(CONFIDENCE_ORDER)}, not {value!r}")
        return value
    if field_name == "runtime_module":
        try:
            return check_module_name(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if field_name == "min_bytes":
        try:
            return parse_bytes(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if field_name == "max_file_size":
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{where} must be a positive number of bytes, not {value!r}")
        return value
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    return value


def _per_file_ignores(where: str, value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`{"tests/*" = ["AA101"], ...}` -> (("tests/*", ("AA101",)), ...)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of glob = [codes], not {value!r}")
    pairs = []
    for glob, codes in value.items():
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise ConfigError(f"{where} `{glob}` must be a list of rule codes, not {codes!r}")
        pairs.append((glob, tuple(codes)))
    return tuple(pairs)


_BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def parse_bytes(value: Any) -> int:
    """A number of bytes: an int, or a string with a unit, `65536`, `64KiB`, `1 MiB`, `1.5MB`
    (KiB, MiB, GiB are powers of 1024; kB, MB, GB of 1000); ValueError naming ``value``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", value) if isinstance(value, str) else None
    unit = _BYTE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"must be a number of bytes such as 65536, 64KiB or 1MiB, not {value!r}")
    return int(float(match.group(1)) * unit)


def check_module_name(value: Any) -> str:
    """``value`` if it is an absolute dotted module name (`myengine._allocaudit_runtime`), else
    ValueError naming it: `fix` writes `from <value> import get_empty` into every patched file."""
    parts = value.split(".") if isinstance(value, str) else []
    if not parts or not all(part.isidentifier() and not keyword.iskeyword(part) for part in parts):
        raise ValueError(f"runtime module must be an absolute dotted module name such as myengine._allocaudit_runtime, not {value!r}")
    return value


def split_codes(values: Iterable[str]) -> tuple[str, ...]:
    """`--select AA101,AA102 --select AA2` -> ("AA101", "AA102", "AA2")."""
    return tuple(code.strip() for value in values for code in value.split(",") if code.strip())
