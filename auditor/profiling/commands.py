"""The dynamic auditor's commands, as typer functions for the `allocaudit` app to register.

    app.command("profile", context_settings=PROGRAM_CONTEXT)(profile_command)
    app.command("stale-check", context_settings=PROGRAM_CONTEXT)(stale_check_command)

Importing this module imports no torch: the commands import the tracer when they run.
The program's exit status is the command's; usage errors of allocaudit's own exit 2 before the
program starts.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional, Sequence

import typer

from allocaudit.auditor.findings import ScanResult
from allocaudit.auditor.usage import fail

# Everything after the program's name belongs to the program, options included.
PROGRAM_CONTEXT = {"allow_interspersed_args": False, "ignore_unknown_options": True}


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
) -> None:
    """Run a Python program and record what it allocates, per source line (torch factories and get_empty)."""
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

    try:
        code, _ = run_profiled(
            command, out=str(out), device=device.value,
            memory_snapshot=str(memory_snapshot) if memory_snapshot is not None else None,
            stack_depth=stack_depth, report=report,
        )
    except UsageError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    raise typer.Exit(code)


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


def render_join(result: ScanResult, profile_path: Path, output_format: str = "text", scanned: Sequence[str] = ()) -> str:
    """`scan --profile PROFILE`'s report: findings ranked by measured bytes, never-executed
    findings, and run-time sites the scan missed. ``output_format`` is text or json; raises
    typer.Exit(2) with a message for an unreadable profile or another format."""
    from allocaudit.auditor.profiling import join
    from allocaudit.auditor.profiling.profile import ProfileError, load

    if output_format not in ("text", "json"):
        fail(f"--profile works with --format text or json, not {output_format}")
    try:
        profile = load(str(profile_path))
    except ProfileError as exc:
        fail(str(exc))
    return join.render(result, profile, str(profile_path), output_format, scanned)
