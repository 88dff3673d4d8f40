"""Whether two versions of a module allocate alike: the check of a `fix` then `unfix` round trip.

`unfix` spells a restored allocation canonically (`torch.zeros((m, n), dtype=..., device=...)`)
where the original may have written `th.zeros(m, n, ...)`, `x.new_zeros(...)`,
`torch.zeros_like(x, memory_format=torch.contiguous_format)` or `torch.full(s, 0)`. Both
modules are brought to one normal form — every factory call as (zeros|empty, shape, dtype,
device) or (full, shape, value, dtype, device) with default arguments dropped (`ones` is a
full of 1, a literal zero fill is zeros, the dtype torch.full infers from a literal spelled
out), torch spelled `torch`, `import torch` and the runtime import set aside (at module level
and in functions, where `fix` and `unfix` put them in modules that import torch lazily) — and
then compared as Python ASTs. A `*_like` in the input's layout (no memory format, or
`torch.preserve_format`) is its own form (zeros_like|empty_like|full_like, input, [value,]
dtype, device): it is not the contiguous tensor of the input's shape.
"""

from __future__ import annotations

import ast
from typing import Iterable, Optional

from allocaudit.auditor.analysis.factories import FILL, TENSOR_METHOD_FACTORIES, TORCH_FACTORIES, bind
from allocaudit.auditor.analysis.fixability import inferred_fill_dtype
from allocaudit.auditor.analysis.syntax import arg_specs

_DEFAULTS = {
    "requires_grad": ("False", "None"),
    "pin_memory": ("False", "None"),
    "out": ("None",),
    "layout": ("torch.strided",),
}
_CONTIGUOUS = "torch.contiguous_format"
_PRESERVE = "torch.preserve_format"


def equivalent(original: str, restored: str, deleted: Iterable[int] = ()) -> bool:
    """Whether ``restored`` allocates as ``original`` does, once the assignments of
    ``original`` on the ``deleted`` lines (dead allocations `fix` deleted) are left out."""
    return normal_form(original, deleted) == normal_form(restored)


def normal_form(text: str, deleted: Iterable[int] = ()) -> str:
    tree = ast.parse(text)
    deleted = set(deleted)
    if deleted:
        tree = _Deleter(deleted).visit(tree)
    torch_names = {"torch"}
    factory_names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            torch_names |= {a.asname for a in node.names if a.name == "torch" and a.asname}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            for a in node.names:
                if a.name in TORCH_FACTORIES:
                    factory_names[a.asname or a.name] = a.name
    tree = _Normaliser(torch_names, factory_names).visit(tree)
    return ast.dump(tree, include_attributes=False)


class _Normaliser(ast.NodeTransformer):
    def __init__(self, torch_names: set[str], factory_names: dict[str, str]) -> None:
        self.torch_names = torch_names
        self.factory_names = factory_names

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Name("torch", node.ctx) if node.id in self.torch_names else node

    def visit_Module(self, node: ast.Module) -> ast.AST:
        node.body = [s for s in node.body if not _is_set_aside(s)]
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Module

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        return self._canonical(node) or _filled(node) or node

    def _canonical(self, call: ast.Call) -> Optional[ast.Call]:
        factory, receiver = None, None
        if isinstance(call.func, ast.Attribute):
            if call.func.attr in TORCH_FACTORIES and ast.unparse(call.func.value) == "torch":
                factory = call.func.attr
            elif call.func.attr in TENSOR_METHOD_FACTORIES:
                factory, receiver = call.func.attr, call.func.value
        elif isinstance(call.func, ast.Name) and call.func.id in self.factory_names:
            factory = self.factory_names[call.func.id]
        if factory is None:
            return None
        bound = bind(factory, arg_specs(call))
        values = list(call.args) + [k.value for k in call.keywords]
        if bound.has_dstar or bound.stride is not None:
            return None
        if bound.like is not None:
            receiver = values[bound.like]
        kind = TORCH_FACTORIES.get(factory) or TENSOR_METHOD_FACTORIES[factory]
        # What a call's layout is: contiguous, or (for `*_like` by default) the input's.
        layout = "like" if kind in ("like", "full_like") else _CONTIGUOUS
        keywords = {}
        dtype_given = False  # dtype=torch.get_default_dtype(): the default, but given
        for name, index in bound.keywords.items():
            text = ast.unparse(values[index])
            if name in _DEFAULTS and text in _DEFAULTS[name]:
                continue
            if name == "memory_format" and text == _CONTIGUOUS:
                layout = _CONTIGUOUS
                continue
            if name == "memory_format" and text == _PRESERVE and layout == "like":
                continue
            if name in ("dtype", "device") and text == "None":
                continue
            if name == "dtype" and text == "torch.get_default_dtype()":
                dtype_given = True
                continue
            keywords[name] = values[index]
        if set(keywords) - {"dtype", "device"}:
            return None
        name, fill = self._fill(factory, bound.fill, values)
        if name is None:
            return None
        if receiver is None and "dtype" not in keywords and not dtype_given and FILL[factory] == "fill":
            # torch.full infers its dtype from the value: spell it, or give up.
            inferred = inferred_fill_dtype(values[bound.fill])
            if inferred is None:
                return None
            if inferred != "default":
                keywords["dtype"] = ast.parse(f"torch.{inferred}", mode="eval").body
        fills = [fill] if fill is not None else []
        if layout == "like":
            if receiver is None:
                return None
            return ast.Call(
                ast.Name(f"ALLOC_{name}_like", ast.Load()),
                [receiver, *fills],
                [ast.keyword(k, keywords[k]) for k in ("dtype", "device") if k in keywords],
            )
        if kind in ("like", "full_like"):
            if receiver is None:
                return None
            shape = ast.Attribute(receiver, "shape", ast.Load())
        elif bound.size_keyword is not None:
            shape = values[bound.size_keyword]
        elif len(bound.size) == 1 and not isinstance(values[bound.size[0]], ast.Starred):
            shape = values[bound.size[0]]
        elif bound.size:
            shape = ast.Tuple([values[i] for i in bound.size], ast.Load())
        else:
            return None
        if receiver is not None:
            keywords.setdefault("dtype", ast.Attribute(receiver, "dtype", ast.Load()))
            keywords.setdefault("device", ast.Attribute(receiver, "device", ast.Load()))
        return ast.Call(
            ast.Name(f"ALLOC_{name}", ast.Load()),
            [shape, *fills],
            [ast.keyword(k, keywords[k]) for k in ("dtype", "device") if k in keywords],
        )


    @staticmethod
    def _fill(factory: str, index: Optional[int], values: list[ast.expr]) -> tuple[Optional[str], Optional[ast.expr]]:
        """What a factory writes: (zeros|empty, None), or (full, the value): `ones` is a full
        of 1 and a literal zero fill is zeros. (None, None) for a fill without its value."""
        kind = FILL[factory]
        if kind is None or kind == "0":
            return ("empty" if kind is None else "zeros"), None
        if kind == "1":
            return "full", ast.Constant(1)
        if index is None:
            return None, None
        value = values[index]
        if inferred_fill_dtype(value) is not None and ast.literal_eval(value) == 0:
            return "zeros", None
        return "full", value


def _filled(call: ast.Call) -> Optional[ast.Call]:
    """`torch.empty(...).fill_(v)` (or zeros) is a full of v: what `unfix` makes of a fill the
    code wrote itself on an allocation `fix` rewrote."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "fill_" and len(call.args) == 1 and not call.keywords):
        return None
    inner = func.value
    if not (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id in _PLAIN):
        return None
    value = call.args[0]
    zero = inferred_fill_dtype(value) is not None and ast.literal_eval(value) == 0
    like = "_like" if inner.func.id.endswith("_like") else ""
    name = f"ALLOC_zeros{like}" if zero else f"ALLOC_full{like}"
    args = inner.args if zero else [*inner.args, value]
    return ast.Call(ast.Name(name, ast.Load()), args, inner.keywords)


_PLAIN = {"ALLOC_empty", "ALLOC_zeros", "ALLOC_empty_like", "ALLOC_zeros_like"}


class _Deleter(ast.NodeTransformer):
    """Drops the simple statements that span any of the given lines."""

    def __init__(self, lines: set[int]) -> None:
        self.lines = lines

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                setattr(node, field, [s for s in block if not (isinstance(s, (ast.Assign, ast.AnnAssign)) and self._spans(s))])
        return super().generic_visit(node)

    def _spans(self, statement: ast.stmt) -> bool:
        return any(statement.lineno <= line <= (statement.end_lineno or statement.lineno) for line in self.lines)


def _is_set_aside(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Import):
        return all(a.name == "torch" for a in statement.names)
    return isinstance(statement, ast.ImportFrom) and statement.module == "allocaudit.runtime"
