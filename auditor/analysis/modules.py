"""Functions of the other modules a module calls, read on demand.

A call `f(buf)` of a function imported from another module (`from .utils import f`,
`import pkg.mod as m` then `m.f(buf)`) is summarised as a call of a function of the same
module is: by the escape analysis of f's parameter in f's own module. That needs f's
module, which the scan can see when the import resolves to a file next to the importing
one: a module of the scanned tree, or of the package the scanned files belong to (the
scan of `vllm/model_executor/layers/fused_moe` reads `vllm/.../fp8_utils.py` for
`per_token_group_quant_fp8`). Where it cannot, the call stays unknown.

Only the functions a question reaches are analysed, each module once per process (per
content and options), and not more than ``MAX_DEPTH`` imports away from the scanned file.
The engine reads the files (``ReadModule``) and so knows what each result depends on.
"""

from __future__ import annotations

import ast
import os
from typing import TYPE_CHECKING, Callable, Optional

from allocaudit.auditor.analysis.functions import AnalysisOptions
from allocaudit.auditor.analysis.index import ModuleIndex
from allocaudit.auditor.analysis.syntax import FunctionNode

if TYPE_CHECKING:  # effects.py summarises calls with the modules this one loads
    from allocaudit.auditor.analysis.effects import CallEffects

# A file's content key and its tree, or None when it cannot be read as Python.
ReadModule = Callable[[str], Optional[tuple[str, ast.Module]]]
MAX_DEPTH = 2

_loaded: dict[tuple[str, str, AnalysisOptions], tuple[ModuleIndex, "CallEffects", "OtherModules"]] = {}
_located: dict[tuple[str, str], Optional[str]] = {}


def locate(folder: str, module: str) -> Optional[str]:
    """The file of dotted ``module`` as seen from ``folder``: `a/b/c.py` or
    `a/b/c/__init__.py` under ``folder`` or the nearest folder above it that has one."""
    key = (folder, module)
    if key not in _located:
        relative = os.path.join(*module.split("."))
        found = None
        current = os.path.abspath(folder)
        while found is None:
            for candidate in (relative + ".py", os.path.join(relative, "__init__.py")):
                if os.path.isfile(os.path.join(current, candidate)):
                    found = os.path.join(current, candidate)
                    break
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        _located[key] = found
    return _located[key]


class OtherModules:
    """The modules one file imports, as far as calls of it need them."""

    def __init__(self, importer: str, options: AnalysisOptions, read: ReadModule, depth: int = 0) -> None:
        self.folder = os.path.dirname(os.path.abspath(importer))
        self.options = options
        self.read = read
        self.depth = depth
        self.loaded: dict[str, tuple[str, OtherModules]] = {}  # path -> its content key and its own imports

    def dependencies(self) -> dict[str, str]:
        """Every file read to answer this module's questions so far (path -> content key),
        through the modules those files import too."""
        found: dict[str, str] = {}
        pending = [self]
        while pending:
            current = pending.pop()
            for path, (digest, others) in current.loaded.items():
                if path not in found:
                    found[path] = digest
                    pending.append(others)
        return found

    def function(self, qualified: str) -> Optional[tuple["CallEffects", FunctionNode]]:
        """The module-level def that dotted ``qualified`` names, with its module's call
        effects; None when its module is not a file the scan can read."""
        if self.depth >= MAX_DEPTH:
            return None
        module, _, name = qualified.rpartition(".")
        if not module or module == "torch" or module.startswith("torch."):
            return None
        path = locate(self.folder, module)
        if path is None:
            return None
        loaded = self._load(path)
        if loaded is None:
            return None
        index, effects = loaded
        found = index.module_function(name)
        if found is not None:
            return effects, found
        # Re-exported (`from .utils import f` in a package's __init__.py): follow it once.
        origin = index.resolver.imported(ast.Name(id=name, ctx=ast.Load()), index.resolver.module_scope)
        if origin and origin != qualified:
            return OtherModules(path, self.options, self.read, self.depth + 1).function(origin)
        return None

    def _load(self, path: str) -> Optional[tuple[ModuleIndex, "CallEffects"]]:
        from allocaudit.auditor.analysis.effects import CallEffects  # effects.py builds OtherModules

        read = self.read(path)
        if read is None:
            return None
        digest, tree = read
        key = (path, digest, self.options)
        if key not in _loaded:
            package = tuple(os.path.dirname(path).strip(os.sep).split(os.sep))
            index = ModuleIndex(tree, self.options, package)
            others = OtherModules(path, self.options, self.read, self.depth + 1)
            _loaded[key] = (index, CallEffects(index, others), others)
        index, effects, others = _loaded[key]
        self.loaded[path] = (digest, others)
        return index, effects
