"""AA205: a hand-written cache drops a buffer that a captured CUDA graph may still use."""

from __future__ import annotations

import ast
from typing import Iterator

from allocaudit.auditor.analysis.caches import HandWrittenCache, hand_written_caches
from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.sites import ModuleFacts
from allocaudit.auditor.analysis.syntax import container_of
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid

# Words that, in a condition, show the cache knows about CUDA graph capture or pins buffers.
CAPTURE_WORDS = ("capturing", "captur", "pinned", "pin", "reserved", "graph", "frozen", "freeze", "locked")
DESTRUCTIVE_METHODS = frozenset({"pop", "popitem", "clear", "remove", "discard"})


class CacheGraphHazard(Rule):
    CODE = "AA205"
    NAME = "cache-drops-graph-captured-buffer"
    HINTS = FACTORY_HINTS
    SUMMARY = "hand-written cache drops or replaces a buffer with no check of CUDA graph capture"
    EXPLAIN = """\
Why: when a cache grows it replaces the buffer it held (`cache[key] = bigger`), deletes
it, pops it or clears the cache. If that buffer was handed out while a CUDA graph was
being captured, the graph recorded its address and replays keep writing there; once the
cache drops its last reference the allocator gives the memory to unrelated tensors, and
every replay corrupts them. This is the bug in the fix the review of TensorRT-LLM PR 7390
proposed ("keep only the largest buffer per key"): measured on an H100, a graph replay
wrote into memory of unrelated tensors.

Fix: keep buffers handed out during capture alive until their graphs are dropped (check
`torch.cuda.is_current_stream_capturing()` when handing out, pin them, and release them
explicitly), or freeze growth after capture. `allocaudit.runtime.get_empty` does this:
buffers handed out during capture are pinned and survive growth, eviction and `clear()`
until `release_pinned()`.

    if torch.cuda.is_current_stream_capturing():
        self._pinned.append(old)   # a captured graph replays into it
    self._bufs[key] = bigger
"""
    VALID = (
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
        # Fills an empty slot only: nothing held is ever dropped.
        Valid(
            """
            import torch
            _TABLES = {}
            def table(d, dtype, device):
                t = _TABLES.get((d, dtype, device))
                if t is None:
                    t = torch.empty(d, d, dtype=dtype, device=device)
                    _TABLES[(d, dtype, device)] = t
                return t[:d]
            def release():
                _TABLES.clear()
            """
        ),
        # A lazy singleton is not a reuse cache at all.
        Valid(
            """
            import torch
            _WS = None
            def workspace():
                global _WS
                if _WS is None:
                    _WS = torch.zeros(1 << 20, dtype=torch.uint8, device='cuda')
                return _WS
            """
        ),
        # Only appends: never drops what a graph may use (AA204 is about its growth).
        Valid(
            """
            import torch
            class M:
                def get(self, name, n, dtype, device):
                    for buf in self.pool.get((name, dtype, device), []):
                        if buf.numel() >= n:
                            return buf[:n]
                    new = torch.empty(n, dtype=dtype, device=device)
                    self.pool.setdefault((name, dtype, device), []).append(new)
                    return new
            """
        ),
    )
    INVALID = (
        # The review's proposal: keyed, keep the largest, zero on reuse.
        Invalid(
            """
            import torch
            class Moe:
                pool = {}
                @staticmethod
                def get_empty(shape, dtype, name, n):
                    device = torch.device('cuda', torch.cuda.current_device())
                    key = (name, dtype, device)
                    cached = Moe.pool.get(key)
                    if cached is not None and cached.numel() >= n:
                        view = cached[:n].view(shape)
                        view.zero_()
                        return view
                    new = torch.zeros(shape, dtype=dtype, device=device)
                    Moe.pool[key] = new  # expect
                    return new
            """
        ),
        # A single buffer regrown in place, and a cache cleared on resize.
        Invalid(
            """
            import torch
            class M:
                def get(self, n):
                    if self._ws is None or self._ws.numel() < n:
                        self._ws = torch.empty(n, dtype=torch.uint8, device='cuda:0')  # expect
                    return self._ws[:n]
                def scratch(self, name, n, device):
                    buf = self._bufs.get(name)
                    if buf is None or buf.numel() < n or buf.device != device:
                        self._bufs.clear()  # expect
                        buf = torch.empty(n, device=device)
                        self._bufs[name] = buf
                    return buf[:n]
            """
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for cache in hand_written_caches(facts):
            if capture_aware(cache, facts):
                continue
            found = drops(cache, facts)
            if not found:
                continue
            drop = found[0]
            what = "deletes" if isinstance(drop, ast.Delete) else "replaces" if isinstance(drop, ast.Assign) else f"calls .{drop.func.attr}() on"
            yield Report(
                drop,
                f"hand-written cache `{cache.qualname}` {what} a buffer of `{cache.container}` with no check of CUDA graph capture: "
                "a captured graph keeps replaying into the freed memory",
            )


def capture_aware(cache: HandWrittenCache, facts: ModuleFacts) -> bool:
    """A condition of the cache knows about graph capture or pinned buffers, or the function
    or its class says it only runs eagerly (never under graph capture)."""
    if any(word in cache.condition_text.lower() for word in CAPTURE_WORDS):
        return True
    owners = [cache.function, facts.index.enclosing_class(cache.function)]
    return any(owner is not None and "eager" in (ast.get_docstring(owner) or "").lower() for owner in owners)


def drops(cache: HandWrittenCache, facts: ModuleFacts) -> list[ast.AST]:
    """Where a held buffer is replaced (`C[k] = bigger`, `self._buf = bigger`), deleted,
    popped or cleared, in source order."""
    found: list[ast.AST] = []
    for node in ast.walk(cache.function):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in DESTRUCTIVE_METHODS and cache.touches(node.func.value):
                found.append(node)
        elif isinstance(node, ast.Delete):
            if any(cache.touches(t) for t in node.targets):
                found.append(node)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                root = ast.unparse(container_of(target))
                replaces_entry = isinstance(target, ast.Subscript) and (root == cache.container or root in cache.cached_names)
                replaces_buffer = ast.unparse(target) == cache.container and not isinstance(node.value, (ast.Dict, ast.List))
                if (replaces_entry or replaces_buffer) and not _inserts_only(node, cache.function, facts.index.parents):
                    found.append(node)
    found.sort(key=lambda node: (node.lineno, node.col_offset))
    return found


def _inserts_only(store: ast.AST, function: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """A store under `if buf is None:` / `if key not in C:` fills an empty slot; one under
    `if buf is None or buf.numel() < n:` replaces a buffer that was too small."""
    tests = []
    parent = parents.get(store)
    while parent is not None and parent is not function:
        if isinstance(parent, ast.If):
            tests.append(parent.test)
        parent = parents.get(parent)
    if not tests:
        return False
    for test in tests:
        for node in ast.walk(test):
            if isinstance(node, ast.Compare) and not all(isinstance(op, (ast.Is, ast.NotIn, ast.In, ast.IsNot)) for op in node.ops):
                return False
    return True
