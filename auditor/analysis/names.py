"""Which names in a module refer to torch, its factories, or aliases of them.

libcst's QualifiedNameProvider answers this through full scope analysis, which costs
about seven times the parse on a large tree. The scan needs far less: only whether the
root of a callee is torch (or an alias of a factory), following imports, assignments and
the shadowing of a name by a parameter or a local binding. This module does exactly that,
scope by scope, flow-insensitively: a name bound both to torch and to something else in
one scope is treated as not torch.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

from allocaudit.auditor.analysis.syntax import parameters

ScopeNode = Union[ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef]

# Bound to something we do not follow (a parameter, a loop variable, another module...).
OPAQUE = "<opaque>"


@dataclass
class Scope:
    node: ScopeNode
    parent: Optional["Scope"]
    # name -> list of binding sources: an ast expression (assigned value), an imported
    # qualified name (str), or OPAQUE.
    bindings: dict[str, list[Union[ast.expr, str]]] = field(default_factory=dict)
    declared_global: set[str] = field(default_factory=set)

    @property
    def is_class(self) -> bool:
        return isinstance(self.node, ast.ClassDef)

    def bind(self, name: str, source: Union[ast.expr, str]) -> None:
        if name in self.declared_global:
            return
        self.bindings.setdefault(name, []).append(source)


class NameResolver:
    """Resolves expressions of one module to the torch names they may denote.

    ``exports`` maps a module (dotted path) to the factory aliases it defines at module
    level, so that ``from .alloc_utils import zeros_cuda`` resolves across files of the
    scanned tree. ``package`` is the dotted package of this module, for relative imports.
    """

    def __init__(
        self,
        tree: ast.Module,
        package: tuple[str, ...] = (),
        exports: Optional[Mapping[str, Mapping[str, frozenset[str]]]] = None,
    ) -> None:
        self.package = package
        self.exports = exports or {}
        self.scope_of: dict[ast.AST, Scope] = {}
        self.module_scope = self._build(tree, None)
        self._resolving: set[int] = set()

    # -- building ---------------------------------------------------------------------

    def _build(self, node: ScopeNode, parent: Optional[Scope]) -> Scope:
        scope = Scope(node, parent)
        self.scope_of[node] = scope
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for name in parameters(node, starred=True):
                scope.bind(name, OPAQUE)
            body = node.body if isinstance(node.body, list) else [node.body]
        else:
            body = node.body
        for stmt in body:
            self._collect(stmt, scope)
        return scope

    def _collect(self, node: ast.AST, scope: Scope) -> None:
        """Record the bindings ``node`` makes in ``scope``; open scopes for nested defs."""
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope.bind(node.name, OPAQUE)
            for dec in node.decorator_list:
                self._collect(dec, scope)
            if not isinstance(node, ast.ClassDef):
                for default in (*node.args.defaults, *node.args.kw_defaults):
                    if default is not None:
                        self._collect(default, scope)
            self._build(node, scope)
            return
        if isinstance(node, ast.Lambda):
            self._build(node, scope)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            # Comprehension variables live in their own scope; their bodies are expressions
            # of the enclosing scope for our purposes.
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.comprehension):
                    self._collect(child.iter, scope)
                    for cond in child.ifs:
                        self._collect(cond, scope)
                else:
                    self._collect(child, scope)
            return
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            scope.declared_global.update(node.names)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    scope.bind(alias.asname, alias.name)
                else:
                    root = alias.name.split(".")[0]
                    scope.bind(root, root)
            return
        if isinstance(node, ast.ImportFrom):
            base = self._import_base(node)
            for alias in node.names:
                if alias.name == "*":
                    continue
                scope.bind(alias.asname or alias.name, f"{base}.{alias.name}" if base else alias.name)
            return
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self._bind_target(target, node.value, scope)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            value = node.value if not isinstance(node, ast.AugAssign) else None
            self._bind_target(node.target, value, scope)
        elif isinstance(node, ast.NamedExpr):
            self._bind_target(node.target, node.value, scope)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self._bind_target(node.target, None, scope)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    self._bind_target(item.optional_vars, None, scope)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            scope.bind(node.name, OPAQUE)
        elif isinstance(node, ast.MatchAs) and node.name:
            scope.bind(node.name, OPAQUE)
        for child in ast.iter_child_nodes(node):
            self._collect(child, scope)

    def _bind_target(self, target: ast.AST, value: Optional[ast.expr], scope: Scope) -> None:
        if isinstance(target, ast.Name):
            scope.bind(target.id, value if value is not None else OPAQUE)
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = value.elts if isinstance(value, (ast.Tuple, ast.List)) else None
            for i, elt in enumerate(target.elts):
                sub = values[i] if values is not None and len(values) == len(target.elts) else None
                self._bind_target(elt.value if isinstance(elt, ast.Starred) else elt, sub, scope)

    def _import_base(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        keep = len(self.package) - (node.level - 1)
        parts = list(self.package[: max(keep, 0)])
        if node.module:
            parts.append(node.module)
        return ".".join(parts)

    # -- queries ----------------------------------------------------------------------

    def lookup(self, name: str, scope: Scope) -> Optional[tuple[Scope, list[Union[ast.expr, str]]]]:
        """The scope that binds ``name`` as seen from ``scope`` (Python's LEGB, less builtins)."""
        current: Optional[Scope] = scope
        first = True
        while current is not None:
            # A class body's names are not visible from the functions nested in it.
            if (first or not current.is_class) and name in current.bindings:
                return current, current.bindings[name]
            if name in current.declared_global and current is not self.module_scope:
                current = self.module_scope  # `global x` (a `global` at module level changes nothing)
                first = True
                continue
            first = False
            current = current.parent
        return None

    def resolve(self, expr: ast.AST, scope: Scope) -> frozenset[str]:
        """Qualified torch names ``expr`` may denote in ``scope`` (empty: not torch)."""
        if isinstance(expr, ast.Name):
            found = self.lookup(expr.id, scope)
            if found is None:
                return frozenset()
            owner, sources = found
            result: set[str] = set()
            for source in sources:
                resolved = self._resolve_source(source, owner)
                if not resolved:
                    return frozenset()  # shadowed by something that is not torch
                result |= resolved
            return frozenset(result)
        if isinstance(expr, ast.Attribute):
            return frozenset(f"{base}.{expr.attr}" for base in self.resolve(expr.value, scope))
        if isinstance(expr, ast.IfExp):
            return self.resolve(expr.body, scope) | self.resolve(expr.orelse, scope)
        return frozenset()

    def _resolve_source(self, source: Union[ast.expr, str], owner: Scope) -> frozenset[str]:
        if source == OPAQUE:
            return frozenset()
        if isinstance(source, str):
            if source == "torch" or source.startswith("torch."):
                return frozenset({source})
            module, _, name = source.rpartition(".")
            exported = self.exports.get(module, {}).get(name)
            return exported or frozenset()
        key = id(source)
        if key in self._resolving:  # x = x.foo: a cycle is not torch
            return frozenset()
        self._resolving.add(key)
        try:
            return self.resolve(source, owner)
        finally:
            self._resolving.discard(key)

    def imported(self, expr: ast.AST, scope: Scope) -> Optional[str]:
        """The dotted name ``expr`` denotes when it is an imported name or an attribute of
        one (`f` after `from .utils import f`, `m.f` after `import pkg.mod as m`), else None."""
        if isinstance(expr, ast.Attribute):
            base = self.imported(expr.value, scope)
            return f"{base}.{expr.attr}" if base else None
        if not isinstance(expr, ast.Name):
            return None
        found = self.lookup(expr.id, scope)
        if found is None or len(found[1]) != 1 or not isinstance(found[1][0], str) or found[1][0] == OPAQUE:
            return None
        return found[1][0]

    def module_aliases(self, is_factory) -> dict[str, frozenset[str]]:
        """Module-level names bound to torch factories: what this module exports."""
        out = {}
        for name in self.module_scope.bindings:
            resolved = self.resolve(ast.Name(id=name, ctx=ast.Load()), self.module_scope)
            if resolved and all(is_factory(q) for q in resolved):
                out[name] = resolved
        return out
