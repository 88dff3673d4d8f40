"""`allocaudit fix`: workspace allocations -> `get_empty` calls of the runtime cache.

The scan decides which sites may be rewritten (`Finding.fixable`, by the policy of
`allocaudit.auditor.analysis.fixability`); this module finds the
same calls again in a libcst tree by position, rewrites each one with its own arguments
as written, adds `from allocaudit.runtime import get_empty` once (or from the vendored runtime
module the settings name; in each rewritten function where the module imports torch lazily: see
`runtime_imports`), and leaves every other byte alone. A site whose rewrite would change
what the program does is skipped with a reason instead.
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
from allocaudit.auditor.rules import FIXABLE_CODES
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
ALIAS = "allocaudit_get_empty"
# Keywords whose value the scan has checked to be the default (None/False, torch.strided,
# torch.contiguous_format): dropping them keeps the meaning.
DEFAULT_VALUED = ("out", "requires_grad", "pin_memory", "layout", "memory_format")


@dataclass(frozen=True)
class Rewrite:
    finding: Finding
    cache_name: str


@dataclass(frozen=True)
class Skip:
    finding: Finding
    reason: str


@dataclass
class FileFix:
    """What `fix` does to one file: its new text (None: unchanged), the sites rewritten and skipped."""

    text: Optional[str] = None
    rewrites: list[Rewrite] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)


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


class _FixError(Exception):
    """A site the codemod cannot rewrite exactly; the message is the reason."""


def fix_source(path: str, text: str, findings: Sequence[Finding], runtime_module: str = DEFAULT_RUNTIME_MODULE) -> FileFix:
    """Rewrite the fixable findings of one file (of the rules that offer a fix). ``findings``
    come from a scan of ``text``; get_empty is imported from ``runtime_module``."""
    result = FileFix()
    candidates = []
    for finding in findings:
        if finding.code not in FIXABLE_CODES:
            continue
        if not finding.fixable:
            result.skips.append(Skip(finding, finding.not_fixable_reason or "not fixable"))
        else:
            candidates.append(finding)
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
    for finding in candidates:
        node = calls.get((finding.line, finding.col, finding.end_line, finding.end_col))
        if node is None:
            result.skips.append(Skip(finding, "the call is not where the scan found it (file changed during the run?)"))
            continue
        try:
            plan = _plan(finding, node, parents, module)
        except _FixError as exc:
            result.skips.append(Skip(finding, str(exc)))
            continue
        plans.append(plan)
    if not plans:
        return result

    # The name torch is spelled with, for get_default_dtype() and inferred dtypes: the
    # call's own (`th.zeros`), the module's `import torch [as th]`, or a new `import torch`.
    for plan in [p for p in plans if p.inferred_dtype is not None and _torch_receiver(p) is None]:
        if torch_name is None and "torch" in bound.names:
            plans.remove(plan)
            result.skips.append(Skip(plan.finding, "needs torch.get_default_dtype(), but `torch` names something else here"))
        elif torch_name is None:
            torch_name, need_torch_import = "torch", True
    if not plans:
        return result

    def is_runtime(name: str) -> bool:
        return name == runtime_module

    existing = runtime_import(module.body, is_runtime)
    # Where the module imports torch lazily, each rewritten function imports get_empty itself.
    local = {} if existing is not None or imports_torch_eagerly(module) else _functions(plans, parents, result)
    if not plans:
        return result
    imported = {name for _, name in function_runtime_imports(module, is_runtime).values()} if local else set()
    if existing is not None:
        function_name = existing[1]
    elif len(imported) == 1:
        function_name = next(iter(imported))
    elif RUNTIME_FUNCTION not in bound.names:
        function_name = RUNTIME_FUNCTION
    else:
        function_name = ALIAS
        ordinal = 1
        while function_name in bound.names:
            ordinal += 1
            function_name = f"{ALIAS}_{ordinal}"

    taken = _existing_cache_names(module)
    names = cache_names.assign([p.base_name for p in plans], taken)
    replacements: dict[cst.Call, tuple[_Plan, str]] = {p.node: (p, name) for p, name in zip(plans, names)}
    transformer = _Transformer(replacements, function_name, torch_name, local, module, runtime_module, need_torch_import)
    new_module = module.visit(transformer)
    for finding, reason in transformer.skipped:
        result.skips.append(Skip(finding, reason))
    if not transformer.done:
        return result

    if not local:
        imports = []
        if need_torch_import and any(_needs_torch_import(p) for p, _ in transformer.done):
            imports.append("import torch")
        if existing is None:
            imports.append(_import_line(runtime_module, function_name))
        new_module = insert_imports(new_module, imports)
    result.text = new_module.code
    result.rewrites = [Rewrite(plan.finding, name) for plan, name in transformer.done]
    result.rewrites.sort(key=lambda r: (r.finding.line, r.finding.col))
    result.skips.sort(key=lambda s: (s.finding.line, s.finding.col))
    return result


def _import_line(runtime_module: str, function_name: str) -> str:
    alias = "" if function_name == RUNTIME_FUNCTION else f" as {function_name}"
    return f"from {runtime_module} import {RUNTIME_FUNCTION}{alias}"


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
    source = None
    if factory in TENSOR_METHOD_FACTORIES:
        if not isinstance(node.func, cst.Attribute):
            raise _FixError("a tensor method called without its tensor")
        source = node.func.value
        what = "the tensor"
    elif bound.like is not None:
        source = args[bound.like].value
        dropped.append(bound.like)
        what = "the input tensor"
    if source is not None and not is_simple_reference(source):
        code = module.code_for_node(source)
        raise _FixError(f"{what} `{code}` is not a plain name: its shape, dtype and device would evaluate it again")

    inferred = None
    zero = FILL[factory] is not None
    if FILL[factory] == "fill":
        if bound.fill is None:
            raise _FixError("no fill value")
        fill = _literal(module, args[bound.fill].value)
        if fill is None or fill != 0 or isinstance(fill, complex):
            raise _FixError(fixability.NONZERO_FILL)
        dropped.append(bound.fill)
        if dtype is None and source is None:
            # torch.full infers its dtype from the fill value.
            inferred = "bool" if isinstance(fill, bool) else "int64" if isinstance(fill, int) else "default"
    elif FILL[factory] == "1":
        raise _FixError(fixability.FILLED_WITH_ONES)
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
    # arguments whose evaluation may have effects.
    order = [i for i in [*size, dtype, device] if i is not None and has_call(args[i].value)]
    if order != sorted(order):
        raise _FixError("the arguments would be evaluated in another order (shape, dtype, device)")
    for index in dropped:
        if count_comments(args[index]):
            raise _FixError(f"a comment in the dropped argument `{module.code_for_node(args[index]).strip().rstrip(',')}` would be lost")

    base = f"{cache_names.module_name(finding.path)}.{finding.function}.{_target(node, parents) or factory}"
    return _Plan(finding, node, base, zero, factory, kind, size, size_is_keyword, dtype, device, dropped, source, inferred)


def _is_none(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "None"


def _literal(module: cst.Module, node: cst.BaseExpression):
    if not isinstance(node, (cst.Integer, cst.Float, cst.Imaginary, cst.Name)):
        return None
    try:
        return ast.literal_eval(module.code_for_node(node))
    except (ValueError, SyntaxError):
        return None


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
    def __init__(self, replacements, function_name: str, torch_name: Optional[str], local, module: cst.Module, runtime_module: str, need_torch_import: bool) -> None:
        super().__init__()
        self.replacements = replacements
        self.function_name = function_name
        self.torch_name = torch_name
        self.local: dict[cst.Call, cst.FunctionDef] = local  # call -> function that imports get_empty
        self.module = module
        self.runtime_module = runtime_module
        self.need_torch_import = need_torch_import
        self.done: list[tuple[_Plan, str]] = []
        self.skipped: list[tuple[Finding, str]] = []

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        plans = [plan for plan, _ in self.done if self.local.get(plan.node) is original]
        if not plans:
            return updated
        lines = ["import torch"] if self.need_torch_import and any(_needs_torch_import(p) for p in plans) else []
        if runtime_import(original.body.body, lambda name: name == self.runtime_module) is None:
            lines.append(_import_line(self.runtime_module, self.function_name))
        return with_function_imports(updated, lines, self.module) if lines else updated

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        entry = self.replacements.get(original)
        if entry is None:
            return updated
        plan, name = entry
        new = _rewrite(plan, updated, name, self.function_name, _torch_receiver(plan) or self.torch_name)
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
