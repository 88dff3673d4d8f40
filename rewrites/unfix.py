"""`allocaudit unfix`: `get_empty` calls back to the plain `torch.zeros`/`torch.empty` they mean.

`get_empty(shape, dtype, device=d, cache_name=..., zero=z)` allocates what
`torch.zeros(shape, dtype=dtype, device=d)` (z true) or `torch.empty(...)` would, so the
rewrite is exact; a dtype of `torch.get_default_dtype()` (what `fix` writes for a missing
dtype) is left out again. `get_empty_like(x, dtype=d, device=v, cache_name=..., zero=z)`
is `torch.zeros_like(x, dtype=d, device=v)` (or `torch.empty_like`), layout included.
`get_empty(...).fill_(value)` (what `fix` writes for `torch.full` and `torch.ones`) is
`torch.full(shape, value, dtype=dtype, device=d)`, `torch.ones(...)` for a literal 1, and
`get_empty_like(x, ...).fill_(value)` is `torch.full_like(x, value, ...)` or `torch.ones_like`.
Calls are restored where the name is the runtime's `get_empty` / `get_empty_like`: imported
at module level, or inside the function (what `fix` writes in a module that imports torch
lazily); which modules are the runtime's is `runtime_imports.recogniser`'s call. An import
is removed once nothing in its scope uses it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from allocaudit.auditor.analysis.fixability import inferred_fill_dtype
from allocaudit.auditor.settings import DEFAULT_RUNTIME_MODULE
from allocaudit.rewrites.fix import RUNTIME_FUNCTION, RUNTIME_FUNCTIONS, RUNTIME_LIKE_FUNCTION
from allocaudit.rewrites.runtime_imports import IsRuntime, function_runtime_imports, runtime_import, runtime_torch_name
from allocaudit.rewrites.syntax import (
    BoundNames,
    Item,
    arrange,
    count_comments,
    dotted,
    has_call,
    insert_after_preamble,
    insert_imports,
    keyword_arg,
    module_torch_name,
    remove_import_if_unused,
    torch_import_names,
    without_unused_import,
)


@dataclass(frozen=True)
class Site:
    line: int
    col: int  # 1-based, in characters
    detail: str  # the call it became, or why it was skipped


# What a scope imports from the runtime: local name -> (runtime module, function).
_Imported = dict[str, tuple[str, str]]


@dataclass
class _ImportScope:
    may_add_torch: bool
    restored: int = 0
    torch_needed: bool = False


@dataclass
class FileUnfix:
    text: Optional[str] = None
    restored: list[Site] = field(default_factory=list)
    skips: list[Site] = field(default_factory=list)


def unfix_source(text: str, is_runtime: IsRuntime = lambda name: name == DEFAULT_RUNTIME_MODULE) -> FileUnfix:
    result = FileUnfix()
    if RUNTIME_FUNCTION not in text:
        return result
    module = cst.parse_module(text)
    at_module: _Imported = {}
    in_functions: dict[cst.FunctionDef, _Imported] = {}
    for function in RUNTIME_FUNCTIONS:
        hit = runtime_import(module.body, is_runtime, function)
        if hit is not None:
            at_module[hit[1]] = (hit[0], function)
        for node, (name, local) in function_runtime_imports(module, is_runtime, function).items():
            in_functions.setdefault(node, {})[local] = (name, function)
    if not at_module and not in_functions:
        return result
    # torch's name where no function imports it: an unconditional import's, else a name bound
    # to torch when the module runs (`if is_torch_available():`, a LazyLoader), else none: an
    # `import torch` is added where the runtime was imported, if `torch` is free.
    torch_name = module_torch_name(module) or runtime_torch_name(module)
    add_torch = False  # at module level; a function that imports get_empty gets `import torch` instead
    if torch_name is None:
        bound = BoundNames()
        module.visit(bound)
        add_torch = "torch" not in bound.names
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    transformer = _Transformer(at_module, in_functions, torch_name, add_torch, wrapper.resolve(PositionProvider), module)
    new_module = wrapper.module.visit(transformer)
    result.restored, result.skips = transformer.restored, transformer.skips
    if not result.restored:
        return result
    for local, (name, _) in at_module.items():
        new_module = remove_import_if_unused(new_module, name, local)
    if transformer.imports[0].torch_needed:
        new_module = insert_imports(new_module, ["import torch"])
    result.text = new_module.code
    return result


class _Transformer(cst.CSTTransformer):
    """Restores the calls of the runtime's get_empty, scope by scope: the module's import
    holds everywhere, a function's in that function and those nested in it."""

    def __init__(self, at_module: "_Imported", in_functions: dict[cst.FunctionDef, "_Imported"], torch_name: Optional[str], add_torch: bool, positions, module: cst.Module) -> None:
        super().__init__()
        self.in_functions = in_functions
        self.names: list[_Imported] = [at_module]  # the runtime's functions by local name, per scope
        self.torch_names: list[Optional[str]] = [torch_name]  # torch's name, per scope (None: not bound there)
        self.positions = positions
        self.module = module
        self.restored: list[Site] = []
        self.skips: list[Site] = []
        # Per open scope that imports get_empty (the module first): calls restored there, and
        # whether one of them needs an `import torch` added to that scope.
        self.imports: list[_ImportScope] = [_ImportScope(may_add_torch=add_torch)]
        self.fills: dict[cst.Call, tuple[cst.Call, cst.Arg]] = {}  # a get_empty call -> its `.fill_(value)` call, and value
        self.filled: set[cst.Call] = set()  # `.fill_()` calls whose get_empty became torch.full/ones

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        local = self.in_functions.get(node)
        self.names.append({**self.names[-1], **local} if local else self.names[-1])
        self.torch_names.append(_local_torch_name(node) or self.torch_names[-1])
        if local:
            self.imports.append(_ImportScope(may_add_torch=True))

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        self.names.pop()
        self.torch_names.pop()
        local = self.in_functions.get(original)
        if not local:
            return updated
        scope = self.imports.pop()
        if not scope.restored:
            return updated
        body = updated.body.body
        for name, (runtime_module, _) in local.items():
            body = without_unused_import(body, runtime_module, name)
        if scope.torch_needed:
            body = insert_after_preamble(body, ["import torch"], self.module)
        return updated.with_changes(body=updated.body.with_changes(body=body))

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if (
            isinstance(func, cst.Attribute)
            and func.attr.value == "fill_"
            and isinstance(func.value, cst.Call)
            and self._runtime_function(func.value) is not None
            and len(node.args) == 1
            and node.args[0].keyword is None
            and not node.args[0].star
            # Comments in the value move with it; any other in `.fill_(...)` would be lost.
            and count_comments(node) == count_comments(func.value) + count_comments(node.args[0].value)
        ):
            self.fills[func.value] = (node, node.args[0])

    def _runtime_function(self, call: cst.Call) -> Optional[str]:
        imported = self.names[-1].get(call.func.value) if isinstance(call.func, cst.Name) else None
        return imported[1] if imported else None

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        if original in self.filled:
            # `torch.full(...).fill_(v)`: the inner call already has the value.
            return updated.func.value.with_changes(lpar=updated.lpar, rpar=updated.rpar)
        function = self._runtime_function(updated)
        if function is None:
            return updated
        start = self.positions[original].start
        scope = self.imports[-1]
        adds_torch = self.torch_names[-1] is None and scope.may_add_torch
        self.torch_name = "torch" if adds_torch else self.torch_names[-1]
        fill_call, fill = self.fills.get(original, (None, None))
        try:
            if function == RUNTIME_LIKE_FUNCTION:
                new = self._restore_like(updated, fill)
            else:
                new = self._restore(updated, fill)
        except ValueError as exc:
            self.skips.append(Site(start.line, start.column + 1, str(exc)))
            return updated
        if count_comments(new) < count_comments(updated):
            self.skips.append(Site(start.line, start.column + 1, "a comment inside the call would be lost"))
            return updated
        self.restored.append(Site(start.line, start.column + 1, dotted(new.func) or ""))
        scope.restored += 1
        scope.torch_needed = scope.torch_needed or adds_torch
        if fill_call is not None:
            self.filled.add(fill_call)
        return new

    def _restore(self, call: cst.Call, fill: Optional[cst.Arg]) -> cst.Call:
        if self.torch_name is None:
            raise ValueError("`torch` names something else in this module")
        args = list(call.args)
        positional = [a for a in args if a.keyword is None and a.star == ""]
        keywords = {a.keyword.value: a for a in args if a.keyword is not None}
        if any(a.star for a in args):
            raise ValueError("starred arguments hide which argument is which")
        unknown = set(keywords) - {"shape", "dtype", "device", "cache_name", "zero"}
        if unknown:
            raise ValueError(f"`{sorted(unknown)[0]}=` has no counterpart in torch.empty/zeros")
        if len(positional) > 2 or ("shape" in keywords and positional) or ("dtype" in keywords and len(positional) > 1):
            raise ValueError("unexpected positional arguments")
        shape = keywords.get("shape") or (positional[0] if positional else None)
        dtype = keywords.get("dtype") or (positional[1] if len(positional) > 1 else None)
        if shape is None or dtype is None:
            raise ValueError("no shape or no dtype")
        zero_arg = keywords.get("zero")
        zero = self._zero(zero_arg)
        dropped = [a for a in (keywords.get("cache_name"), zero_arg) if a is not None]
        if any(count_comments(a) for a in dropped):
            raise ValueError("a comment in `cache_name=` or `zero=` would be lost")

        items = [Item(shape.with_changes(keyword=None, equal=cst.MaybeSentinel.DEFAULT), shape)]
        name, value = self._filled("zeros" if zero else "empty", fill, [shape, dtype, keywords.get("device")])
        if not self._is_default_dtype(dtype.value) or (fill is not None and not _infers_default_dtype(value)):
            items.append(Item(dtype.with_changes(keyword=cst.Name("dtype"), equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))), dtype))
        if "device" in keywords:
            items.append(Item(keywords["device"], keywords["device"]))
        # The kept arguments in their original order: shape, dtype, device.
        items.sort(key=lambda item: args.index(item.source))
        if value is not None:
            items.insert(1, Item(cst.Arg(value)))  # torch.full(size, fill_value, ...)
        func = cst.Attribute(cst.Name(self.torch_name), cst.Name(name))
        return call.with_changes(func=func, args=arrange(items, args, call.whitespace_before_args))

    @staticmethod
    def _filled(name: str, fill: Optional[cst.Arg], kept: list[Optional[cst.Arg]]) -> tuple[str, Optional[cst.BaseExpression]]:
        """The factory that allocates ``name`` (zeros, empty, or their `_like`) and then fills
        with ``fill``, and the value it takes: ones (no value) for a literal 1, else full."""
        if fill is None:
            return name, None
        like = "_like" if name.endswith("_like") else ""
        if isinstance(fill.value, cst.Integer) and fill.value.value == "1":
            return f"ones{like}", None
        # torch.full evaluates its value before the dtype and device, get_empty(...).fill_ after.
        if has_call(fill.value) and any(a is not None and has_call(a.value) for a in kept[1:]):
            raise ValueError("the fill value would be evaluated before the dtype or device, and both may have effects")
        return f"full{like}", fill.value

    def _restore_like(self, call: cst.Call, fill: Optional[cst.Arg]) -> cst.Call:
        if self.torch_name is None:
            raise ValueError("`torch` names something else in this module")
        args = list(call.args)
        if any(a.star for a in args):
            raise ValueError("starred arguments hide which argument is which")
        keywords = {a.keyword.value: a for a in args if a.keyword is not None}
        unknown = set(keywords) - {"input", "dtype", "device", "cache_name", "zero"}
        if unknown:
            raise ValueError(f"`{sorted(unknown)[0]}=` has no counterpart in torch.empty_like/zeros_like")
        positional = [a for a in args if a.keyword is None]
        if len(positional) + ("input" in keywords) != 1:
            raise ValueError("unexpected positional arguments")
        zero = self._zero(keywords.get("zero"))
        dropped = [a for a in (keywords.get("cache_name"), keywords.get("zero")) if a is not None]
        if any(count_comments(a) for a in dropped):
            raise ValueError("a comment in `cache_name=` or `zero=` would be lost")
        kept = [Item(a, a) for a in args if a not in dropped]
        name, value = self._filled("zeros_like" if zero else "empty_like", fill, [None, keywords.get("dtype"), keywords.get("device")])
        if value is not None and "input" in keywords:
            kept.append(Item(keyword_arg("fill_value", value)))  # last, where `.fill_()` evaluated it
        elif value is not None:
            kept.insert(1, Item(cst.Arg(value)))  # torch.full_like(input, fill_value, ...)
        func = cst.Attribute(cst.Name(self.torch_name), cst.Name(name))
        return call.with_changes(func=func, args=arrange(kept, args, call.whitespace_before_args))

    @staticmethod
    def _zero(zero_arg: Optional[cst.Arg]) -> bool:
        if zero_arg is None:
            return False
        if not (isinstance(zero_arg.value, cst.Name) and zero_arg.value.value in ("True", "False")):
            raise ValueError("`zero=` is not a literal True or False")
        return zero_arg.value.value == "True"

    def _is_default_dtype(self, node: cst.BaseExpression) -> bool:
        return (
            isinstance(node, cst.Call)
            and not node.args
            and isinstance(node.func, cst.Attribute)
            and node.func.attr.value == "get_default_dtype"
            and dotted(node.func.value) in (self.torch_name, "torch")
        )


def _local_torch_name(function: cst.FunctionDef) -> Optional[str]:
    """The name an `import torch [as x]` in the function's own body binds (not nested functions')."""
    found: list[str] = []

    class Visit(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is function

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            return False

        def visit_Import(self, node: cst.Import) -> None:
            found.extend(torch_import_names(node))

    function.visit(Visit())
    return found[0] if found else None


def _infers_default_dtype(value: Optional[cst.BaseExpression]) -> bool:
    """Whether `torch.full(size, value)` (`torch.ones(size)` for None) has the default dtype
    without `dtype=`: a float literal does, an int or a name does not."""
    if value is None:
        return True
    code = cst.Module([]).code_for_node(value)
    return inferred_fill_dtype(ast.parse(f"(\n{code}\n)", mode="eval").body) == "default"
