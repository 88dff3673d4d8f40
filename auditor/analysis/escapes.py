"""Does a tensor allocated in a function outlive the call?

Flow-insensitive and local to one function: the value is followed through names it is
bound to, views and in-place methods taken of it, containers built in the function, and
closures. It escapes when it is returned or yielded, stored on an attribute, a global or
a container that outlives the call, or saved for backward.

What a call does with an argument comes from ``call_effect``: torch functions consume it
(or return a view of it), a function of the same module is summarised by this same
analysis of its parameter, a constructor keeps it in the object it builds, and any other
callee is unknown: its result is followed as if it could be the argument, and an escape
found only that way is reported as uncertain (the site stays a workspace, but not one the
codemod may rewrite). Where a rebinding makes the analysis unsure it errs towards
"escapes", which keeps the codemod away from the site.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Callable, Literal, Optional

from allocaudit.auditor.analysis.syntax import FunctionNode, parameters, unparse

# Methods whose result shares storage with (or is) the receiver.
VIEW_METHODS = frozenset(
    {
        "view", "view_as", "reshape", "reshape_as", "as_strided", "narrow", "select",
        "unsqueeze", "squeeze", "flatten", "unflatten", "transpose", "t", "permute", "expand",
        "expand_as", "contiguous", "to", "cuda", "cpu", "detach", "split", "chunk", "unbind",
        "tensor_split", "movedim", "moveaxis", "swapaxes", "swapdims", "diagonal", "unfold",
        "type", "type_as", "float", "half", "bfloat16", "int", "long", "bool", "double",
        "byte", "char", "short", "untyped_storage", "data_ptr",
    }
)
VIEW_ATTRIBUTES = frozenset({"T", "mT", "H", "mH", "data", "real", "imag"})
# torch functions whose result is a view of their first argument.
VIEW_FUNCTIONS = frozenset(
    f"torch.{n}"
    for n in (
        "narrow", "select", "unsqueeze", "squeeze", "flatten", "transpose", "t", "permute",
        "reshape", "split", "chunk", "unbind", "tensor_split", "movedim", "swapaxes",
        "diagonal", "as_strided", "view_as_real", "view_as_complex",
    )
)
# Calls that can read any local by name.
INTROSPECTION = frozenset({"locals", "vars", "eval", "exec", "dir"})
# Methods that put their argument into the receiver.
CONTAINER_ADDERS = frozenset(
    {"append", "appendleft", "extend", "insert", "add", "update", "setdefault", "put", "put_nowait", "push"}
)
CONTAINER_FACTORIES = frozenset({"list", "dict", "set", "tuple", "defaultdict", "OrderedDict", "deque"})
# Calls that keep their tensor arguments beyond the call.
KEEPERS = {
    "save_for_backward": "saved for backward",
    "register_buffer": "registered as a module buffer",
    "register_parameter": "registered as a module parameter",
    "setattr": "stored with setattr",
    "replace_parameter": "stored as a module parameter",
}


def _is_slicing(index: ast.AST) -> bool:
    """`[a:b]`, `[:, i]`, `[..., :n]`: an index only a sequence or a tensor takes."""
    parts = index.elts if isinstance(index, ast.Tuple) else [index]
    return any(isinstance(p, ast.Slice) or (isinstance(p, ast.Constant) and p.value is Ellipsis) for p in parts)


@dataclass(frozen=True)
class Escape:
    kind: Literal["returned", "yielded", "stored", "appended", "global", "kept", "uncertain"]
    how: str  # evidence, e.g. "stored on `self.buf`"
    target: Optional[ast.AST] = None  # the attribute/subscript/global stored into, for lazy-init checks
    statement: Optional[ast.stmt] = None
    position: Optional[int] = None  # returned as this element of a returned tuple (None: as the result itself)


@dataclass(frozen=True)
class CallEffect:
    """What a call does with one of its arguments."""

    kind: Literal["consumes", "returns", "keeps", "unknown"]  # returns: the result is or holds the argument
    how: str = ""  # evidence: the callee, or how it keeps the argument
    position: Optional[int] = None  # returns: only this element of the returned tuple holds it


CONSUMES = CallEffect("consumes")


@dataclass(frozen=True)
class FlowResult:
    escape: Optional[Escape] = None  # the first certain escape
    stores: tuple[Escape, ...] = ()  # every certain store into longer-lived state (for lazy init)
    uncertain: Optional[Escape] = None  # an escape only through the result of an unknown call
    into_container: Optional[str] = None  # a local container the value was put in
    returns: tuple[Escape, ...] = ()  # every certain return of the value

    @property
    def returned_position(self) -> Optional[int]:
        """The one element of a returned tuple that every return puts the value in, or None
        (returned as the result itself, in several elements, or not returned)."""
        positions = {e.position for e in self.returns}
        return positions.pop() if len(positions) == 1 else None


@dataclass(frozen=True)
class Notes:
    loop: bool = False
    comprehension: bool = False
    in_lambda: bool = False


class FunctionFlow:
    """Escape analysis inside one function (built lazily, once per function)."""

    def __init__(
        self,
        function: FunctionNode,
        parents: dict[ast.AST, ast.AST],
        call_effect: Callable[[ast.Call, ast.AST], CallEffect],
        is_tensor: Callable[[ast.AST], bool],
    ) -> None:
        self.function = function
        self.parents = parents
        self.call_effect = call_effect
        self.is_tensor = is_tensor
        self.params = set(parameters(function, starred=True))
        self.loads: dict[str, list[ast.Name]] = {}
        self.stores: dict[str, list[ast.AST]] = {}  # name -> assigned values (or the binding node)
        self.globals: set[str] = set()
        self.nested: dict[ast.AST, str] = {}  # nested def node -> its name
        self.scopes: list[ast.AST] = []  # nested defs, lambdas and classes
        self.stored_attributes: set[str] = set()  # `self.x` targets assigned in the function
        self.binders: dict[str, list[ast.AST]] = {}  # name -> the nodes that (re)bind it
        self.introspects = False  # calls locals(), vars(), eval(), exec(): any local may be read
        for node in ast.walk(function):
            if isinstance(node, ast.Name):
                if isinstance(node.ctx, ast.Load):
                    self.loads.setdefault(node.id, []).append(node)
                else:
                    self.binders.setdefault(node.id, []).append(node)
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                self.globals.update(node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)) and node is not function:
                self.scopes.append(node)
                if not isinstance(node, ast.Lambda):
                    self.binders.setdefault(node.name, []).append(node)
                    if not isinstance(node, ast.ClassDef):
                        self.nested[node] = node.name
            elif isinstance(node, ast.alias):
                self.binders.setdefault((node.asname or node.name).split(".")[0], []).append(node)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in INTROSPECTION:
                self.introspects = True
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.stores.setdefault(target.id, []).append(node.value)
                    elif isinstance(target, ast.Attribute):
                        self.stored_attributes.add(ast.unparse(target))

    # -- the public question ----------------------------------------------------------

    def escape_of(self, value: ast.AST, element: Optional[int] = None) -> FlowResult:
        """How ``value`` (an expression in this function) outlives the call, if it does.
        ``element``: only that element of ``value`` (a tuple a call returns)."""
        return self._follow([(value, None, None, element)])

    def escape_of_parameter(self, name: str) -> FlowResult:
        """How the argument bound to parameter ``name`` outlives a call of this function."""
        return self._follow([], [(name, self.function)])

    def _follow(self, worklist, bound=()) -> FlowResult:
        # Items: (expression, closure it was captured by, unknown callee it came through,
        # the element of the expression's tuple that holds the value or None).
        seen: set[tuple[str, bool]] = set()
        uncertain: Optional[Escape] = None
        container: Optional[str] = None
        certain: list[Escape] = []
        pending_names = [(name, via, None, None) for name, via in bound]
        while worklist or pending_names:
            if worklist:
                expr, closure, through, element = worklist.pop()
                escape, names, onward = self._consumer(expr, element)
                if onward is not None:
                    call, callee = onward
                    worklist.append((call, closure, through or callee, None))
                if escape is not None:
                    if closure is not None:
                        escape = Escape(escape.kind, f"captured by closure `{closure}`, which is {escape.how}", escape.target, escape.statement)
                    if through is None:
                        certain.append(escape)
                        continue
                    if uncertain is None:
                        how = f"passed to `{through}(...)`, whose result is {escape.how}: it may be this buffer"
                        uncertain = Escape("uncertain", how, escape.target, escape.statement)
                pending_names.extend((name, via, closure, through) for name, via in names)
                continue
            name, via, closure, through = pending_names.pop()
            if (name, through is None) in seen:
                continue
            seen.add((name, through is None))
            if isinstance(via, (ast.Subscript, ast.Call, ast.BinOp, ast.AugAssign)) and name not in self.params:
                container = container or name  # put into a local container, or collected by concatenation
            if name in self.globals:
                escape = Escape("global", f"stored in global `{name}`", ast.Name(id=name, ctx=ast.Load()), self._statement(via))
                if through is None:
                    certain.append(escape)
                else:
                    uncertain = uncertain or escape
                continue
            for use in self.loads.get(name, ()):
                found = self._closure_uses(use)
                if found is None:
                    worklist.append((use, closure, through, None))
                else:
                    nested_name, uses = found
                    worklist.extend((u, nested_name, through, None) for u in uses)
        if certain:
            stores = tuple(e for e in certain if e.kind in ("stored", "global", "appended"))
            returns = tuple(e for e in certain if e.kind == "returned")
            return FlowResult(certain[0], stores, None, container, returns)
        return FlowResult(None, (), uncertain, container)

    def notes(self, node: ast.AST) -> Notes:
        loop = comprehension = in_lambda = False
        child, parent = node, self.parents.get(node)
        while parent is not None and parent is not self.function:
            if isinstance(parent, (ast.For, ast.AsyncFor, ast.While)) and child in parent.body:
                loop = True
            elif isinstance(parent, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                comprehension = True
            elif isinstance(parent, ast.Lambda):
                in_lambda = True
            child, parent = parent, self.parents.get(parent)
        return Notes(loop, comprehension, in_lambda)

    def enclosing_guards(self, node: ast.AST) -> list[ast.expr]:
        """Tests of the `if`s around ``node`` and of earlier `if ...: return` guards."""
        tests = []
        child, parent = node, self.parents.get(node)
        while parent is not None and parent is not self.function:
            if isinstance(parent, (ast.If, ast.While)):
                tests.append(parent.test)
            if isinstance(parent, ast.IfExp) and child is not parent.test:
                tests.append(parent.test)
            body = getattr(parent, "body", None)
            if isinstance(body, list) and child in body:
                tests.extend(self._early_exit_tests(body[: body.index(child)]))
            child, parent = parent, self.parents.get(parent)
        if child in self.function.body:
            tests.extend(self._early_exit_tests(self.function.body[: self.function.body.index(child)]))
        return tests

    # -- internals --------------------------------------------------------------------

    @staticmethod
    def _early_exit_tests(statements: list[ast.stmt]) -> list[ast.expr]:
        return [
            s.test
            for s in statements
            if isinstance(s, ast.If) and s.body and isinstance(s.body[-1], (ast.Return, ast.Raise))
        ]

    def _closure_uses(self, node: ast.AST) -> Optional[tuple[str, list[ast.Name]]]:
        """Where ``node`` sits in a nested def: that def's name and its uses (a closure
        keeps what it captures alive as long as the function object lives)."""
        parent = self.parents.get(node)
        while parent is not None and parent is not self.function:
            if parent in self.nested:
                name = self.nested[parent]
                return name, list(self.loads.get(name, []))
            parent = self.parents.get(parent)
        return None

    def _is_local_container(self, expr: ast.AST) -> bool:
        if not isinstance(expr, ast.Name) or expr.id in self.params or expr.id in self.globals:
            return False
        values = self.stores.get(expr.id)
        if not values:
            return False
        for v in values:
            if isinstance(v, (ast.List, ast.Tuple, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)):
                continue
            if isinstance(v, ast.BinOp) and isinstance(v.op, ast.Add) and any(
                isinstance(o, (ast.List, ast.Tuple)) or (isinstance(o, ast.Name) and o.id == expr.id) for o in (v.left, v.right)
            ):
                continue  # `t = t + (x,)`: still a sequence built here
            if isinstance(v, ast.Call) and (
                (isinstance(v.func, ast.Name) and v.func.id in CONTAINER_FACTORIES)
                or (isinstance(v.func, ast.Attribute) and v.func.attr in CONTAINER_FACTORIES)
            ):
                continue
            return False
        return True

    def _concatenates(self, op: ast.AST, node: ast.AST, path: list[int]) -> bool:
        """Whether ``op`` (`a + b`, `a += b`) joins sequences rather than adding tensors: the
        value came in through a tuple or list display, or an operand is one (or a local
        sequence built from them)."""
        if path:
            return True
        operands = (op.left, op.right) if isinstance(op, ast.BinOp) else (op.target, op.value)
        return any(
            isinstance(o, (ast.Tuple, ast.List, ast.ListComp)) or self._is_local_container(o) for o in operands if o is not node
        ) or self._is_local_container(node)

    def _is_local_tensor(self, expr: ast.AST) -> bool:
        if not isinstance(expr, ast.Name) or expr.id in self.params or expr.id in self.globals:
            return False
        values = self.stores.get(expr.id)
        return bool(values) and all(self.is_tensor(v) for v in values)

    def _statement(self, node: ast.AST) -> Optional[ast.stmt]:
        while node is not None and not isinstance(node, ast.stmt):
            node = self.parents.get(node)
        return node

    def _store(self, target: ast.AST, path: list[int]) -> tuple[Optional[Escape], list[tuple[str, ast.AST]]]:
        """What storing into ``target`` does with the value (at ``path`` inside a tuple)."""
        if isinstance(target, (ast.Tuple, ast.List)):
            if path and len(target.elts) > path[-1] and not any(isinstance(e, ast.Starred) for e in target.elts):
                return self._store(target.elts[path[-1]], path[:-1])
            names: list[tuple[str, ast.AST]] = []
            for elt in target.elts:
                escape, sub = self._store(elt.value if isinstance(elt, ast.Starred) else elt, [])
                if escape is not None:
                    return escape, []
                names.extend(sub)
            return None, names
        if isinstance(target, ast.Name):
            return None, [(target.id, target)]
        if isinstance(target, ast.Attribute):
            return Escape("stored", f"stored on `{unparse(target)}`", target, self._statement(target)), []
        if isinstance(target, ast.Subscript):
            if self._is_local_container(target.value):
                return None, [(target.value.id, target)]
            if self._is_local_tensor(target.value) or (not path and _is_slicing(target.slice)):
                # `buf[idx] = value`, `out[a:b] = value`, `out[:, i] = value` copy the value
                # into a tensor (a dict cannot be sliced; a list slice is given a list)
                return None, []
            return Escape("stored", f"stored into `{unparse(target.value)}[...]`", target.value, self._statement(target)), []
        return None, []

    def _consumer(self, expr: ast.AST, start: Optional[int] = None):
        """Follow ``expr`` upwards to where its value ends up: (escape, names it is bound
        to, and (call, callee) where it went into an unknown call whose result may be it).
        ``start``: the value is only that element of ``expr`` (a tuple a call returns)."""
        node = expr
        path: list[int] = [] if start is None else [start]  # element indices while climbing through tuple/list literals
        names: list[tuple[str, ast.AST]] = []
        collected: Optional[ast.AST] = None  # the concatenation the value was collected by
        while True:
            parent = self.parents.get(node)
            if parent is None or parent is self.function:
                return None, names, None
            if isinstance(parent, ast.Attribute) and parent.value is node:
                grand = self.parents.get(parent)
                if isinstance(grand, ast.Call) and grand.func is parent:
                    if parent.attr in VIEW_METHODS or parent.attr.endswith("_") and not parent.attr.startswith("_"):
                        node, path = grand, []
                        continue
                    return None, names, None  # x.sum(), x.numel(): a new value
                if parent.attr in VIEW_ATTRIBUTES:
                    node, path = parent, []
                    continue
                return None, names, None  # x.shape, x.dtype
            if isinstance(parent, ast.Subscript) and parent.value is node:
                index = parent.slice.value if isinstance(parent.slice, ast.Constant) else None
                if path and isinstance(index, int) and not isinstance(index, bool) and index >= 0:
                    if index != path[-1]:
                        return None, names, None  # `f(x)[0]` when the value is element 1
                    node, path = parent, path[:-1]
                    continue
                node, path = parent, []
                continue
            if isinstance(parent, (ast.Tuple, ast.List, ast.Set)):
                path = path + [parent.elts.index(node)] if node in parent.elts else path
                node = parent
                continue
            if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Add) and self._concatenates(parent, node, path):
                # `t + (buf,)`, `lst + [buf]`, `rows + (last,)`: a new sequence that holds the value
                node, path, collected = parent, [], parent
                continue
            if isinstance(parent, ast.AugAssign) and node is parent.value and self._concatenates(parent, node, path):
                # `t += (buf,)`: the value is collected in `t`
                escape, bound = self._store(parent.target, [])
                return escape, names + [(name, parent) for name, _ in bound], None
            if isinstance(parent, ast.Dict):
                node, path = parent, []
                continue
            if isinstance(parent, (ast.Starred, ast.IfExp, ast.BoolOp)) or (
                isinstance(parent, ast.comprehension) and node is parent.iter
            ):
                node = parent
                continue
            if isinstance(parent, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                node, path = parent, []
                continue
            if isinstance(parent, ast.NamedExpr):
                names.append((parent.target.id, parent))
                node = parent
                continue
            if isinstance(parent, ast.Return):
                return Escape("returned", "returned", None, parent, path[-1] if path else None), names, None
            if isinstance(parent, (ast.Yield, ast.YieldFrom)):
                return Escape("yielded", "yielded", None, self._statement(parent)), names, None
            if isinstance(parent, ast.Lambda):
                return None, names, None  # runs when the lambda is called; its caller consumes it
            if isinstance(parent, (ast.Assign, ast.AnnAssign)) and node is parent.value:
                targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
                for target in targets:
                    escape, bound = self._store(target, path)
                    if escape is not None:
                        return escape, names, None
                    names.extend((name, collected or via) for name, via in bound)
                return None, names, None
            if isinstance(parent, (ast.For, ast.AsyncFor)) and node is parent.iter:
                escape, bound = self._store(parent.target, [])
                return escape, names + bound, None
            if isinstance(parent, ast.keyword):
                node = parent
                continue
            if isinstance(parent, ast.Call) and node is not parent.func:
                return self._into_call(parent, node, names)
            return None, names, None

    def _into_call(self, call: ast.Call, arg: ast.AST, names: list):
        callee = call.func
        callee_name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
        if callee_name in KEEPERS:
            return Escape("kept", KEEPERS[callee_name], None, self._statement(call)), names, None
        if isinstance(callee, ast.Attribute) and callee_name in CONTAINER_ADDERS:
            receiver = callee.value
            if self._is_local_container(receiver):
                names.append((receiver.id, call))
                return None, names, None
            escape = Escape("appended", f"added to `{unparse(receiver)}` with .{callee_name}()", receiver, self._statement(call))
            return escape, names, None
        effect = self.call_effect(call, arg)
        if effect.kind == "keeps":
            return Escape("kept", effect.how, None, self._statement(call)), names, None
        if effect.kind == "returns":
            names_through = self._consumer(call, effect.position)
            return names_through[0], names + names_through[1], names_through[2]
        if effect.kind == "unknown":
            return None, names, (call, effect.how)
        return None, names, None  # consumed by the call (a kernel writing into it, say)
