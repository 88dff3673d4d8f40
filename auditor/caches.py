"""Hand-written workspace caches, and what they check before they hand a buffer out.

A cache is a function that hands out a view, slice or reinterpretation of a buffer held
in longer-lived state (a class attribute, a module global, an attribute of ``self``)
and, on a miss, allocates a new buffer and stores it there. Engines write them as a dict
of lists scanned first-fit, a dict keyed by name holding one buffer, best-fit over a
list of blocks with a reserved flag, a byte buffer reinterpreted with ``.view(dtype)``,
or a workspace manager object. The facts here are what the AA2xx rules read; like the
rest of the auditor they are syntactic evidence, flow-insensitive, inside one function.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

from allocaudit.auditor.escapes import CONTAINER_ADDERS, VIEW_ATTRIBUTES, VIEW_METHODS
from allocaudit.auditor.sites import AllocationSite, ModuleFacts

ZEROING = frozenset({"zeros", "zeros_like", "new_zeros"})
# Words that, in a condition, show the cache knows about CUDA graph capture or pins buffers.
CAPTURE_WORDS = ("capturing", "captur", "pinned", "pin", "reserved", "graph", "frozen", "freeze", "locked")
EVICTION_METHODS = frozenset({"pop", "popitem", "clear", "remove", "discard", "move_to_end"})
DESTRUCTIVE_METHODS = frozenset({"pop", "popitem", "clear", "remove", "discard"})
BOUND_WORDS = ("max_", "maxsize", "capacity", "limit", "budget", "max_entries", "evict")


def root_of(expr: ast.AST) -> ast.AST:
    """The container an access reads or writes: `C.get(k)`, `C[k]`, `C.setdefault(k, [])`
    and `C[k][i]` all root at `C`."""
    while True:
        if isinstance(expr, ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr in ("get", "setdefault", "pop"):
            expr = expr.func.value
        else:
            return expr


def _text(node: ast.AST) -> str:
    return ast.unparse(node)


def _names_in(expr: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}


def _size_params(params) -> set[str]:
    """Parameters that carry the requested size (not the name, key, dtype or device)."""
    return {p for p in params if p not in ("self", "cls") and not any(w in p for w in ("name", "key", "dtype", "device"))}


def _fixed_device(site: AllocationSite) -> bool:
    """A literal device with an index (`'cuda:1'`, `torch.device('cuda', 0)`): reuse cannot
    cross devices. Plain `'cuda'` means the current device, which a caller can change."""
    text = site.device.text or ""
    return site.device.form == "cuda" and (":" in text or "," in text or text.isdigit())


@dataclass
class HandWrittenCache:
    function: ast.AST
    qualname: str
    container: str  # the container as written, e.g. "self._buffers" or "Moe.recorder"
    container_kind: str  # "class attribute", "module global" or "instance attribute"
    container_node: ast.AST
    misses: list[AllocationSite] = field(default_factory=list)
    hit_returns: list[ast.Return] = field(default_factory=list)
    dtype_param: Optional[str] = None
    device_param: Optional[str] = None
    checks_dtype: bool = False
    checks_device: bool = False
    rezeroes: bool = False
    appends: list[ast.Call] = field(default_factory=list)  # growth by appending to entries
    key_growth: Optional[ast.AST] = None  # a store keyed by the requested size/shape
    bounded: bool = False
    drops: list[ast.AST] = field(default_factory=list)  # where a cached buffer is replaced or dropped
    capture_aware: bool = False

    @property
    def shared_by_name(self) -> bool:
        """A general-purpose cache: callers ask it by name for a dtype (the seed's
        `get_empty(shape, dtype, name)`), rather than one buffer with one purpose."""
        params = [a.arg for a in (*self.function.args.posonlyargs, *self.function.args.args, *self.function.args.kwonlyargs)]
        return self.dtype_param is not None and any("name" in p or p == "key" for p in params)

    @property
    def zeroing_miss(self) -> Optional[AllocationSite]:
        # Only a CUDA buffer handed out as allocated: a table built on the CPU and moved
        # (`torch.zeros(n).to(device)`, then filled) is a computed constant, not a workspace.
        return next(
            (s for s in self.misses if s.device.on_cuda and not s.moved and (s.factory in ZEROING or (s.factory == "full" and "0" in _text(s.call)))),
            None,
        )


class CacheFinder:
    def __init__(self, facts: ModuleFacts) -> None:
        self.facts = facts
        self.parents = facts.parents
        self.class_attributes = {
            f"{node.name}.{t.id}"
            for node in facts.tree.body
            if isinstance(node, ast.ClassDef)
            for stmt in node.body
            if isinstance(stmt, (ast.Assign, ast.AnnAssign))
            for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
            if isinstance(t, ast.Name)
        }
        self.module_globals = {
            t.id
            for stmt in facts.tree.body
            if isinstance(stmt, (ast.Assign, ast.AnnAssign))
            for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
            if isinstance(t, ast.Name)
        }

    def kind_of(self, container: ast.AST, function: ast.AST) -> Optional[str]:
        text = _text(container)
        if isinstance(container, ast.Attribute) and isinstance(container.value, ast.Name):
            owner = container.value.id
            if owner in ("self", "cls"):
                cls = self.facts.analyzer._enclosing_class(function)
                if cls is not None and f"{cls.name}.{container.attr}" in self.class_attributes:
                    return "class attribute"
                return "instance attribute"
            if text in self.class_attributes:
                return "class attribute"
            return None
        if isinstance(container, ast.Name) and container.id in self.module_globals:
            return "module global"
        return None

    def caches(self) -> list[HandWrittenCache]:
        by_function: dict[ast.AST, list[tuple[AllocationSite, ast.AST]]] = {}
        for site in self.facts.sites:
            if not site.device.on_cuda or (site.device.text or "").startswith("self."):
                # A cache of CPU tensors is none of our business; `self.device` may well be
                # the CPU (CPU backends share the shape of CUDA ones), so it is not evidence.
                continue
            function = self.facts.analyzer.owner(site.call)
            for target in site.stored_into:
                by_function.setdefault(function, []).append((site, root_of(target)))
        found = []
        for function, stored in by_function.items():
            if function is None:
                continue
            for container in {_text(root): root for _, root in stored}.values():
                kind = self.kind_of(container, function)
                if kind is None:
                    continue
                cache = self._describe(function, container, kind, [s for s, r in stored if _text(r) == _text(container)])
                if cache is not None:
                    found.append(cache)
        return found

    # -- one cache ----------------------------------------------------------------------

    @staticmethod
    def _holds_cached(expr: ast.AST, container: str, cached_names: set[str]) -> bool:
        """Is ``expr`` the container, an entry of it, or a view of a cached buffer? (Not a
        value computed from one: `(buf != last).any()` hands nothing out.)"""
        while True:
            if _text(expr) == container:
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

    @staticmethod
    def _reuses_by_fit(function: ast.AST, container: str, cached_names: set[str], size_params: set[str]) -> bool:
        """A reuse cache decides whether a held buffer fits the request: a size test
        (`buf.numel() >= n`, `x.shape[0] > cap`), a scan over candidates (first/best fit),
        or a key made of the requested size."""
        # Locals that describe the held buffer (`cap = self._buf.shape[0] if ... else 0`).
        held = set(cached_names) | {
            n.targets[0].id
            for n in ast.walk(function)
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
            and (container in _text(n.value) or _names_in(n.value) & cached_names)
        }
        for node in ast.walk(function):
            if isinstance(node, ast.Subscript) and _text(node.value) == container and _names_in(node.slice) & size_params:
                return True
            if (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "setdefault")
                and _text(node.func.value) == container and node.args and _names_in(node.args[0]) & size_params
            ):
                return True
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in node.ops):
                # about the held buffer (`buf.numel() < n`), not a value being computed
                if container in _text(node) or _names_in(node) & held:
                    return True
            if isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.iter, ast.AST):
                iter_text = _text(node.iter)
                if container in iter_text or any(name == iter_text for name in cached_names):
                    return True
        return False

    def _eager_only(self, function: ast.AST) -> bool:
        """The function or its class says it only runs eagerly (never under graph capture)."""
        owners = [function, self.facts.analyzer._enclosing_class(function)]
        return any(owner is not None and "eager" in (ast.get_docstring(owner) or "").lower() for owner in owners)

    def _inserts_only(self, store: ast.AST, function: ast.AST) -> bool:
        """A store under `if buf is None:` / `if key not in C:` fills an empty slot; one under
        `if buf is None or buf.numel() < n:` replaces a buffer that was too small."""
        tests = []
        parent = self.parents.get(store)
        while parent is not None and parent is not function:
            if isinstance(parent, ast.If):
                tests.append(parent.test)
            parent = self.parents.get(parent)
        if not tests:
            return False
        for test in tests:
            for node in ast.walk(test):
                if isinstance(node, ast.Compare) and not all(isinstance(op, (ast.Is, ast.NotIn, ast.In, ast.IsNot)) for op in node.ops):
                    return False
        return True

    def _reads(self, node: ast.AST, container: str) -> bool:
        return any(_text(sub) == container for sub in ast.walk(node) if isinstance(sub, (ast.Attribute, ast.Name)))

    def _describe(self, function, container: ast.AST, kind: str, misses: list[AllocationSite]) -> Optional[HandWrittenCache]:
        text = _text(container)
        info = self.facts.functions.info.get(function)
        cache = HandWrittenCache(function, info.qualname if info else function.name, text, kind, container, misses)
        params = [a.arg for a in (*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs)]
        cache.dtype_param = next((p for p in params if "dtype" in p), None)
        cache.device_param = next((p for p in params if "device" in p), None)

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
                if self._holds_cached(value, text, cached_names):
                    cached_names.add(target.id)
                    changed = True

        for node in ast.walk(function):
            if isinstance(node, ast.Return) and node.value is not None:
                values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                if any(self._holds_cached(v, text, cached_names) for v in values):
                    cache.hit_returns.append(node)
        if not cache.hit_returns:
            return None  # stores a buffer but never hands one out: lazy init, not a cache
        # Parameters that decide how much a miss allocates (`n` in `torch.empty(n, ...)`).
        size_params = {p for p in _size_params(params) if any(p in _names_in(site.call) for site in misses)}
        if not self._reuses_by_fit(function, text, cached_names, size_params):
            return None  # a lazy singleton (`if X is None: X = ...`): nothing is ever reused for another request

        conditions = [n.test for n in ast.walk(function) if isinstance(n, (ast.If, ast.While, ast.IfExp))]
        conditions += [n for n in ast.walk(function) if isinstance(n, ast.Compare)]
        keys = [
            sub.slice if isinstance(sub, ast.Subscript) else (sub.args[0] if sub.args else None)
            for sub in ast.walk(function)
            if (isinstance(sub, ast.Subscript) and _text(sub.value) == text)
            or (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in ("get", "setdefault") and _text(sub.func.value) == text)
        ]
        keys = [k for k in keys if k is not None]
        # A key built beforehand (`key = (name, dtype, device)`) counts as what it holds.
        assigned = {
            n.targets[0].id: n.value
            for n in ast.walk(function)
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
        }
        keys = [assigned.get(k.id, k) if isinstance(k, ast.Name) else k for k in keys]
        condition_text = " ".join(_text(c) for c in conditions)
        key_text = " ".join(_text(k) for k in keys)
        returned_text = " ".join(_text(r.value) for r in cache.hit_returns)

        compared = {n.id for c in conditions for n in ast.walk(c) if isinstance(n, ast.Name)}
        cache.checks_dtype = (
            cache.dtype_param is None
            or ".dtype" in condition_text
            or cache.dtype_param in compared  # `dtype != current_dtype`
            or (cache.dtype_param in key_text)
            or f".view({cache.dtype_param}" in returned_text  # a byte buffer reinterpreted
        )
        cache.checks_device = (
            ".device" in condition_text
            or (cache.device_param is not None and cache.device_param in compared)
            or "device" in key_text
            or all(_fixed_device(s) or not s.device.on_cuda for s in misses)
            # A cache held by an object (a backend, a layer) serves that object's device.
            or kind == "instance attribute"
        )
        fit_tested = any(
            isinstance(c, ast.Compare) and any(isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in c.ops)
            and (text in _text(c) or _names_in(c) & cached_names)
            for c in conditions
        )
        function_text = _text(function)
        cache.rezeroes = ".zero_(" in function_text or ".fill_(0" in function_text or "torch.zero_(" in function_text
        cache.capture_aware = any(word in condition_text.lower() for word in CAPTURE_WORDS) or self._eager_only(function)

        for node in ast.walk(function):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                receiver = node.func.value
                if node.func.attr in CONTAINER_ADDERS and (self._reads(receiver, text) or _text(receiver) in cached_names):
                    cache.appends.append(node)
                if node.func.attr in DESTRUCTIVE_METHODS and (self._reads(receiver, text) or _text(receiver) in cached_names):
                    cache.drops.append(node)
            elif isinstance(node, ast.Delete):
                if any(self._reads(t, text) or _text(t) in cached_names for t in node.targets):
                    cache.drops.append(node)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    root = root_of(target)
                    replaces_entry = isinstance(target, ast.Subscript) and (_text(root) == text or _text(root) in cached_names)
                    replaces_buffer = _text(target) == text and not isinstance(node.value, (ast.Dict, ast.List))
                    if (replaces_entry or replaces_buffer) and not self._inserts_only(node, function):
                        cache.drops.append(node)
                    # A key of the requested size grows the cache; where a size test decides
                    # reuse, the key is a category (`width`, a group) instead.
                    if replaces_entry and _text(root) == text and _names_in(target.slice) & size_params and not fit_tested:
                        cache.key_growth = node
        for found in (cache.hit_returns, cache.appends, cache.drops):
            found.sort(key=lambda node: (node.lineno, node.col_offset))
        module_text = _text(self.facts.tree)
        cache.bounded = any(f"{text}.{m}(" in module_text for m in EVICTION_METHODS) or any(
            w in condition_text for w in BOUND_WORDS
        ) or f"len({text})" in module_text
        return cache

def can_release(facts: ModuleFacts, container: str) -> bool:
    """Whether anything in the module can release a class-level or global cache: a
    `.clear()`/`.pop()`, a `del`, or an assignment inside a function."""
    attribute = "." + container.rpartition(".")[2]

    def names_it(node: ast.AST) -> bool:
        text = _text(node)
        return text == container or text.endswith(attribute)

    for node in ast.walk(facts.tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("clear", "pop", "popitem"):
            if names_it(node.func.value):
                return True
        elif isinstance(node, ast.Delete) and any(names_it(root_of(t)) for t in node.targets):
            return True
        elif isinstance(node, ast.Assign) and not isinstance(facts.parents.get(node), (ast.ClassDef, ast.Module)):
            if any(names_it(t) for t in node.targets):
                return True
    return False


def hand_written_caches(facts: ModuleFacts) -> list[HandWrittenCache]:
    """The module's hand-written caches (computed once per module and kept on the facts)."""
    if facts.caches is None:
        facts.caches = CacheFinder(facts).caches() if facts.sites else []
    return facts.caches
