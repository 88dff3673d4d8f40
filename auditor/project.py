"""Which settings a file is scanned with, and the folder its scope globs are relative to.

Like ruff: each file takes the nearest pyproject.toml with a [tool.allocaudit] table at or
above it (a subproject's table wins over the repository's), or the one ``--config`` names
for every file; the command line's flags go over either. Globs are relative to the project
root: the folder of that config, and without one the folder `project_root` finds.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from allocaudit.auditor.selection import checked
from allocaudit.auditor.settings import Settings, config_in, load

# What marks the top of a project when no config says where it is.
PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git", ".hg")


def project_root(named: str) -> str:
    """The project root for a path named on the command line that no config covers: the
    nearest folder at or above it holding a project marker; else, in a tree of Python
    packages (an unpacked wheel), the folder above the outermost package; else the folder
    above the named one. The named folder's own name is then part of every relative path,
    so `cd fused_moe && allocaudit scan` and `allocaudit scan fused_moe` match the same files."""
    folder = os.path.abspath(named)
    if not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    current = folder
    while True:
        if any(os.path.lexists(os.path.join(current, marker)) for marker in PROJECT_MARKERS):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    top = folder
    while os.path.isfile(os.path.join(top, "__init__.py")) and os.path.dirname(top) != top:
        top = os.path.dirname(top)
    return top if top != folder else os.path.dirname(folder)


class Resolver:
    """Settings per folder: ``fixed`` for every file (``--config``, or settings built in code),
    else the nearest config's, each passed through ``adjust`` (the command line's flags)."""

    def __init__(self, fixed: Optional[Settings] = None, adjust: Callable[[Settings], Settings] = lambda s: s) -> None:
        self.fixed = adjust(fixed) if fixed is not None else None
        self.adjust = adjust
        self._folders: dict[str, Settings] = {}
        self._configs: dict[Optional[Path], Settings] = {}

    @classmethod
    def of(cls, settings: "Settings | Resolver") -> "Resolver":
        return settings if isinstance(settings, Resolver) else cls(fixed=settings)

    def for_folder(self, folder: str) -> Settings:
        """The settings of the files directly in ``folder``; raises ConfigError for a bad config."""
        if self.fixed is not None:
            return self.fixed
        folder = os.path.abspath(folder)
        found = self._folders.get(folder)
        if found is None:
            config = config_in(Path(folder))
            parent = os.path.dirname(folder)
            if config is not None:
                found = self._settings(config)
            elif parent != folder:
                found = self.for_folder(parent)
            else:
                found = self._settings(None)
            self._folders[folder] = found
        return found

    def for_file(self, path: str) -> Settings:
        return self.for_folder(os.path.dirname(os.path.abspath(path)))

    def _settings(self, config: Optional[Path]) -> Settings:
        if config not in self._configs:
            self._configs[config] = self.adjust(checked(load(config)))
        return self._configs[config]


def rooted(settings: Settings, path: str, named_root: str) -> Settings:
    """``settings`` with the root that ``path``'s globs are relative to: the config's folder
    when the path is inside it, else ``named_root`` (the project root of the path named)."""
    if inside(path, settings.root):
        return settings
    return replace(settings, root=named_root)


def inside(path: str, folder: Optional[str]) -> bool:
    if folder is None:
        return False
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # another drive on Windows
        return False
