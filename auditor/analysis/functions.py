"""What kind of function an allocation sits in: per-call or not, compiled, a fake kernel...

A per-call function runs on every forward step; ``__init__``, ``create_weights``,
``load_*`` and the like run once. Fake/meta kernels run on fake tensors while tracing,
and allocations inside ``torch.compile``d functions or custom-op implementations are
planned by the compiler or the op's contract, so the codemod leaves them alone.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Iterable, Optional

from allocaudit.auditor.analysis.names import NameResolver

FAKE_REGISTRARS = frozenset({"register_fake", "impl_abstract", "register_meta", "register_fake_impl"})
CUSTOM_OP_DECORATORS = frozenset({"custom_op", "custom_triton_op"})
CUSTOM_OP_REGISTRARS = frozenset({"direct_register_custom_op", "register_custom_op"})
COMPILE_DECORATORS = frozenset({"torch.compile", "torch._dynamo.optimize", "torch.jit.script"})
# Class decorators that compile the class's forward (vLLM's is the common one).
COMPILE_CLASS_DECORATORS = frozenset({"support_torch_compile"})
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
    compiled: bool = False
    fake: bool = False
    custom_op: bool = False
    workspace_helper: bool = False
    reached_from: Optional[str] = None  # the compiled function or custom op whose call runs this one


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
        self.fake_names, self.custom_op_names, self.compiled_names = self._registrations(calls)
        self.info: dict[ast.AST, FunctionInfo] = {}
        self._walk(tree.body, (), None, False)

    def propagate(self, callers: dict[ast.AST, list[Optional[ast.AST]]]) -> None:
        """Carry what callers are onto the module's own functions they call (``callers``
        maps a def to the defs its calls sit in, None at module level): a private helper
        called only from set-up code is set-up code; a function reached from a
        torch.compile'd function or a custom op runs inside it."""
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
                for flag in ("compiled", "custom_op"):
                    if not getattr(current, flag):
                        via = next((ci for ci in caller_infos if ci is not None and getattr(ci, flag)), None)
                        if via is not None:
                            update.update({flag: True, "reached_from": via.reached_from or via.qualname})
                if update:
                    info[callee] = replace(current, **update)
                    changed = True

    def _registrations(self, calls: Iterable[ast.Call]) -> tuple[set[str], set[str], set[str]]:
        """Functions registered by call rather than decorator (`register_fake("op", f)`,
        `direct_register_custom_op(name, f, fake_impl=g)`, `f = torch.compile(f)`)."""
        fake, custom, compiled = set(), set(), set()
        for node in calls:
            callee = _callee_name(node)
            names = [a.id for a in node.args if isinstance(a, ast.Name)]
            for kw in node.keywords:
                if isinstance(kw.value, ast.Name):
                    if kw.arg == "fake_impl":
                        fake.add(kw.value.id)
                    elif kw.arg == "op_func":
                        custom.add(kw.value.id)
            if callee in FAKE_REGISTRARS:
                fake.update(names)
            elif callee in CUSTOM_OP_REGISTRARS:
                custom.update(names)
            elif callee == "impl" and _string_args(node) & META_DISPATCH_KEYS:
                fake.update(names)
            elif callee == "impl":
                custom.update(names)
            elif self.resolver.resolve(node.func, self.resolver.module_scope) & COMPILE_DECORATORS:
                compiled.update(names)
        return fake, custom, compiled

    def _walk(self, body: list[ast.stmt], prefix: tuple[str, ...], outer: Optional[FunctionInfo], compiled_class: bool) -> None:
        for node in body:
            self._visit(node, prefix, outer, compiled_class)

    def _visit(self, node: ast.AST, prefix: tuple[str, ...], outer: Optional[FunctionInfo], compiled_class: bool) -> None:
        if isinstance(node, ast.ClassDef):
            compiles = any(_callee_name(d) in COMPILE_CLASS_DECORATORS for d in node.decorator_list)
            self._walk(node.body, (*prefix, node.name), outer, compiles)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            info = self._describe(node, prefix, outer, compiled_class)
            self.info[node] = info
            self._walk(node.body, (*prefix, node.name), info, False)
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                self._visit(child, prefix, outer, compiled_class)

    def _describe(self, node, prefix, outer: Optional[FunctionInfo], compiled_class: bool) -> FunctionInfo:
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
        custom_op = (
            bool(callees & CUSTOM_OP_DECORATORS)
            or ("impl" in callees and not fake)
            or name in self.custom_op_names
            or (outer is not None and outer.custom_op)
        )
        compiled = (
            bool(resolved & COMPILE_DECORATORS)
            or name in self.compiled_names
            or (compiled_class and name == "forward")
            or (outer is not None and outer.compiled)
        )
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
            fake=fake,
            custom_op=custom_op,
            workspace_helper=helper,
        )
