"""The `allocaudit` command line. Exit codes: 0 clean, 1 findings, 2 usage or input errors."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from allocaudit.auditor.discovery import discover
from allocaudit.auditor.app.engine import UNPARSABLE
from allocaudit.auditor.app.engine import scan as run_scan
from allocaudit.auditor.formats import RENDERERS
from allocaudit.auditor.plural import plural
from allocaudit.auditor.profiling.commands import (
    PROGRAM_CONTEXT,
    compare_command,
    plot_command,
    profile_command,
    stale_check_command,
)
from allocaudit.auditor.project import Resolver, project_root, rooted
from allocaudit.auditor.rules import ALL_RULES, RULES_BY_CODE
from allocaudit.auditor.selection import checked, enabled_codes
from allocaudit.auditor.settings import KEYS as SETTINGS_KEYS
from allocaudit.auditor.settings import ConfigError, Settings, check_module_name, load, parse_bytes, split_codes
from allocaudit.auditor.usage import fail
from allocaudit.auditor.version import VERSION

app = typer.Typer(
    name="allocaudit",
    help="Find per-call CUDA workspace allocations in PyTorch code and make them reusable and CUDA-graph safe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"
    github = "github"


class Confidence(str, Enum):
    low = "low"
    medium = "medium"
    high = "high"


# ruff's flag: unsafe fixes count as fixable ([*]) and `fix` applies them; --no-unsafe-fixes
# also drops the hints about them.
UnsafeFixes = Annotated[
    Optional[bool],
    typer.Option(
        "--unsafe-fixes/--no-unsafe-fixes",
        help="Apply unsafe fixes too (README: Fix safety); --no-unsafe-fixes also hides the hints about them.",
    ),
]
# Without a profile, `fix` leaves out allocations whose size does not grow with the batch.
AllSizes = Annotated[
    Optional[bool],
    typer.Option(
        "--all-sizes/--no-all-sizes",
        help="Fix allocations of every size, also those that do not grow with the batch (expert counts, 0-d, constants).",
    ),
]
MinBytes = Annotated[
    Optional[str],
    typer.Option(
        "--min-bytes",
        help="With --profile: fix only sites that allocated at least this many bytes per call (65536, 64KiB, 1MiB).",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"allocaudit {VERSION}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    pass


def _resolver(
    config: Optional[Path],
    select=None, extend_select=None, ignore=None, all_files=False, min_confidence=None,
    no_gitignore=False, force_exclude=None, exit_zero=False, include_by_content=None, unsafe_fixes=None,
    runtime_module=None, all_sizes=None, min_bytes=None,
) -> Resolver:
    """Each file's settings: its nearest config's (or --config's for all), flags over them.
    A bad flag or config fails here, before anything is read."""
    if config is not None and not config.is_file():
        fail(f"config file {config} does not exist")
    select, extend_select, ignore = split_codes(select or ()), split_codes(extend_select or ()), split_codes(ignore or ())
    if runtime_module is not None:
        try:
            check_module_name(runtime_module)
        except ValueError as exc:
            fail(f"--runtime-module: {exc}")
    if min_bytes is not None:
        try:
            min_bytes = parse_bytes(min_bytes)
        except ValueError as exc:
            fail(f"--min-bytes {exc}")
    if exit_zero:
        extend_select += (UNPARSABLE,)  # a file that does not parse is a finding, not an exit-2 error

    def adjust(settings: Settings) -> Settings:
        changes: dict = {}
        if select:
            changes["select"] = select
        if extend_select:
            base = changes.get("select", settings.select) or tuple(r.CODE for r in ALL_RULES if r.DEFAULT)
            changes["select"] = tuple(base) + extend_select
        if ignore:
            changes["ignore"] = settings.ignore + ignore
        if all_files:
            changes["all_files"] = True
        if min_confidence is not None:
            changes["min_confidence"] = min_confidence.value
        if no_gitignore:
            changes["respect_gitignore"] = False
        if force_exclude is not None:
            changes["force_exclude"] = force_exclude
        if include_by_content is not None:
            changes["include_by_content"] = include_by_content
        if unsafe_fixes is not None:
            changes["unsafe_fixes"] = unsafe_fixes
        if runtime_module is not None:
            changes["runtime_module"] = runtime_module
        if all_sizes is not None:
            changes["all_sizes"] = all_sizes
        if min_bytes is not None:
            changes["min_bytes"] = min_bytes
        return replace(settings, **changes)

    try:
        enabled_codes(adjust(Settings()))  # an unknown code on the command line fails here
        return Resolver(fixed=checked(load(config)) if config is not None else None, adjust=adjust)
    except ConfigError as exc:
        fail(str(exc))


def _cache_dir(paths: List[str], resolver: Resolver, no_cache: bool, cache_dir: Optional[Path] = None) -> Optional[Path]:
    """--cache-dir, else .allocaudit_cache next to the first path's config, else here."""
    if no_cache:
        return None
    if cache_dir is not None:
        return cache_dir
    return Path(_first_settings(paths, resolver).root or ".") / ".allocaudit_cache"


def _first_settings(paths: List[str], resolver: Resolver) -> Settings:
    first = paths[0]
    try:
        settings = resolver.for_folder(first if os.path.isdir(first) else os.path.dirname(os.path.abspath(first)))
    except ConfigError as exc:
        fail(str(exc))
    return rooted(settings, first, project_root(first))


def _show_settings(paths: List[str], resolver: Resolver) -> None:
    """Like ruff's --show-settings: what the first path is scanned with, and from where."""
    settings = _first_settings(paths, resolver)
    typer.echo(f"Settings for: {os.path.abspath(paths[0])}")
    typer.echo(f"Config file: {settings.config_file or 'none (defaults)'}")
    typer.echo(f"Project root (globs are relative to it): {settings.root}")
    for key, (field_name, extend) in SETTINGS_KEYS.items():
        if extend:
            continue
        value = getattr(settings, field_name)
        if field_name == "per_file_ignores":
            value = {glob: list(codes) for glob, codes in value}
        elif isinstance(value, tuple):
            value = list(value)
        typer.echo(f"{key} = {json.dumps(value)}")
    typer.echo(f"all = {json.dumps(settings.all_files)}")
    typer.echo(f"enabled-codes = {json.dumps(sorted(enabled_codes(settings)))}")


IncludeByContent = Annotated[
    Optional[bool],
    typer.Option(
        "--include-by-content/--no-include-by-content",
        help="Also read files whose source defines or calls MoE building blocks (default: on, unless the config sets `include`).",
    ),
]


@app.command()
def scan(
    paths: Optional[List[str]] = typer.Argument(None, help="Files or folders to scan (default: the current folder)."),
    all_files: bool = typer.Option(False, "--all", help="Scan every Python file, not only MoE code (include globs and content)."),
    include_by_content: IncludeByContent = None,
    output_format: OutputFormat = typer.Option(OutputFormat.text, "--output-format", "--format", help="Output format (--format is an alias)."),
    output_file: Optional[Path] = typer.Option(None, "--output-file", "-o", help="Write the report to this file."),
    statistics: bool = typer.Option(False, "--statistics", help="Counts per rule code and site class instead of each finding (text or json)."),
    select: Optional[List[str]] = typer.Option(None, "--select", help="Rule codes or prefixes to enable (replaces the default set; ALL for every rule)."),
    extend_select: Optional[List[str]] = typer.Option(None, "--extend-select", help="Rule codes or prefixes to enable on top of the selection."),
    ignore: Optional[List[str]] = typer.Option(None, "--ignore", help="Rule codes or prefixes to disable."),
    min_confidence: Optional[Confidence] = typer.Option(
        None, "--min-confidence", help="Drop findings whose device is less certain (low: unresolved variables; medium: inherited from another tensor)."
    ),
    no_gitignore: bool = typer.Option(False, "--no-gitignore", help="Also scan files that .gitignore excludes."),
    force_exclude: Optional[bool] = typer.Option(
        None, "--force-exclude/--no-force-exclude", help="Filter files named on the command line through include/exclude and .gitignore too (for pre-commit)."
    ),
    unsafe_fixes: UnsafeFixes = None,
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the cache."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Cache folder (default: .allocaudit_cache next to the config, or here)."),
    config: Optional[Path] = typer.Option(None, "--config", help="pyproject.toml to read [tool.allocaudit] from for every file (default: each file's nearest one)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes (default: one per core)."),
    exit_zero: bool = typer.Option(False, "--exit-zero", help="Exit 0 even when there are findings; a file that does not parse is a finding (AA999). Other errors still exit 2."),
    show_files: bool = typer.Option(False, "--show-files", help="List the files the scan would read, each with why (tab-separated), and exit."),
    show_settings: bool = typer.Option(False, "--show-settings", help="Show the settings the first path is scanned with, and where they come from, and exit."),
    add_noqa: bool = typer.Option(False, "--add-noqa", help="Add `# noqa: CODE` to each finding's line, and exit."),
    profile: Optional[Path] = typer.Option(
        None, "--profile",
        help="Rank findings by a profile written by `allocaudit profile`; list never-run findings and missed sites; mark [*] what `fix --profile` rewrites.",
    ),
    all_sizes: AllSizes = None,
    min_bytes: MinBytes = None,
) -> None:
    """Report per-call CUDA allocations and where they can be reused."""
    paths = paths or ["."]
    if statistics and output_format.value not in ("text", "json"):
        fail(f"--statistics works with --output-format text or json, not {output_format.value}: {output_format.value} reports each finding")
    if min_bytes is not None and profile is None:
        fail("--min-bytes needs --profile: the bytes per call are what a profile measured")
    resolver = _resolver(
        config, select=select, extend_select=extend_select, ignore=ignore, all_files=all_files,
        min_confidence=min_confidence, no_gitignore=no_gitignore, force_exclude=force_exclude, exit_zero=exit_zero,
        include_by_content=include_by_content, unsafe_fixes=unsafe_fixes, all_sizes=all_sizes, min_bytes=min_bytes,
    )
    if show_settings:
        _show_settings(paths, resolver)
        return
    if show_files:
        found = _discover(paths, resolver)
        for path, _ in found.files:
            typer.echo(f"{path}\t{found.reasons[path]}")
        for error in found.errors:
            typer.echo(f"{error.path}: error: {error.reason}", err=True)
        raise typer.Exit(2 if found.errors else 0)
    try:
        result = run_scan(paths, resolver, cache_dir=_cache_dir(paths, resolver, no_cache, cache_dir), jobs=jobs, show_progress=sys.stderr.isatty())
    except ConfigError as exc:
        fail(str(exc))
    if add_noqa:
        _add_noqa(result, paths, resolver)
    if profile is not None:
        from allocaudit.auditor.profiling.commands import render_join

        command = " ".join(["allocaudit fix --profile", str(profile), *(["--all-sizes"] if all_sizes else []), *(["--min-bytes", min_bytes] if min_bytes else [])])
        rendered = render_join(
            result, profile, output_format.value, scanned=paths, min_bytes=lambda path: resolver.for_file(path).min_bytes, fix_command=command
        )
    else:
        rendered = RENDERERS[output_format.value](result, statistics=statistics)
    if output_file is not None:
        try:
            output_file.write_text(rendered, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {output_file}: {exc.strerror or exc}")
    else:
        sys.stdout.write(rendered)
    code = result.exit_code
    raise typer.Exit(0 if code == 1 and exit_zero else code)


def _discover(paths: List[str], resolver: Resolver):
    try:
        return discover(paths, resolver)
    except ConfigError as exc:
        fail(str(exc))


def _add_noqa(result, paths: List[str], resolver: Resolver) -> None:
    """Suppress every finding in place, then report like ruff: `Added N noqa directives.`"""
    from allocaudit.rewrites.noqa import add_noqa

    sizes = {f.path: resolver.for_file(f.path).max_file_size for f in result.findings}
    added = add_noqa(result.findings, sizes)
    for error in result.errors + added.errors:
        typer.echo(f"{error.path}: error: {error.reason}")
    typer.echo(f"Added {plural(added.added, 'noqa directive')} in {plural(len(added.files), 'file')}.")
    raise typer.Exit(2 if result.errors or added.errors else 0)


@app.command()
def explain(code: Optional[str] = typer.Argument(None, help="A rule code, e.g. AA101. Without one, list every rule.")) -> None:
    """Why a rule matters, how to fix what it reports, and an example."""
    if code is None:
        for rule in ALL_RULES:
            default = "" if rule.DEFAULT else "  (off by default)"
            typer.echo(f"{rule.CODE}  {rule.NAME}: {rule.SUMMARY}{default}")
        return
    rule = RULES_BY_CODE.get(code.strip().upper())
    if rule is None:
        fail(f"unknown rule code `{code}` (known: {', '.join(RULES_BY_CODE)})")
    default = "on by default" if rule.DEFAULT else "off by default; enable with --select " + rule.CODE
    typer.echo(f"{rule.CODE} ({rule.NAME}): {rule.SUMMARY}\n[{default}]\n\n{rule.EXPLAIN.rstrip()}")


def _codemod_mode(diff: bool, check: bool) -> str:
    from allocaudit.auditor.app.apply import CHECK, DIFF, WRITE

    return DIFF if diff else CHECK if check else WRITE


def _report(result, mode: str, verbs: tuple[str, str], show_fixes: bool = False) -> None:
    """Rows like ruff's: `path:line:col: ...`; with --diff the diff alone goes to stdout."""
    from allocaudit.auditor.app.apply import CHECK, DIFF, WRITE

    for diff in result.diffs:
        sys.stdout.write(diff)
    out = sys.stderr if mode == DIFF else sys.stdout
    if mode == CHECK or show_fixes:
        done = "fixed" if mode == WRITE else "would rewrite"
        for row in result.changed:
            out.write(f"{row.path}:{row.line}:{row.col}: {done} {row.text}\n")
    for row in result.skipped:
        out.write(f"{row.path}:{row.line}:{row.col}: skipped: {row.text}\n")
    for row in result.held:
        out.write(f"{row.path}:{row.line}:{row.col}: unsafe fix not applied: {row.text}\n")
    for error in result.errors:
        out.write(f"{error.path}: error: {error.reason}\n")
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    done, pending = verbs
    verb = done if mode not in (CHECK, DIFF) else pending
    summary = f"{verb} {plural(len(result.changed), 'site')} in {plural(len(result.files_changed), 'file')} ({len(result.skipped)} skipped)."
    if result.held:
        summary += f" {plural(len(result.held), 'hidden fix', 'hidden fixes')} can be enabled with the `--unsafe-fixes` option."
    if result.errors:
        summary += f" {plural(len(result.errors), 'file')} could not be processed."
    if result.files_skipped:
        summary += f" {plural(result.files_skipped, 'file')} out of scope left alone (--all includes them)."
    if result.interrupted:
        written = result.files_changed if mode == WRITE else []
        out.write(f"Interrupted (Ctrl-C): {plural(len(written), 'file')} written before it:\n")
        out.writelines(f"  {path}\n" for path in written)
        summary = "Stopped early. " + summary
    out.write(summary + "\n")
    out.flush()


# Options `fix` and `unfix` share, spelled once.
CodemodAllFiles = Annotated[bool, typer.Option("--all", help="Every Python file, not only MoE code (include globs and content).")]
CodemodNoGitignore = Annotated[bool, typer.Option("--no-gitignore", help="Also rewrite files that .gitignore excludes.")]
CodemodConfig = Annotated[
    Optional[Path],
    typer.Option("--config", help="pyproject.toml to read [tool.allocaudit] from for every file (default: each file's nearest one)."),
]
CodemodRuntimeModule = Annotated[
    Optional[str],
    typer.Option(
        "--runtime-module",
        help="Import get_empty from this module (your copy written by `allocaudit vendor-runtime`) instead of allocaudit.runtime.",
    ),
]
CodemodForceExclude = Annotated[
    Optional[bool],
    typer.Option(
        "--force-exclude/--no-force-exclude",
        help="Filter files named on the command line through include/exclude and .gitignore too (for pre-commit).",
    ),
]


@app.command()
def fix(
    paths: Optional[List[str]] = typer.Argument(None, help="Files or folders to rewrite (default: the current folder)."),
    diff: bool = typer.Option(False, "--diff", help="Print a unified diff of the rewrites and change nothing (exit 1 if there is one)."),
    check: bool = typer.Option(False, "--check", help="Change nothing; exit 1 if a site would be rewritten."),
    all_files: CodemodAllFiles = False,
    no_gitignore: CodemodNoGitignore = False,
    force_exclude: CodemodForceExclude = None,
    include_by_content: IncludeByContent = None,
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the scan cache."),
    config: CodemodConfig = None,
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes for the scan (default: one per core)."),
    unsafe_fixes: UnsafeFixes = None,
    show_fixes: bool = typer.Option(
        False, "--show-fixes", help="List each site rewritten (with --diff: each site that would be), with why it was chosen."
    ),
    runtime_module: CodemodRuntimeModule = None,
    profile: Optional[Path] = typer.Option(
        None, "--profile", help="Rewrite only sites that ran in this profile (from `allocaudit profile`), largest first."
    ),
    min_bytes: MinBytes = None,
    all_sizes: AllSizes = None,
) -> None:
    """Rewrite per-call CUDA workspaces (AA101 sites the scan marks [*]) into get_empty calls."""
    from allocaudit.auditor.app.apply import run_fix

    paths = paths or ["."]
    if min_bytes is not None and profile is None:
        fail("--min-bytes needs --profile: the bytes per call are what a profile measured")
    resolver = _resolver(
        config, all_files=all_files, no_gitignore=no_gitignore, force_exclude=force_exclude,
        include_by_content=include_by_content, unsafe_fixes=unsafe_fixes, runtime_module=runtime_module,
        all_sizes=all_sizes, min_bytes=min_bytes,
    )
    mode = _codemod_mode(diff, check)
    selector = _ProfileSelector(profile, resolver) if profile is not None else None
    try:
        result = run_fix(
            paths, resolver, mode, cache_dir=_cache_dir(paths, resolver, no_cache), jobs=jobs, show_progress=sys.stderr.isatty(),
            select=selector.select if selector else None,
        )
    except ConfigError as exc:
        fail(str(exc))
    if selector is not None:
        result.changed.sort(key=lambda row: -selector.bytes_of(row))
    _report(result, mode, ("Fixed", "Would fix"), show_fixes)
    raise typer.Exit(result.exit_code(mode))


class _ProfileSelector:
    """`fix --profile`: the profile's choice of fixes, applied to the scan `fix` runs, and the
    bytes measured per site to list the rewritten sites by."""

    def __init__(self, profile_path: Path, resolver: Resolver) -> None:
        from allocaudit.auditor.profiling.commands import load_profile

        self.profile = load_profile(profile_path)
        self.path = str(profile_path)
        self.resolver = resolver
        self.selection = None

    def select(self, scan):
        from allocaudit.auditor.profiling.selection import select

        self.selection = select(scan, self.profile, self.path, lambda path: self.resolver.for_file(path).min_bytes)
        return self.selection.scan

    def bytes_of(self, row) -> int:
        return self.selection.bytes_of(row.path, row.line, row.col) if self.selection else 0


@app.command()
def unfix(
    paths: Optional[List[str]] = typer.Argument(None, help="Files or folders to restore (default: the current folder)."),
    diff: bool = typer.Option(False, "--diff", help="Print a unified diff and change nothing (exit 1 if there is one)."),
    check: bool = typer.Option(False, "--check", help="Change nothing; exit 1 if a get_empty call would be restored."),
    all_files: CodemodAllFiles = False,
    no_gitignore: CodemodNoGitignore = False,
    force_exclude: CodemodForceExclude = None,
    include_by_content: IncludeByContent = None,
    config: CodemodConfig = None,
    runtime_module: CodemodRuntimeModule = None,
) -> None:
    """Turn get_empty calls back into the torch.zeros/torch.empty calls they stand for."""
    from allocaudit.auditor.app.apply import run_unfix

    paths = paths or ["."]
    resolver = _resolver(
        config, all_files=all_files, no_gitignore=no_gitignore, force_exclude=force_exclude,
        include_by_content=include_by_content, runtime_module=runtime_module,
    )
    mode = _codemod_mode(diff, check)
    try:
        result = run_unfix(paths, resolver, mode)
    except ConfigError as exc:
        fail(str(exc))
    _report(result, mode, ("Restored", "Would restore"))
    raise typer.Exit(result.exit_code(mode))


app.command("profile", context_settings=PROGRAM_CONTEXT)(profile_command)
app.command("stale-check", context_settings=PROGRAM_CONTEXT)(stale_check_command)
app.command("compare")(compare_command)
app.command("plot")(plot_command)


@app.command("vendor-runtime")
def vendor_runtime(
    dest: str = typer.Argument(..., help="A folder of your package (gets allocaudit_runtime.py) or a .py file name."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 if the file is missing or not the current runtime."),
    force: bool = typer.Option(False, "--force", help="Replace a file that this command did not write, or that was edited."),
) -> None:
    """Write the runtime (one module, torch and the standard library only) into your package."""
    from allocaudit.rewrites.vendor import VendorError, vendor

    try:
        done = vendor(dest, check=check, force=force)
    except VendorError as exc:
        fail(str(exc))
    if check:
        typer.echo(f"{done.path}: {'out of date' if done.changed else 'up to date'}")
        raise typer.Exit(1 if done.changed else 0)
    typer.echo(f"{'Wrote' if done.changed else 'Unchanged:'} {done.path}")
    if done.module:
        typer.echo(
            f"Patched code imports it with `allocaudit fix --runtime-module {done.module}`, "
            f'or runtime-module = "{done.module}" in [tool.allocaudit].'
        )
    else:
        typer.echo("Its folder is not a package: give fix its import name with --runtime-module.")


def main() -> None:
    app()
