"""`allocaudit fix`: workspace allocations -> `get_empty` / `get_empty_like` calls of the runtime cache.

The scan decides which sites may be rewritten (`Finding.fixable`, by the policy of
`allocaudit.auditor.analysis.fixability`) and which rewrites are safe (`Finding.fix_safety`,
by `allocaudit.auditor.analysis.fix_safety`; unsafe ones only with `--unsafe-fixes`); this
module finds the same calls again in a libcst tree by position, rewrites each one with its
own arguments as written, adds `from allocaudit.runtime import get_empty` (and
`get_empty_like`) once (or from the vendored runtime module the settings name; in each
rewritten function where the module imports torch lazily: see `runtime_imports`), and leaves
every other byte alone. A site whose rewrite would change
what the program does is skipped with a reason instead.

`torch.empty_like(x)` keeps `x`'s layout (`memory_format=torch.preserve_format`, the
default), and so does `get_empty_like(x, ...)`: it becomes that. With an explicit
`memory_format=torch.contiguous_format` the result is a contiguous tensor of `x`'s shape,
which is what `get_empty(x.shape, x.dtype, device=x.device, ...)` returns: it becomes that,
so that the one form that says "contiguous" keeps saying it.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider

from allocaudit.auditor.analysis import fixability
from allocaudit.auditor.analysis.factories import FILL, TENSOR_METHOD_FACTORIES, TORCH_FACTORIES, FactoryKind, bind
from allocaudit.auditor.findings import Finding
from allocaudit.auditor.rules import FIX_KINDS, FIXABLE_CODES, FixKind
from allocaudit.auditor.settings import DEFAULT_RUNTIME_MODULE
from allocaudit.rewrites import cache_names
from allocaudit.rewrites.runtime_imports import function_runtime_imports, imports_torch_eagerly, runtime_import, with_function_imports
from allocaudit.rewrites.syntax import (
    BoundNames,
    Item,
    arg_specs,
    arrange,
    count_comments,
    has_call,
    insert_imports,
    is_simple_reference,
    keyword_arg,
    module_torch_name,
)

RUNTIME_FUNCTION = "get_empty"
RUNTIME_LIKE_FUNCTION = "get_empty_like"
RUNTIME_FUNCTIONS = (RUNTIME_FUNCTION, RUNTIME_LIKE_FUNCTION)
# Keywords whose value the scan has checked to be the default (None/False, torch.strided,
# torch.contiguous_format): dropping them keeps the meaning.
DEFAULT_VALUED = ("out", "requires_grad", "pin_memory", "layout", "memory_format")


@dataclass(frozen=True)
class Rewrite:
    finding: Finding
    cache_name: str
    function: str = RUNTIME_FUNCTION  # what the call became: get_empty or get_empty_like


@dataclass(frozen=True)
class Skip:
    finding: Finding
    reason: str


@dataclass
class FileFix:
    """What `fix` does to one file: its new text (None: unchanged), the sites rewritten,
    the dead allocations deleted, and the sites skipped."""

    text: Optional[str] = None
    rewrites: list[Rewrite] = field(default_factory=list)
    deletions: list[Finding] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    held: list[Skip] = field(default_factory=list)  # unsafe fixes not applied (no --unsafe-fixes), with the reason


@dataclass
class _Plan:
    finding: Finding
    node: cst.Call
    base_name: str
    zero: bool
    factory: str
    kind: FactoryKind
    size: list[int]  # argument indices forming the shape (positional, starred or size=)
    size_is_keyword: bool
    dtype: Optional[int]
    device: Optional[int]
    dropped: list[int]
    source: Optional[cst.BaseExpression]  # receiver of new_*, input of *_like
    inferred_dtype: Optional[Literal["int64", "bool", "default"]]  # what torch.full infers from a literal fill; default dtype
    like: bool = False  # a `*_like` in the input's layout: rewritten to get_empty_like
    input: Optional[int] = None  # the index of a `*_like`'s input argument
    fills: bool = False  # ones and full: `.fill_(value)` on the hand-out
    fill: Optional[int] = None  # full: the index of that value (ones: a literal 1)

    @property
    def function(self) -> str:
        return RUNTIME_LIKE_FUNCTION if self.like else RUNTIME_FUNCTION


class _FixError(Exception):
    """A site the codemod cannot rewrite exactly; the message is the reason."""


def fix_source(
    path: str, text: str, findings: Sequence[Finding], unsafe_fixes: Optional[bool] = None, runtime_module: str = DEFAULT_RUNTIME_MODULE
) -> FileFix:
    """Rewrite the fixable findings of one file (of the rules that offer a fix) whose fix
    applies: the safe ones, and the unsafe ones too with ``unsafe_fixes``. ``findings``
    come from a scan of ``text``; get_empty is imported from ``runtime_module``."""
    result = FileFix()
    candidates = []
    for finding in findings:
        if finding.code not in FIXABLE_CODES:
            continue
        if not finding.fixable:
            result.skips.append(Skip(finding, finding.not_fixable_reason or "not fixable"))
        elif finding.fix_applies(unsafe_fixes):
            candidates.append(finding)
        elif unsafe_fixes is None:  # held back, and said so (unsafe-fixes = false: silently)
            result.held.append(Skip(finding, finding.unsafe_reason or "unsafe fix"))
    if not candidates:
        return result

    wrapper = MetadataWrapper(cst.parse_module(text), unsafe_skip_copy=True)  # a fresh tree: no copy needed
    module = wrapper.module
    positions = wrapper.resolve(PositionProvider)
    parents = wrapper.resolve(ParentNodeProvider)
    calls = {}
    for node, where in positions.items():
        if isinstance(node, cst.Call):
            calls[(where.start.line, where.start.column + 1, where.end.line, where.end.column + 1)] = node

    torch_name = module_torch_name(module)
    bound = BoundNames()
    module.visit(bound)
    need_torch_import = False
    plans: list[_Plan] = []
    deletions: dict[cst.SimpleStatementLine, Finding] = {}
    for finding in candidates:
        node = calls.get((finding.line, finding.col, finding.end_line, finding.end_col))
        if node is None:
            result.skips.append(Skip(finding, "the call is not where the scan found it (file changed during the run?)"))
            continue
        try:
            if FIX_KINDS[finding.code] is FixKind.DELETE:
                deletions[_deletable_statement(node, parents)] = finding
            else:
                plans.append(_plan(finding, node, parents, module))
        except _FixError as exc:
            result.skips.append(Skip(finding, str(exc)))

    # The name torch is spelled with, for get_default_dtype() and inferred dtypes: the
    # call's own (`th.zeros`), the module's `import torch [as th]`, or a new `import torch`.
    for plan in [p for p in plans if p.inferred_dtype is not None and _torch_receiver(p) is None]:
        if torch_name is None and "torch" in bound.names:
            plans.remove(plan)
            result.skips.append(Skip(plan.finding, "needs torch.get_default_dtype(), but `torch` names something else here"))
        elif torch_name is None:
            torch_name, need_torch_import = "torch", True
    if not plans and not deletions:
        return result

    def is_runtime(name: str) -> bool:
        return name == runtime_module

    existing = {f: runtime_import(module.body, is_runtime, f) for f in RUNTIME_FUNCTIONS}
    # Where the module imports torch lazily, each rewritten function imports the runtime itself.
    eager = any(existing.values()) or imports_torch_eagerly(module)
    local = {} if eager else _functions(plans, parents, result)
    if not plans and not deletions:
        return result
    # The local name of each runtime function: its existing import (the module's, or the one
    # the rewritten functions already share), else its own name, else an alias
    # (`allocaudit_get_empty`, `allocaudit_get_empty_2`...) nothing else uses.
    function_names: dict[str, str] = {}
    for function in RUNTIME_FUNCTIONS:
        imported = {name for _, name in function_runtime_imports(module, is_runtime, function).values()} if local else set()
        if existing[function] is not None:
            function_names[function] = existing[function][1]
        elif len(imported) == 1:
            function_names[function] = next(iter(imported))
        else:
            candidates = (function, f"allocaudit_{function}", *(f"allocaudit_{function}_{n}" for n in range(2, 1000)))
            function_names[function] = next(c for c in candidates if c not in bound.names and c not in function_names.values())

    taken = _existing_cache_names(module)
    names = cache_names.assign([p.base_name for p in plans], taken)
    replacements: dict[cst.Call, tuple[_Plan, str]] = {p.node: (p, name) for p, name in zip(plans, names)}
    transformer = _Transformer(replacements, deletions, function_names, torch_name, local, module, runtime_module, need_torch_import)
    new_module = module.visit(transformer)
    for finding, reason in transformer.skipped:
        result.skips.append(Skip(finding, reason))
    if not transformer.done and not transformer.deleted:
        return result

    if not local:
        imports = []
        if need_torch_import and any(_needs_torch_import(p) for p, _ in transformer.done):
            imports.append("import torch")
        used = {plan.function for plan, _ in transformer.done}
        added = [f for f in RUNTIME_FUNCTIONS if f in used and existing[f] is None]
        if added:
            imports.append(_import_line(runtime_module, added, function_names))
        new_module = insert_imports(new_module, imports)
    result.text = new_module.code
    result.rewrites = [Rewrite(plan.finding, name, plan.function) for plan, name in transformer.done]
    result.rewrites.sort(key=lambda r: (r.finding.line, r.finding.col))
    result.deletions = sorted(transformer.deleted, key=lambda f: (f.line, f.col))
    result.skips.sort(key=lambda s: (s.finding.line, s.finding.col))
    return result


def _deletable_statement(call: cst.Call, parents) -> cst.SimpleStatementLine:
    """The line a dead allocation is the whole of (the scan checked its arguments): it can go
    when it holds nothing else and is not alone in its block. Its own comments go with it;
    comment lines above it would lose their line, so they keep it."""
    node: cst.CSTNode = call
    while not isinstance(node, cst.SimpleStatementLine):
        node = parents[node]
        if isinstance(node, cst.BaseCompoundStatement):
            raise _FixError("the allocation is not a statement of its own")
    if len(node.body) != 1:
        raise _FixError("the line holds another statement")
    if any(line.comment is not None for line in node.leading_lines):
        raise _FixError("a comment above the allocation would lose its line")
    block = parents[node]
    body = block.body if isinstance(block, (cst.IndentedBlock, cst.Module)) else ()
    if len(body) < 2:
        raise _FixError("the allocation is the only statement of its block")
    return node


def _import_line(runtime_module: str, functions: Sequence[str], function_names: dict[str, str]) -> str:
    names = [f + ("" if function_names[f] == f else f" as {function_names[f]}") for f in functions]
    return f"from {runtime_module} import {', '.join(names)}"


def _needs_torch_import(plan: _Plan) -> bool:
    return plan.inferred_dtype is not None and _torch_receiver(plan) is None


def _functions(plans: list[_Plan], parents, result: FileFix) -> dict[cst.Call, cst.FunctionDef]:
    """The innermost function of each call, for its function-local import; a call in no
    function, or in a one-line one, is skipped (removed from ``plans``)."""
    found = {}
    for plan in list(plans):
        node = parents.get(plan.node)
        while node is not None and not isinstance(node, cst.FunctionDef):
            node = parents.get(node)
        if node is None or not isinstance(node.body, cst.IndentedBlock):
            plans.remove(plan)
            where = "in no function" if node is None else "in a one-line function"
            result.skips.append(Skip(plan.finding, f"the module imports torch lazily and the call is {where}: no place for a function-local import of get_empty"))
            continue
        found[plan.node] = node
    return found


def _torch_receiver(plan: _Plan) -> Optional[str]:
    """`th` in `th.zeros(...)`: the scan resolved it to torch, so it spells torch here."""
    func = plan.node.func
    if plan.factory in TORCH_FACTORIES and isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name):
        return func.value.value
    return None


def _existing_cache_names(module: cst.Module) -> set[str]:
    """cache_name="..." literals already in the module (a file fixed before, by hand or by us)."""
    names: set[str] = set()

    class Collect(cst.CSTVisitor):
        def visit_Arg(self, node: cst.Arg) -> None:
            if node.keyword is not None and node.keyword.value == "cache_name" and isinstance(node.value, cst.SimpleString):
                value = node.value.evaluated_value
                if isinstance(value, str):
                    names.add(value)

    module.visit(Collect())
    return names


def _factory(api: Optional[str]) -> str:
    name = (api or "").rpartition(".")[2]
    if name not in TORCH_FACTORIES and name not in TENSOR_METHOD_FACTORIES:
        raise _FixError(f"`{api}` is not a factory the codemod knows")
    return name


def _plan(finding: Finding, node: cst.Call, parents, module: cst.Module) -> _Plan:
    factory = _factory(finding.api)
    kind = TORCH_FACTORIES.get(factory) or TENSOR_METHOD_FACTORIES[factory]
    if finding.api.startswith("Tensor.") != (factory in TENSOR_METHOD_FACTORIES):
        raise _FixError(f"`{finding.api}` is not called as the scan saw it")
    args = list(node.args)
    bound = bind(factory, arg_specs(args))
    if bound.has_dstar:
        raise _FixError(fixability.HIDDEN_KWARGS)
    if count_comments(node.func):
        raise _FixError("a comment inside the callee expression would be lost")
    dropped: list[int] = []
    for name, index in bound.keywords.items():
        if name in ("dtype", "device"):
            continue
        if name not in DEFAULT_VALUED:
            raise _FixError(f"`{name}=` has no counterpart in get_empty")
        dropped.append(index)

    def explicit(name: str) -> Optional[int]:
        index = bound.keyword(name)
        if index is not None and _is_none(args[index].value):
            dropped.append(index)  # dtype=None / device=None: the same as leaving it out
            return None
        return index

    dtype, device = explicit("dtype"), explicit("device")
    # A `*_like` without an explicit contiguous format keeps the input's layout.
    like = kind in ("like", "full_like") and not _is_contiguous_format(args, bound.keyword("memory_format"))
    source = None
    if factory in TENSOR_METHOD_FACTORIES:
        if not isinstance(node.func, cst.Attribute):
            raise _FixError("a tensor method called without its tensor")
        source = node.func.value
        what = "the tensor"
    elif bound.like is not None:
        source = args[bound.like].value
        if not like:
            dropped.append(bound.like)
        what = "the input tensor"
    if source is not None and not like and not is_simple_reference(source):
        code = module.code_for_node(source)
        raise _FixError(f"{what} `{code}` is not a plain name: its shape, dtype and device would evaluate it again")

    inferred = None
    zero = FILL[factory] == "0"
    fills, fill = FILL[factory] == "1", None
    if FILL[factory] == "fill":
        if any(a.star for a in args):
            raise _FixError(fixability.STARRED_FILL)
        if bound.fill is None:
            raise _FixError(fixability.NO_FILL)
        value = args[bound.fill].value
        parsed = ast.parse(f"(\n{module.code_for_node(value)}\n)", mode="eval").body
        literal = fixability.inferred_fill_dtype(parsed)  # a bool or real literal: its dtype
        zero = literal is not None and ast.literal_eval(parsed) == 0
        if zero:
            dropped.append(bound.fill)
        else:
            # `get_empty(...).fill_(value)`: every element written, as torch.full writes them.
            fills, fill = True, bound.fill
            if has_call(value) and any(has_call(a.value) for a in args[bound.fill + 1:]):
                raise _FixError(fixability.FILL_ORDER)
        if dtype is None and source is None:
            if literal is None:
                raise _FixError(fixability.FILL_DTYPE)
            inferred = literal  # torch.full infers its dtype from the fill value
    if dtype is None and source is None and inferred is None:
        inferred = "default"

    if kind in ("like", "full_like"):
        size: list[int] = []
        size_is_keyword = False
    elif bound.size_keyword is not None:
        size, size_is_keyword = [bound.size_keyword], True
    else:
        size, size_is_keyword = list(bound.size), False
        if not size:
            raise _FixError(fixability.NO_SIZE)
    if kind == "strided" or bound.stride is not None:
        raise _FixError(fixability.EXPLICIT_STRIDES)

    # get_empty evaluates shape, dtype, device in this order; keep the order of any two
    # arguments whose evaluation may have effects (get_empty_like keeps the written order).
    order = [i for i in [*size, dtype, device] if i is not None and has_call(args[i].value)]
    if not like and order != sorted(order):
        raise _FixError("the arguments would be evaluated in another order (shape, dtype, device)")
    for index in dropped:
        if count_comments(args[index]):
            raise _FixError(f"a comment in the dropped argument `{module.code_for_node(args[index]).strip().rstrip(',')}` would be lost")

    base = f"{cache_names.module_name(finding.path)}.{finding.function}.{_target(node, parents) or factory}"
    return _Plan(finding, node, base, zero, factory, kind, size, size_is_keyword, dtype, device, dropped, source, inferred, like, bound.like, fills, fill)


def _is_contiguous_format(args: Sequence[cst.Arg], index: Optional[int]) -> bool:
    """`memory_format=torch.contiguous_format` (the scan checked that a given format is
    contiguous_format or, for `*_like`, preserve_format)."""
    value = args[index].value if index is not None else None
    return isinstance(value, cst.Attribute) and value.attr.value == "contiguous_format"


def _is_none(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "None"


def _target(node: cst.CSTNode, parents) -> Optional[str]:
    """The name the allocation is assigned to, through method chains (`ws = torch.empty(n).view(...)`)
    and tuple assignments (`a, b = torch.empty(n), torch.empty(m)`)."""
    child, parent = node, parents.get(node)
    index = None
    while parent is not None:
        if isinstance(parent, cst.Attribute) and parent.value is child:
            pass
        elif isinstance(parent, cst.Call) and parent.func is child:
            pass
        elif isinstance(parent, cst.Subscript) and parent.value is child:
            pass
        elif isinstance(parent, cst.Element) and index is None:
            tuple_node = parents.get(parent)
            if not isinstance(tuple_node, (cst.Tuple, cst.List)):
                return None
            index = next(i for i, e in enumerate(tuple_node.elements) if e is parent)
            child, parent = tuple_node, parents.get(tuple_node)
            continue
        else:
            break
        child, parent = parent, parents.get(parent)
    if isinstance(parent, cst.Assign) and parent.value is child:
        target = parent.targets[0].target
    elif isinstance(parent, (cst.AnnAssign, cst.AugAssign)) and parent.value is child:
        target = parent.target
    elif isinstance(parent, cst.NamedExpr) and parent.value is child:
        target = parent.target
    else:
        return None
    if index is not None:
        if not isinstance(target, (cst.Tuple, cst.List)) or index >= len(target.elements):
            return None
        element = target.elements[index]
        if isinstance(element, cst.StarredElement):
            return None
        target = element.value
    return cache_names.target_name(target)


class _Transformer(cst.CSTTransformer):
    def __init__(
        self, replacements, deletions: dict[cst.SimpleStatementLine, Finding], function_names: dict[str, str], torch_name: Optional[str],
        local: dict[cst.Call, cst.FunctionDef], module: cst.Module, runtime_module: str, need_torch_import: bool,
    ) -> None:
        super().__init__()
        self.replacements = replacements
        self.deletions = deletions
        self.function_names = function_names
        self.torch_name = torch_name
        self.local: dict[cst.Call, cst.FunctionDef] = local  # call -> function that imports get_empty
        self.module = module
        self.runtime_module = runtime_module
        self.need_torch_import = need_torch_import
        self.done: list[tuple[_Plan, str]] = []
        self.deleted: list[Finding] = []
        self.skipped: list[tuple[Finding, str]] = []

    def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine):
        finding = self.deletions.get(original)
        if finding is None:
            return updated
        self.deleted.append(finding)
        return cst.RemoveFromParent()

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        plans = [plan for plan, _ in self.done if self.local.get(plan.node) is original]
        if not plans:
            return updated
        lines = ["import torch"] if self.need_torch_import and any(_needs_torch_import(p) for p in plans) else []
        used = {plan.function for plan in plans}
        missing = [
            f for f in RUNTIME_FUNCTIONS
            if f in used and runtime_import(original.body.body, lambda name: name == self.runtime_module, f) is None
        ]
        if missing:
            lines.append(_import_line(self.runtime_module, missing, self.function_names))
        return with_function_imports(updated, lines, self.module) if lines else updated

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        entry = self.replacements.get(original)
        if entry is None:
            return updated
        plan, name = entry
        function_name = self.function_names[plan.function]
        if plan.like:
            new = _rewrite_like(plan, updated, name, function_name)
        else:
            new = _rewrite(plan, updated, name, function_name, _torch_receiver(plan) or self.torch_name)
        if plan.fills:
            # Evaluated after the allocation's own arguments: `_plan` checked that this keeps
            # the order of anything with effects.
            value = cst.Integer("1") if plan.fill is None else updated.args[plan.fill].value
            new = cst.Call(cst.Attribute(new, cst.Name("fill_")), [cst.Arg(value)])
        if count_comments(new) < count_comments(updated):
            self.skipped.append((plan.finding, "a comment inside the call would be lost"))
            return updated
        self.done.append((plan, name))
        return new


def _rewrite(plan: _Plan, call: cst.Call, name: str, function_name: str, torch_name: Optional[str]) -> cst.Call:
    args = list(call.args)
    items: list[Item] = []
    # Shape: one argument as written, several as a tuple, or the input's shape.
    if plan.kind in ("like", "full_like"):
        items.append(Item(cst.Arg(cst.Attribute(plan.source.deep_clone(), cst.Name("shape")))))
    elif plan.size_is_keyword or (len(plan.size) == 1 and args[plan.size[0]].star == ""):
        arg = args[plan.size[0]]
        items.append(Item(arg.with_changes(keyword=None, equal=cst.MaybeSentinel.DEFAULT), arg))
    else:
        elements = []
        for position, index in enumerate(plan.size):
            arg = args[index]
            last = position == len(plan.size) - 1
            comma = (cst.Comma() if len(plan.size) == 1 else cst.MaybeSentinel.DEFAULT) if last else arg.comma
            if arg.star == "*":
                elements.append(cst.StarredElement(arg.value, comma=comma, whitespace_before_value=arg.whitespace_after_star))
            else:
                elements.append(cst.Element(arg.value, comma=comma))
        last_arg = args[plan.size[-1]]
        shape = cst.Arg(cst.Tuple(elements), whitespace_after_arg=last_arg.whitespace_after_arg)
        items.append(Item(shape, last_arg))
    # dtype: as written, the source tensor's, or what the factory would infer.
    if plan.dtype is not None:
        arg = args[plan.dtype]
        items.append(Item(arg.with_changes(keyword=None, equal=cst.MaybeSentinel.DEFAULT), arg))
    elif plan.source is not None:
        items.append(Item(cst.Arg(cst.Attribute(plan.source.deep_clone(), cst.Name("dtype")))))
    else:
        spelled = {"default": "get_default_dtype()", "int64": "int64", "bool": "bool"}[plan.inferred_dtype]
        items.append(Item(cst.Arg(cst.parse_expression(f"{torch_name}.{spelled}"))))
    if plan.device is not None:
        items.append(Item(args[plan.device], args[plan.device]))
    elif plan.source is not None:
        items.append(Item(keyword_arg("device", cst.Attribute(plan.source.deep_clone(), cst.Name("device")))))
    items.append(Item(keyword_arg("cache_name", cst.SimpleString(json.dumps(name)))))
    items.append(Item(keyword_arg("zero", cst.Name("True" if plan.zero else "False"))))
    return call.with_changes(func=cst.Name(function_name), args=arrange(items, args, call.whitespace_before_args))


def _rewrite_like(plan: _Plan, call: cst.Call, name: str, function_name: str) -> cst.Call:
    """`torch.zeros_like(x, dtype=d)` -> `get_empty_like(x, dtype=d, cache_name=..., zero=True)`:
    the input, then the dtype and device as written and in their order."""
    args = list(call.args)
    items: list[Item] = []
    for index, arg in enumerate(args):
        if index in (plan.input, plan.dtype, plan.device):
            items.append(Item(arg, arg))  # `input=x` stays a keyword: get_empty_like's parameter has that name
    items.append(Item(keyword_arg("cache_name", cst.SimpleString(json.dumps(name)))))
    items.append(Item(keyword_arg("zero", cst.Name("True" if plan.zero else "False"))))
    return call.with_changes(func=cst.Name(function_name), args=arrange(items, args, call.whitespace_before_args))
