"""Running a codemod over files: scan, rewrite, check, then write, diff or only report.

Each file is read once; its rewrite must compile before anything is written, and the
write is atomic and refused if the file changed since it was read. A file that cannot be
read, parsed, rewritten or written is an error row; the other files go on.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional

import libcst as cst

from allocaudit.auditor.discovery import discover
from allocaudit.auditor.app.engine import scan_files
from allocaudit.auditor.findings import FileError, ScanResult
from allocaudit.auditor.progress import ProgressBar
from allocaudit.auditor.project import Resolver
from allocaudit.auditor.rules import FIXABLE_CODES
from allocaudit.auditor.settings import Settings
from allocaudit.rewrites.files import SourceError, SourceFile, WriteError, read_source, write_atomic
from allocaudit.rewrites.fix import Rewrite, fix_source
from allocaudit.rewrites.runtime_imports import recogniser, vendored_problem
from allocaudit.rewrites.unfix import unfix_source

Mode = Literal["write", "diff", "check"]
WRITE: Mode = "write"
DIFF: Mode = "diff"
CHECK: Mode = "check"
# Files to rewrite before a progress bar is worth showing: libcst rewrites a few per second.
PROGRESS_FROM = 20


@dataclass(frozen=True)
class SiteRow:
    path: str
    line: int
    col: int
    text: str  # what was (or would be) done, or why the site was skipped


@dataclass
class RunResult:
    changed: list[SiteRow] = field(default_factory=list)  # sites rewritten (or pending)
    skipped: list[SiteRow] = field(default_factory=list)
    held: list[SiteRow] = field(default_factory=list)  # unsafe fixes not applied, with why they are unsafe
    errors: list[FileError] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)
    files_seen: int = 0
    files_skipped: int = 0  # Python files out of scope
    warnings: list[str] = field(default_factory=list)  # once each: what may fail where the code runs
    interrupted: bool = False  # Ctrl-C: what is listed was done, the rest was not

    def exit_code(self, mode: Mode) -> int:
        if self.interrupted:
            return 130  # the shell's code for SIGINT, as for any interrupted command
        if self.errors:
            return 2
        return 1 if mode != WRITE and self.changed else 0


def fix_settings(settings: Settings) -> Settings:
    """The scan `fix` runs: the rules that offer a fix, whatever the user selects;
    suppression comments and per-file-ignores still hold."""
    return replace(settings, select=FIXABLE_CODES, ignore=())


def run_fix(
    paths: Iterable[str],
    settings: "Settings | Resolver",
    mode: Mode = WRITE,
    cache_dir: Optional[Path] = None,
    jobs: Optional[int] = None,
    show_progress: bool = False,
    select: Optional[Callable[[ScanResult], ScanResult]] = None,
) -> RunResult:
    """Fix the files under ``paths``. A progress bar shows on stderr with ``show_progress``;
    Ctrl-C stops between two files and returns what was done, marked ``interrupted``.
    ``select`` may take fixes away from the scan's findings first (`fix --profile`)."""
    found = discover(list(paths), settings)
    result = RunResult(errors=list(found.errors), files_seen=len(found.files), files_skipped=found.skipped)
    before = {path: _stamp(path) for path, _ in found.files}
    variants: dict[Settings, Settings] = {}
    files = [(path, variants.get(s) or variants.setdefault(s, fix_settings(s))) for path, s in found.files]
    bar = None
    try:
        scanned = scan_files(files, cache_dir=cache_dir, jobs=jobs, show_progress=show_progress)
        if select is not None:
            scanned = select(scanned)
        result.errors.extend(scanned.errors)
        by_path = defaultdict(list)
        for finding in scanned.findings:
            by_path[finding.path].append(finding)
        settings_of = dict(files)
        bar = ProgressBar("fixing", len(by_path)) if show_progress and len(by_path) >= PROGRESS_FROM else None
        for path, findings in sorted(by_path.items()):
            _fix_file(path, findings, settings_of[path], before.get(path), mode, result)
            if bar:
                bar.advance()
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if bar:
            bar.close()
    return result


def _fix_file(path: str, findings: list, settings: Settings, stamp, mode: Mode, result: RunResult) -> None:
    try:
        source = read_source(path, settings.max_file_size)
    except SourceError as exc:
        result.errors.append(FileError(path, str(exc)))
        return
    if _stamp(path) != stamp:
        result.errors.append(FileError(path, "file changed during the run: not rewritten"))
        return
    try:
        fixed = fix_source(path, source.text, findings, settings.unsafe_fixes, settings.runtime_module)
    except cst.ParserSyntaxError as exc:
        result.errors.append(FileError(path, f"libcst cannot parse it: {exc.message} at line {exc.raw_line}"))
        return
    except Exception as exc:  # a bug of ours must not stop the other files
        result.errors.append(FileError(path, f"internal error while rewriting: {type(exc).__name__}: {exc}"))
        return
    result.skipped += [SiteRow(path, s.finding.line, s.finding.col, s.reason) for s in fixed.skips]
    result.held += [SiteRow(path, s.finding.line, s.finding.col, s.reason) for s in fixed.held]
    rows = [SiteRow(path, r.finding.line, r.finding.col, _rewritten(r)) for r in fixed.rewrites]
    rows += [SiteRow(path, f.line, f.col, f"`{f.api}` deleted: never read") for f in fixed.deletions]
    if fixed.text is not None and _finish(source, fixed.text, mode, result):
        result.changed += rows
        problem = vendored_problem(settings.runtime_module, path)
        if problem is not None and problem not in result.warnings:
            result.warnings.append(problem)


def _rewritten(rewrite: Rewrite) -> str:
    finding = rewrite.finding
    text = f"`{finding.api}` -> {rewrite.function}(cache_name={rewrite.cache_name!r})"
    text += f" (unsafe fix: {finding.unsafe_reason})" if finding.unsafe_reason else ""
    return text + (f" [{finding.fix_reason}]" if finding.fix_reason else "")


def run_unfix(paths: Iterable[str], settings: "Settings | Resolver", mode: Mode = WRITE) -> RunResult:
    found = discover(list(paths), settings)
    result = RunResult(errors=list(found.errors), files_seen=len(found.files), files_skipped=found.skipped)
    try:
        for path, file_settings in found.files:
            _unfix_file(path, file_settings, mode, result)
    except KeyboardInterrupt:
        result.interrupted = True
    return result


def _unfix_file(path: str, settings: Settings, mode: Mode, result: RunResult) -> None:
    try:
        source = read_source(path, settings.max_file_size)
    except SourceError as exc:
        result.errors.append(FileError(path, str(exc)))
        return
    if b"get_empty" not in source.data:
        return
    try:
        restored = unfix_source(source.text, recogniser(settings.runtime_module, path))
    except cst.ParserSyntaxError as exc:
        result.errors.append(FileError(path, f"syntax error at line {exc.raw_line}: {exc.message}"))
        return
    except Exception as exc:
        result.errors.append(FileError(path, f"internal error while rewriting: {type(exc).__name__}: {exc}"))
        return
    result.skipped += [SiteRow(path, s.line, s.col, s.detail) for s in restored.skips]
    rows = [SiteRow(path, s.line, s.col, f"get_empty -> `{s.detail}`") for s in restored.restored]
    if restored.text is not None and _finish(source, restored.text, mode, result):
        result.changed += rows


def _finish(source: SourceFile, text: str, mode: Mode, result: RunResult) -> bool:
    """Check, then write or diff one rewritten file; False (and an error row) if it failed."""
    path = source.path
    try:
        data = source.encode(text)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(data, path, "exec", dont_inherit=True)
    except WriteError as exc:
        result.errors.append(FileError(path, f"{exc}: not written"))
        return False
    except (SyntaxError, ValueError) as exc:
        result.errors.append(FileError(path, f"internal error: the rewrite does not compile ({exc}): not written"))
        return False
    if data == source.data:
        return False
    if mode == WRITE:
        try:
            write_atomic(source, data)
        except WriteError as exc:
            result.errors.append(FileError(path, str(exc)))
            return False
    elif mode == DIFF:
        result.diffs.append(
            "".join(difflib.unified_diff(source.text.splitlines(True), text.splitlines(True), f"a/{path}", f"b/{path}"))
        )
    result.files_changed.append(path)
    return True


def _stamp(path: str) -> Optional[tuple[int, int, int]]:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino
