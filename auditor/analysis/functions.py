"""What kind of function an allocation sits in: per-call or not, compiled, a fake kernel...

A per-call function runs on every forward step; ``__init__``, ``create_weights``,
``load_*`` and the like run once. Fake/meta kernels run on fake tensors while tracing.

Compilation: the body of a function that is always compiled (`@torch.compile`,
`torch._dynamo.optimize`, `f = torch.compile(f)`) is traced by dynamo on every call, so
a `get_empty` there would only ever be the plain `torch.empty` it stands for (the runtime
is transparent to dynamo, and inductor plans the memory): the codemod leaves it alone, as
there is nothing to gain. What such a function calls may also run eagerly from elsewhere,
and a class forward compiled by an engine's decorator (vLLM's `support_torch_compile`)
runs eagerly whenever the engine's compilation is off: those are rewritten. TorchScript
(`torch.jit.script`, `torch.jit.trace`) compiles what it reaches too and cannot script
`get_empty`: its bodies and callees are left alone. Custom-op implementations run eagerly
(an op is opaque to the compiler): they are rewritten like any function.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Iterable, Optional

from allocaudit.auditor.analysis.names import NameResolver

FAKE_REGISTRARS = frozenset({"register_fake", "impl_abstract", "register_meta", "register_fake_impl"})
COMPILE_DECORATORS = frozenset({"torch.compile", "torch._dynamo.optimize"})
SCRIPT_DECORATORS = frozenset({"torch.jit.script", "torch.jit.trace", "torch.jit.script_method"})
MEMO_DECORATORS = frozenset({"cache", "lru_cache", "cached_property"})
META_DISPATCH_KEYS = frozenset({"Meta", "meta", "Fake", "CompositeImplicitAutograd"})


@dataclass(frozen=True)
class AnalysisOptions:
    """Function-name globs from the settings: what runs once, what always runs per call,
    and what builds scratch buffers for its caller."""

    not_per_call: tuple[str, ...]
    per_call: tuple[str, ...]
    workspace_helpers: tuple[str, ...]


@dataclass(frozen=True)
class FunctionInfo:
    qualname: str
    per_call: bool
    why_not_per_call: Optional[str] = None  # evidence when not per-call
    compiled: bool = False  # always traced by dynamo (its own body, not what it calls)
    scripted: bool = False  # compiled by TorchScript, itself or through a caller
    fake: bool = False
    workspace_helper: bool = False
    reached_from: Optional[str] = None  # the scripted function whose call runs this one


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def _callee_name(expr: ast.AST) -> str:
    """Last dotted component of a decorator or callee: `torch.library.register_fake(...)` -> register_fake."""
    if isinstance(expr, ast.Call):
        expr = expr.func
    if isinstance(expr, ast.Attribute):
        return expr.attr
    if isinstance(expr, ast.Name):
        return expr.id
    return ""


def _string_args(call: ast.AST) -> set[str]:
    if not isinstance(call, ast.Call):
        return set()
    values = [*call.args, *(k.value for k in call.keywords)]
    return {v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)}


class FunctionIndex:
    """FunctionInfo for every function of a module, computed once."""

    def __init__(
        self,
        calls: Iterable[ast.Call],
        tree: ast.Module,
        resolver: NameResolver,
        not_per_call: Iterable[str],
        per_call: Iterable[str],
        workspace_helpers: Iterable[str],
    ) -> None:
        self.resolver = resolver
        self.not_per_call = tuple(not_per_call)
        self.per_call = tuple(per_call)
        self.workspace_helpers = tuple(workspace_helpers)
        self.fake_names, self.compiled_names, self.scripted_names = self._registrations(calls)
        self.info: dict[ast.AST, FunctionInfo] = {}
        self._walk(tree.body, (), None)

    def propagate(self, callers: dict[ast.AST, list[Optional[ast.AST]]]) -> None:
        """Carry what callers are onto the module's own functions they call (``callers``
        maps a def to the defs its calls sit in, None at module level): a private helper
        called only from set-up code is set-up code; TorchScript compiles what a scripted
        function calls."""
        info = self.info
        changed = True
        while changed:
            changed = False
            for callee, sources in callers.items():
                current = info[callee]
                caller_infos = [info.get(c) for c in sources]
                update = {}
                private = callee.name.startswith("_") and not callee.name.startswith("__")
                if (
                    current.per_call
                    and private
                    and not matches(callee.name, self.per_call)
                    and all(ci is None or not ci.per_call for ci in caller_infos)
                ):
                    first = next((ci.qualname for ci in caller_infos if ci is not None), "module level")
                    update.update(per_call=False, why_not_per_call=f"private helper `{current.qualname}` is only called from set-up code (`{first}`)")
                if not current.scripted:
                    via = next((ci for ci in caller_infos if ci is not None and ci.scripted), None)
                    if via is not None:
                        update.update(scripted=True, reached_from=via.reached_from or via.qualname)
                if update:
                    info[callee] = replace(current, **update)
                    changed = True

    def _registrations(self, calls: Iterable[ast.Call]) -> tuple[set[str], set[str], set[str]]:
        """Functions registered by call rather than decorator (`register_fake("op", f)`,
        `direct_register_custom_op(name, f, fake_impl=g)`, `f = torch.compile(f)`)."""
        fake, compiled, scripted = set(), set(), set()
        for node in calls:
            callee = _callee_name(node)
            names = [a.id for a in node.args if isinstance(a, ast.Name)]
            fake.update(kw.value.id for kw in node.keywords if kw.arg == "fake_impl" and isinstance(kw.value, ast.Name))
            resolved = self.resolver.resolve(node.func, self.resolver.module_scope)
            if callee in FAKE_REGISTRARS or (callee == "impl" and _string_args(node) & META_DISPATCH_KEYS):
                fake.update(names)
            elif resolved & COMPILE_DECORATORS:
                compiled.update(names)
            elif resolved & SCRIPT_DECORATORS:
                scripted.update(names)
        return fake, compiled, scripted

    def _walk(self, body: list[ast.stmt], prefix: tuple[str, ...], outer: Optional[FunctionInfo]) -> None:
        for node in body:
            self._visit(node, prefix, outer)

    def _visit(self, node: ast.AST, prefix: tuple[str, ...], outer: Optional[FunctionInfo]) -> None:
        if isinstance(node, ast.ClassDef):
            self._walk(node.body, (*prefix, node.name), outer)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            info = self._describe(node, prefix, outer)
            self.info[node] = info
            self._walk(node.body, (*prefix, node.name), info)
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                self._visit(child, prefix, outer)

    def _describe(self, node, prefix, outer: Optional[FunctionInfo]) -> FunctionInfo:
        name = node.name
        qualname = ".".join((*prefix, name))
        decorators = node.decorator_list
        callees = {_callee_name(d) for d in decorators}
        resolved = set()
        for d in decorators:
            resolved |= self.resolver.resolve(d.func if isinstance(d, ast.Call) else d, self.resolver.module_scope)
        dispatch_keys = set().union(*(_string_args(d) for d in decorators)) if decorators else set()

        fake = (
            bool(callees & FAKE_REGISTRARS)
            or ("impl" in callees and bool(dispatch_keys & META_DISPATCH_KEYS))
            or name in self.fake_names
            or matches(name, ("*_fake", "fake_*", "_fake_*", "*_meta", "meta_*", "_meta_*"))
            or (outer is not None and outer.fake)
        )
        compiled = bool(resolved & COMPILE_DECORATORS) or name in self.compiled_names or (outer is not None and outer.compiled)
        scripted = bool(resolved & SCRIPT_DECORATORS) or name in self.scripted_names or (outer is not None and outer.scripted)
        helper = matches(name, self.workspace_helpers)

        why = None
        if matches(name, self.per_call):
            why = None
        elif fake:
            why = f"fake/meta kernel `{qualname}` runs on fake tensors while tracing, not per call"
        elif matches(name, self.not_per_call):
            why = f"`{qualname}` runs once (set-up, not per call)"
        elif callees & MEMO_DECORATORS:
            why = f"`{qualname}` is memoized: it runs once per distinct argument"
        elif outer is not None and not outer.per_call:
            why = f"nested in `{outer.qualname}`, which is not per call"
        return FunctionInfo(
            qualname=qualname,
            per_call=why is None,
            why_not_per_call=why,
            compiled=compiled,
            scripted=scripted,
            fake=fake,
            workspace_helper=helper,
        )
