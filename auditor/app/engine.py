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
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

import allocaudit.auditor
from allocaudit.auditor.analysis.devices import CONFIDENCE_ORDER
from allocaudit.auditor.analysis.fix_safety import SAFE, UNSAFE
from allocaudit.auditor.analysis.fixability import chosen_because
from allocaudit.auditor.discovery import GlobSet, discover
from allocaudit.auditor.findings import FileError, Finding, ScanResult
from allocaudit.auditor.rules import ALL_RULES, RULES_BY_CODE, FixAvailability, FixKind, Report
from allocaudit.auditor.rules.unparsable_file import UnparsableFile
from allocaudit.auditor.rules.unused_suppression import UnusedSuppression
from allocaudit.auditor.progress import ProgressBar
from allocaudit.auditor.project import Resolver
from allocaudit.auditor.selection import enabled_codes, ignored_codes
from allocaudit.auditor.settings import Settings
from allocaudit.auditor.analysis.index import ModuleIndex
from allocaudit.auditor.analysis.modules import OtherModules
from allocaudit.auditor.analysis.program import ModuleCalls, by_dotted_suffix, module_calls, setup_functions
from allocaudit.auditor.analysis.sites import analyze, module_exports
from allocaudit.auditor.source import SourceError, decode, parse, read_bytes
from allocaudit.auditor.suppression import Directive, Suppressions

CACHE_VERSION = "5"
# A file that holds none of the bytes a rule needs (`Rule.HINTS`: a factory's name for the
# allocation sites, `get_empty` for AA206) cannot give an analysis finding: it is parsed, not
# analysed. Plain substring tests run at memory speed; a regular expression over 75 MB takes
# seconds.
HINTS = tuple(dict.fromkeys(hint for rule in ALL_RULES for hint in rule.HINTS))
# A factory named but not called (`alloc = torch.empty`, `from torch import zeros as z`):
# the file may define an alias that other modules import. Both start with a literal,
# which the regex engine scans for quickly.
EXPORT_HINTS = (
    re.compile(rb"torch\.(?:empty|zeros|ones|full)(?:_like|_strided)?\b(?![ \t]*\()"),
    re.compile(rb"from torch import[^\n]*\b(?:empty|zeros|ones|full)\b"),
)
Exports = Mapping[str, Mapping[str, frozenset[str]]]
Setup = Mapping[tuple[str, ...], Mapping[str, str]]  # module parts -> functions set-up through the tree's callers


def may_allocate(data: bytes) -> bool:
    """The text prefilter: False for a file that holds no rule's hint (`HINTS`)."""
    return any(hint in data for hint in HINTS)


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
    found: list[tuple[tuple[str, ...], dict[str, frozenset[str]]]] = []
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
        found.append((module_parts(path), aliases))
    return by_dotted_suffix(found)


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
    fixable = bool(offers_fix and (report.fixable if report.fixable is not None else site and site.fixable))
    # A rule may fix what is no workspace (AA104 deletes a dead allocation): the site's
    # unsafe uses only matter for a fix that keeps the buffer.
    unsafe_reason = site.unsafe_reason if fixable and site and site.fixable else None
    size = site.size if site else None
    reuses = fixable and rule.FIX_KIND is FixKind.REUSE and size is not None
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
        fixable=fixable,
        not_fixable_reason=(
            None if not offers_fix else report.not_fixable_reason if report.fixable is not None else site.not_fixable_reason if site else None
        ),
        notes=site.notes if site else (),
        fix_safety=(None if not fixable else UNSAFE if unsafe_reason else SAFE),
        unsafe_reason=unsafe_reason,
        size=size.kind if size else None,
        size_evidence=size.evidence if size else None,
        fix_reason=chosen_because(size) if reuses else None,
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


UNUSED_SUPPRESSION, UNPARSABLE = UnusedSuppression.CODE, UnparsableFile.CODE
# The codes an AA001 finding can be about: allocaudit's own, save AA001 (a comment that
# suppresses AA001 is judged by whether AA001 was reported, not by AA001 again).
_OWN_CODE = re.compile(r"AA[0-9]{3}")


def scan_source(path: str, data: bytes, settings: Settings, exports: Optional[Exports] = None, analyse: bool = True) -> list[Finding]:
    """Findings for one file's bytes. Raises SourceError when the file cannot be read as
    Python (with AA999 on, reports it instead). ``analyse`` False only checks that it parses
    (the prefilter ruled out allocation findings)."""
    return _scan_source(path, data, settings, exports, analyse)[0]


def _scan_source(
    path: str, data: bytes, settings: Settings, exports: Optional[Exports], analyse: bool, setup: Optional[Mapping[str, str]] = None
) -> tuple[list[Finding], dict[str, str], Optional[ModuleCalls]]:
    """scan_source, the other files the findings depend on (path -> content digest), and
    the module's summary for the tree's call graph (None when it does not parse).
    ``setup``: the functions of this module the tree reaches only from set-up code."""
    codes = enabled_codes(settings)
    try:
        text = decode(data)
        tree = parse(text, path)
    except SourceError as exc:
        if UNPARSABLE not in codes:
            raise
        return [Finding(path, exc.line, exc.col, exc.line, exc.col, UNPARSABLE, str(exc), confidence="high")], {}, None
    reported = []
    depends: dict[str, str] = {}
    if analyse:
        others = OtherModules(path, settings.analysis_options(), _read_module(settings.max_file_size))
        facts = analyze(tree, settings.analysis_options(), package_parts(path), exports, others, setup)
        depends = others.dependencies()
        calls = module_calls(facts.index)
        lines = text.splitlines()
        for rule in ALL_RULES:
            if rule.CODE in codes:
                reported += [_finding(path, lines, rule, report) for report in rule().check(facts)]
    else:
        calls = module_calls(ModuleIndex(tree, settings.analysis_options(), package_parts(path)))
    if not reported and UNUSED_SUPPRESSION not in codes:
        return [], depends, calls
    suppressions = Suppressions.of(text, data)
    minimum = CONFIDENCE_ORDER[settings.min_confidence]
    findings = []
    used: set[tuple[Directive, str]] = set()
    used_directives: set[Directive] = set()
    for finding in reported:
        # A comment is used by what the rules report, before the confidence filter: a
        # `--min-confidence` run must not call the comments of low findings unused.
        by = suppressions.suppressing(finding.code, finding.line, finding.end_line)
        used.update((directive, finding.code) for directive in by)
        used_directives.update(by)
        if not by and CONFIDENCE_ORDER[finding.confidence] >= minimum:
            findings.append(finding)
    if UNUSED_SUPPRESSION in codes:
        judged = frozenset(code for directive in suppressions.directives for code in directive.codes or () if _OWN_CODE.fullmatch(code)) - {UNUSED_SUPPRESSION}
        for directive, code in suppressions.unused(used, used_directives, judged):
            # Only a comment that names AA001 silences it: a bare one would silence itself.
            by = suppressions.suppressing(UNUSED_SUPPRESSION, directive.line, directive.line)
            if not any(d.codes and UNUSED_SUPPRESSION in d.codes for d in by):
                findings.append(_unused(path, directive, code, codes))
    findings.sort(key=lambda f: (f.line, f.col, f.code))
    return findings, depends, calls


def _unused(path: str, directive: Directive, code: str, enabled: frozenset[str]) -> Finding:
    where = "in this file" if directive.file_level else "on this line"
    if not code:
        why = f"no finding {where}"
    elif code not in RULES_BY_CODE:
        why = f"`{code}` is not an allocaudit rule"
    elif code not in enabled:
        why = f"`{code}` is not enabled"
    else:
        why = f"no {code} finding {where}"
    what = f" of {code}" if code else ""
    return Finding(
        path, directive.line, directive.col, directive.line, directive.end_col, UNUSED_SUPPRESSION,
        f"unused suppression{what} `{directive.text}`: {why}", confidence="high",
    )


# -- the cache ------------------------------------------------------------------------


def _analyzer_digest() -> str:
    """Digest of the auditor's own source, so a changed analysis never serves old results."""
    digest = hashlib.blake2b(digest_size=8)
    for source in sorted(Path(allocaudit.auditor.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


class ResultCache:
    """Findings per file, keyed by path and content, one JSON file per settings digest.

    The folder carries a CACHEDIR.TAG (backup tools skip it) and a .gitignore; deleting it
    is always safe. It stays bounded: an entry not seen for MAX_AGE_DAYS is dropped (as in
    ruff), a file keeps at most MAX_ENTRIES (the least recently seen go first), and the
    folder keeps the MAX_FILES most recently written settings digests."""

    MAX_AGE_DAYS = 30
    MAX_ENTRIES = 200_000
    MAX_FILES = 8

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = directory
        # The Python version is part of the name: `ast` differs between versions, and so
        # may a file's findings or whether it parses at all.
        self.prefix = f"scan-v{CACHE_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}-"
        self.file = directory / f"{self.prefix}{_analyzer_digest()}-{fingerprint}.json"
        self.today = int(time.time() // 86400)
        self.dirty = False
        try:
            self.entries: dict[str, dict] = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def key(path: str, data: bytes, exports_digest: str) -> str:
        digest = hashlib.blake2b(data, digest_size=16)
        digest.update(os.path.abspath(path).encode("utf-8", "surrogateescape"))
        digest.update(exports_digest.encode())
        return digest.hexdigest()

    def get(self, key: str) -> Optional[tuple[list[Finding], Optional[str], Optional[ModuleCalls]]]:
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
        if entry.get("seen") != self.today:  # stamped once a day, not rewritten on every hit
            entry["seen"] = self.today
            self.dirty = True
        findings = [Finding(**{**row, "notes": tuple(row.get("notes", ()))}) for row in entry.get("findings", ())]
        calls = ModuleCalls.from_dict(entry["calls"]) if "calls" in entry else None
        return findings, entry.get("error"), calls

    def put(self, key: str, findings: list[Finding], error: Optional[str], depends: Mapping[str, str], calls: Optional[ModuleCalls]) -> None:
        entry: dict = {"error": error} if error is not None else {"findings": [f.to_dict() for f in findings]}
        if depends:
            entry["depends"] = dict(depends)
        if calls is not None:
            entry["calls"] = calls.to_dict()
        entry["seen"] = self.today
        self.entries[key] = entry
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        fresh = {k: e for k, e in self.entries.items() if self.today - e.get("seen", 0) <= self.MAX_AGE_DAYS}
        if len(fresh) > self.MAX_ENTRIES:
            newest = sorted(fresh, key=lambda k: fresh[k].get("seen", 0), reverse=True)[: self.MAX_ENTRIES]
            fresh = {k: fresh[k] for k in newest}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tag = self.directory / "CACHEDIR.TAG"
            if not tag.exists():
                tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n# allocaudit's scan cache; safe to delete.\n")
                (self.directory / ".gitignore").write_text("*\n")
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".scan-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(fresh, handle)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.file)
            self._evict()
        except OSError:
            pass  # a read-only cache folder only costs speed

    def _evict(self) -> None:
        version = self.file.name.rsplit("-", 1)[0]
        others = []
        for other in self.directory.glob("scan-v*.json"):
            if other.name.startswith(self.prefix) and not other.name.startswith(version):
                other.unlink(missing_ok=True)  # another version of the analysis: never hit again
            elif other != self.file:
                others.append(other)
        others.sort(key=lambda f: f.stat().st_mtime, reverse=True)
        for old in others[self.MAX_FILES - 1 :]:
            old.unlink(missing_ok=True)


# -- workers --------------------------------------------------------------------------

_worker_state: dict = {}


def _init_worker(settings: list[Settings], exports: Exports, setup: Setup) -> None:
    _worker_state["settings"] = settings
    _worker_state["exports"] = exports
    _worker_state["setup"] = setup


def _init_pool_worker(settings: list[Settings], exports: Exports, setup: Setup) -> None:
    # Ctrl-C reaches every process of the terminal's group: the parent stops the pool,
    # and the workers are not to print a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(settings, exports, setup)


Job = tuple[str, bytes, bool, int]  # path, bytes, whether to analyse, index of its settings


def _scan_one(job: Job) -> tuple[str, list[Finding], Optional[str], dict[str, str], Optional[ModuleCalls]]:
    path, data, analyse, index = job
    try:
        setup = _worker_state["setup"].get(module_parts(path))
        findings, depends, calls = _scan_source(path, data, _worker_state["settings"][index], _worker_state["exports"], analyse, setup)
        return path, findings, None, depends, calls
    except SourceError as exc:
        return path, [], str(exc), {}, None
    except Exception as exc:  # a bug of ours must not stop the scan of other files
        return path, [], f"internal error while analysing: {type(exc).__name__}: {exc}", {}, None


def _run_jobs(
    jobs: list[Job], state: tuple[list[Settings], Exports, Setup], processes: int, progress: Optional[Callable[[], None]] = None
):
    if processes <= 1 or len(jobs) < 16:
        _init_worker(*state)
        for job in jobs:
            yield _scan_one(job)
            if progress:
                progress()
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    # Largest files first, so that no worker is left with a big one at the end.
    jobs = sorted(jobs, key=lambda job: -len(job[1]))
    with context.Pool(processes, initializer=_init_pool_worker, initargs=state) as pool:
        for result in pool.imap_unordered(_scan_one, jobs, chunksize=max(1, len(jobs) // (processes * 16))):
            yield result
            if progress:
                progress()


def scan(
    paths: Iterable[str],
    settings: "Settings | Resolver",
    cache_dir: Optional[Path] = None,
    jobs: Optional[int] = None,
    show_progress: bool = False,
) -> ScanResult:
    """Scan files and folders, each file with its own settings (a Resolver) or all with
    ``settings``. ``cache_dir`` None disables the cache."""
    found = discover(paths, settings)
    result = scan_files(found.files, cache_dir, jobs, show_progress)
    result.errors = sorted(found.errors + result.errors, key=lambda e: e.path)
    result.files_skipped = found.skipped
    result.scope = found.reason_counts()
    return result


def scan_files(
    files: list[tuple[str, Settings]],
    cache_dir: Optional[Path] = None,
    jobs: Optional[int] = None,
    show_progress: bool = False,
) -> ScanResult:
    """Scan these files, each with its settings."""
    result = ScanResult(files_scanned=len(files))
    variants: dict[Settings, int] = {}
    sources: dict[str, tuple[bytes, int]] = {}
    for path, settings in files:
        index = variants.setdefault(settings, len(variants))
        if settings.unsafe_fixes is not None:
            result.unsafe_fixes[path] = settings.unsafe_fixes
        try:
            sources[path] = read_bytes(path, settings.max_file_size), index
        except SourceError as exc:
            result.errors.append(FileError(path, str(exc)))
    by_index = list(variants)
    exports = collect_exports({path: data for path, (data, _) in sources.items()})
    exports_digest = hashlib.blake2b(repr(sorted((k, sorted(v.items())) for k, v in exports.items())).encode(), digest_size=8).hexdigest()

    alias_names = sorted({name for aliases in exports.values() for name in aliases})
    alias_filter = re.compile(rb"\b(?:" + b"|".join(re.escape(n.encode()) for n in alias_names) + rb")\b") if alias_names else None
    caches: dict[str, ResultCache] = {}
    processes = jobs or os.cpu_count() or 1

    def cache_of(index: int) -> Optional[ResultCache]:
        if cache_dir is None:
            return None
        fingerprint = by_index[index].fingerprint(enabled_codes(by_index[index]))
        return caches.get(fingerprint) or caches.setdefault(fingerprint, ResultCache(cache_dir, fingerprint))

    # First pass: every file is parsed (a file that does not parse is an error row) and
    # summarised for the tree's call graph; the files that pass the prefilter are analysed
    # with what their own module says of its functions.
    done: dict[str, tuple[list[Finding], Optional[str]]] = {}
    summaries: dict[tuple[str, ...], ModuleCalls] = {}
    todo: list[Job] = []
    for path, (data, index) in sources.items():
        analyse = may_allocate(data) or bool(alias_filter and alias_filter.search(data))
        result.files_analysed += analyse
        cache = cache_of(index)
        cached = cache.get(ResultCache.key(path, data, exports_digest)) if cache is not None else None
        if cached is not None:
            result.cache_hits += 1
            done[path] = cached[0], cached[1]
            if cached[2] is not None:
                summaries[module_parts(path)] = cached[2]
            continue
        todo.append((path, data, analyse, index))
    bar = ProgressBar("scanning", len(todo)) if show_progress and len(todo) >= 200 else None
    try:
        for path, findings, error, depends, calls in _run_jobs(todo, (by_index, exports, {}), processes, bar.advance if bar else None):
            done[path] = findings, error
            if calls is not None:
                summaries[module_parts(path)] = calls
            data, index = sources[path]
            cache = cache_of(index)
            if cache is not None:
                cache.put(ResultCache.key(path, data, exports_digest), findings, error, depends, calls)
    finally:
        if bar:
            bar.close()

    # Second pass: the modules whose functions the whole tree reaches only from set-up
    # code (a caller in another module decides) are analysed again, knowing that.
    setup = setup_functions(summaries)
    todo = []
    for path, (data, index) in sources.items():
        learnt = setup.get(module_parts(path))
        if not learnt or path not in done or done[path][1] is not None:
            continue
        cache = cache_of(index)
        cached = cache.get(_learnt_key(path, data, exports_digest, learnt)) if cache is not None else None
        if cached is not None:
            done[path] = cached[0], cached[1]
        else:
            todo.append((path, data, True, index))
    for path, findings, error, depends, _ in _run_jobs(todo, (by_index, exports, setup), processes):
        done[path] = findings, error
        data, index = sources[path]
        cache = cache_of(index)
        if cache is not None:
            cache.put(_learnt_key(path, data, exports_digest, setup[module_parts(path)]), findings, error, depends, None)
    for path, (findings, error) in done.items():
        result.findings.extend(_kept(findings, path, by_index[sources[path][1]]))
        if error is not None:
            result.errors.append(FileError(path, error))
    for cache in caches.values():
        cache.save()
    result.findings.sort(key=lambda f: (f.path, f.line, f.col, f.code))
    result.errors.sort(key=lambda e: e.path)
    return result


def _learnt_key(path: str, data: bytes, exports_digest: str, learnt: Mapping[str, str]) -> str:
    """The cache key of a module analysed with what the tree's callers say of its functions."""
    return ResultCache.key(path, data, exports_digest + repr(sorted(learnt.items())))


def _kept(findings: list[Finding], path: str, settings: Settings) -> list[Finding]:
    """``findings`` less the codes that per-file-ignores turn off for ``path``. Applied after
    the cache, which holds what the analysis reported, so that editing the table needs no
    new analysis."""
    if not settings.per_file_ignores or not findings:
        return findings
    relative = Path(os.path.relpath(os.path.abspath(path), settings.root or ".")).as_posix()
    ignored: set[str] = set()
    for glob, codes in settings.per_file_ignores:
        if GlobSet((glob,)).matches(relative):
            ignored |= ignored_codes(codes)
    return [f for f in findings if f.code not in ignored]
