"""The `allocaudit` command line. Exit codes: 0 clean, 1 findings, 2 usage or input errors."""

from __future__ import annotations

import sys
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from allocaudit.auditor.engine import scan as run_scan
from allocaudit.auditor.formats import RENDERERS
from allocaudit.auditor.profiling.commands import PROGRAM_CONTEXT, profile_command, stale_check_command
from allocaudit.auditor.rules import ALL_RULES, RULES_BY_CODE
from allocaudit.auditor.settings import ConfigError, Settings, find_config, load, split_codes
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"allocaudit {VERSION}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    pass


def _settings(paths: List[str], config: Optional[Path], **flags) -> Settings:
    if config is not None and not config.is_file():
        fail(f"config file {config} does not exist")
    found = config if config is not None else find_config(Path(paths[0]) if paths else Path.cwd())
    settings = load(found)
    select = split_codes(flags["select"] or ())
    extend_select = split_codes(flags["extend_select"] or ())
    ignore = split_codes(flags["ignore"] or ())
    changes = {}
    if select:
        changes["select"] = select
    if extend_select:
        base = changes.get("select", settings.select) or tuple(r.CODE for r in ALL_RULES if r.DEFAULT)
        changes["select"] = tuple(base) + extend_select
    if ignore:
        changes["ignore"] = settings.ignore + ignore
    if flags["all_files"]:
        changes["all_files"] = True
    if flags["min_confidence"] is not None:
        changes["min_confidence"] = flags["min_confidence"].value
    if flags["no_gitignore"]:
        changes["respect_gitignore"] = False
    settings = replace(settings, **changes)
    settings.enabled_codes()  # an unknown code on the command line fails here
    return settings


@app.command()
def scan(
    paths: Optional[List[str]] = typer.Argument(None, help="Files or folders to scan (default: the current folder)."),
    all_files: bool = typer.Option(False, "--all", help="Scan every Python file, not only MoE-like paths (include globs)."),
    output_format: OutputFormat = typer.Option(OutputFormat.text, "--format", help="Output format."),
    output_file: Optional[Path] = typer.Option(None, "--output-file", "-o", help="Write the report to this file."),
    statistics: bool = typer.Option(False, "--statistics", help="Counts per rule code and site class instead of each finding."),
    select: Optional[List[str]] = typer.Option(None, "--select", help="Rule codes or prefixes to enable (replaces the default set; ALL for every rule)."),
    extend_select: Optional[List[str]] = typer.Option(None, "--extend-select", help="Rule codes or prefixes to enable on top of the selection."),
    ignore: Optional[List[str]] = typer.Option(None, "--ignore", help="Rule codes or prefixes to disable."),
    min_confidence: Optional[Confidence] = typer.Option(
        None, "--min-confidence", help="Drop findings whose device is less certain (low: unresolved variables; medium: inherited from another tensor)."
    ),
    no_gitignore: bool = typer.Option(False, "--no-gitignore", help="Also scan files that .gitignore excludes."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the cache."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Cache folder (default: .allocaudit_cache next to the config, or here)."),
    config: Optional[Path] = typer.Option(None, "--config", help="pyproject.toml to read [tool.allocaudit] from (default: the nearest one)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes (default: one per core)."),
    exit_zero: bool = typer.Option(False, "--exit-zero", help="Exit 0 even when there are findings (errors still exit 2)."),
    profile: Optional[Path] = typer.Option(
        None, "--profile", help="Rank findings by a profile written by `allocaudit profile`; list never-run findings and missed sites."
    ),
) -> None:
    """Report per-call CUDA allocations and where they can be reused."""
    paths = paths or ["."]
    try:
        settings = _settings(
            paths, config, select=select, extend_select=extend_select, ignore=ignore,
            all_files=all_files, min_confidence=min_confidence, no_gitignore=no_gitignore,
        )
    except ConfigError as exc:
        fail(str(exc))
    if no_cache:
        cache = None
    else:
        cache = cache_dir if cache_dir is not None else Path(settings.root or ".") / ".allocaudit_cache"
    result = run_scan(paths, settings, cache_dir=cache, jobs=jobs, show_progress=sys.stderr.isatty())
    if profile is not None:
        from allocaudit.auditor.profiling.commands import render_join

        rendered = render_join(result, profile, output_format.value, scanned=paths)
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


def _codemod_settings(paths: List[str], config: Optional[Path], all_files: bool, no_gitignore: bool) -> Settings:
    try:
        return _settings(
            paths, config, select=None, extend_select=None, ignore=None,
            all_files=all_files, min_confidence=None, no_gitignore=no_gitignore,
        )
    except ConfigError as exc:
        fail(str(exc))


def _codemod_mode(diff: bool, check: bool) -> str:
    from allocaudit.rewrites.apply import CHECK, DIFF, WRITE

    return DIFF if diff else CHECK if check else WRITE


def _report(result, mode: str, verbs: tuple[str, str]) -> None:
    """Rows like ruff's: `path:line:col: ...`; with --diff the diff alone goes to stdout."""
    from allocaudit.rewrites.apply import CHECK, DIFF

    for diff in result.diffs:
        sys.stdout.write(diff)
    out = sys.stderr if mode == DIFF else sys.stdout
    if mode == CHECK:
        for row in result.changed:
            out.write(f"{row.path}:{row.line}:{row.col}: would rewrite {row.text}\n")
    for row in result.skipped:
        out.write(f"{row.path}:{row.line}:{row.col}: skipped: {row.text}\n")
    for error in result.errors:
        out.write(f"{error.path}: error: {error.reason}\n")
    done, pending = verbs
    verb = done if mode not in (CHECK, DIFF) else pending
    sites, files = len(result.changed), len(result.files_changed)
    summary = f"{verb} {sites} site{'s' if sites != 1 else ''} in {files} file{'s' if files != 1 else ''} ({len(result.skipped)} skipped)."
    if result.errors:
        summary += f" {len(result.errors)} file{'s' if len(result.errors) != 1 else ''} could not be processed."
    out.write(summary + "\n")
    out.flush()


# Options `fix` and `unfix` share, spelled once.
CodemodAllFiles = Annotated[bool, typer.Option("--all", help="Every Python file, not only MoE-like paths (include globs).")]
CodemodNoGitignore = Annotated[bool, typer.Option("--no-gitignore", help="Also rewrite files that .gitignore excludes.")]
CodemodConfig = Annotated[
    Optional[Path], typer.Option("--config", help="pyproject.toml to read [tool.allocaudit] from (default: the nearest one).")
]


@app.command()
def fix(
    paths: Optional[List[str]] = typer.Argument(None, help="Files or folders to rewrite (default: the current folder)."),
    diff: bool = typer.Option(False, "--diff", help="Print a unified diff of the rewrites and change nothing (exit 1 if there is one)."),
    check: bool = typer.Option(False, "--check", help="Change nothing; exit 1 if a site would be rewritten."),
    all_files: CodemodAllFiles = False,
    no_gitignore: CodemodNoGitignore = False,
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the scan cache."),
    config: CodemodConfig = None,
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes for the scan (default: one per core)."),
) -> None:
    """Rewrite per-call CUDA workspaces (AA101 sites the scan marks [*]) into get_empty calls."""
    from allocaudit.rewrites.apply import run_fix

    paths = paths or ["."]
    settings = _codemod_settings(paths, config, all_files, no_gitignore)
    mode = _codemod_mode(diff, check)
    cache = None if no_cache else Path(settings.root or ".") / ".allocaudit_cache"
    result = run_fix(paths, settings, mode, cache_dir=cache, jobs=jobs)
    _report(result, mode, ("Fixed", "Would fix"))
    raise typer.Exit(result.exit_code(mode))


@app.command()
def unfix(
    paths: Optional[List[str]] = typer.Argument(None, help="Files or folders to restore (default: the current folder)."),
    diff: bool = typer.Option(False, "--diff", help="Print a unified diff and change nothing (exit 1 if there is one)."),
    check: bool = typer.Option(False, "--check", help="Change nothing; exit 1 if a get_empty call would be restored."),
    all_files: CodemodAllFiles = False,
    no_gitignore: CodemodNoGitignore = False,
    config: CodemodConfig = None,
) -> None:
    """Turn get_empty calls back into the torch.zeros/torch.empty calls they stand for."""
    from allocaudit.rewrites.apply import run_unfix

    paths = paths or ["."]
    settings = _codemod_settings(paths, config, all_files, no_gitignore)
    mode = _codemod_mode(diff, check)
    result = run_unfix(paths, settings, mode)
    _report(result, mode, ("Restored", "Would restore"))
    raise typer.Exit(result.exit_code(mode))


app.command("profile", context_settings=PROGRAM_CONTEXT)(profile_command)
app.command("stale-check", context_settings=PROGRAM_CONTEXT)(stale_check_command)


def main() -> None:
    app()
