"""Running a scan: read, prefilter, consult the cache, analyse in worker processes.

The analysis reads Python's own ``ast``. libcst, which the codemod uses to keep every
byte of a file, parses at about 0.9 MB/s here (the vLLM 0.33.0 tree has 38 MB of Python
that mentions a factory); ``ast`` parses the same in 4 s. The scan only needs positions,
names and shapes of expressions, so it uses the fast parser, and the codemod finds the
same calls again by position.
"""

from __future__ import annotations

import ast
import hashlib
import json
import multiprocessing
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

from allocaudit.auditor.analysis.devices import CONFIDENCE_ORDER
from allocaudit.auditor.discovery import discover
from allocaudit.auditor.findings import FileError, Finding, ScanResult
from allocaudit.auditor.rules import ALL_RULES, FixAvailability, Report
from allocaudit.auditor.settings import Settings
from allocaudit.auditor.analysis.modules import OtherModules
from allocaudit.auditor.analysis.sites import analyze, module_exports
from allocaudit.auditor.source import SourceError, decode, parse, read_bytes
from allocaudit.auditor.suppression import is_suppressed

CACHE_VERSION = "1"
# A file that names no factory cannot hold an allocation site: skip it unparsed. One that
# calls the runtime (`get_empty`, `get_empty_like`: what `fix` wrote) may request one name
# twice (AA206). Plain substring tests run at memory speed; a regular expression over 75 MB
# takes seconds.
FACTORY_HINTS = (b".empty", b".zeros", b".ones", b".full", b".new_", b"from torch import", b"get_empty")
# A factory named but not called (`alloc = torch.empty`, `from torch import zeros as z`):
# the file may define an alias that other modules import. Both start with a literal,
# which the regex engine scans for quickly.
EXPORT_HINTS = (
    re.compile(rb"torch\.(?:empty|zeros|ones|full)(?:_like|_strided)?\b(?![ \t]*\()"),
    re.compile(rb"from torch import[^\n]*\b(?:empty|zeros|ones|full)\b"),
)
Exports = Mapping[str, Mapping[str, frozenset[str]]]


def may_allocate(data: bytes) -> bool:
    """The text prefilter: False only for a file that cannot hold a factory call."""
    return any(hint in data for hint in FACTORY_HINTS)


def may_export(data: bytes) -> bool:
    return b"torch" in data and any(hint.search(data) for hint in EXPORT_HINTS)


def module_parts(path: str) -> tuple[str, ...]:
    """Dotted parts of the module a file is, from its absolute path (a package for __init__)."""
    parts = Path(os.path.abspath(path)).with_suffix("").parts[1:]
    return parts[:-1] if parts and parts[-1] == "__init__" else parts


def package_parts(path: str) -> tuple[str, ...]:
    return tuple(Path(os.path.abspath(path)).parent.parts[1:])


def collect_exports(sources: Mapping[str, bytes]) -> dict[str, dict[str, frozenset[str]]]:
    """Factory aliases defined at module level, keyed by every dotted suffix of the module,
    so that relative and absolute imports inside the scanned tree both find them."""
    by_suffix: dict[str, dict[str, frozenset[str]]] = {}
    ambiguous: set[str] = set()
    for path, data in sources.items():
        if not may_export(data):
            continue
        try:
            tree = parse(decode(data), path)
        except SourceError:
            continue
        aliases = module_exports(tree, package_parts(path))
        if not aliases:
            continue
        parts = module_parts(path)
        for i in range(len(parts)):
            key = ".".join(parts[i:])
            if key in by_suffix and by_suffix[key] != aliases:
                ambiguous.add(key)
            by_suffix[key] = aliases
    for key in ambiguous:
        del by_suffix[key]
    return by_suffix


def _char_col(lines: list[str], lineno: int, byte_col: int) -> int:
    """ast columns are UTF-8 byte offsets; report 1-based character columns like ruff."""
    if lineno < 1 or lineno > len(lines):
        return byte_col + 1
    line = lines[lineno - 1]
    if line.isascii():
        return byte_col + 1
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore")) + 1


def _finding(path: str, lines: list[str], rule, report: Report) -> Finding:
    node, site = report.node, report.site
    offers_fix = rule.FIX is not FixAvailability.NONE
    line, end_line = node.lineno, getattr(node, "end_lineno", None) or node.lineno
    return Finding(
        path=path,
        line=line,
        col=_char_col(lines, line, node.col_offset),
        end_line=end_line,
        end_col=_char_col(lines, end_line, getattr(node, "end_col_offset", None) or node.col_offset),
        code=rule.CODE,
        message=report.message,
        api=site.api if site else None,
        device_form=site.device.form if site else None,
        device=site.device.text if site else None,
        site_class=site.site_class if site else None,
        function=site.qualname if site else None,
        confidence=(site.device.confidence if site else None) or "high",
        fixable=bool(offers_fix and (report.fixable if report.fixable is not None else site and site.fixable)),
        not_fixable_reason=(
            None if not offers_fix else report.not_fixable_reason if report.fixable is not None else site.not_fixable_reason if site else None
        ),
        notes=site.notes if site else (),
    )


_trees: dict[str, tuple[tuple[int, int], str, ast.Module]] = {}


def _read_module(max_size: int):
    """How the analysis reads a module a scanned file imports: (content digest, tree), or
    None when it cannot be read as Python; each file parsed once per process while it is
    unchanged."""

    def read(path: str) -> Optional[tuple[str, ast.Module]]:
        try:
            info = os.stat(path)
            stamp = (info.st_mtime_ns, info.st_size)
            cached = _trees.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1], cached[2]
            data = read_bytes(path, max_size)
            tree = parse(decode(data), path)
        except (OSError, SourceError):
            return None
        digest = _digest(data)
        _trees[path] = (stamp, digest, tree)
        return digest, tree

    return read


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def scan_source(path: str, data: bytes, settings: Settings, exports: Optional[Exports] = None, analyse: bool = True) -> list[Finding]:
    """Findings for one file's bytes. Raises SourceError when the file cannot be read as
    Python. ``analyse`` False only checks that it parses (the prefilter ruled out findings)."""
    return _scan_source(path, data, settings, exports, analyse)[0]


def _scan_source(path: str, data: bytes, settings: Settings, exports: Optional[Exports], analyse: bool) -> tuple[list[Finding], dict[str, str]]:
    """scan_source, and the other files the findings depend on (path -> content digest)."""
    text = decode(data)
    tree = parse(text, path)
    if not analyse:
        return [], {}
    others = OtherModules(path, settings.analysis_options(), _read_module(settings.max_file_size))
    facts = analyze(tree, settings.analysis_options(), package_parts(path), exports, others)
    codes = settings.enabled_codes()
    minimum = CONFIDENCE_ORDER[settings.min_confidence]
    lines = text.splitlines()
    findings = []
    for rule in ALL_RULES:
        if rule.CODE not in codes:
            continue
        for report in rule().check(facts):
            finding = _finding(path, lines, rule, report)
            if CONFIDENCE_ORDER[finding.confidence] < minimum:
                continue
            if is_suppressed(lines, finding.line, finding.end_line, finding.code):
                continue
            findings.append(finding)
    findings.sort(key=lambda f: (f.line, f.col, f.code))
    return findings, others.dependencies()


# -- the cache ------------------------------------------------------------------------


def _analyzer_digest() -> str:
    """Digest of the auditor's own source, so a changed analysis never serves old results."""
    digest = hashlib.blake2b(digest_size=8)
    for source in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


class ResultCache:
    """Findings per file, keyed by path and content, one JSON file per settings digest.

    The folder carries a CACHEDIR.TAG (backup tools skip it) and a .gitignore; deleting it
    is always safe."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = directory
        self.file = directory / f"scan-v{CACHE_VERSION}-{_analyzer_digest()}-{fingerprint}.json"
        self.entries: dict[str, list[dict]] = {}
        self.dirty = False
        try:
            self.entries = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def key(path: str, data: bytes, exports_digest: str) -> str:
        digest = hashlib.blake2b(data, digest_size=16)
        digest.update(os.path.abspath(path).encode("utf-8", "surrogateescape"))
        digest.update(exports_digest.encode())
        return digest.hexdigest()

    def get(self, key: str) -> Optional[tuple[list[Finding], Optional[str]]]:
        """(findings, error reason) stored for ``key``, or None; None too when a file the
        findings depend on (a module the scanned one imports) has changed since."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        for path, digest in entry.get("depends", {}).items():
            try:
                with open(path, "rb") as handle:
                    if _digest(handle.read()) != digest:
                        return None
            except OSError:
                return None
        findings = [Finding(**{**row, "notes": tuple(row.get("notes", ()))}) for row in entry.get("findings", ())]
        return findings, entry.get("error")

    def put(self, key: str, findings: list[Finding], error: Optional[str], depends: Mapping[str, str]) -> None:
        entry: dict = {"error": error} if error is not None else {"findings": [f.to_dict() for f in findings]}
        if depends:
            entry["depends"] = dict(depends)
        self.entries[key] = entry
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tag = self.directory / "CACHEDIR.TAG"
            if not tag.exists():
                tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n# allocaudit's scan cache; safe to delete.\n")
                (self.directory / ".gitignore").write_text("*\n")
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".scan-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.entries, handle)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.file)
            prefix = self.file.name.rsplit("-", 1)[0]
            for stale in self.directory.glob("scan-v*.json"):
                # Written by another version of the analysis: it can never be hit again.
                if not stale.name.startswith(prefix):
                    stale.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only cache folder only costs speed


# -- workers --------------------------------------------------------------------------

_worker_state: dict = {}


def _init_worker(settings: Settings, exports: Exports) -> None:
    _worker_state["settings"] = settings
    _worker_state["exports"] = exports


def _scan_one(job: tuple[str, bytes, bool]) -> tuple[str, list[Finding], Optional[str], dict[str, str]]:
    path, data, analyse = job
    try:
        findings, depends = _scan_source(path, data, _worker_state["settings"], _worker_state["exports"], analyse)
        return path, findings, None, depends
    except SourceError as exc:
        return path, [], str(exc), {}
    except Exception as exc:  # a bug of ours must not stop the scan of other files
        return path, [], f"internal error while analysing: {type(exc).__name__}: {exc}", {}


def _run_jobs(jobs: list[tuple[str, bytes, bool]], settings: Settings, exports: Exports, processes: int, progress: Optional[Callable[[], None]]):
    if processes <= 1 or len(jobs) < 16:
        _init_worker(settings, exports)
        for job in jobs:
            yield _scan_one(job)
            if progress:
                progress()
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    # Largest files first, so that no worker is left with a big one at the end.
    jobs = sorted(jobs, key=lambda job: -len(job[1]))
    with context.Pool(processes, initializer=_init_worker, initargs=(settings, exports)) as pool:
        for result in pool.imap_unordered(_scan_one, jobs, chunksize=max(1, len(jobs) // (processes * 16))):
            yield result
            if progress:
                progress()


def scan(
    paths: Iterable[str],
    settings: Settings,
    cache_dir: Optional[Path] = None,
    jobs: Optional[int] = None,
    show_progress: bool = False,
) -> ScanResult:
    """Scan files and folders. ``cache_dir`` None disables the cache."""
    files, discovery_errors = discover(paths, settings)
    result = ScanResult(errors=list(discovery_errors), files_scanned=len(files))

    sources: dict[str, bytes] = {}
    for path in files:
        try:
            sources[path] = read_bytes(path, settings.max_file_size)
        except SourceError as exc:
            result.errors.append(FileError(path, str(exc)))
    exports = collect_exports(sources)
    exports_digest = hashlib.blake2b(repr(sorted((k, sorted(v.items())) for k, v in exports.items())).encode(), digest_size=8).hexdigest()

    alias_names = sorted({name for aliases in exports.values() for name in aliases})
    alias_filter = re.compile(rb"\b(?:" + b"|".join(re.escape(n.encode()) for n in alias_names) + rb")\b") if alias_names else None
    cache = ResultCache(cache_dir, settings.fingerprint()) if cache_dir is not None else None
    todo: list[tuple[str, bytes, bool]] = []
    keys: dict[str, str] = {}
    for path, data in sources.items():
        # Every file is parsed (a file that does not parse is an error row); only the
        # files that pass the prefilter are analysed.
        analyse = may_allocate(data) or bool(alias_filter and alias_filter.search(data))
        result.files_analysed += analyse
        if cache is not None:
            keys[path] = ResultCache.key(path, data, exports_digest)
            cached = cache.get(keys[path])
            if cached is not None:
                result.cache_hits += 1
                findings, error = cached
                result.findings.extend(findings)
                if error is not None:
                    result.errors.append(FileError(path, error))
                continue
        todo.append((path, data, analyse))

    processes = jobs or os.cpu_count() or 1
    bar = _progress_bar(len(todo)) if show_progress and len(todo) >= 200 else None
    try:
        for path, findings, error, depends in _run_jobs(todo, settings, exports, processes, bar.advance if bar else None):
            if error is not None:
                result.errors.append(FileError(path, error))
            result.findings.extend(findings)
            if cache is not None:
                cache.put(keys[path], findings, error, depends)
    finally:
        if bar:
            bar.close()
    if cache is not None:
        cache.save()
    result.findings.sort(key=lambda f: (f.path, f.line, f.col, f.code))
    result.errors.sort(key=lambda e: e.path)
    return result


class _progress_bar:
    """A rich progress bar on stderr for long scans (only when stderr is a terminal)."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.console import Console

        self.progress = Progress(
            TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(file=sys.stderr), transient=True,
        )
        self.task = self.progress.add_task("scan", total=total)
        self.progress.start()

    def advance(self) -> None:
        self.progress.advance(self.task)

    def close(self) -> None:
        self.progress.stop()
