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
from typing import Iterable, Mapping, Optional

from allocaudit.auditor.analysis.names import NameResolver

FAKE_REGISTRARS = frozenset({"register_fake", "impl_abstract", "register_meta", "register_fake_impl"})
COMPILE_DECORATORS = frozenset({"torch.compile", "torch._dynamo.optimize"})
SCRIPT_DECORATORS = frozenset({"torch.jit.script", "torch.jit.trace", "torch.jit.script_method"})
# A function named for what it does to weights (`convert_weight_to_...`, `_align_fp8_moe_weights`,
# `process_weights_for_marlin`) runs when weights are loaded: a verb of these and a word
# for weights among the parts of its name. (`shuffle_weighted_sum` is no weight: a word is
# a whole part.)
WEIGHT_WORDS = frozenset({"weight", "weights", "qweight", "qweights"})
WEIGHT_VERBS = frozenset(
    {
        "load", "loader", "process", "postprocess", "preprocess", "convert", "prepare", "shuffle", "unshuffle",
        "align", "repack", "prepack", "pack", "requant", "quant", "quantize", "dequant", "dequantize", "pad",
        "permute", "interleave", "rearrange", "swizzle", "transform", "update", "create", "init", "register",
    }
)
# Calls that bind module parameters: the function processes weights.
PARAMETER_BINDERS = frozenset({"replace_parameter", "copy_or_rebind_param", "register_parameter", "set_weight_attrs"})
PARAMETER_TYPES = frozenset({"Parameter", "ModelWeightParameter"})
MEMO_DECORATORS = frozenset({"cache", "lru_cache", "cached_property"})
META_DISPATCH_KEYS = frozenset({"Meta", "meta", "Fake", "CompositeImplicitAutograd"})


@dataclass(frozen=True)
class AnalysisOptions:
    """Function-name globs from the settings: what runs once, what always runs per call,
    and what builds scratch buffers for its caller; and whether `fix` rewrites allocations of
    every size (`all-sizes`) or only those whose size may grow with the batch."""

    not_per_call: tuple[str, ...]
    per_call: tuple[str, ...]
    workspace_helpers: tuple[str, ...]
    all_sizes: bool = False


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
    forced_per_call: bool = False  # named by the `per-call` setting: callers do not change it
    inherits: bool = False  # may become set-up through its callers: a private function, or a module-level one


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
        binders: Iterable[ast.AST] = (),
    ) -> None:
        self.resolver = resolver
        self.binders = set(binders)  # the defs that bind module parameters (`binds_parameters`)
        self.not_per_call = tuple(not_per_call)
        self.per_call = tuple(per_call)
        self.workspace_helpers = tuple(workspace_helpers)
        self.fake_names, self.compiled_names, self.scripted_names = self._registrations(calls)
        self.info: dict[ast.AST, FunctionInfo] = {}
        self._walk(tree.body, (), None)
        self.own = dict(self.info)  # by each function's own evidence, before its callers are heard

    def propagate(self, callers: dict[ast.AST, list[Optional[ast.AST]]], learnt: Mapping[str, str] = {}) -> None:
        """Carry what callers are onto the module's own functions they call (``callers``
        maps a def to the defs its calls sit in, None at module level): a function that
        may inherit it and is only called from set-up code is set-up code; TorchScript
        compiles what a scripted function calls. ``learnt``: what the whole tree's callers
        say (qualname -> why it is set-up; `program.setup_functions`)."""
        info = self.info
        for node, current in info.items():
            why = learnt.get(current.qualname)
            if why is not None and current.per_call:
                info[node] = replace(current, per_call=False, why_not_per_call=why)
        changed = True
        while changed:
            changed = False
            for callee, sources in callers.items():
                current = info[callee]
                caller_infos = [info.get(c) for c in sources]
                update = {}
                at_import = module_level_sets_up(callee.name)
                if current.per_call and current.inherits and all(not ci.per_call if ci is not None else at_import for ci in caller_infos):
                    first = next((ci.qualname for ci in caller_infos if ci is not None), "module level")
                    update.update(per_call=False, why_not_per_call=f"`{current.qualname}` is only called from set-up code (`{first}`)")
                if not current.scripted:
                    via = next((ci for ci in caller_infos if ci is not None and ci.scripted), None)
                    if via is not None:
                        update.update(scripted=True, reached_from=via.reached_from or via.qualname)
                if update:
                    info[callee] = replace(current, **update)
                    changed = True

    def _registrations(self, calls: Iterable[ast.Call]) -> tuple[set[str], set[str], set[str]]:
        """Functions registered by call rather than decorator (`register_fake("op", f)`,
        `f = torch.compile(f)`, `f = torch.jit.script(f)`)."""
        compiled, scripted = set(), set()
        for node in calls:
            if _callee_name(node) not in ("compile", "optimize", "script", "trace", "script_method"):
                continue  # resolving every call of a module costs more than the rest of this
            names = [a.id for a in node.args if isinstance(a, ast.Name)]
            resolved = self.resolver.resolve(node.func, self.resolver.module_scope)
            if resolved & COMPILE_DECORATORS:
                compiled.update(names)
            elif resolved & SCRIPT_DECORATORS:
                scripted.update(names)
        return registered_fakes(calls), compiled, scripted

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
        resolved = set()
        for d in node.decorator_list:
            resolved |= self.resolver.resolve(d.func if isinstance(d, ast.Call) else d, self.resolver.module_scope)
        fake = is_fake(node, self.fake_names, outer is not None and outer.fake)
        compiled = bool(resolved & COMPILE_DECORATORS) or name in self.compiled_names or (outer is not None and outer.compiled)
        scripted = bool(resolved & SCRIPT_DECORATORS) or name in self.scripted_names or (outer is not None and outer.scripted)
        outer_set_up = outer.qualname if outer is not None and not outer.per_call else None
        why = set_up_evidence(node, qualname, fake, node in self.binders, outer_set_up, self.not_per_call, self.per_call)
        forced = matches(name, self.per_call)
        return FunctionInfo(
            qualname=qualname,
            per_call=why is None,
            why_not_per_call=why,
            compiled=compiled,
            scripted=scripted,
            fake=fake,
            workspace_helper=matches(name, self.workspace_helpers),
            forced_per_call=forced,
            inherits=why is None and not forced and may_inherit(name, bool(prefix)),
        )


def module_level_sets_up(name: str) -> bool:
    """Whether a call at module level counts as a set-up caller of function ``name``: for a
    private one (module level runs once, at import); not for a public one, which an
    `if __name__ == "__main__":` block may drive while other modules call it every step."""
    return name.startswith("_") and not name.startswith("__")


def may_inherit(name: str, nested: bool) -> bool:
    """Whether a function's callers can make it set-up: a private one (its callers are in
    its module) or a module-level one (found by name); not a public method, which objects
    call through attributes the scan does not follow."""
    return (name.startswith("_") and not name.startswith("__")) or not nested


def registered_fakes(calls: Iterable[ast.Call]) -> set[str]:
    """Functions registered as fake kernels by a call (`register_fake("op", f)`,
    `direct_register_custom_op(name, f, fake_impl=g)`, `lib.impl("op", f, "Meta")`)."""
    fake = set()
    for node in calls:
        callee = _callee_name(node)
        fake.update(kw.value.id for kw in node.keywords if kw.arg == "fake_impl" and isinstance(kw.value, ast.Name))
        if callee in FAKE_REGISTRARS or (callee == "impl" and _string_args(node) & META_DISPATCH_KEYS):
            fake.update(a.id for a in node.args if isinstance(a, ast.Name))
    return fake


def is_fake(node: ast.AST, fake_names: set[str], outer_fake: bool) -> bool:
    """A fake/meta kernel: registered as one, named as one, or nested in one."""
    callees = {_callee_name(d) for d in node.decorator_list}
    dispatch_keys = set().union(*(_string_args(d) for d in node.decorator_list)) if node.decorator_list else set()
    return (
        bool(callees & FAKE_REGISTRARS)
        or ("impl" in callees and bool(dispatch_keys & META_DISPATCH_KEYS))
        or node.name in fake_names
        or matches(node.name, ("*_fake", "fake_*", "_fake_*", "*_meta", "meta_*", "_meta_*"))
        or outer_fake
    )


def set_up_evidence(
    node: ast.AST,
    qualname: str,
    fake: bool,
    binds: bool,
    outer_set_up: Optional[str],
    not_per_call: Iterable[str],
    per_call: Iterable[str],
) -> Optional[str]:
    """Why a function runs once rather than per call, by its own evidence (its name, its
    decorators, whether it ``binds`` module parameters, the function it is nested in:
    ``outer_set_up`` names it when that one is set-up), or None."""
    name = node.name
    if matches(name, per_call):
        return None
    if fake:
        return f"fake/meta kernel `{qualname}` runs on fake tensors while tracing, not per call"
    if matches(name, not_per_call):
        return f"`{qualname}` runs once (set-up, not per call)"
    if {_callee_name(d) for d in node.decorator_list} & MEMO_DECORATORS:
        return f"`{qualname}` is memoized: it runs once per distinct argument"
    if WEIGHT_WORDS & set(name.split("_")) and WEIGHT_VERBS & set(name.lower().split("_")):
        return f"`{qualname}` processes weights (by its name): it runs when they are loaded"
    if binds:
        return f"`{qualname}` binds module parameters: it processes weights when they are loaded"
    if outer_set_up is not None:
        return f"nested in `{outer_set_up}`, which is not per call"
    return None


def binds_parameters(node: ast.AST, parent: Optional[ast.AST]) -> bool:
    """Whether ``node`` (a call, with its parent) binds a module parameter:
    `replace_parameter(layer, "w13", w)`, `setattr(layer, n, nn.Parameter(w))`,
    `layer.w13 = Parameter(...)`. That is what weight processing does, and no forward step."""
    if not isinstance(node, ast.Call):
        return False
    callee = _callee_name(node)
    if callee in PARAMETER_BINDERS:
        return True
    if callee == "setattr" and len(node.args) == 3:
        return isinstance(node.args[2], ast.Call) and _callee_name(node.args[2]) in PARAMETER_TYPES
    if callee in PARAMETER_TYPES and isinstance(parent, (ast.Assign, ast.AnnAssign)) and parent.value is node:
        targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
        return any(isinstance(t, ast.Attribute) for t in targets)
    return False
