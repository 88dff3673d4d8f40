"""AA204: a hand-written cache grows without bound."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from allocaudit.auditor.analysis.caches import HandWrittenCache, hand_written_caches
from allocaudit.auditor.analysis.escapes import CONTAINER_ADDERS
from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.sites import ModuleFacts
from allocaudit.auditor.analysis.syntax import container_of, is_ordering, names_in
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid

EVICTION_METHODS = frozenset({"pop", "popitem", "clear", "remove", "discard", "move_to_end"})
BOUND_WORDS = ("max_", "maxsize", "capacity", "limit", "budget", "max_entries", "evict")


class CacheUnboundedGrowth(Rule):
    CODE = "AA204"
    NAME = "cache-unbounded-growth"
    HINTS = FACTORY_HINTS
    SUMMARY = "hand-written cache grows without eviction or bound"
    EXPLAIN = """\
Why: on a miss the cache appends a new buffer to the list of its key (or adds a key per
requested size) and never evicts anything. Every batch size that does not fit the
buffers already held adds one more: under a serving load with varying batch sizes the
cache keeps every size it ever saw, and measured on an H100 the seed's cache used 13%
more peak memory than plain `torch.empty` when larger batches came after graph capture.
The review of TensorRT-LLM PR 7390 asked the same question.

Fix: keep one buffer per key and grow it (taking care of buffers that captured graphs
still use, see AA205), evict with a bound, or use `allocaudit.runtime.get_empty`: one live
buffer per slot plus graph-pinned ones, and an optional byte budget for the whole cache.
"""
    VALID = (
        # One buffer per key, grown in place, capture-aware.
        Valid(
            """
            import torch
            class M:
                def get(self, name, n, dtype, device):
                    buf = self._bufs.get((name, dtype, device))
                    if buf is None or buf.numel() < n:
                        if buf is not None and torch.cuda.is_current_stream_capturing():
                            self._pinned.append(buf)
                        buf = torch.empty(n, dtype=dtype, device=device)
                        self._bufs[(name, dtype, device)] = buf
                    return buf[:n]
            """
        ),
        # Appends, but evicts beyond a bound.
        Valid(
            """
            import torch
            class M:
                def get(self, name, n, dtype, device):
                    for buf in self.pool.get(name, []):
                        if buf.dtype == dtype and buf.device == device and buf.numel() >= n:
                            return buf[:n]
                    new = torch.empty(n, dtype=dtype, device=device)
                    bufs = self.pool.setdefault(name, [])
                    bufs.append(new)
                    if len(bufs) > self.max_per_key:
                        bufs.pop(0)
                    return new
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            import math, torch
            class Moe:
                pool = {}
                @staticmethod
                def get_empty(shape, dtype, name, device):
                    for buf in Moe.pool.get(name, []):
                        if buf.dtype == dtype and buf.device == device and buf.numel() >= math.prod(shape):
                            return buf[: math.prod(shape)].view(shape)
                    new = torch.empty(shape, dtype=dtype, device=device)
                    Moe.pool.setdefault(name, []).append(new)  # expect
                    return new
            """
        ),
        # A key per requested size.
        Invalid(
            """
            import torch
            class M:
                def get(self, numel, dtype, device):
                    buf = self.by_size.get((numel, dtype, device))
                    if buf is None:
                        buf = torch.empty(numel, dtype=dtype, device=device)
                        self.by_size[(numel, dtype, device)] = buf  # expect
                    return buf[:numel]
            """
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for cache in hand_written_caches(facts):
            if bounded(cache, facts.index.tree):
                continue
            added = appends(cache)
            growth = key_growth(cache)
            if added:
                call = added[0]
                yield Report(
                    call,
                    f"hand-written cache `{cache.qualname}` grows without bound: `.{call.func.attr}()` adds a buffer to "
                    f"`{cache.container}` on every miss and nothing evicts or caps it",
                )
            elif growth is not None:
                yield Report(
                    growth,
                    f"hand-written cache `{cache.qualname}` grows without bound: `{cache.container}` gets a new key per "
                    "requested size and nothing evicts or caps it",
                )


def bounded(cache: HandWrittenCache, module: ast.Module) -> bool:
    """Whether anything in the module evicts from the container or counts its entries, or
    a condition of the cache names a bound (`max_per_key`, `capacity`)."""
    module_text = ast.unparse(module)
    return (
        any(f"{cache.container}.{m}(" in module_text for m in EVICTION_METHODS)
        or any(w in cache.condition_text for w in BOUND_WORDS)
        or f"len({cache.container})" in module_text
    )


def appends(cache: HandWrittenCache) -> list[ast.Call]:
    """Calls that add a buffer to the container or to one of its entries, in source order."""
    found = [
        node
        for node in ast.walk(cache.function)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CONTAINER_ADDERS
        and cache.touches(node.func.value)
    ]
    found.sort(key=lambda node: (node.lineno, node.col_offset))
    return found


def key_growth(cache: HandWrittenCache) -> Optional[ast.Assign]:
    """A store keyed by the requested size (`C[(numel, dtype)] = buf`). Where a size test
    decides reuse, the key is a category (`width`, a group) instead, and none is."""
    fit_tested = any(
        is_ordering(c) and (cache.container in ast.unparse(c) or names_in(c) & cache.cached_names) for c in cache.conditions
    )
    if fit_tested:
        return None
    found = None
    for node in ast.walk(cache.function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Subscript) and ast.unparse(container_of(target)) == cache.container
                    and names_in(target.slice) & cache.size_params
                ):
                    found = node  # the last one the walk meets
    return found
