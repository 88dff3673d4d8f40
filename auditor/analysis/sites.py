"""Allocation sites of one module: what each allocates, where, and whether it is reusable.

The facts here are what the rules report on. A site is

- **workspace**: allocated on every call of a per-call function and dead by the end of
  it (or handed to the caller by a workspace helper such as ``get_workspace``): a reuse
  candidate;
- **escapes**: allocated per call but returned, stored or kept beyond the call;
- **init**: allocated once (module level, constructors, weight loading, fake kernels,
  one-off lazy initialisation);
- **dead**: never read (dropped, or bound to a name that is rebound before any read).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Literal, Mapping, Optional, Sequence

from allocaudit.auditor.analysis.devices import Device, SiteDevices
from allocaudit.auditor.analysis.effects import CallEffects
from allocaudit.auditor.analysis.escapes import Escape, FlowResult, FunctionFlow
from allocaudit.auditor.analysis.factories import ALL_FACTORY_NAMES, TENSOR_METHOD_FACTORIES, TORCH_FACTORIES, BoundArgs, bind
from allocaudit.auditor.analysis.fix_safety import SAFE, UNSAFE, FixSafety, unsafe_reason
from allocaudit.auditor.analysis.fixability import not_fixable_reason
from allocaudit.auditor.analysis.functions import AnalysisOptions, FunctionInfo
from allocaudit.auditor.analysis.index import ModuleIndex
from allocaudit.auditor.analysis.modules import OtherModules
from allocaudit.auditor.analysis.names import NameResolver
from allocaudit.auditor.analysis.sizes import SizeEstimate, estimate
from allocaudit.auditor.analysis.syntax import FunctionNode, arg_specs, argument, is_literal, unparse

SiteClass = Literal["workspace", "escapes", "init", "dead"]
WORKSPACE: SiteClass = "workspace"
ESCAPES: SiteClass = "escapes"
INIT: SiteClass = "init"
DEAD: SiteClass = "dead"



@dataclass(frozen=True)
class AllocationSite:
    call: ast.Call
    api: str  # "torch.zeros", "Tensor.new_zeros", or "torch.zeros|torch.empty" for an alias of several
    factory: Optional[str]  # "zeros"; None when the callee may be several factories
    device: Device
    moved: bool  # allocated on the default device, then moved with .cuda()/.to()
    site_class: SiteClass
    evidence: str
    function: Optional[FunctionInfo]
    notes: tuple[str, ...]
    fixable: bool
    not_fixable_reason: Optional[str]
    # Long-lived places the value is stored into (attributes, globals, their entries).
    stored_into: tuple[ast.AST, ...] = ()
    # Why the rewrite is an unsafe fix (`fix --unsafe-fixes` only); None for a safe one.
    unsafe_reason: Optional[str] = None
    # Whether its size grows with the batch (`allocaudit.auditor.analysis.sizes`).
    size: Optional[SizeEstimate] = None

    @property
    def qualname(self) -> str:
        return self.function.qualname if self.function else "<module>"

    @property
    def fix_safety(self) -> Optional[FixSafety]:
        """SAFE or UNSAFE for a fixable site, None for the others."""
        if not self.fixable:
            return None
        return UNSAFE if self.unsafe_reason is not None else SAFE


@dataclass(eq=False)  # one module's facts: compared and hashed by identity
class ModuleFacts:
    """What the rules read about one module: its index, what its calls do, its allocation sites."""

    index: ModuleIndex
    effects: CallEffects
    sites: list[AllocationSite]


def analyze(
    tree: ast.Module,
    options: AnalysisOptions,
    package: tuple[str, ...] = (),
    exports: Optional[Mapping[str, Mapping[str, frozenset[str]]]] = None,
    others: Optional[OtherModules] = None,
    setup: Optional[Mapping[str, str]] = None,
) -> ModuleFacts:
    """The facts of one module; ``others`` reads the modules it imports, for what their
    functions do with the tensors they are given; ``setup`` names the functions the whole
    tree reaches only from set-up code (`program.setup_functions`)."""
    exports = exports or {}
    # A module where no identifier is a factory (or an alias another module exports) has no site.
    watch = ALL_FACTORY_NAMES | {name for aliases in exports.values() for name in aliases}
    index = ModuleIndex(tree, options, package, exports, watch, setup)
    effects = CallEffects(index, others)
    sites = SiteFinder(index, effects).sites() if index.mentions_watched else []
    return ModuleFacts(index, effects, sites)


def module_exports(tree: ast.Module, package: Sequence[str] = ()) -> dict[str, frozenset[str]]:
    """Module-level names bound to torch factories (what other modules may import)."""
    resolver = NameResolver(tree, tuple(package))
    return resolver.module_aliases(lambda q: q.startswith("torch.") and q[6:] in TORCH_FACTORIES)


def _writes_into_out(call: ast.Call) -> bool:
    """`torch.zeros(n, out=buf)` fills `buf`: it allocates nothing, so it is no site."""
    return any(k.arg == "out" and not is_literal(k.value, None) for k in call.keywords)


def _size_zero(call: ast.Call, bound: BoundArgs) -> bool:
    """`torch.empty(0, ...)`, `torch.empty((0, n), ...)`: a placeholder of no bytes, no site."""
    size = [argument(call, i) for i in bound.size] if bound.size else [argument(call, bound.size_keyword)]
    if len(size) == 1 and isinstance(size[0], (ast.Tuple, ast.List)):
        size = size[0].elts
    return any(is_literal(dim, 0) for dim in size)


class SiteFinder:
    """Finds the factory calls of a module and classifies each: its device, its class
    with the evidence, and whether the codemod may rewrite it."""

    def __init__(self, index: ModuleIndex, effects: CallEffects) -> None:
        self.index = index
        self.effects = effects
        self.parents = index.parents
        self.devices = SiteDevices(index, self._value_of)

    def sites(self) -> list[AllocationSite]:
        found = []
        for node in self.index.calls:
            kind = self.index.factory_of(node)
            if kind is None or _writes_into_out(node):
                continue
            if _size_zero(node, bind(self._binding_factory(kind[0]), arg_specs(node))):
                continue
            found.append(self._site(node, *kind))
        found.sort(key=lambda s: (s.call.lineno, s.call.col_offset))
        return found

    def _site(self, call: ast.Call, api: str, factory: Optional[str]) -> AllocationSite:
        function = self.index.owner(call)
        info = self.index.functions.info.get(function) if function is not None else None
        bound = bind(self._binding_factory(api), arg_specs(call))
        device, moved = self.devices.of(call, factory, bound, function)

        notes: list[str] = []
        flow_result = FlowResult()
        dead = self.effects.liveness(function).dead(call) if function is not None else None
        if function is None:
            site_class = INIT
            evidence = "module level" if self.index.enclosing_class(call) is None else "class body"
        elif dead is not None:
            site_class, evidence = DEAD, dead
        elif not info.per_call:
            site_class, evidence = INIT, info.why_not_per_call
        else:
            flow = self.effects.flow(function)
            flags = flow.notes(call)
            if flags.loop:
                notes.append("in a loop: allocated on every iteration")
            if flags.comprehension:
                notes.append("in a comprehension: one allocation per element")
            if flags.in_lambda:
                notes.append("in a lambda: allocated on every call of it")
            flow_result = flow.escape_of(self._outermost_move(call))
            site_class, evidence = self._classify(call, info, flow, flow_result)

        size = estimate(call, self._binding_factory(api), lambda n: self._size_binding(n, function))
        reason = not_fixable_reason(
            call, site_class, factory, bound, device, moved, info, flow_result, notes, lambda e: self.index.resolve(e, call),
            size, self.index.options.all_sizes,
        )
        unsafe = unsafe_reason(call, function, info.workspace_helper, self.index) if reason is None else None
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
            fixable=reason is None,
            not_fixable_reason=reason,
            stored_into=tuple(e.target for e in flow_result.stores if e.target is not None),
            unsafe_reason=unsafe,
            size=size,
        )

    @staticmethod
    def _binding_factory(api: str) -> str:
        """The factory whose signature binds the call; for an alias of several factories
        (`torch.zeros if c else torch.empty`) any of them, as long as they bind alike."""
        names = [a.rpartition(".")[2] for a in api.split("|")]
        kinds = {TORCH_FACTORIES.get(n) or TENSOR_METHOD_FACTORIES.get(n) for n in names}
        return names[0] if len(kinds) == 1 else "empty_like"

    def _value_of(self, name: str, function: Optional[FunctionNode]) -> Optional[ast.expr]:
        """The one value a plain name is assigned, in the function or else at module level."""
        if function is not None:
            flow = self.effects.flow(function)
            if name in flow.params:
                return None
            values = flow.stores.get(name)
            if values:
                return values[0] if len(values) == 1 else None
        sources = self.index.resolver.module_scope.bindings.get(name)
        if sources and len(sources) == 1 and isinstance(sources[0], ast.expr):
            return sources[0]
        return None

    def _size_binding(self, name: str, function: Optional[FunctionNode]) -> Optional[ast.expr]:
        """What the size estimate reads for a name: the one value the function (else the
        module) assigns it, or `x.shape[i]` for a name of `a, b = x.shape`; None for a
        parameter or a name bound several times, in a loop or by another unpacking."""
        if function is not None:
            flow = self.effects.flow(function)
            if name in flow.params:
                return None
            binders = flow.binders.get(name, [])
            if len(binders) > 1:
                return None
            if binders:
                values = flow.stores.get(name, [])
                return values[0] if len(values) == 1 else self._unpacked_dimension(binders[0])
        sources = self.index.resolver.module_scope.bindings.get(name)
        if sources and len(sources) == 1 and isinstance(sources[0], ast.expr):
            return sources[0]
        return None

    def _unpacked_dimension(self, target: ast.AST) -> Optional[ast.expr]:
        """`x.shape[i]` for the i-th name of `a, b = x.shape` (or `x.size()`), else None."""
        tuple_node = self.parents.get(target)
        assign = self.parents.get(tuple_node)
        if not (isinstance(tuple_node, ast.Tuple) and isinstance(assign, ast.Assign) and tuple_node in assign.targets):
            return None
        value = assign.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "size" and not value.args:
            value = ast.Attribute(value.func.value, "shape", ast.Load())
        position = tuple_node.elts.index(target)
        if not isinstance(value, ast.Attribute) or value.attr != "shape" or any(isinstance(e, ast.Starred) for e in tuple_node.elts[:position]):
            return None
        return ast.Subscript(value, ast.Constant(position), ast.Load())

    # -- the class ----------------------------------------------------------------------------

    def _outermost_move(self, call: ast.Call) -> ast.AST:
        attr = self.parents.get(call)
        method = self.parents.get(attr)
        if isinstance(attr, ast.Attribute) and attr.attr in ("cuda", "to") and isinstance(method, ast.Call):
            return method
        return call

    def _classify(self, call: ast.Call, info: FunctionInfo, flow: FunctionFlow, result: FlowResult) -> tuple[SiteClass, str]:
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
            leaves = self._let_out_by_callers(flow.function, result.returns, set())
            if leaves is not None:
                return ESCAPES, leaves
            return WORKSPACE, "a workspace helper hands it to its caller"
        if escape.how == "returned":  # returned directly, not through a closure
            return ESCAPES, self._returned_how(call, flow)
        return ESCAPES, escape.how

    def _let_out_by_callers(self, helper: FunctionNode, returns: tuple[Escape, ...], seen: set[FunctionNode]) -> Optional[str]:
        """How a caller in this module lets the result of ``helper`` (a workspace helper
        returning the allocation as ``returns`` say) outlive its own call, or None. A caller
        that is a workspace helper too hands it on: its callers decide."""
        seen.add(helper)
        elements = {e.position for e in returns}
        for call in self.index.calls:
            caller = self.index.owner(call)
            if caller is None or caller in seen or self.index.local_callee(call) is not helper:
                continue
            caller_info = self.index.functions.info.get(caller)
            for element in elements:
                found = self.effects.flow(caller).escape_of(call, element)
                if found.escape is None:
                    continue
                if found.escape.kind == "returned" and caller_info is not None and caller_info.workspace_helper:
                    onward = self._let_out_by_callers(caller, found.returns, seen)
                    if onward is None:
                        continue
                    return onward
                name = caller_info.qualname if caller_info is not None else caller.name
                return f"a workspace helper's result, which `{name}` lets out: {found.escape.how}"
        return None

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
