"""The dynamic auditor's commands, as typer functions for the `allocaudit` app to register.

    app.command("profile", context_settings=PROGRAM_CONTEXT)(profile_command)
    app.command("stale-check", context_settings=PROGRAM_CONTEXT)(stale_check_command)
    app.command("compare")(compare_command)
    app.command("plot")(plot_command)

Importing this module imports neither torch nor matplotlib: `profile` and `stale-check` import
the tracer when they run, and the pictures import matplotlib when they are drawn. `profile`'s
exit status is the program's; usage errors of allocaudit's own exit 2 before the program starts
(a missing matplotlib for ``--plot`` included).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import typer

from allocaudit.auditor.findings import ScanResult
from allocaudit.auditor.profiling.profile import MAX_EVENTS
from allocaudit.auditor.usage import fail

# Everything after the program's name belongs to the program, options included.
PROGRAM_CONTEXT = {"allow_interspersed_args": False, "ignore_unknown_options": True}


class OutputFormat(str, Enum):
    text = "text"
    markdown = "markdown"


class DeviceFilter(str, Enum):
    cuda = "cuda"
    cpu = "cpu"
    any = "any"


def _byte(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= 0xFF:
        fail(f"--pattern: {text!r} is not a byte value (0-255, or 0x00-0xFF)")
    return value


def profile_command(
    command: List[str] = typer.Argument(
        ..., metavar="-- python SCRIPT [ARGS]... | -- python -m MODULE [ARGS]...",
        help="The program to run, after `--`.",
    ),
    out: Path = typer.Option(Path("profile.json"), "--out", "-o", help="Where to write the profile (JSON, schema version 1)."),
    device: DeviceFilter = typer.Option(DeviceFilter.cuda, "--device", help="Keep allocations on this device type (cpu or any to profile on a machine without a GPU)."),
    memory_snapshot: Optional[Path] = typer.Option(
        None, "--memory-snapshot", help="Also write PyTorch's CUDA memory snapshot of the run here (open it at https://pytorch.org/memory_viz)."
    ),
    top: int = typer.Option(20, "--top", min=0, help="Sites shown in the table on stderr (0: no table)."),
    stack_depth: int = typer.Option(8, "--stack-depth", min=1, help="User frames kept per site."),
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Also draw live memory over the run, stacked by site, as a PNG here (needs matplotlib)."
    ),
    plot_sites: int = typer.Option(8, "--plot-sites", min=1, help="Sites named in the picture; the rest are grouped."),
    timeline_events: int = typer.Option(
        MAX_EVENTS, "--timeline-events", min=0,
        help="Allocations, frees and get_empty requests kept in the profile's timeline (counts and peaks cover the whole run).",
    ),
) -> None:
    """Run a Python program and record what it allocates, per source line (torch factories and get_empty)."""
    if plot is not None:
        _check_plotting()  # before torch is imported and the program runs
    from rich.console import Console

    from allocaudit.auditor.profiling import profile as profiles
    from allocaudit.auditor.profiling.runner import UsageError, run_profiled

    # Rich assumes 80 columns off a terminal, which folds every path; logs are wider.
    console = Console(file=sys.stderr, width=None if sys.stderr.isatty() else 160)

    def report(result: profiles.Profile) -> None:
        sys.stdout.flush()
        if top:
            profiles.render_rich(result, console, limit=top)
        else:
            for note in result.notes:
                console.print(f"note: {note}")
        console.print(f"profile written to {out}")
        if plot is not None:
            _draw_memory(result, plot, plot_sites)
            console.print(f"memory picture written to {plot}")

    try:
        code, _ = run_profiled(
            command, out=str(out), device=device.value,
            memory_snapshot=str(memory_snapshot) if memory_snapshot is not None else None,
            stack_depth=stack_depth, report=report, max_events=timeline_events,
        )
    except UsageError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    raise typer.Exit(code)


def _check_plotting() -> None:
    """Before anything runs: a picture asked for without matplotlib is a usage error."""
    from allocaudit.auditor.profiling.plots import PlotUnavailable, require_matplotlib

    try:
        require_matplotlib()
    except PlotUnavailable as exc:
        fail(str(exc))


def _draw_memory(profile, path: Path, sites: int) -> None:
    from allocaudit.auditor.profiling.plots import plot_memory
    from allocaudit.auditor.profiling.timeline import NoTimeline, memory_series

    try:
        series = memory_series(profile, top=sites)
    except NoTimeline as exc:
        fail(f"cannot draw {path}: {exc}")
    plot_memory(series, str(path))


def load_profile(path: Path):
    """The profile at ``path``, or exit 2 with a line that names it and what is wrong."""
    from allocaudit.auditor.profiling.profile import ProfileError, load

    try:
        return load(str(path))
    except ProfileError as exc:
        fail(str(exc))


def compare_command(
    before: Path = typer.Argument(..., help="The profile before the change (written by `allocaudit profile --out`)."),
    after: Path = typer.Argument(..., help="The profile after it."),
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Also draw the comparison as a PNG here: per-site bars, totals, both runs' memory (needs matplotlib)."
    ),
    top: int = typer.Option(20, "--top", min=1, help="Sites shown in the table."),
    plot_sites: int = typer.Option(10, "--plot-sites", min=1, help="Sites shown in the picture's bars."),
    output_format: OutputFormat = typer.Option(OutputFormat.text, "--output-format", "--format", help="A terminal table, or Markdown."),
) -> None:
    """Compare two profiles site by site: calls, bytes allocated and peak live bytes, before and after."""
    from rich.console import Console

    from allocaudit.auditor.profiling import compare as comparing

    if plot is not None:
        _check_plotting()
    result = comparing.compare(load_profile(before), load_profile(after), str(before), str(after))
    if output_format is OutputFormat.markdown:
        sys.stdout.write(comparing.render_markdown(result, limit=top))
    else:
        comparing.render_rich(result, Console(width=None if sys.stdout.isatty() else 160), limit=top)
    if plot is not None:
        from allocaudit.auditor.profiling.plots import plot_compare

        try:
            plot_compare(comparing.chart(result, top=plot_sites), str(plot), *comparing.timeline_pair(result))
        except OSError as exc:
            fail(f"cannot write {plot}: {exc.strerror or exc}")
        typer.echo(f"comparison picture written to {plot}", err=True)


def plot_command(
    profile_path: Path = typer.Argument(..., metavar="PROFILE", help="A profile written by `allocaudit profile --out`."),
    out: Path = typer.Option(Path("memory.png"), "--out", "-o", help="Where to write the PNG."),
    sites: int = typer.Option(8, "--plot-sites", min=1, help="Sites named in the picture; the rest are grouped."),
) -> None:
    """Draw a profile's live memory over the run, stacked by site (needs matplotlib)."""
    _check_plotting()
    profile = load_profile(profile_path)
    try:
        _draw_memory(profile, out, sites)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    typer.echo(f"memory picture written to {out}", err=True)


def stale_check_command(
    command: List[str] = typer.Argument(
        ..., metavar="-- python SCRIPT [ARGS]... | -- python -m MODULE [ARGS]...",
        help="The program to run, after `--`; its stdout and exit status are the result compared.",
    ),
    patterns: Optional[List[str]] = typer.Option(
        None, "--pattern", help="A fill byte (give two; default 0xFF and 0x00): non-zeroed get_empty hand-outs are filled with each in turn."
    ),
    seed: int = typer.Option(0, "--seed", help="torch.manual_seed before each run."),
    isolate: bool = typer.Option(True, "--isolate/--no-isolate", help="When the results differ, run once per slot to name the slots read stale."),
) -> None:
    """Run a program twice with different bytes in non-zeroed get_empty hand-outs: exit 1 if its output changes."""
    from allocaudit.auditor.profiling.runner import UsageError
    from allocaudit.auditor.profiling.stale import DEFAULT_PATTERNS, check_program

    values = tuple(_byte(p) for p in patterns) if patterns else DEFAULT_PATTERNS
    if len(values) != 2 or values[0] == values[1]:
        fail("--pattern: give two different byte values")
    try:
        report, _ = check_program(command, values, seed=seed, isolate=isolate)
    except UsageError as exc:
        fail(str(exc))
    sys.stdout.write(report.render())
    if not report.conclusive:
        raise typer.Exit(2)
    raise typer.Exit(1 if report.stale else 0)


def render_join(
    result: ScanResult, profile_path: Path, output_format: str = "text", scanned: Sequence[str] = (),
    min_bytes: Callable[[str], int] = lambda path: 0, fix_command: str = "",
) -> str:
    """`scan --profile PROFILE`'s report: findings ranked by measured bytes, never-executed
    findings, and run-time sites the scan missed; fixes marked as `fix --profile PROFILE`
    applies them (sites that ran, with ``min_bytes(path)`` bytes per call or more).
    ``fix_command`` is the command the closing line names. ``output_format`` is text or json;
    raises typer.Exit(2) with a message for an unreadable profile or another format."""
    from allocaudit.auditor.profiling import join
    from allocaudit.auditor.profiling.selection import describe, select

    if output_format not in ("text", "json"):
        fail(f"--profile works with --format text or json, not {output_format}")
    profile = load_profile(profile_path)
    selection = select(result, profile, str(profile_path), min_bytes)
    rendered = join.render(selection.scan, profile, str(profile_path), output_format, scanned)
    return rendered if output_format == "json" else rendered + describe(selection, fix_command or f"allocaudit fix --profile {profile_path}") + "\n"
