"""Small questions about ``ast`` nodes that several parts of the auditor ask: parameters,
arguments, literals, the root of an expression, and source text for messages."""

from __future__ import annotations

import ast
from typing import Optional, Union

from allocaudit.auditor.analysis.factories import ArgSpec

FunctionNode = Union[ast.FunctionDef, ast.AsyncFunctionDef]


def positional_parameters(function: Union[FunctionNode, ast.Lambda]) -> list[str]:
    """The names positional arguments bind, in order (`self` included)."""
    args = function.args
    return [a.arg for a in (*args.posonlyargs, *args.args)]


def parameters(function: Union[FunctionNode, ast.Lambda], starred: bool = False) -> list[str]:
    """The named parameters: positional ones, then keyword-only ones; ``starred`` adds
    `*args` and `**kwargs`."""
    args = function.args
    names = [*positional_parameters(function), *(a.arg for a in args.kwonlyargs)]
    if starred:
        names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return names


def arg_specs(call: ast.Call) -> list[ArgSpec]:
    """A call's argument list as the abstract one `factories.bind` reads."""
    specs = [ArgSpec("star" if isinstance(a, ast.Starred) else "pos") for a in call.args]
    specs += [ArgSpec("dstar" if k.arg is None else "kw", k.arg) for k in call.keywords]
    return specs


def argument(call: ast.Call, index: Optional[int]) -> Optional[ast.expr]:
    """The value of the argument at ``index`` of the call's argument list (positional
    arguments first, then keywords), as `factories.bind` numbers them."""
    if index is None:
        return None
    if index < len(call.args):
        return call.args[index]
    return call.keywords[index - len(call.args)].value


def is_literal(expr: Optional[ast.AST], *values) -> bool:
    """Whether ``expr`` is a constant equal to one of ``values``, of the same type
    (`0` is not `False`)."""
    return isinstance(expr, ast.Constant) and any(expr.value == v and type(expr.value) is type(v) for v in values)


def may_have_effects(expr: ast.AST) -> bool:
    """Whether evaluating ``expr`` may run code with effects (a call, await, yield, walrus)."""
    return any(isinstance(n, (ast.Call, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)) for n in ast.walk(expr))


def is_ordering(node: ast.AST) -> bool:
    """`a < b`, `a >= b`...: a size test."""
    return isinstance(node, ast.Compare) and any(isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in node.ops)


def names_in(expr: ast.AST) -> set[str]:
    """Every plain name read or written anywhere in ``expr``."""
    return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}


def root_name(expr: ast.AST) -> Optional[str]:
    """The variable an expression starts from: `x` for `x.flatten()[:n].view(s)`."""
    while isinstance(expr, (ast.Attribute, ast.Subscript, ast.Call)):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def container_of(expr: ast.AST) -> ast.AST:
    """The container an access reads or writes: `C.get(k)`, `C[k]`, `C.setdefault(k, [])`
    and `C[k][i]` all have the container `C`."""
    while True:
        if isinstance(expr, ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr in ("get", "setdefault", "pop"):
            expr = expr.func.value
        else:
            return expr


def unparse(node: ast.AST, limit: int = 60) -> str:
    """Source text of ``node`` for a message, cut to ``limit`` characters."""
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 1] + "…"
