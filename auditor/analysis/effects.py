"""What a call does with a tensor it is given, and how values flow inside each function.

torch functions consume their arguments (or return a view of the first), wrappers such
as `nn.Parameter` are their argument, builtins either compute something new or hand their
argument back, a constructor keeps it in the object it builds, and a function of this
module (or of a module it imports, where the scan can read it: `modules`) is summarised
by the escape analysis of its own parameter: it consumes the argument, keeps it, or
returns it (as its result, or as one element of the tuple it returns). Anything else is
unknown.
"""

from __future__ import annotations

import ast
from typing import Optional

from allocaudit.auditor.analysis.escapes import CONSUMES, VIEW_FUNCTIONS, VIEW_METHODS, CallEffect, FunctionFlow
from allocaudit.auditor.analysis.index import ModuleIndex
from allocaudit.auditor.analysis.liveness import Liveness
from allocaudit.auditor.analysis.modules import OtherModules
from allocaudit.auditor.analysis.syntax import FunctionNode, unparse

# Callees whose result is their argument, wrapped.
WRAPPERS = frozenset({"Parameter", "Buffer"})
WRAPPER_NAMES = frozenset({"torch.nn.Parameter", "torch.nn.Buffer", "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer"})
FRESH_BUILTINS = frozenset({"len", "print", "isinstance", "int", "float", "bool", "str", "repr", "id", "hash", "type", "sum", "any", "all", "format"})
ALIASING_BUILTINS = frozenset({"list", "tuple", "iter", "reversed", "sorted", "min", "max", "dict", "zip", "enumerate", "getattr", "next", "cast"})


def _tensor_method(name: str) -> bool:
    """A Tensor method whose result is its receiver or a view of it (`view_as`, `to`, an
    in-place `copy_`/`add_`...): what it is given is read, not kept. (`set_` makes the
    receiver share its argument's storage.)"""
    return name in VIEW_METHODS or (name.endswith("_") and not name.startswith("_") and name != "set_")


class CallEffects:
    """Call effects and function flows of one module, each computed once."""

    def __init__(self, index: ModuleIndex, others: Optional[OtherModules] = None) -> None:
        self.index = index
        self.others = others  # the modules this one imports, where the scan can read them
        self._flows: dict[ast.AST, FunctionFlow] = {}
        self._liveness: dict[ast.AST, Liveness] = {}
        self._summaries: dict[tuple[ast.AST, str], CallEffect] = {}

    def liveness(self, function: FunctionNode) -> Liveness:
        """Which allocations of ``function`` are never read."""
        if function not in self._liveness:
            self._liveness[function] = Liveness(self.flow(function))
        return self._liveness[function]

    def flow(self, function: FunctionNode) -> FunctionFlow:
        """The escape analysis of ``function``."""
        if function not in self._flows:
            index = self.index
            self._flows[function] = FunctionFlow(
                function,
                index.parents,
                call_effect=self.call_effect,
                is_tensor=lambda e: isinstance(e, ast.Call) and index.factory_of(e) is not None,
            )
        return self._flows[function]

    def call_effect(self, call: ast.Call, arg: ast.AST) -> CallEffect:
        """What ``call`` does with ``arg`` (one of its arguments, or a keyword node)."""
        func = call.func
        name = unparse(func, 40)
        if isinstance(arg, ast.keyword) and arg.arg == "out":
            return CallEffect("returns", name)  # torch.mm(a, b, out=buf) returns buf
        last = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        resolved = self.index.resolve(func, call)
        if resolved or last in WRAPPERS:
            if resolved & WRAPPER_NAMES or last in WRAPPERS:
                return CallEffect("returns", name)  # nn.Parameter(buf) is buf
            first = call.args[0] if call.args else None
            if resolved & VIEW_FUNCTIONS and arg is first:
                return CallEffect("returns", name)
            return CONSUMES  # torch functions return fresh tensors
        if last in FRESH_BUILTINS:
            return CONSUMES
        if isinstance(func, ast.Attribute) and arg is not func.value and _tensor_method(last):
            return CONSUMES  # `y.view_as(x)`, `y.copy_(x)`: a view of `y`, or `y` itself, never `x`
        if last in ALIASING_BUILTINS:
            return CallEffect("returns", name)
        local = self.index.local_callee(call)
        if local is not None:
            param = self.index.parameter_for(local, call, arg)
            if param is None:
                return CallEffect("unknown", name)
            return self.summary(local, param, name)
        qualified = self.index.imported_name(call) if self.others is not None else None
        found = self.others.function(qualified) if qualified else None
        if found is not None:
            effects, function = found
            param = ModuleIndex.parameter_for(function, call, arg)
            return effects.summary(function, param, name) if param is not None else CallEffect("unknown", name)
        if last[:1].isupper():
            return CallEffect("returns", name)  # a constructor keeps it in the object it builds
        return CallEffect("unknown", name)

    def summary(self, function: FunctionNode, param: str, name: str) -> CallEffect:
        """What ``function`` (a def of this module, called as ``name``) does with the
        argument bound to ``param``."""
        key = (function, param)
        if key in self._summaries:
            return self._summaries[key]
        self._summaries[key] = CallEffect("unknown", name)  # while computing: recursion
        result = self.flow(function).escape_of_parameter(param)
        if result.escape is not None and result.escape.kind == "returned":
            effect = CallEffect("returns", name, result.returned_position)
        elif result.escape is not None:
            effect = CallEffect("keeps", f"kept by `{name}(...)`: {result.escape.how}")
        elif result.uncertain is not None:
            effect = CallEffect("unknown", name)
        else:
            effect = CONSUMES
        self._summaries[key] = effect
        return effect
