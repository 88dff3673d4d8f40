"""AA207: a cache in a class attribute or module global that nothing releases."""

from __future__ import annotations

import ast
from typing import Iterator

from allocaudit.auditor.analysis.caches import hand_written_caches
from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.sites import ModuleFacts
from allocaudit.auditor.analysis.syntax import container_of
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid


class CacheNeverReleased(Rule):
    CODE = "AA207"
    NAME = "cache-never-released"
    HINTS = FACTORY_HINTS
    SUMMARY = "class-level or global workspace cache with no way to release it"
    EXPLAIN = """\
Why: the cache lives in a class attribute or a module global, so it is shared by every
instance and outlives each of them. Nothing in the module clears it: when an engine is
torn down (or rebuilt with another configuration) its workspaces stay allocated, and the
buffers that captured CUDA graphs pointed at are kept or reused by the next engine in
ways nobody planned.

Fix: hold the cache on the object that owns the graphs (the engine or model runner) and
release it with them, or give the module an explicit `clear()`/`release()` that the owner
calls. With `allocaudit.runtime`, create one `WorkspaceCache` per engine, pass it as
`cache=`, and call its `clear()`/`release_pinned()` when the engine drops its graphs.
"""
    VALID = (
        # Held on the instance: released with it.
        Valid(
            """
            import torch
            class M:
                def get(self, name, n, dtype, device):
                    buf = self._bufs.get((name, dtype, device))
                    if buf is None or buf.numel() < n:
                        buf = torch.empty(n, dtype=dtype, device=device)
                        self._bufs[(name, dtype, device)] = buf
                    return buf[:n]
            """
        ),
        # A global with a release function.
        Valid(
            """
            import torch
            _POOL = {}
            def get(name, n, dtype, device):
                buf = _POOL.get((name, dtype, device))
                if buf is None or buf.numel() < n:
                    buf = torch.empty(n, dtype=dtype, device=device)
                    _POOL[(name, dtype, device)] = buf
                return buf[:n]
            def release():
                _POOL.clear()
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            import math, torch
            class Moe:
                pool = {}  # expect
                @staticmethod
                def get_empty(shape, dtype, name, device):
                    for buf in Moe.pool.get((name, dtype, device), []):
                        if buf.numel() >= math.prod(shape):
                            return buf[: math.prod(shape)].view(shape)
                    new = torch.empty(shape, dtype=dtype, device=device)
                    Moe.pool.setdefault((name, dtype, device), []).append(new)
                    return new
            """
        ),
        Invalid(
            """
            import torch
            _POOL: dict = {}  # expect
            def get(name, n, dtype, device):
                buf = _POOL.get((name, dtype, device))
                if buf is None or buf.numel() < n:
                    buf = torch.empty(n, dtype=dtype, device=device)
                    _POOL[(name, dtype, device)] = buf
                return buf[:n]
            """
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        reported = set()
        for cache in hand_written_caches(facts):
            if cache.container_kind == "instance attribute" or cache.container in reported:
                continue
            if can_release(facts, cache.container):
                continue
            reported.add(cache.container)
            yield Report(
                self._definition(facts, cache) or cache.function,
                f"workspace cache `{cache.container}` ({cache.container_kind}, filled by `{cache.qualname}`) is never released: "
                "it outlives the engine and the CUDA graphs that use its buffers",
            )

    @staticmethod
    def _definition(facts: ModuleFacts, cache):
        """The line that creates the container: its class-level or module-level assignment."""
        name = cache.container.rpartition(".")[2]
        scopes = [facts.index.tree.body] + [n.body for n in facts.index.tree.body if isinstance(n, ast.ClassDef)]
        for body in scopes:
            for stmt in body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    return stmt
        return None


def can_release(facts: ModuleFacts, container: str) -> bool:
    """Whether anything in the module can release a class-level or global cache: a
    `.clear()`/`.pop()`, a `del`, or an assignment inside a function."""
    attribute = "." + container.rpartition(".")[2]

    def names_it(node: ast.AST) -> bool:
        text = ast.unparse(node)
        return text == container or text.endswith(attribute)

    for node in ast.walk(facts.index.tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("clear", "pop", "popitem"):
            if names_it(node.func.value):
                return True
        elif isinstance(node, ast.Delete) and any(names_it(container_of(t)) for t in node.targets):
            return True
        elif isinstance(node, ast.Assign) and not isinstance(facts.index.parents.get(node), (ast.ClassDef, ast.Module)):
            if any(names_it(t) for t in node.targets):
                return True
    return False
