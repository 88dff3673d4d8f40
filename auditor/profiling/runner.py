"""Running `python script.py ARGS` or `python -m module ARGS` in this process, under the tracer.

The program sees the ``sys.argv``, ``sys.path[0]`` and ``__name__ == "__main__"`` that Python
would give it; its output goes where it would go; its exit status is returned as Python would
exit with it, and an exception it raises is printed as Python prints it. The profile is written
in every case, a crash included. Only this module's callers' own lines go to stderr.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, TextIO

import torch

from allocaudit.auditor.profiling import profile as profiles
from allocaudit.auditor.profiling.tracer import profile_allocations


class UsageError(ValueError):
    """The command to run is not one this runner understands."""


@dataclass(frozen=True)
class Target:
    """What to run: a script path or a module name, and the program's own arguments."""

    module: bool
    name: str
    args: tuple[str, ...]

    @property
    def argv(self) -> list[str]:
        # What the program finds in sys.argv, as `python script.py` / `python -m mod` gives it.
        first = self.name if not self.module else self._module_file()
        return [first, *self.args]

    def _module_file(self) -> str:
        import importlib.util

        try:
            spec = importlib.util.find_spec(self.name)
        except (ImportError, ValueError):
            spec = None
        return spec.origin if spec is not None and spec.origin else self.name


def parse_command(command: Sequence[str]) -> Target:
    """``["python", "script.py", ...]``, ``["python", "-m", "mod", ...]``, or either without ``python``."""
    words = list(command)
    if words and _is_python(words[0]):
        words = words[1:]
    if not words:
        raise UsageError("no program to run: give `-- python script.py ARGS` or `-- python -m module ARGS`")
    if words[0] == "-m":
        if len(words) < 2:
            raise UsageError("`-m` needs a module name")
        return Target(True, words[1], tuple(words[2:]))
    if words[0].startswith("-"):
        raise UsageError(
            f"python option {words[0]!r} is not supported here: only `python script.py ARGS` and "
            "`python -m module ARGS` (set PYTHON* environment variables instead)"
        )
    if not os.path.isfile(words[0]):
        raise UsageError(f"no such script: {words[0]}")
    return Target(False, words[0], tuple(words[1:]))


def _is_python(word: str) -> bool:
    base = os.path.basename(word)
    return base.startswith("python") or os.path.abspath(word) == os.path.abspath(sys.executable)


@dataclass
class Outcome:
    """How the program ended: Python's exit status, and the exception it raised, if any."""

    exit_code: int
    exception: Optional[str] = None


def run_target(target: Target, stderr: Optional[TextIO] = None) -> Outcome:
    """Run ``target`` as ``__main__`` here; never raises for what the program does.

    An uncaught exception is printed to ``stderr`` as Python prints it (without this runner's
    frames) and gives exit status 1; ``SystemExit`` gives its code; ``KeyboardInterrupt`` 130.
    """
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = target.argv
    if target.module:
        sys.path.insert(0, os.getcwd())
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(target.name)))
    try:
        if target.module:
            runpy.run_module(target.name, run_name="__main__", alter_sys=True)
        else:
            # Absolute, as Python 3.9+ makes a main script's __file__.
            runpy.run_path(os.path.abspath(target.name), run_name="__main__")
        return Outcome(0)
    except SystemExit as exc:
        return Outcome(_exit_status(exc.code, stderr or sys.stderr))
    except KeyboardInterrupt as exc:
        _print_exception(exc, stderr or sys.stderr)
        return Outcome(130, "KeyboardInterrupt")
    except BaseException as exc:  # the program's own failure: report it as Python would
        _print_exception(exc, stderr or sys.stderr)
        return Outcome(1, f"{type(exc).__name__}: {exc}")
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path


def _exit_status(code: object, stderr: TextIO) -> int:
    # What the interpreter does with SystemExit's argument.
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else code % 256
    print(code, file=stderr)
    return 1


def _print_exception(exc: BaseException, stderr: TextIO) -> None:
    tb = exc.__traceback__
    # Drop the frames of this module and runpy, which a plain `python script.py` would not show.
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__, "<frozen runpy>"):
        tb = tb.tb_next
    sys.stdout.flush()
    traceback.print_exception(type(exc), exc, tb, file=stderr)
    stderr.flush()


def run_profiled(
    command: Sequence[str],
    out: Optional[str] = "profile.json",
    device: str = "cuda",
    memory_snapshot: Optional[str] = None,
    stack_depth: int = 8,
    report: Optional[Callable[[profiles.Profile], None]] = None,
    stderr: Optional[TextIO] = None,
    max_events: int = profiles.MAX_EVENTS,
) -> tuple[int, profiles.Profile]:
    """Run ``command`` under the tracer; write the profile to ``out``; return (exit status, profile).

    ``memory_snapshot``: also record PyTorch's CUDA memory history and dump it there (open it
    at https://pytorch.org/memory_viz). Without CUDA nothing is written, and the profile says so.
    ``report`` is called with the profile once it is written (the CLI prints its table there).
    ``max_events``: timeline events kept in the profile (`profile_allocations`).
    Raises `UsageError` before running anything if ``command`` is not a program to run.
    """
    target = parse_command(command)
    stderr = stderr or sys.stderr
    notes = []
    recording = False
    if memory_snapshot is not None:
        if torch.cuda.is_available():
            torch.cuda.memory._record_memory_history(max_entries=200_000)
            recording = True
        else:
            notes.append(f"--memory-snapshot {memory_snapshot} not written: CUDA is not available here")
    outcome = Outcome(1, "allocaudit: the program did not start")
    snapshot_path = None
    with profile_allocations(device, stack_depth, max_events) as recorder:
        try:
            outcome = run_target(target, stderr)
        finally:
            if recording:
                try:
                    torch.cuda.memory._dump_snapshot(memory_snapshot)
                    snapshot_path = memory_snapshot
                except Exception as exc:  # a failing dump must not lose the profile
                    notes.append(f"--memory-snapshot {memory_snapshot} not written: {exc}")
                finally:
                    torch.cuda.memory._record_memory_history(enabled=None)
    result = recorder.profile(
        command=tuple(command), exit_code=outcome.exit_code, exception=outcome.exception,
        memory_snapshot=snapshot_path, notes=tuple(notes),
    )
    if out is not None:
        profiles.write(result, out)
    if report is not None:
        report(result)
    return outcome.exit_code, result
