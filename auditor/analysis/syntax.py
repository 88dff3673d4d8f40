"""Small questions about ``ast`` nodes that several parts of the analysis ask."""

from __future__ import annotations

import ast
from typing import Optional


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
