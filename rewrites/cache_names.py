"""Cache names for rewritten sites: `module.function.target`, an ordinal only on collision.

No line numbers: a name must survive unrelated edits of the file, because it names the
runtime slot that profiles and stats refer to.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Iterable, Optional

import libcst as cst


def module_name(path: str) -> str:
    """Dotted module name of a file: its stem, then every enclosing folder with an __init__.py."""
    file = Path(os.path.abspath(path))
    parts = [] if file.stem == "__init__" else [file.stem]
    folder = file.parent
    while (folder / "__init__.py").is_file() and folder != folder.parent:
        parts.append(folder.name)
        folder = folder.parent
    return ".".join(reversed(parts)) or file.parent.name


def target_name(target: cst.BaseExpression) -> Optional[str]:
    """`ws` -> "ws", `self.buf` -> "buf", `ws["workspace_0"]` -> "workspace_0", `bufs[i]` -> "bufs"."""
    if isinstance(target, cst.Name):
        return target.value
    if isinstance(target, cst.Attribute):
        return target.attr.value
    if isinstance(target, cst.Subscript):
        if len(target.slice) == 1 and isinstance(target.slice[0].slice, cst.Index):
            key = target.slice[0].slice.value
            if isinstance(key, (cst.SimpleString, cst.ConcatenatedString)):
                try:
                    value = ast.literal_eval(cst.Module([]).code_for_node(key))
                except (ValueError, SyntaxError):
                    value = None
                if isinstance(value, str) and value:
                    return value
        return target_name(target.value)
    return None


def assign(bases: Iterable[str], taken: Iterable[str]) -> list[str]:
    """Unique names for sites in source order: the base, then `base#2`, `base#3`... when
    the base is taken (by an earlier site or a cache name already in the module)."""
    used = set(taken)
    names = []
    for base in bases:
        name, ordinal = base, 1
        while name in used:
            ordinal += 1
            name = f"{base}#{ordinal}"
        used.add(name)
        names.append(name)
    return names
