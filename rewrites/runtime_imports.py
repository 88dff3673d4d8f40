"""Where the codemods put the import of `get_empty`, and which imports of it are the runtime's.

Importing the runtime imports torch. `fix` writes a module-level import only where the module
already imports torch unconditionally at module level. A module that imports torch lazily
(under `if TYPE_CHECKING:` or `if is_torch_available():`, in a `try:`, through a LazyLoader,
only inside functions, or not at all) gets the import as the first statement of each function
it rewrites, so that importing the module still does not import torch.

`unfix` undoes what `fix` wrote: an import of `get_empty` from `allocaudit.runtime`, from the
runtime module of the file's settings (`runtime-module`), or from a module whose file, found
from the patched file's folder upwards, starts with the header `allocaudit vendor-runtime`
writes. An import of a `get_empty` from anywhere else is the user's own and is left alone.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import libcst as cst

from allocaudit.auditor.settings import DEFAULT_RUNTIME_MODULE
from allocaudit.rewrites.syntax import dotted, insert_after_preamble, torch_import_names
from allocaudit.rewrites.vendor import is_vendored, module_file

IsRuntime = Callable[[str], bool]


def imports_torch_eagerly(module: cst.Module) -> bool:
    """Whether a statement of the module's top level imports torch (`import torch`, `import
    torch.nn as nn`, `from torch import nn`): every import of the module imports torch, so a
    module-level import of the runtime costs nothing more. Imports under `if`, `try` or in
    functions are lazy, or may fail where torch is missing."""
    for statement in module.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Import) and any(_is_torch(dotted(a.name)) for a in small.names):
                return True
            if isinstance(small, cst.ImportFrom) and not small.relative and small.module is not None and _is_torch(dotted(small.module)):
                return True
    return False


def runtime_torch_name(module: cst.Module) -> Optional[str]:
    """The name bound to torch when the module runs, by statements outside functions and
    classes that may not run unconditionally: an import under `if is_torch_available():` or
    in a `try:`, or `torch = LazyLoader("torch", ...)` (any assignment to `torch`). Imports
    under `if TYPE_CHECKING:` bind nothing at run time."""
    found: list[str] = []

    class Visit(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return False

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            return False

        def visit_If(self, node: cst.If) -> bool:
            if dotted(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                if node.orelse is not None:
                    node.orelse.visit(self)
                return False
            return True

        def visit_Import(self, node: cst.Import) -> None:
            found.extend(torch_import_names(node))

        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            if isinstance(node.target, cst.Name) and node.target.value == "torch":
                found.append("torch")

    module.visit(Visit())
    return found[0] if found else None


def _is_torch(name: Optional[str]) -> bool:
    return name == "torch" or (name or "").startswith("torch.")


def runtime_import(statements: Sequence[cst.BaseStatement], is_runtime: IsRuntime, obj: str = "get_empty") -> Optional[tuple[str, str]]:
    """(module, local name) of a `from M import get_empty [as x]` among ``statements`` (a
    module's or a function's body, not looking into nested blocks) where M is the runtime's."""
    for statement in statements:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if not isinstance(small, cst.ImportFrom) or small.relative or isinstance(small.names, cst.ImportStar) or small.module is None:
                continue
            name = dotted(small.module)
            if name is None or not is_runtime(name):
                continue
            for alias in small.names:
                if dotted(alias.name) == obj:
                    return name, alias.asname.name.value if alias.asname is not None else obj
    return None


def function_runtime_imports(module: cst.Module, is_runtime: IsRuntime, obj: str = "get_empty") -> dict[cst.FunctionDef, tuple[str, str]]:
    """Every function (nested ones too) whose body imports ``obj`` (`get_empty`,
    `get_empty_like`) from the runtime: what `fix` writes in a module that imports torch lazily."""
    found: dict[cst.FunctionDef, tuple[str, str]] = {}

    class Visit(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            if isinstance(node.body, cst.IndentedBlock):
                hit = runtime_import(node.body.body, is_runtime, obj)
                if hit is not None:
                    found[node] = hit

    module.visit(Visit())
    return found


def with_function_imports(function: cst.FunctionDef, lines: Sequence[str], module: cst.Module) -> cst.FunctionDef:
    """``function`` with ``lines`` (import statements) after its docstring and leading imports."""
    body = function.body
    assert isinstance(body, cst.IndentedBlock), "one-line functions are skipped before the rewrite"
    return function.with_changes(body=body.with_changes(body=insert_after_preamble(body.body, lines, module)))


def recogniser(configured: str, path: str) -> IsRuntime:
    """Which module names are the runtime for the file at ``path``: allocaudit's own, the
    configured one, and any whose file next to the project carries the vendored header."""
    folder = os.path.dirname(os.path.abspath(path))
    known: dict[str, bool] = {DEFAULT_RUNTIME_MODULE: True, configured: True}

    def is_runtime(name: str) -> bool:
        if name not in known:
            found = module_file(name, folder)
            known[name] = found is not None and is_vendored(found)
        return known[name]

    return is_runtime


def vendored_problem(name: str, path: str) -> Optional[str]:
    """Why patched code at ``path`` importing get_empty from ``name`` may fail in production:
    the module is not found from the file's folder upwards, or is not a vendored runtime.
    None for allocaudit's own runtime, or a vendored copy."""
    if name == DEFAULT_RUNTIME_MODULE:
        return None
    found = module_file(name, os.path.dirname(os.path.abspath(path)))
    if found is None:
        return f"runtime module `{name}` is not a file of this project (write it with `allocaudit vendor-runtime DEST`)"
    if not is_vendored(found):
        return f"runtime module `{name}` ({found}) was not written by `allocaudit vendor-runtime`"
    return None

