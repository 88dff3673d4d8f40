"""Which functions of the scanned tree run only at set-up, across modules.

A function that only set-up code calls is set-up code, wherever its callers are: vLLM's
`convert_weight_to_mxfp4_moe_kernel_format` (weight processing) calls
`mxfp4_moe_ep_weights` in another module, which calls `_dequant_mxfp4_experts`, whose
allocations then run once, at load, not per forward step. The scan first summarises each
module it will analyse (``ModuleCalls``: what each of its functions is by its own
evidence, which of them call which, and which imported functions they call), then
``setup_functions`` joins the summaries of the whole tree, and each module is analysed
knowing which of its functions the tree reaches only from set-up code.

A function becomes set-up through its callers when at least one call of it is visible and
every visible caller is set-up (module-level code runs once, at import: a set-up caller of a
private function, not of a public one, which a `__main__` block may drive). That is asked of
private functions and of module-level ones, whose callers are found by name; a public
method is called through attributes of objects the scan does not follow, so it keeps
what its own evidence says. A caller outside the scanned tree is not seen: the tree's
callers decide.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, TypeVar

from allocaudit.auditor.analysis.functions import (
    AnalysisOptions,
    binds_parameters,
    is_fake,
    matches,
    may_inherit,
    module_level_sets_up,
    registered_fakes,
    set_up_evidence,
)
from allocaudit.auditor.analysis.index import ModuleIndex
from allocaudit.auditor.analysis.syntax import FunctionNode

MODULE_LEVEL = ""  # the caller of a call at module level (or in a class body)
V = TypeVar("V")


def by_dotted_suffix(modules: Iterable[tuple[tuple[str, ...], V]]) -> dict[str, V]:
    """Each module's value keyed by every dotted suffix of its name (`a.b.c`, `b.c`, `c`), so
    that relative and absolute imports inside the scanned tree both find it; a suffix two
    modules with different values share is left out."""
    found: dict[str, V] = {}
    ambiguous: set[str] = set()
    for parts, value in modules:
        for i in range(len(parts)):
            key = ".".join(parts[i:])
            if key in found and found[key] != value:
                ambiguous.add(key)
            found[key] = value
    for key in ambiguous:
        del found[key]
    return found


@dataclass(frozen=True)
class ModuleCalls:
    """One module, as the rest of the tree sees it (plain data: cached and sent between processes)."""

    setup: dict[str, Optional[str]]  # qualname -> why it is set-up by its own evidence (None: per call)
    inherits: tuple[str, ...]  # qualnames that may become set-up through their callers
    calls: tuple[tuple[str, str], ...]  # (caller qualname or MODULE_LEVEL, callee qualname) inside the module
    imported_calls: tuple[tuple[str, str], ...]  # (caller qualname or MODULE_LEVEL, dotted name of an imported callee)
    reexports: dict[str, str]  # module-level names bound by an import -> the dotted name they import

    def to_dict(self) -> dict:
        return {
            "setup": self.setup,
            "inherits": list(self.inherits),
            "calls": [list(c) for c in self.calls],
            "imported_calls": [list(c) for c in self.imported_calls],
            "reexports": self.reexports,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "ModuleCalls":
        return cls(
            dict(data["setup"]),
            tuple(data["inherits"]),
            tuple((a, b) for a, b in data["calls"]),
            tuple((a, b) for a, b in data["imported_calls"]),
            dict(data["reexports"]),
        )


def module_calls(index: ModuleIndex) -> ModuleCalls:
    """The summary of one module: each function's own evidence, and the calls it makes.

    Read from the index's one walk, without the name resolution of the analysis (which
    costs several times the walk, and more modules are summarised than analysed): a
    callee is the module's own function, method (`self.f`) or import it names; a
    shadowing local is not followed."""
    return _Summary(index).calls()


class _Summary:
    def __init__(self, index: ModuleIndex) -> None:
        self.package = index.package
        self.options = index.options
        parents = index.parents
        self.defs: list[tuple[FunctionNode, str, Optional[str], Optional[FunctionNode]]] = []  # node, qualname, class, outer def
        self.module_defs: set[str] = set()
        self.methods: dict[str, list[str]] = {}  # method name -> qualnames
        for node in index.defs:
            names, cls, outer = [node.name], None, None
            parent = parents.get(node)
            while parent is not None:
                if isinstance(parent, ast.ClassDef):
                    cls = cls if cls is not None or len(names) > 1 else parent.name
                    names.append(parent.name)
                elif isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    outer = outer or parent
                    names.append(parent.name)
                parent = parents.get(parent)
            qualname = ".".join(reversed(names))
            self.defs.append((node, qualname, cls, outer))
            if len(names) == 1:
                self.module_defs.add(node.name)
            elif cls is not None:
                self.methods.setdefault(node.name, []).append(qualname)
        self.calls_in = [
            (call, index.owner(call), _self_class(index, call)) for call in index.calls if isinstance(call.func, (ast.Name, ast.Attribute))
        ]
        self.binders = {index.owner(c) for c in index.calls if binds_parameters(c, parents.get(c))}
        self.imports: dict[Optional[FunctionNode], dict[str, str]] = {}  # scope (None: module) -> name -> dotted
        for node in index.imports:
            table = self.imports.setdefault(index.owner(node), {})
            for alias in node.names:
                if isinstance(node, ast.Import):
                    table[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
                elif alias.name != "*":
                    base = self._import_base(node)
                    table[alias.asname or alias.name] = f"{base}.{alias.name}" if base else alias.name

    def _import_base(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = list(self.package[: max(len(self.package) - (node.level - 1), 0)])
        return ".".join([*parts, node.module] if node.module else parts)

    def _imported(self, name: str, function: Optional[FunctionNode], outer: dict) -> Optional[str]:
        while function is not None:
            if name in self.imports.get(function, {}):
                return self.imports[function][name]
            function = outer.get(function)
        return self.imports.get(None, {}).get(name)

    def calls(self) -> ModuleCalls:
        options = self.options
        fakes = registered_fakes(call for call, _, _ in self.calls_in)
        qualname_of: dict[FunctionNode, str] = {}
        outer_of: dict[FunctionNode, Optional[FunctionNode]] = {}
        setup: dict[str, Optional[str]] = {}
        fake_of: dict[FunctionNode, bool] = {}
        inherits = []
        for node, qualname, cls, outer in sorted(self.defs, key=lambda d: d[1].count(".")):  # outer before inner
            qualname_of[node], outer_of[node] = qualname, outer
            fake = fake_of[node] = is_fake(node, fakes, outer is not None and fake_of.get(outer, False))
            outer_set_up = qualname_of[outer] if outer is not None and setup.get(qualname_of[outer]) else None
            why = set_up_evidence(node, qualname, fake, node in self.binders, outer_set_up, options.not_per_call, options.per_call)
            setup[qualname] = why if qualname not in setup else setup[qualname] or why
            if why is None and not matches(node.name, options.per_call) and may_inherit(node.name, "." in qualname):
                inherits.append(qualname)
        local, imported = set(), set()
        for call, function, cls in self.calls_in:
            caller = qualname_of.get(function, MODULE_LEVEL) if function is not None else MODULE_LEVEL
            func = call.func
            if isinstance(func, ast.Name):
                dotted = self._imported(func.id, function, outer_of)
                if dotted is None and func.id in self.module_defs:
                    local.add((caller, func.id))
                elif dotted is not None:
                    imported.add((caller, dotted))
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("self", "cls"):
                owner = next((q for q in self.methods.get(func.attr, ()) if cls is None or q.endswith(f"{cls}.{func.attr}")), None)
                candidates = self.methods.get(func.attr, [])
                if owner is None and len(candidates) == 1:
                    owner = candidates[0]
                if owner is not None:
                    local.add((caller, owner))
            elif isinstance(func, ast.Attribute):
                chain = []
                base: ast.AST = func
                while isinstance(base, ast.Attribute):
                    chain.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name):
                    root = self._imported(base.id, function, outer_of)
                    if root is not None:
                        imported.add((caller, ".".join([root, *reversed(chain)])))
        imported = {(c, d) for c, d in imported if d != "torch" and not d.startswith("torch.")}
        return ModuleCalls(setup, tuple(inherits), tuple(sorted(local)), tuple(sorted(imported)), dict(self.imports.get(None, {})))


def _self_class(index: ModuleIndex, call: ast.Call) -> Optional[str]:
    """The class a `self.f(...)` / `cls.f(...)` call sits in (None for any other call)."""
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("self", "cls"):
        found = index.enclosing_class(call)
        return found.name if found is not None else None
    return None


def setup_functions(modules: Mapping[tuple[str, ...], ModuleCalls]) -> dict[tuple[str, ...], dict[str, str]]:
    """For each module (by its dotted parts), the functions the tree reaches only from
    set-up code and not by their own evidence: qualname -> why."""
    by_name = by_dotted_suffix((parts, parts) for parts in modules)

    def target(dotted: str, hops: int = 0) -> Optional[tuple[tuple[str, ...], str]]:
        module, _, name = dotted.rpartition(".")
        parts = by_name.get(module)
        if parts is None:
            return None
        summary = modules[parts]
        if name in summary.setup:
            return parts, name
        origin = summary.reexports.get(name)
        return target(origin, hops + 1) if origin and hops < 3 else None

    Function = tuple[tuple[str, ...], str]
    callers: dict[Function, list[Function]] = {}
    for parts, summary in modules.items():
        for caller, callee in summary.calls:
            callers.setdefault((parts, callee), []).append((parts, caller))
        for caller, dotted in summary.imported_calls:
            found = target(dotted)
            if found is not None:
                callers.setdefault(found, []).append((parts, caller))

    own = {(parts, q): why for parts, summary in modules.items() for q, why in summary.setup.items() if why is not None}
    candidates = [(parts, q) for parts, summary in modules.items() for q in summary.inherits]
    # What each module's own callers decide (the analysis of that module finds it too),
    # then what the whole tree decides: only the difference is news for the module.
    in_module = _fixpoint(own, candidates, {f: [c for c in cs if c[0] == f[0]] for f, cs in callers.items()})
    in_tree = _fixpoint(own, candidates, callers)
    learnt: dict[tuple[str, ...], dict[str, str]] = {}
    for function, why in in_tree.items():
        if function not in in_module:
            learnt.setdefault(function[0], {})[function[1]] = why
    return learnt


def _fixpoint(
    own: Mapping[tuple[tuple[str, ...], str], str],
    candidates: list[tuple[tuple[str, ...], str]],
    callers: Mapping[tuple[tuple[str, ...], str], list[tuple[tuple[str, ...], str]]],
) -> dict[tuple[tuple[str, ...], str], str]:
    """Every function that is set-up: by its own evidence, or (for a candidate) because it
    has callers and every one of them is set-up or module-level code."""
    setup = dict(own)
    changed = True
    while changed:
        changed = False
        for function in candidates:
            if function in setup:
                continue
            sources = callers.get(function)
            at_import = module_level_sets_up(function[1].rpartition(".")[2])
            if not sources or not all((p, q) in setup if q != MODULE_LEVEL else at_import for p, q in sources):
                continue
            first = next((f"{'.'.join(p[-2:])}:{q}" for p, q in sources if q != MODULE_LEVEL), "module level")
            setup[function] = f"`{function[1]}` is only called from set-up code (`{first}`)"
            changed = True
    return setup
