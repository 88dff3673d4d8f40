"""Hand-written workspace caches: how one is recognised, and the facts its rules share.

A cache is a function that hands out a view, slice or reinterpretation of a buffer held
in longer-lived state (a class attribute, a module global, an attribute of ``self``)
and, on a miss, allocates a new buffer and stores it there. Engines write them as a dict
of lists scanned first-fit, a dict keyed by name holding one buffer, best-fit over a
list of blocks with a reserved flag, a byte buffer reinterpreted with ``.view(dtype)``,
or a workspace manager object. Like the rest of the auditor, this is syntactic evidence,
flow-insensitive, inside one function.

What a cache does wrong is each AA2xx rule's own question, answered in its own module
from the facts here: the cache's condition (every test in the function), its key (what
it indexes the container with) and its hand-outs (the returns that give a cached buffer
away). Each fact is computed on first use.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Literal, Optional
from weakref import WeakKeyDictionary

from allocaudit.auditor.analysis.escapes import VIEW_ATTRIBUTES, VIEW_METHODS
from allocaudit.auditor.analysis.sites import AllocationSite, ModuleFacts
from allocaudit.auditor.analysis.syntax import container_of, is_ordering, names_in, parameters


ContainerKind = Literal["class attribute", "module global", "instance attribute"]


@dataclass(eq=False)
class HandWrittenCache:
    """One recognised cache: where it keeps its buffers, and what a rule may ask about it."""

    function: ast.FunctionDef
    qualname: str
    container: str  # the container as written, e.g. "self._buffers" or "Moe.recorder"
    container_kind: ContainerKind
    misses: tuple[AllocationSite, ...]  # the allocations stored into the container
    cached_names: frozenset[str]  # locals bound to what the container holds (`for buf in C[k]`)
    hit_returns: tuple[ast.Return, ...]  # the hand-outs, in source order
    size_params: frozenset[str]  # parameters that decide how much a miss allocates

    @cached_property
    def parameters(self) -> list[str]:
        return parameters(self.function)

    @cached_property
    def dtype_param(self) -> Optional[str]:
        return next((p for p in self.parameters if "dtype" in p), None)

    @cached_property
    def device_param(self) -> Optional[str]:
        return next((p for p in self.parameters if "device" in p), None)

    @cached_property
    def conditions(self) -> list[ast.expr]:
        """Every test in the function (`if`, `while`, conditional expressions) and every comparison."""
        tests: list[ast.expr] = [n.test for n in ast.walk(self.function) if isinstance(n, (ast.If, ast.While, ast.IfExp))]
        return tests + [n for n in ast.walk(self.function) if isinstance(n, ast.Compare)]

    @cached_property
    def condition_text(self) -> str:
        return " ".join(ast.unparse(c) for c in self.conditions)

    @cached_property
    def compared_names(self) -> set[str]:
        """Names read in a condition (`dtype != current_dtype` compares `dtype`)."""
        return {n.id for c in self.conditions for n in ast.walk(c) if isinstance(n, ast.Name)}

    @cached_property
    def _definitions(self) -> dict[str, list[ast.expr]]:
        """Every value each plain local is assigned in the function."""
        found: dict[str, list[ast.expr]] = {}
        for n in ast.walk(self.function):
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
                found.setdefault(n.targets[0].id, []).append(n.value)
        return found

    def readings(self, expr: ast.expr) -> list[str]:
        """The texts ``expr`` may stand for, with the locals it reads replaced by each value
        they are assigned (`key = (name, dtype, device)` then `key = (*key, flag)`: a key
        read later is either one, and the second holds the first)."""
        return _readings(expr, self._definitions, frozenset())

    @cached_property
    def keys(self) -> list[ast.expr]:
        """What the container is indexed with (`C[k]`, `C.get(k)`), as written."""
        return [
            sub.slice if isinstance(sub, ast.Subscript) else (sub.args[0] if sub.args else None)
            for sub in ast.walk(self.function)
            if (isinstance(sub, ast.Subscript) and ast.unparse(sub.value) == self.container)
            or (
                isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in ("get", "setdefault")
                and ast.unparse(sub.func.value) == self.container
            )
        ]

    def key_holds(self, name: str) -> bool:
        """Whether some key of the container holds ``name`` (a text, e.g. the dtype
        parameter) however it was built: every reading of that key contains it."""
        return any(k is not None and all(name in text for text in self.readings(k)) for k in self.keys)

    @cached_property
    def returned_readings(self) -> list[str]:
        """Every text a hand-out may stand for (locals replaced by their values)."""
        return [text for r in self.hit_returns for text in self.readings(r.value)]

    def touches(self, node: ast.AST) -> bool:
        """Whether ``node`` reads the container (anywhere inside it) or is a name bound to
        what the container holds: the receiver of a method that changes the cache."""
        container_read = any(
            ast.unparse(sub) == self.container for sub in ast.walk(node) if isinstance(sub, (ast.Attribute, ast.Name))
        )
        return container_read or ast.unparse(node) in self.cached_names


_found: WeakKeyDictionary[ModuleFacts, tuple[HandWrittenCache, ...]] = WeakKeyDictionary()


def hand_written_caches(facts: ModuleFacts) -> tuple[HandWrittenCache, ...]:
    """The module's hand-written caches, searched for once per module (every AA2xx rule reads them)."""
    found = _found.get(facts)
    if found is None:
        found = _found[facts] = tuple(_CacheSearch(facts).caches()) if facts.sites else ()
    return found


class _CacheSearch:
    def __init__(self, facts: ModuleFacts) -> None:
        self.facts = facts
        self.class_attributes = {
            f"{node.name}.{t.id}"
            for node in facts.index.tree.body
            if isinstance(node, ast.ClassDef)
            for stmt in node.body
            if isinstance(stmt, (ast.Assign, ast.AnnAssign))
            for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
            if isinstance(t, ast.Name)
        }
        self.module_globals = {
            t.id
            for stmt in facts.index.tree.body
            if isinstance(stmt, (ast.Assign, ast.AnnAssign))
            for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
            if isinstance(t, ast.Name)
        }

    def caches(self) -> Iterator[HandWrittenCache]:
        by_function: dict[ast.AST, list[tuple[AllocationSite, ast.AST]]] = {}
        for site in self.facts.sites:
            if not site.device.on_cuda or (site.device.text or "").startswith("self."):
                # A cache of CPU tensors is none of our business; `self.device` may well be
                # the CPU (CPU backends share the shape of CUDA ones), so it is not evidence.
                continue
            function = self.facts.index.owner(site.call)
            for target in site.stored_into:
                by_function.setdefault(function, []).append((site, container_of(target)))
        for function, stored in by_function.items():
            if function is None:
                continue
            for container in {ast.unparse(root): root for _, root in stored}.values():
                kind = self._kind_of(container, function)
                if kind is None:
                    continue
                text = ast.unparse(container)
                cache = self._recognise(function, text, kind, tuple(s for s, r in stored if ast.unparse(r) == text))
                if cache is not None:
                    yield cache

    def _kind_of(self, container: ast.AST, function: ast.AST) -> Optional[ContainerKind]:
        text = ast.unparse(container)
        if isinstance(container, ast.Attribute) and isinstance(container.value, ast.Name):
            owner = container.value.id
            if owner in ("self", "cls"):
                cls = self.facts.index.enclosing_class(function)
                if cls is not None and f"{cls.name}.{container.attr}" in self.class_attributes:
                    return "class attribute"
                return "instance attribute"
            if text in self.class_attributes:
                return "class attribute"
            return None
        if isinstance(container, ast.Name) and container.id in self.module_globals:
            return "module global"
        return None

    def _recognise(self, function, container: str, kind: ContainerKind, misses: tuple[AllocationSite, ...]) -> Optional[HandWrittenCache]:
        """A cache when the function hands out what the container holds and decides by fit
        whether a held buffer serves the request; None for anything else that stores a buffer."""
        # Names bound to what the container holds: `cands = C.get(k, [])`, `for buf in cands`.
        cached_names: set[str] = set()
        changed = True
        while changed:
            changed = False
            for node in ast.walk(function):
                value = target = None
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    value, target = node.value, node.targets[0]
                elif isinstance(node, (ast.For, ast.comprehension)):
                    value, target = node.iter, node.target
                if value is None or not isinstance(target, ast.Name) or target.id in cached_names:
                    continue
                if _holds_cached(value, container, cached_names):
                    cached_names.add(target.id)
                    changed = True

        hit_returns = []
        for node in ast.walk(function):
            if isinstance(node, ast.Return) and node.value is not None:
                values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                if any(_holds_cached(v, container, cached_names) for v in values):
                    hit_returns.append(node)
        if not hit_returns:
            return None  # stores a buffer but never hands one out: lazy init, not a cache
        hit_returns.sort(key=lambda node: (node.lineno, node.col_offset))
        # Parameters that carry the requested size (not the name, key, dtype or device) and
        # decide how much a miss allocates (`n` in `torch.empty(n, ...)`).
        size_params = {
            p for p in parameters(function)
            if p not in ("self", "cls") and not any(w in p for w in ("name", "key", "dtype", "device"))
            and any(p in names_in(site.call) for site in misses)
        }
        if not _reuses_by_fit(function, container, cached_names, size_params):
            return None  # a lazy singleton (`if X is None: X = ...`): nothing is ever reused for another request
        info = self.facts.index.functions.info.get(function)
        return HandWrittenCache(
            function=function,
            qualname=info.qualname if info else function.name,
            container=container,
            container_kind=kind,
            misses=misses,
            cached_names=frozenset(cached_names),
            hit_returns=tuple(hit_returns),
            size_params=frozenset(size_params),
        )


def _readings(expr: ast.expr, definitions: dict[str, list[ast.expr]], active: frozenset[int], limit: int = 16) -> list[str]:
    """``expr``'s text, followed by the readings of each local it reads (each assigned value
    in turn; a value never stands for itself, so `key = (*key, flag)` reads the earlier key)."""
    if isinstance(expr, ast.Name) and expr.id in definitions:
        values = [v for v in definitions[expr.id] if id(v) not in active]
        found = [t for v in values for t in _readings(v, definitions, active | {id(v)}, limit)]
        return found[:limit] or [expr.id]
    texts = [ast.unparse(expr)]
    for sub in ast.walk(expr):
        if sub is not expr and isinstance(sub, ast.Name) and sub.id in definitions:
            texts = [f"{t} {r}" for t in texts for r in _readings(sub, definitions, active, limit)][:limit]
    return texts


def _holds_cached(expr: ast.AST, container: str, cached_names: set[str]) -> bool:
    """Is ``expr`` the container, an entry of it, or a view of a cached buffer? (Not a
    value computed from one: `(buf != last).any()` hands nothing out.)"""
    while True:
        if ast.unparse(expr) == container:
            return True
        if isinstance(expr, ast.Name):
            return expr.id in cached_names
        if isinstance(expr, ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Attribute) and expr.attr in VIEW_ATTRIBUTES:
            expr = expr.value
        elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and (
            expr.func.attr in VIEW_METHODS or expr.func.attr in ("get", "setdefault", "flatten", "__getitem__")
        ):
            expr = expr.func.value
        else:
            return False


def _reuses_by_fit(function: ast.AST, container: str, cached_names: set[str], size_params: set[str]) -> bool:
    """A reuse cache decides whether a held buffer fits the request: a size test
    (`buf.numel() >= n`, `x.shape[0] > cap`), a scan over candidates (first/best fit),
    or a key made of the requested size."""
    # Locals that describe the held buffer (`cap = self._buf.shape[0] if ... else 0`).
    held = set(cached_names) | {
        n.targets[0].id
        for n in ast.walk(function)
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
        and (container in ast.unparse(n.value) or names_in(n.value) & cached_names)
    }
    for node in ast.walk(function):
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == container and names_in(node.slice) & size_params:
            return True
        if (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "setdefault")
            and ast.unparse(node.func.value) == container and node.args and names_in(node.args[0]) & size_params
        ):
            return True
        if is_ordering(node):
            # about the held buffer (`buf.numel() < n`), not a value being computed
            if container in ast.unparse(node) or names_in(node) & held:
                return True
        if isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.iter, ast.AST):
            iter_text = ast.unparse(node.iter)
            if container in iter_text or any(name == iter_text for name in cached_names):
                return True
    return False
