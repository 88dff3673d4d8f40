"""`allocaudit vendor-runtime`: the runtime, one module, written into the user's own package.

Patched code then imports `get_empty` from there (`fix --runtime-module`), so production needs
neither allocaudit nor what its CLI depends on: only torch. The copy starts with a header that
names the runtime and allocaudit versions and a hash of the body, so that a later run knows the
file is ours to replace, and `--check` (for CI) knows whether it is current.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from allocaudit.auditor.version import VERSION

DEFAULT_FILE_NAME = "allocaudit_runtime.py"
MARK = "# allocaudit-vendored-runtime"
HEADER_LINES = 4
_HEADER = re.compile(rf"^{re.escape(MARK)} runtime=(\S+) allocaudit=(\S+) sha256=([0-9a-f]{{64}})$", re.M)


class VendorError(Exception):
    """A destination that cannot take the runtime; the message names it and why."""


@dataclass(frozen=True)
class Vendored:
    path: Path
    module: Optional[str]  # the dotted name to import it by, if its folders are packages
    changed: bool


def runtime_source() -> str:
    """The runtime module's text, read from the installed package (torch is not imported)."""
    spec = importlib.util.find_spec("allocaudit.runtime")
    if spec is None or not spec.submodule_search_locations:
        raise VendorError("allocaudit.runtime is not installed next to the CLI")
    path = Path(next(iter(spec.submodule_search_locations))) / "cache.py"
    return path.read_text(encoding="utf-8")


def vendored_text(body: str) -> str:
    version = re.search(r'^RUNTIME_VERSION = "([^"]+)"$', body, re.M)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    header = (
        f"{MARK} runtime={version.group(1) if version else '?'} allocaudit={VERSION} sha256={digest}\n"
        "# Written by `allocaudit vendor-runtime`; do not edit: run it again to update this file.\n"
        "# Patched modules import get_empty from here (`allocaudit fix --runtime-module ...`).\n"
        "# allocaudit: file-ignore  (the runtime's own allocations are not workspaces to rewrite)\n"
    )
    return header + body


def destination(dest: str) -> Path:
    """A folder gets the runtime as `allocaudit_runtime.py`; anything else must name a .py file."""
    path = Path(dest)
    if path.is_dir():
        return path / DEFAULT_FILE_NAME
    if path.suffix != ".py":
        raise VendorError(f"{dest}: not a folder and not a .py file name")
    if not path.parent.is_dir():
        raise VendorError(f"{dest}: folder {path.parent} does not exist")
    return path


def module_name(path: Path) -> Optional[str]:
    """The dotted import name of ``path`` when every folder up to a top-level one is a package."""
    parts = [path.stem]
    folder = path.resolve().parent
    while (folder / "__init__.py").is_file():
        parts.append(folder.name)
        folder = folder.parent
    return ".".join(reversed(parts)) if len(parts) > 1 else None


def module_file(name: str, start: str) -> Optional[Path]:
    """The file that absolute module ``name`` is, seen from the folder ``start``: `a/b/c.py` (or
    `a/b/c/__init__.py`) in ``start`` or the nearest folder above it that has one. Where a
    project's own package lives, without importing anything."""
    relative = Path(*name.split("."))
    folder = Path(os.path.abspath(start))
    while True:
        for candidate in (folder / relative.with_suffix(".py"), folder / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
        if folder.parent == folder:
            return None
        folder = folder.parent


def is_vendored(path: Path) -> bool:
    """Whether ``path`` starts with the header `vendor` writes (edited since or not)."""
    try:
        with open(path, encoding="utf-8") as file:
            return _HEADER.match(file.readline().rstrip("\n")) is not None
    except (OSError, UnicodeDecodeError):
        return False


def vendor(dest: str, check: bool = False, force: bool = False) -> Vendored:
    """Write (or, with ``check``, compare) the vendored runtime at ``dest``.

    An existing file is replaced only if this command wrote it and nobody edited it since
    (its header's hash matches its body), unless ``force``.
    """
    path = destination(dest)
    text = vendored_text(runtime_source())
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError) as exc:
        raise VendorError(f"{path}: cannot read it: {exc}") from None
    if current is not None and not force and not check:
        header = _HEADER.match(current)
        if header is None:
            raise VendorError(f"{path}: exists and was not written by `allocaudit vendor-runtime`; not replaced (--force replaces it)")
        body = current.split("\n", HEADER_LINES)[HEADER_LINES] if current.count("\n") >= HEADER_LINES else ""
        if hashlib.sha256(body.encode("utf-8")).hexdigest() != header.group(3):
            raise VendorError(f"{path}: was edited after it was vendored; not replaced (--force replaces it)")
    changed = current != text
    if changed and not check:
        tmp = path.with_name(f".{path.name}.allocaudit-tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return Vendored(path, module_name(path), changed)
