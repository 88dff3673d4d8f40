"""Whether `allocaudit fix` applies a rewrite by default (safe) or only with `--unsafe-fixes`.

The runtime makes a rewritten allocation as safe as the factory it replaces for everything
that holds a reference to the tensor: a live hand-out, a view, a tensor autograd saved, a
tensor stored on ``self`` or handed to a caller, work on another stream while the tensor is
referenced, threads, torch.compile. So a workspace helper's hand-out is safe like any other
site: two calls whose results are alive together get two buffers. A fix is *unsafe* where
the buffer reaches what the runtime cannot see:

- ``record_stream``: the caching allocator would keep the block from reuse until the other
  stream's work is done; the runtime reuses a buffer in its own stream's order and does not
  know of recorded streams.
- ``resize_`` / ``resize_as_``: growing a hand-out reallocates the whole cached buffer, which
  other names and captured CUDA graphs share.
- ``untyped_storage()`` / ``storage()``: that is the whole cached buffer, larger than the
  hand-out and shared; code that sizes or frees a storage (``storage().resize_(0)``) acts on
  all of it.

Such uses are looked for on the allocation and every name that may refer to its memory in
its function, in the module's functions it is passed to (``*args`` included), and, for a
workspace helper, in the module's callers of the helper. ``data_ptr()`` is safe: while the
tensor lives the runtime hands its memory to no one, and after it died the address is
reused under ``torch.empty`` too (the caching allocator reuses the block).
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Literal, Optional

from allocaudit.auditor.analysis.syntax import FunctionNode, root_name

if TYPE_CHECKING:  # the index is passed in; fix safety is one of the facts sites.py records
    from allocaudit.auditor.analysis.index import ModuleIndex

FixSafety = Literal["safe", "unsafe"]
SAFE: FixSafety = "safe"
UNSAFE: FixSafety = "unsafe"

RECORD_STREAM = (
    "`.record_stream()` is called on it{where}: the runtime reuses memory in its own stream's order "
    "and does not see recorded streams"
)
RESIZE = (
    "`.{method}()` is called on it{where}: growing a hand-out reallocates the runtime's buffer, "
    "which other cache names and captured CUDA graphs share"
)
STORAGE = (
    "`.{method}()` is called on it{where}: that is the runtime's whole buffer, larger than the "
    "hand-out and shared with other cache names"
)

_RESIZING = frozenset({"resize_", "resize_as_"})
_STORAGE = frozenset({"untyped_storage", "storage", "_typed_storage"})
# How far a buffer is followed through the module's own functions it is passed to.
_MAX_DEPTH = 3


def unsafe_reason(call: ast.Call, function: Optional[FunctionNode], helper: bool, index: ModuleIndex) -> Optional[str]:
    """Why rewriting the allocation ``call`` (in ``function``, a workspace helper if
    ``helper``) is an unsafe fix, or None when it is safe."""
    if function is None:
        return None
    reason = _unsafe_use(index, function, {call}, set(), "", 0, set())
    if reason is None and helper:
        for caller_call in index.calls:
            if index.local_callee(caller_call) is not function:
                continue
            caller = index.owner(caller_call)
            if caller is not None:
                reason = _unsafe_use(index, caller, {caller_call}, set(), f" by `{caller.name}`", 0, set())
                if reason is not None:
                    break
    return reason


def _unsafe_use(
    index: ModuleIndex,
    function: FunctionNode,
    nodes: set[ast.AST],
    names: set[str],
    where: str,
    depth: int,
    seen: set[tuple[FunctionNode, str]],
) -> Optional[str]:
    """The first unsafe use in ``function`` of the memory that ``nodes`` evaluate to or
    ``names`` hold, following it into the module's functions it is passed to."""
    refers = _References(function, nodes, names)
    for node in ast.walk(function):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and refers(func.value):
            if func.attr == "record_stream":
                return RECORD_STREAM.format(where=where)
            if func.attr in _RESIZING:
                return RESIZE.format(method=func.attr, where=where)
            if func.attr in _STORAGE:
                return STORAGE.format(method=func.attr, where=where)
        if depth >= _MAX_DEPTH:
            continue
        callee = index.local_callee(node)
        if callee is None:
            continue
        for arg in [*node.args, *(k for k in node.keywords if k.arg is not None)]:
            value = arg.value if isinstance(arg, (ast.keyword, ast.Starred)) else arg
            if not refers(value):
                continue
            parameter = index.parameter_for(callee, node, arg)
            if parameter is None or (callee, parameter) in seen:
                continue
            seen.add((callee, parameter))
            reason = _unsafe_use(index, callee, set(), {parameter}, f" in `{callee.name}`", depth + 1, seen)
            if reason is not None:
                return reason
    return None


class _References:
    """Whether an expression may refer to the memory of the seed: it contains a seed node,
    starts from a name that holds it (views, slices, method chains), or lists one. The
    names are found once: what a seed or such a name is assigned to, or iterated into by a
    `for`. Over-approximated on purpose: a name counts wherever in the function it is
    assigned, so an unsafe use is not missed."""

    def __init__(self, function: FunctionNode, nodes: set[ast.AST], names: set[str]) -> None:
        self.nodes = nodes
        self.names = set(names)
        bindings: list[tuple[list[ast.expr], ast.expr]] = []
        for node in ast.walk(function):
            if isinstance(node, ast.Assign):
                bindings.append((node.targets, node.value))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
                bindings.append(([node.target], node.value))
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                bindings.append(([node.target], node.iter))
        changed = True
        while changed:
            changed = False
            for targets, value in bindings:
                if not self(value):
                    continue
                for target in targets:
                    for name in (n.id for n in ast.walk(target) if isinstance(n, ast.Name)):
                        if name not in self.names:
                            self.names.add(name)
                            changed = True

    def __call__(self, expr: ast.AST) -> bool:
        if isinstance(expr, (ast.Tuple, ast.List, ast.Set)):
            return any(self(e.value if isinstance(e, ast.Starred) else e) for e in expr.elts)
        if root_name(expr) in self.names:
            return True
        return any(node in self.nodes for node in ast.walk(expr))
