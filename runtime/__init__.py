"""allocaudit runtime: reusable, CUDA-graph-safe workspaces for patched modules.

    from allocaudit.runtime import get_empty
    ws = get_empty((E, m, n), torch.bfloat16, device="cuda", cache_name="moe.ws1")

Imports only the standard library and torch.
"""

from .cache import (
    SlotStats,
    WorkspaceAliasError,
    WorkspaceCache,
    WorkspaceGrowthError,
    default_cache,
    get_empty,
    reload_env,
    use_cache,
)
from .hooks import CacheEvent, add_observer, remove_observer

__all__ = [
    "CacheEvent",
    "SlotStats",
    "WorkspaceAliasError",
    "WorkspaceCache",
    "WorkspaceGrowthError",
    "add_observer",
    "default_cache",
    "get_empty",
    "reload_env",
    "remove_observer",
    "use_cache",
]
