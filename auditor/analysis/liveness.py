"""Is an allocated tensor ever read? An allocation bound to a name that is rebound (or
goes out of scope) before anything reads it is dead: the program allocated, and perhaps
launched a fill kernel, for nothing. (One whose value is dropped outright, or bound to
`_`, is taken as deliberate: engines allocate that way to warm pools or flush caches.)

Flow-sensitive only as far as it is cheap and sure: from the statement that binds the
allocation, the statements that follow it in its own block are read in order; one that
reads the name keeps it alive, one that rebinds it unconditionally (without reading it)
kills it, and a statement that may rebind it on some path only (an `if`, a loop) ends
the search undecided. Reaching the end of the function's own body without a read is
dead too; reaching the end of a nested block is undecided (a loop may come round to an
earlier read). A name that closures, `global`/`nonlocal`, `locals()` or `exec` could
see is never called dead.
"""

from __future__ import annotations

import ast
from typing import Optional

from allocaudit.auditor.analysis.escapes import VIEW_METHODS, FunctionFlow


def _binds(target: ast.AST, name: str) -> bool:
    """Whether assigning to ``target`` binds ``name`` itself (`x = ...`, `x, y = ...`)."""
    if isinstance(target, ast.Name):
        return target.id == name
    if isinstance(target, ast.Starred):
        return _binds(target.value, name)
    if isinstance(target, (ast.Tuple, ast.List)):
        return any(_binds(e, name) for e in target.elts)
    return False


class Liveness:
    """Dead allocations of one function, from its flow's one walk."""

    def __init__(self, flow: FunctionFlow) -> None:
        self.flow = flow
        self.function = flow.function
        self.parents = flow.parents
        # Names a closure, a nested class or `global`/`nonlocal` may read or rebind.
        self.opaque: set[str] = set(flow.globals)
        for scope in flow.scopes:
            self.opaque.update(n.id for n in ast.walk(scope) if isinstance(n, ast.Name))
        self._within: dict[tuple[str, bool], set[ast.AST]] = {}

    def _statements_that(self, name: str, read: bool) -> set[ast.AST]:
        """The nodes (statements and blocks) that contain a read (or a binding) of ``name``."""
        key = (name, read)
        if key not in self._within:
            found: set[ast.AST] = set()
            for node in (self.flow.loads if read else self.flow.binders).get(name, ()):
                while node is not None and node not in found and node is not self.function:
                    found.add(node)
                    node = self.parents.get(node)
            self._within[key] = found
        return self._within[key]

    def dead(self, call: ast.Call) -> Optional[str]:
        """Why the value of ``call`` (an allocation in this function) is never read, or
        None when it may be."""
        if self.flow.introspects:
            return None
        node = call
        parent = self.parents.get(node)
        # `torch.empty(n).view(...)`, `.fill_(0)`: still only this allocation.
        while (
            isinstance(parent, ast.Attribute)
            and parent.value is node
            and (parent.attr in VIEW_METHODS or parent.attr.endswith("_") and not parent.attr.startswith("_"))
            and isinstance(self.parents.get(parent), ast.Call)
            and self.parents[parent].func is parent
        ):
            node = self.parents[parent]
            parent = self.parents.get(node)
        if isinstance(parent, ast.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0], ast.Name):
            name = parent.targets[0].id
        elif isinstance(parent, ast.AnnAssign) and isinstance(parent.target, ast.Name) and parent.value is node:
            name = parent.target.id
        else:
            # A value dropped by an expression statement (`torch.empty(n, device=d)`) or
            # bound to `_` is dropped on purpose: warming a memory pool, reserving memory
            # for a profile run, flushing the L2 cache, creating the CUDA context.
            return None
        if name in self.opaque or name == "_":
            return None
        if not self.flow.loads.get(name):
            return f"`{name}` is never read"
        return self._dead_after(parent, name)

    def _dead_after(self, statement: ast.stmt, name: str) -> Optional[str]:
        if self._handlers_read(statement, name):
            return None
        reads, binds = self._statements_that(name, True), self._statements_that(name, False)
        while True:
            block = self._block_of(statement)
            if block is None:
                return None
            for later in block[block.index(statement) + 1 :]:
                if later in reads:
                    return None
                if isinstance(later, (ast.Assign, ast.AnnAssign)) and later.value is not None:
                    targets = later.targets if isinstance(later, ast.Assign) else [later.target]
                    if any(_binds(t, name) for t in targets):
                        return f"`{name}` is rebound on line {later.lineno} before it is read"
                if later in binds:
                    return None  # rebound on some paths only
            if block is self.function.body:
                return f"`{name}` is not read before the function ends"
            # The end of an `if` branch or a `with` body goes on after that statement; the
            # end of a loop body may come round to an earlier read.
            enclosing = self.parents.get(statement)
            if not isinstance(enclosing, (ast.If, ast.With, ast.AsyncWith)):
                return None
            statement = enclosing

    def _block_of(self, statement: ast.stmt) -> Optional[list[ast.stmt]]:
        parent = self.parents.get(statement)
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(parent, field, None)
            if isinstance(block, list) and statement in block:
                return block
        return None

    def _handlers_read(self, statement: ast.stmt, name: str) -> bool:
        """Whether an enclosing `try` may read the name on an exception path."""
        reads = self._statements_that(name, True)
        child, parent = statement, self.parents.get(statement)
        while parent is not None and parent is not self.function:
            if isinstance(parent, ast.Try) and child in parent.body:
                if any(h in reads for h in parent.handlers) or any(s in reads for s in parent.finalbody):
                    return True
            child, parent = parent, self.parents.get(parent)
        return False
