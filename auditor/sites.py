"""Allocation sites of one module: what each allocates, where, and whether it is reusable.

The facts here are what the rules report on. A site is

- **workspace**: allocated on every call of a per-call function and dead by the end of
  it (or handed to the caller by a workspace helper such as ``get_workspace``): a reuse
  candidate;
- **escapes**: allocated per call but returned, stored or kept beyond the call;
- **init**: allocated once (module level, constructors, weight loading, fake kernels,
  one-off lazy initialisation).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, replace
from typing import Mapping, Optional, Sequence

from allocaudit.auditor import devices
from allocaudit.auditor.devices import Device, DeviceClassifier
from allocaudit.auditor.escapes import CONSUMES, VIEW_FUNCTIONS, CallEffect, Escape, FlowResult, FunctionFlow, unparse
from allocaudit.auditor.factories import (
    FILL,
    ALL_FACTORY_NAMES,
    TENSOR_METHOD_FACTORIES,
    TORCH_FACTORIES,
    ArgSpec,
    BoundArgs,
    bind,
)
from allocaudit.auditor.functions import FunctionIndex, FunctionInfo, matches
from allocaudit.auditor.names import NameResolver

WORKSPACE = "workspace"
ESCAPES = "escapes"
INIT = "init"

DTYPE_NAMES = frozenset(
    f"torch.{n}"
    for n in (
        "float", "float32", "float64", "double", "float16", "half", "bfloat16", "int", "int8",
        "int16", "int32", "int64", "long", "uint8", "bool", "float8_e4m3fn", "float8_e5m2",
        "float8_e4m3fnuz", "float8_e5m2fnuz", "complex64", "complex128", "uint16", "uint32", "uint64",
    )
)
CPU_TEST = re.compile(r"^(?!not\b).*(?:\bis_cpu\w*\(\)|\btype\s*==\s*['\"]cpu['\"]|==\s*['\"]cpu['\"])")
# Callees whose result is their argument, wrapped.
WRAPPERS = frozenset({"Parameter", "Buffer"})
WRAPPER_NAMES = frozenset({"torch.nn.Parameter", "torch.nn.Buffer", "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer"})
FRESH_BUILTINS = frozenset({"len", "print", "isinstance", "int", "float", "bool", "str", "repr", "id", "hash", "type", "sum", "any", "all", "format"})
ALIASING_BUILTINS = frozenset({"list", "tuple", "iter", "reversed", "sorted", "min", "max", "dict", "zip", "enumerate", "getattr", "next", "cast"})
# Keyword arguments that the codemod cannot carry into get_empty, with the reason.
UNFIXABLE_KEYWORDS = {
    "requires_grad": "`requires_grad=`: a reused buffer cannot carry autograd state",
    "pin_memory": "`pin_memory=`: pinned host memory is not a device workspace",
}


@dataclass(frozen=True)
class AnalysisOptions:
    not_per_call: tuple[str, ...]
    per_call: tuple[str, ...]
    workspace_helpers: tuple[str, ...]


@dataclass(frozen=True)
class AllocationSite:
    call: ast.Call
    api: str  # "torch.zeros", "Tensor.new_zeros", or "torch.zeros|torch.empty" for an alias of several
    factory: Optional[str]  # "zeros"; None when the callee may be several factories
    device: Device
    moved: bool  # allocated on the default device, then moved with .cuda()/.to()
    site_class: str
    evidence: str
    function: Optional[FunctionInfo]
    notes: tuple[str, ...]
    fixable: bool
    not_fixable_reason: Optional[str]
    # Long-lived places the value is stored into (attributes, globals, their entries).
    stored_into: tuple[ast.AST, ...] = ()

    @property
    def qualname(self) -> str:
        return self.function.qualname if self.function else "<module>"


@dataclass(eq=False)  # one module's facts: compared and hashed by identity
class ModuleFacts:
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]
    sites: list[AllocationSite]
    analyzer: "ModuleAnalyzer"

    @property
    def functions(self) -> FunctionIndex:
        return self.analyzer.functions


def _arg_specs(call: ast.Call) -> list[ArgSpec]:
    specs = [ArgSpec("star" if isinstance(a, ast.Starred) else "pos") for a in call.args]
    specs += [ArgSpec("dstar" if k.arg is None else "kw", k.arg) for k in call.keywords]
    return specs


def _arg(call: ast.Call, index: Optional[int]) -> Optional[ast.expr]:
    if index is None:
        return None
    if index < len(call.args):
        return call.args[index]
    return call.keywords[index - len(call.args)].value


def _writes_into_out(call: ast.Call) -> bool:
    """`torch.zeros(n, out=buf)` fills `buf`: it allocates nothing, so it is no site."""
    return any(k.arg == "out" and not _is_literal(k.value, None) for k in call.keywords)


def _literal_size_zero(call: ast.Call, bound: BoundArgs) -> bool:
    """`torch.empty(0, ...)`, `torch.empty((0, n), ...)`: a placeholder, not a workspace."""
    size = [_arg(call, i) for i in bound.size] if bound.size else [_arg(call, bound.size_keyword)]
    if len(size) == 1 and isinstance(size[0], (ast.Tuple, ast.List)):
        size = size[0].elts
    return any(_is_literal(dim, 0) for dim in size)


def _is_literal(expr: Optional[ast.AST], *values) -> bool:
    return isinstance(expr, ast.Constant) and any(expr.value == v and type(expr.value) is type(v) for v in values)


class ModuleAnalyzer:
    def __init__(
        self,
        tree: ast.Module,
        options: AnalysisOptions,
        package: tuple[str, ...] = (),
        exports: Optional[Mapping[str, Mapping[str, frozenset[str]]]] = None,
    ) -> None:
        self.tree = tree
        self.options = options
        self.exports = exports or {}
        # One pass over the tree: parent links, every call, and whether any name could
        # denote a factory at all. Most files that pass the text prefilter only mention
        # one (`torch.cuda.empty_cache()`), and they need no name resolution.
        self.parents: dict[ast.AST, ast.AST] = {}
        self.calls: list[ast.Call] = []
        factory_words = ALL_FACTORY_NAMES | {name for aliases in self.exports.values() for name in aliases}
        self.may_have_sites = False
        stack: list[ast.AST] = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Call):
                self.calls.append(node)
            elif isinstance(node, ast.Attribute):
                self.may_have_sites |= node.attr in factory_words
            elif isinstance(node, ast.Name):
                self.may_have_sites |= node.id in factory_words
            elif isinstance(node, ast.alias):
                self.may_have_sites |= (node.asname or node.name).rpartition(".")[2] in factory_words or node.name in factory_words
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
                stack.append(child)
        self.calls.reverse()  # source order, for stable output
        self.package = package
        self._resolver: Optional[NameResolver] = None
        self._functions: Optional[FunctionIndex] = None
        self._flows: dict[ast.AST, FunctionFlow] = {}
        self._summaries: dict[tuple[ast.AST, str], CallEffect] = {}
        self.module_functions = {
            n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        self.methods = {
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
        if self._functions is None:
            options = self.options
            self._functions = FunctionIndex(
                self.calls, self.tree, self.resolver, options.not_per_call, options.per_call, options.workspace_helpers
            )
            self._propagate_through_calls()
        return self._functions

    def _propagate_through_calls(self) -> None:
        """Carry what callers are onto the module's own functions they call: a private
        helper called only from set-up code is set-up code; a function reached from a
        torch.compile'd function or a custom op runs inside it."""
        callers: dict[ast.AST, list[Optional[ast.AST]]] = {}
        for call in self.calls:
            callee = self._local_callee(call)
            if callee is not None and callee in self._functions.info:
                callers.setdefault(callee, []).append(self.owner(call))
        info = self._functions.info
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
                    and not matches(callee.name, self.options.per_call)
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

    # -- helpers ----------------------------------------------------------------------

    def _scope_node(self, node: ast.AST) -> ast.AST:
        parent = self.parents.get(node)
        while parent is not None and parent not in self.resolver.scope_of:
            parent = self.parents.get(parent)
        return parent if parent is not None else self.tree

    def resolve(self, expr: ast.AST, at: ast.AST) -> frozenset[str]:
        return self.resolver.resolve(expr, self.resolver.scope_of[self._scope_node(at)])

    def owner(self, node: ast.AST) -> Optional[ast.AST]:
        """The def (not lambda) an expression belongs to."""
        parent = self.parents.get(node)
        while parent is not None:
            if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return parent
            if isinstance(parent, ast.ClassDef):
                return None
            parent = self.parents.get(parent)
        return None

    def flow(self, function: ast.AST) -> FunctionFlow:
        if function not in self._flows:
            self._flows[function] = FunctionFlow(
                function,
                self.parents,
                resolve=lambda e, f=function: self.resolve(e, f.body[0]),
                call_effect=self.call_effect,
                is_tensor=lambda e: isinstance(e, ast.Call) and self.factory_of(e) is not None,
            )
        return self._flows[function]

    # -- what calls do with their arguments -------------------------------------------

    def call_effect(self, call: ast.Call, arg: ast.AST) -> CallEffect:
        """What ``call`` does with ``arg`` (one of its arguments, or a keyword node)."""
        func = call.func
        name = unparse(func, 40)
        if isinstance(arg, ast.keyword) and arg.arg == "out":
            return CallEffect("returns", name)  # torch.mm(a, b, out=buf) returns buf
        last = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        resolved = self.resolve(func, call)
        if resolved or last in WRAPPERS:
            if resolved & WRAPPER_NAMES or last in WRAPPERS:
                return CallEffect("returns", name)  # nn.Parameter(buf) is buf
            first = call.args[0] if call.args else None
            if resolved & VIEW_FUNCTIONS and arg is first:
                return CallEffect("returns", name)
            return CONSUMES  # torch functions return fresh tensors
        if last in FRESH_BUILTINS:
            return CONSUMES
        if last in ALIASING_BUILTINS:
            return CallEffect("returns", name)
        local = self._local_callee(call)
        if local is not None:
            param = self._parameter_for(local, call, arg)
            if param is None:
                return CallEffect("unknown", name)
            return self._summary(local, param, name)
        if last[:1].isupper():
            return CallEffect("returns", name)  # a constructor keeps it in the object it builds
        return CallEffect("unknown", name)

    def _summary(self, function: ast.AST, param: str, name: str) -> CallEffect:
        """What a function of this module does with the argument bound to ``param``."""
        key = (function, param)
        if key in self._summaries:
            return self._summaries[key]
        self._summaries[key] = CallEffect("unknown", name)  # while computing: recursion
        result = self.flow(function).escape_of_parameter(param)
        if result.escape is not None and result.escape.kind == "returned":
            effect = CallEffect("returns", name)
        elif result.escape is not None:
            effect = CallEffect("keeps", f"kept by `{name}(...)`: {result.escape.how}")
        elif result.uncertain is not None:
            effect = CallEffect("unknown", name)
        else:
            effect = CONSUMES
        self._summaries[key] = effect
        return effect

    def _local_callee(self, call: ast.Call) -> Optional[ast.AST]:
        """The def of this module that ``call`` calls: `f(...)` or `self.f(...)`."""
        func = call.func
        if isinstance(func, ast.Name):
            if func.id not in self.module_functions:
                return None
            found = self.resolver.lookup(func.id, self.resolver.scope_of[self._scope_node(call)])
            if found is not None and found[0] is self.resolver.module_scope:
                return self.module_functions.get(func.id)
            return None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("self", "cls"):
            cls = self._enclosing_class(call)
            if cls is None:
                return None
            found = self.methods.get((cls, func.attr))
            if found is None:  # inherited from another class of this module, if only one defines it
                candidates = [fn for (owner, name), fn in self.methods.items() if name == func.attr]
                found = candidates[0] if len(candidates) == 1 else None
            return found
        return None

    @staticmethod
    def _parameter_for(function: ast.AST, call: ast.Call, arg: ast.AST) -> Optional[str]:
        params = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
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

    def _enclosing_class(self, node: ast.AST) -> Optional[ast.ClassDef]:
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, ast.ClassDef):
            parent = self.parents.get(parent)
        return parent

    def _value_of(self, name: str, function: Optional[ast.AST]) -> Optional[ast.expr]:
        """The one value a plain name is assigned, in the function or else at module level."""
        if function is not None:
            flow = self.flow(function)
            if name in flow.params:
                return None
            values = flow.stores.get(name)
            if values:
                return values[0] if len(values) == 1 else None
        sources = self.resolver.module_scope.bindings.get(name)
        if sources and len(sources) == 1 and isinstance(sources[0], ast.expr):
            return sources[0]
        return None

    # -- the analysis -----------------------------------------------------------------

    def factory_of(self, call: ast.Call) -> Optional[tuple[str, Optional[str]]]:
        """(api, factory) when ``call`` is a factory call, else None."""
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

    def sites(self) -> list[AllocationSite]:
        if not self.may_have_sites:
            return []
        found = []
        for node in self.calls:
            kind = self.factory_of(node)
            if kind is not None and not _writes_into_out(node):
                found.append(self._site(node, *kind))
        found.sort(key=lambda s: (s.call.lineno, s.call.col_offset))
        return found

    def _device(self, call: ast.Call, factory: Optional[str], bound: BoundArgs, function) -> tuple[Device, bool]:
        classifier = DeviceClassifier(
            resolve=lambda e: self.resolve(e, call),
            lookup=lambda name: self._value_of(name, function),
            text=unparse,
        )
        moved = self._moved_to(call, classifier)
        if moved is not None:
            return moved, True
        device_expr = _arg(call, bound.keyword("device"))
        if device_expr is not None:
            return classifier.classify(device_expr), False
        if bound.like is not None:
            return Device(devices.INHERITED, f"{unparse(_arg(call, bound.like))}.device"), False
        if factory in TENSOR_METHOD_FACTORIES and isinstance(call.func, ast.Attribute):
            return Device(devices.INHERITED, f"{unparse(call.func.value)}.device"), False
        context = self._default_device_context(call)
        if context is not None:
            return classifier.classify(context), False
        return Device(devices.DEFAULT), False

    def _moved_to(self, call: ast.Call, classifier: DeviceClassifier) -> Optional[Device]:
        """`torch.empty(n).cuda()` / `.to("cuda")`: the device it is moved to, if CUDA."""
        attr = self.parents.get(call)
        method = self.parents.get(attr)
        if not (isinstance(attr, ast.Attribute) and isinstance(method, ast.Call) and method.func is attr):
            return None
        if attr.attr == "cuda":
            return Device(devices.CUDA, ".cuda()")
        if attr.attr != "to":
            return None
        target = next((k.value for k in method.keywords if k.arg == "device"), None)
        if target is None and method.args:
            first = method.args[0]
            if self.resolve(first, call) & DTYPE_NAMES or (isinstance(first, ast.Name) and "dtype" in first.id):
                return None
            target = first
        if target is None:
            return None
        device = classifier.classify(target)
        return device if device.on_cuda else None

    def _default_device_context(self, call: ast.Call) -> Optional[ast.expr]:
        """The device of an enclosing `with torch.device(...):` block."""
        parent = self.parents.get(call)
        while parent is not None:
            if isinstance(parent, (ast.With, ast.AsyncWith)):
                for item in parent.items:
                    ctx = item.context_expr
                    if isinstance(ctx, ast.Call) and self.resolve(ctx.func, call) & {"torch.device"} and ctx.args:
                        return ctx.args[0]
            parent = self.parents.get(parent)
        return None

    def _site(self, call: ast.Call, api: str, factory: Optional[str]) -> AllocationSite:
        function = self.owner(call)
        info = self.functions.info.get(function) if function is not None else None
        bound = bind(self._binding_factory(api), _arg_specs(call))
        device, moved = self._device(call, factory, bound, function)
        if device.form in (devices.INHERITED, devices.VARIABLE) and self._in_cpu_branch(call):
            device = Device(devices.NOT_CUDA, f"{device.text} (in a CPU-only branch)")

        notes: list[str] = []
        flow_result = FlowResult()
        if function is None:
            site_class = INIT
            evidence = "module level" if not self._in_class_body(call) else "class body"
        elif not info.per_call:
            site_class, evidence = INIT, info.why_not_per_call
        else:
            flow = self.flow(function)
            flags = flow.notes(call)
            if flags.loop:
                notes.append("in a loop: allocated on every iteration")
            if flags.comprehension:
                notes.append("in a comprehension: one allocation per element")
            if flags.in_lambda:
                notes.append("in a lambda: allocated on every call of it")
            flow_result = flow.escape_of(self._outermost_move(call))
            site_class, evidence = self._classify(call, info, flow, flow_result)

        fixable, reason = self._fixability(call, site_class, factory, bound, device, moved, info, flow_result, notes)
        return AllocationSite(
            call=call,
            api=api,
            factory=factory,
            device=device,
            moved=moved,
            site_class=site_class,
            evidence=evidence,
            function=info,
            notes=tuple(notes),
            fixable=fixable,
            not_fixable_reason=reason,
            stored_into=tuple(e.target for e in flow_result.stores if e.target is not None),
        )

    @staticmethod
    def _binding_factory(api: str) -> str:
        """The factory whose signature binds the call; for an alias of several factories
        (`torch.zeros if c else torch.empty`) any of them, as long as they bind alike."""
        names = [a.rpartition(".")[2] for a in api.split("|")]
        kinds = {TORCH_FACTORIES.get(n) or TENSOR_METHOD_FACTORIES.get(n) for n in names}
        return names[0] if len(kinds) == 1 else "empty_like"

    def _in_cpu_branch(self, node: ast.AST) -> bool:
        """Inside the body of `if current_platform.is_cpu():` or `if x.device.type == "cpu":`."""
        child, parent = node, self.parents.get(node)
        while parent is not None and not isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if isinstance(parent, ast.If) and child in parent.body and CPU_TEST.search(ast.unparse(parent.test)):
                return True
            child, parent = parent, self.parents.get(parent)
        return False

    def _outermost_move(self, call: ast.Call) -> ast.AST:
        attr = self.parents.get(call)
        method = self.parents.get(attr)
        if isinstance(attr, ast.Attribute) and attr.attr in ("cuda", "to") and isinstance(method, ast.Call):
            return method
        return call

    def _in_class_body(self, call: ast.AST) -> bool:
        parent = self.parents.get(call)
        while parent is not None:
            if isinstance(parent, ast.ClassDef):
                return True
            parent = self.parents.get(parent)
        return False

    def _classify(self, call: ast.Call, info: FunctionInfo, flow: FunctionFlow, result: FlowResult) -> tuple[str, str]:
        escape = result.escape
        if escape is None:
            if result.uncertain is not None:
                return WORKSPACE, f"dies within the call unless {result.uncertain.how.split(': it may')[0]}"
            return WORKSPACE, "dies within the call"
        for store in result.stores:  # a guarded store caches the buffer, even if it is returned too
            guard = self._lazy_guard(flow, store) if store.statement is not None else None
            if guard is not None:
                return INIT, f"one-off lazy init guarded by `if {unparse(guard)}`"
        if escape.kind == "returned" and info.workspace_helper:
            return WORKSPACE, "a workspace helper hands it to its caller"
        if escape.how == "returned":  # returned directly, not through a closure
            return ESCAPES, self._returned_how(call, flow)
        return ESCAPES, escape.how

    def _returned_how(self, call: ast.Call, flow: FunctionFlow) -> str:
        """Evidence for a returned value; names the optional-output idiom where it applies."""
        parent = self.parents.get(self._outermost_move(call))
        if isinstance(parent, ast.Assign):
            for target in parent.targets:
                if isinstance(target, ast.Name) and target.id in flow.params:
                    return f"returned as parameter `{target.id}` (optional-output idiom)"
        return "returned to the caller"

    def _lazy_guard(self, flow: FunctionFlow, escape: Escape) -> Optional[ast.expr]:
        target = escape.target
        if target is None:
            return None
        # Compared as source text: the stored target has a Store context, the test a Load.
        target_text = ast.unparse(target.value if isinstance(target, ast.Subscript) else target)
        attr_name = target.attr if isinstance(target, ast.Attribute) else None
        # Locals read from the target (`s = self._scales.get(dev)`: a memo dict) and
        # attributes the function stores next to the buffer (`self.capacity = n`: grow on
        # demand) guard it as well as the target itself.
        guarded = {target_text}
        for name, values in flow.stores.items():
            if any(target_text in ast.unparse(v) for v in values):
                guarded.add(name)
        guarded |= flow.stored_attributes
        for test in flow.enclosing_guards(escape.statement):
            for sub in ast.walk(test):
                if isinstance(sub, (ast.Attribute, ast.Name, ast.Subscript)) and ast.unparse(sub) in guarded:
                    return test
                if attr_name and isinstance(sub, ast.Constant) and sub.value == attr_name:
                    return test  # hasattr(self, "_buf") / getattr(self, "_buf", None)
        return None

    def _fixability(self, call, site_class, factory, bound, device, moved, info, result: FlowResult, notes) -> tuple[bool, Optional[str]]:
        if site_class != WORKSPACE:
            return False, f"{site_class} site: only per-call workspaces are rewritten"
        if not device.on_cuda:
            return False, "not a CUDA allocation"
        if factory is None:
            return False, "the callee is an alias of several factories"
        if info.compiled:
            where = f"reached from torch.compile'd `{info.reached_from}`" if info.reached_from else f"inside torch.compile'd `{info.qualname}`"
            return False, f"{where}: the compiler plans its buffers"
        if info.custom_op:
            where = f"reached from custom-op implementation `{info.reached_from}`" if info.reached_from else f"inside custom-op implementation `{info.qualname}`"
            return False, where
        if result.uncertain is not None:
            return False, result.uncertain.how
        if any(n.startswith("in a comprehension") for n in notes):
            return False, "one buffer per site: the elements of a comprehension are alive together and would alias"
        if result.into_container and any(n.startswith("in a loop") for n in notes):
            return False, f"collected in `{result.into_container}` across iterations: one buffer per site would alias"
        if _literal_size_zero(call, bound):
            return False, "allocates nothing (a size of zero)"
        if moved:
            return False, "allocated on the default device, then moved: allocate on the device directly first"
        if bound.has_dstar:
            return False, "`**kwargs` hides some arguments"
        for name, reason in UNFIXABLE_KEYWORDS.items():
            value = _arg(call, bound.keyword(name))
            if value is not None and not _is_literal(value, None, False):
                return False, reason
        layout = _arg(call, bound.keyword("layout"))
        if layout is not None and "torch.strided" not in self.resolve(layout, call):
            return False, "non-strided `layout=`"
        memory_format = _arg(call, bound.keyword("memory_format"))
        contiguous = memory_format is not None and "torch.contiguous_format" in self.resolve(memory_format, call)
        if memory_format is not None and not contiguous:
            return False, "`memory_format=` other than torch.contiguous_format"
        kind = TORCH_FACTORIES.get(factory) or TENSOR_METHOD_FACTORIES.get(factory)
        if kind == "strided":
            return False, "explicit strides: get_empty returns contiguous tensors"
        if kind in ("like", "full_like") and not contiguous:
            return False, "the result follows the input's memory format: add memory_format=torch.contiguous_format if the input is contiguous"
        fill = FILL[factory]
        if fill == "1":
            return False, "filled with ones: get_empty only zero-fills"
        if fill == "fill" and not _is_literal(_arg(call, bound.fill), 0, 0.0, False):
            return False, "filled with a value other than a literal zero"
        if bound.size_keyword is None and not bound.size and kind not in ("like", "full_like"):
            return False, "no size argument"
        return True, None


def analyze(
    tree: ast.Module,
    options: AnalysisOptions,
    package: tuple[str, ...] = (),
    exports: Optional[Mapping[str, Mapping[str, frozenset[str]]]] = None,
) -> ModuleFacts:
    analyzer = ModuleAnalyzer(tree, options, package, exports)
    return ModuleFacts(analyzer.tree, analyzer.parents, analyzer.sites(), analyzer)


def module_exports(tree: ast.Module, package: Sequence[str] = ()) -> dict[str, frozenset[str]]:
    """Module-level names bound to torch factories (what other modules may import)."""
    resolver = NameResolver(tree, tuple(package))
    return resolver.module_aliases(lambda q: q.startswith("torch.") and q[6:] in TORCH_FACTORIES)
