"""allocaudit runtime: reusable workspaces for patched modules, never less safe than torch.empty.

    from allocaudit.runtime import get_empty
    ws = get_empty((E, m, n), torch.bfloat16, device="cuda", cache_name="moe.ws1")

Imports only the standard library and torch; the whole runtime is the one module `cache`.
"""

from .cache import (
    RUNTIME_VERSION,
    BufferInfo,
    CacheEvent,
    SlotStats,
    WorkspaceAliasError,
    WorkspaceCache,
    WorkspaceGrowthError,
    add_observer,
    default_cache,
    get_empty,
    get_empty_like,
    reload_env,
    remove_observer,
    use_cache,
)

__all__ = [
    "RUNTIME_VERSION",
    "BufferInfo",
    "CacheEvent",
    "SlotStats",
    "WorkspaceAliasError",
    "WorkspaceCache",
    "WorkspaceGrowthError",
    "add_observer",
    "default_cache",
    "get_empty",
    "get_empty_like",
    "reload_env",
    "remove_observer",
    "use_cache",
]
