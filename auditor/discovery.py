"""Which files a scan reads: explicit files always, folders walked with the settings'
include/exclude globs and .gitignore, symlinked folders followed once (a loop is an error)."""

from __future__ import annotations

import os
import subprocess
import re
from fnmatch import translate
from pathlib import Path, PurePosixPath
from typing import Iterable

from allocaudit.auditor.findings import FileError
from allocaudit.auditor.settings import Settings


class GlobSet:
    """Globs that match a relative path when they match the whole path or any one of its
    components (`build` excludes every folder named build, `*moe*` includes any MoE path).
    Compiled once: a walk over a large tree asks thousands of times."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = tuple(patterns)
        self.literals = frozenset(p for p in patterns if not any(c in p for c in "*?["))
        globs = [translate(p) for p in patterns if p not in self.literals]
        self.regex = re.compile("|".join(globs)) if globs else None

    def matches(self, relative: str) -> bool:
        parts = PurePosixPath(relative).parts
        if relative in self.literals or not self.literals.isdisjoint(parts):
            return True
        if self.regex is None:
            return False
        return bool(self.regex.match(relative)) or any(self.regex.match(part) for part in parts)


def _relative(path: str, root: str) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


def discover(paths: Iterable[str], settings: Settings) -> tuple[list[str], list[FileError]]:
    files: list[str] = []
    errors: list[FileError] = []
    seen: set[str] = set()
    walked: list[str] = []
    for given in paths:
        if os.path.isdir(given):
            walked.extend(_walk(given, settings, errors))
        elif os.path.lexists(given):
            if given not in seen:  # an explicit file is scanned whatever the globs say
                seen.add(given)
                files.append(given)
        else:
            errors.append(FileError(given, "no such file or directory"))
    if settings.respect_gitignore and walked:
        ignored = _git_ignored(walked)
        walked = [f for f in walked if f not in ignored]
    for path in walked:
        if path not in seen:
            seen.add(path)
            files.append(path)
    return files, errors


def _pattern_root(top: str, settings: Settings) -> str:
    """The folder globs are relative to: the config file's, when the walk is inside it;
    else the parent of the folder named on the command line, so that `scan layers/fused_moe`
    includes that folder while `scan .` does not match the name of the folder it runs in."""
    top = os.path.abspath(top)
    if settings.root is not None:
        root = os.path.abspath(settings.root)
        if os.path.commonpath([root, top]) == root:
            return root
    given = os.path.basename(os.path.normpath(top))
    return os.path.dirname(top) if given and top != os.getcwd() else top


def _walk(top: str, settings: Settings, errors: list[FileError]) -> list[str]:
    found = []
    root = _pattern_root(top, settings)
    visited: set[str] = set()
    exclude, include = GlobSet(settings.exclude), GlobSet(settings.include)

    def on_error(exc: OSError) -> None:
        errors.append(FileError(exc.filename or top, exc.strerror or str(exc)))

    for folder, dirs, names in os.walk(top, followlinks=True, onerror=on_error):
        real = os.path.realpath(folder)
        if real in visited:
            errors.append(FileError(folder, f"symlink loop: {real} is already being scanned"))
            dirs[:] = []
            continue
        visited.add(real)
        rel_folder = _relative(os.path.abspath(folder), root)
        dirs[:] = sorted(d for d in dirs if not exclude.matches(f"{rel_folder}/{d}"))
        for name in sorted(names):
            if not name.endswith((".py", ".pyi")):
                continue
            path = os.path.join(folder, name)
            relative = _relative(os.path.abspath(path), root)
            if exclude.matches(relative):
                continue
            if not settings.all_files and not include.matches(relative):
                continue
            found.append(path)
    return found


def _git_ignored(paths: list[str]) -> set[str]:
    """The paths git ignores (.gitignore, .git/info/exclude, global excludes); none outside a repo."""
    ignored: set[str] = set()
    # One git call, from the folder that holds them all.
    top = os.path.commonpath([os.path.abspath(p) for p in paths])
    if not os.path.isdir(top):
        top = os.path.dirname(top)
    try:
        proc = subprocess.run(
            ["git", "-C", top, "check-ignore", "-z", "--stdin"],
            input="\0".join(os.path.abspath(p) for p in paths).encode(),
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ignored
    if proc.returncode not in (0, 1):  # 128: not a repository, or git failed
        return ignored
    absolute = {os.path.abspath(p): p for p in paths}
    for entry in proc.stdout.decode(errors="surrogateescape").split("\0"):
        if entry in absolute:
            ignored.add(absolute[entry])
    return ignored
