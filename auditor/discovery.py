"""Which files a scan reads: folders walked with each file's include/exclude globs and
.gitignore; files named on the command line always (with ``force-exclude``, only when they
pass the same filters); symlinked folders followed once (a loop is an error)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fnmatch import translate
from pathlib import Path, PurePosixPath
from typing import Iterable

import pathspec

from allocaudit.auditor.findings import FileError
from allocaudit.auditor.project import Resolver, inside, project_root, rooted
from allocaudit.auditor.settings import Settings


class GlobSet:
    """Globs over a path relative to the project root. Compiled once: a walk over a large
    tree asks thousands of times. ``ignore_case`` for include globs, which name concepts
    (`*moe*` must match `MoE/` and `SparseMoE.py`); exclude globs match as written, like
    .gitignore and ruff."""

    def __init__(self, patterns: Iterable[str], ignore_case: bool = False) -> None:
        patterns = tuple(patterns)
        self.ignore_case = ignore_case
        if ignore_case:
            patterns = tuple(p.lower() for p in patterns)
        self.literals = frozenset(p for p in patterns if not any(c in p for c in "*?["))
        globs = [translate(p) for p in patterns if p not in self.literals]
        self.regex = re.compile("|".join(globs)) if globs else None

    def _match(self, text: str) -> bool:
        if self.ignore_case:
            text = text.lower()
        return text in self.literals or bool(self.regex and self.regex.match(text))

    def matches(self, relative: str) -> bool:
        """The whole path or any one of its parts matches (`build` excludes every folder
        named build, `*moe*` includes any MoE path)."""
        return self._match(relative) or any(self._match(part) for part in PurePosixPath(relative).parts)

    def matches_entry(self, relative: str, name: str) -> bool:
        """A folder entry met in a walk: its path or its own name matches (the folders above
        it were checked on the way down, or were named on the command line)."""
        return self._match(relative) or self._match(name)


class GitIgnore:
    """.gitignore files read as git reads them, with or without git: each folder's file
    applies below it and a deeper file's patterns win; above a repository's top (a folder
    holding .git) nothing applies, and the top adds .git/info/exclude. Outside any repository
    every .gitignore above the path applies, as in ruff. Git's global excludes file is not read."""

    def __init__(self) -> None:
        self._chains: dict[str, tuple[tuple[str, pathspec.GitIgnoreSpec], ...]] = {}

    def _chain(self, folder: str) -> tuple[tuple[str, pathspec.GitIgnoreSpec], ...]:
        chain = self._chains.get(folder)
        if chain is not None:
            return chain
        parent = os.path.dirname(folder)
        top = os.path.exists(os.path.join(folder, ".git"))
        chain = () if top or parent == folder else self._chain(parent)
        sources = [os.path.join(folder, ".git", "info", "exclude")] if top else []
        sources.append(os.path.join(folder, ".gitignore"))
        for source in sources:
            try:
                with open(source, encoding="utf-8", errors="surrogateescape") as handle:
                    spec = pathspec.GitIgnoreSpec.from_lines(handle.read().splitlines())
            except (OSError, ValueError):  # none there, or unreadable: git skips it too
                continue
            chain += ((folder, spec),)
        self._chains[folder] = chain
        return chain

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether the .gitignore files above ``path`` ignore it (not its parents: a walk
        never enters an ignored folder; `ignored_with_parents` checks them too)."""
        path = os.path.abspath(path)
        verdict = False
        for base, spec in self._chain(os.path.dirname(path)):
            relative = Path(os.path.relpath(path, base)).as_posix() + ("/" if is_dir else "")
            decision = spec.check_file(relative).include
            if decision is not None:
                verdict = decision
        return verdict

    def ignored_with_parents(self, path: str, is_dir: bool) -> bool:
        path = os.path.abspath(path)
        parent = os.path.dirname(path)
        while parent != os.path.dirname(parent) and not os.path.exists(os.path.join(parent, ".git")):
            if self.ignored(parent, True):
                return True
            parent = os.path.dirname(parent)
        return self.ignored(path, is_dir)


@dataclass
class Discovery:
    files: list[tuple[str, Settings]] = field(default_factory=list)  # each file with its settings
    errors: list[FileError] = field(default_factory=list)
    skipped: int = 0  # Python files outside the include globs (`--all` scans them)


def _relative(path: str, root: str) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


class _Scope:
    """The filters of one discovery: compiled globs per settings, .gitignore, roots."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.gitignore = GitIgnore()
        self._globs: dict[Settings, tuple[GlobSet, GlobSet]] = {}
        self._rooted: dict[tuple[int, str, bool], Settings] = {}

    def settings(self, path: str, named_root: str, is_dir: bool = False) -> Settings:
        """The settings of ``path`` (a folder's: of the files in it), with their root."""
        folder = os.path.abspath(path) if is_dir else os.path.dirname(os.path.abspath(path))
        settings = self.resolver.for_folder(folder)
        key = (id(settings), named_root, inside(folder, settings.root))
        found = self._rooted.get(key)
        if found is None:
            found = self._rooted[key] = rooted(settings, folder, named_root)
        return found

    def globs(self, settings: Settings) -> tuple[GlobSet, GlobSet]:
        compiled = self._globs.get(settings)
        if compiled is None:
            compiled = self._globs[settings] = (GlobSet(settings.exclude), GlobSet(settings.include, ignore_case=True))
        return compiled


def discover(paths: Iterable[str], resolver: "Settings | Resolver") -> Discovery:
    scope = _Scope(Resolver.of(resolver))
    found = Discovery()
    seen: set[str] = set()

    def add(path: str, settings: Settings) -> None:
        if path not in seen:
            seen.add(path)
            found.files.append((path, settings))

    for given in paths:
        if os.path.isdir(given):
            named_root = project_root(given)
            if _forced_out(scope, given, named_root, is_dir=True):
                continue
            for path, settings in _walk(given, scope, named_root, found):
                add(path, settings)
        elif os.path.lexists(given):
            named_root = project_root(given)
            settings = scope.settings(given, named_root)
            if settings.force_exclude:
                if _forced_out(scope, given, named_root, is_dir=False):
                    continue
                if not settings.all_files and not scope.globs(settings)[1].matches(_relative(os.path.abspath(given), settings.root)):
                    found.skipped += 1
                    continue
            add(given, settings)
        else:
            found.errors.append(FileError(given, "no such file or directory"))
    return found


def _forced_out(scope: _Scope, given: str, named_root: str, is_dir: bool) -> bool:
    """With force-exclude, whether a path named on the command line is excluded: by an
    exclude glob over any part of its path below the root, or by .gitignore (ruff's rule)."""
    settings = scope.settings(given, named_root, is_dir)
    if not settings.force_exclude:
        return False
    relative = _relative(os.path.abspath(given), settings.root)
    if relative != "." and scope.globs(settings)[0].matches(relative):
        return True
    return settings.respect_gitignore and scope.gitignore.ignored_with_parents(given, is_dir)


def _walk(top: str, scope: _Scope, named_root: str, found: Discovery) -> Iterable[tuple[str, Settings]]:
    visited: set[str] = set()

    def on_error(exc: OSError) -> None:
        found.errors.append(FileError(exc.filename or top, exc.strerror or str(exc)))

    for folder, dirs, names in os.walk(top, followlinks=True, onerror=on_error):
        real = os.path.realpath(folder)
        if real in visited:
            found.errors.append(FileError(folder, f"symlink loop: {real} is already being scanned"))
            dirs[:] = []
            continue
        visited.add(real)
        settings = scope.settings(folder, named_root, is_dir=True)
        exclude, include = scope.globs(settings)
        rel_folder = _relative(os.path.abspath(folder), settings.root)
        prefix = "" if rel_folder == "." else rel_folder + "/"
        kept = []
        for name in sorted(dirs):
            path = os.path.join(folder, name)
            if exclude.matches_entry(prefix + name, name):
                continue
            if settings.respect_gitignore and scope.gitignore.ignored(path, is_dir=True):
                continue
            kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            if not name.endswith((".py", ".pyi")):
                continue
            path = os.path.join(folder, name)
            if exclude.matches_entry(prefix + name, name):
                continue
            if settings.respect_gitignore and scope.gitignore.ignored(path, is_dir=False):
                continue
            if not settings.all_files and not include.matches(prefix + name):
                found.skipped += 1
                continue
            yield path, settings
