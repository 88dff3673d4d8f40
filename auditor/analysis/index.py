"""Navigation over one module: parents, calls, scopes, the module's own functions.

Everything else in the analysis asks its questions about the tree here: which def a node
belongs to, what a name resolves to, which function of this module a call calls and which
parameter an argument binds, whether a call is a torch factory. Nothing here judges a site.
"""

from __future__ import annotations

import ast
from typing import Mapping, Optional

from allocaudit.auditor.analysis.factories import TENSOR_METHOD_FACTORIES, TORCH_FACTORIES
from allocaudit.auditor.analysis.functions import AnalysisOptions, FunctionIndex, binds_parameters
from allocaudit.auditor.analysis.names import NameResolver
from allocaudit.auditor.analysis.syntax import FunctionNode, positional_parameters


class ModuleIndex:
    def __init__(
        self,
        tree: ast.Module,
        options: AnalysisOptions,
        package: tuple[str, ...] = (),
        exports: Optional[Mapping[str, Mapping[str, frozenset[str]]]] = None,
        watch: frozenset[str] = frozenset(),
        setup: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.tree = tree
        self.options = options
        self.package = package
        self.exports = exports or {}
        self.setup = setup or {}  # functions the tree's callers make set-up (`program.setup_functions`)
        # One pass over the tree: parent links, every call, and whether any identifier is
        # one of ``watch``. Most files that pass the scan's text prefilter only mention a
        # factory in passing (`torch.cuda.empty_cache()`) and need no name resolution.
        self.parents: dict[ast.AST, ast.AST] = {}
        self.calls: list[ast.Call] = []
        self.defs: list[FunctionNode] = []
        self.imports: list[ast.AST] = []
        self.mentions_watched = False
        stack: list[ast.AST] = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Call):
                self.calls.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.defs.append(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                self.imports.append(node)
            elif isinstance(node, ast.Attribute):
                self.mentions_watched |= node.attr in watch
            elif isinstance(node, ast.Name):
                self.mentions_watched |= node.id in watch
            elif isinstance(node, ast.alias):
                self.mentions_watched |= (node.asname or node.name).rpartition(".")[2] in watch or node.name in watch
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
                stack.append(child)
        self.calls.reverse()  # source order, for stable output
        self._resolver: Optional[NameResolver] = None
        self._functions: Optional[FunctionIndex] = None
        self._module_functions = {
            n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        self._methods = {
            (cls, n.name): n
            for cls in tree.body
            if isinstance(cls, ast.ClassDef)
            for n in cls.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        }

    # Scopes and function facts are built on first use: a file that only mentions a
    # factory in passing never needs them.
    @property
    def resolver(self) -> NameResolver:
        if self._resolver is None:
            self._resolver = NameResolver(self.tree, self.package, self.exports)
        return self._resolver

    @property
    def functions(self) -> FunctionIndex:
        """What each function of the module is (per-call, compiled, a custom op...),
        with what its callers are carried onto the module's own functions they call."""
        if self._functions is None:
            options = self.options
            binders = {self.owner(c) for c in self.calls if binds_parameters(c, self.parents.get(c))}
            self._functions = FunctionIndex(
                self.calls, self.tree, self.resolver, options.not_per_call, options.per_call, options.workspace_helpers, binders
            )
            callers: dict[ast.AST, list[Optional[ast.AST]]] = {}
            for call in self.calls:
                callee = self.local_callee(call)
                if callee is not None and callee in self._functions.info:
                    callers.setdefault(callee, []).append(self.owner(call))
            self._functions.propagate(callers, self.setup)
        return self._functions

    # -- navigation -----------------------------------------------------------------------

    def resolve(self, expr: ast.AST, at: ast.AST) -> frozenset[str]:
        """Qualified torch names ``expr`` may denote in the scope of ``at``."""
        return self.resolver.resolve(expr, self.resolver.scope_of[self._scope_node(at)])

    def owner(self, node: ast.AST) -> Optional[FunctionNode]:
        """The def (not lambda) an expression belongs to; None at module or class level."""
        parent = self.parents.get(node)
        while parent is not None:
            if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return parent
            if isinstance(parent, ast.ClassDef):
                return None
            parent = self.parents.get(parent)
        return None

    def enclosing_class(self, node: ast.AST) -> Optional[ast.ClassDef]:
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, ast.ClassDef):
            parent = self.parents.get(parent)
        return parent

    def _scope_node(self, node: ast.AST) -> ast.AST:
        parent = self.parents.get(node)
        while parent is not None and parent not in self.resolver.scope_of:
            parent = self.parents.get(parent)
        return parent if parent is not None else self.tree

    # -- callees and parameters -----------------------------------------------------------

    def local_callee(self, call: ast.Call) -> Optional[FunctionNode]:
        """The def of this module that ``call`` calls: `f(...)` or `self.f(...)`."""
        func = call.func
        if isinstance(func, ast.Name):
            if func.id not in self._module_functions:
                return None
            found = self.resolver.lookup(func.id, self.resolver.scope_of[self._scope_node(call)])
            if found is not None and found[0] is self.resolver.module_scope:
                return self._module_functions.get(func.id)
            return None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("self", "cls"):
            cls = self.enclosing_class(call)
            if cls is None:
                return None
            found = self._methods.get((cls, func.attr))
            if found is None:  # inherited from another class of this module, if only one defines it
                candidates = self.methods_named(func.attr)
                found = candidates[0] if len(candidates) == 1 else None
            return found
        return None

    def imported_name(self, call: ast.Call) -> Optional[str]:
        """The dotted name of an imported function that ``call`` calls (`pkg.mod.f`)."""
        return self.resolver.imported(call.func, self.resolver.scope_of[self._scope_node(call)])

    def module_function(self, name: str) -> Optional[FunctionNode]:
        """The module-level def called ``name``."""
        return self._module_functions.get(name)

    def methods_named(self, name: str) -> list[FunctionNode]:
        """The methods called ``name`` of the module's top-level classes."""
        return [fn for (_, method), fn in self._methods.items() if method == name]

    @staticmethod
    def parameter_for(function: FunctionNode, call: ast.Call, arg: ast.AST) -> Optional[str]:
        """The parameter of ``function`` that ``arg`` (an argument or keyword of ``call``) binds."""
        params = positional_parameters(function)
        if isinstance(call.func, ast.Attribute) and params and params[0] in ("self", "cls"):
            params = params[1:]
        if isinstance(arg, ast.keyword):
            return arg.arg
        if arg in call.args and not any(isinstance(a, ast.Starred) for a in call.args):
            index = call.args.index(arg)
            if index < len(params):
                return params[index]
            return function.args.vararg.arg if function.args.vararg else None
        return None

    # -- factories ------------------------------------------------------------------------

    def factory_of(self, call: ast.Call) -> Optional[tuple[str, Optional[str]]]:
        """(api, factory) when ``call`` is a factory call, else None. The api is
        "torch.zeros", "Tensor.new_zeros", or "torch.empty|torch.zeros" for an alias of
        several factories (whose factory is then None)."""
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in TENSOR_METHOD_FACTORIES:
            if not self.resolve(func.value, call):  # x.new_zeros(...), not some torch module attribute
                return f"Tensor.{func.attr}", func.attr
        names = self.resolve(func, call)
        if not names:
            return None
        factories = sorted(n for n in names if n.startswith("torch.") and n[6:] in TORCH_FACTORIES)
        if len(factories) != len(names):
            return None
        if len(factories) == 1:
            return factories[0], factories[0][6:]
        return "|".join(factories), None
