"""The stale-read check: does anything read a `get_empty(..., zero=False)` hand-out before writing it?

A workspace handed out with ``zero=False`` holds whatever the slot held before. Code that
overwrites every element before reading one computes the same result whatever that was; code
that reads first (an accumulation into a buffer that used to come from `torch.zeros`, a
partially written workspace read whole) does not. So the check runs the code twice, once with
every non-zeroed hand-out filled with one byte pattern and once with another, and compares the
results. When they differ it runs once more per slot, changing that slot's pattern alone, to
name the slots whose stale contents reach the result.

A first run repeated with the same pattern guards against code that is not deterministic
(that would make every comparison differ): then the check says it cannot decide.

Only requests that reach the workspace cache in effect (`use_cache`, the default cache) are
filled; a call that passes its own ``cache=`` is not.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from allocaudit.runtime import WorkspaceCache, use_cache

# Byte patterns: all-ones bytes read as NaN in floats and -1 in integers (what the runtime's own
# poison mode writes); zero bytes read as 0, which is what code that needed `zero=True` expects.
DEFAULT_PATTERNS = (0xFF, 0x00)
MAX_ISOLATED_SLOTS = 64


@dataclass(frozen=True)
class SlotUse:
    """A (cache name, device) slot handed out without zeroing during the run."""

    cache_name: str
    device: str
    requests: int
    sites: tuple[str, ...]  # "path:line" of the get_empty calls


@dataclass(frozen=True)
class Difference:
    """One part of the result that changed with the pattern."""

    where: str  # "out", "out[0]", "out['logits']", or "stdout line 3"
    detail: str


@dataclass
class StaleReport:
    patterns: tuple[int, int]
    slots: list[SlotUse] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    implicated: list[SlotUse] = field(default_factory=list)  # slots whose pattern alone changes the result
    nondeterministic: list[Difference] = field(default_factory=list)
    isolation_skipped: bool = False
    nothing_compared: bool = False  # the program printed nothing: only its exit status was compared

    @property
    def stale(self) -> bool:
        """Some result depends on the contents of a non-zeroed hand-out."""
        return bool(self.differences) and not self.nondeterministic

    @property
    def conclusive(self) -> bool:
        return not self.nondeterministic and not (self.nothing_compared and self.slots and not self.differences)

    def render(self) -> str:
        a, b = self.patterns
        lines = []
        used = ", ".join(f"{s.cache_name} ({s.device})" for s in self.slots) or "none"
        lines.append(f"non-zeroed get_empty slots used: {used}")
        if self.nondeterministic:
            lines.append("inconclusive: two runs with the same pattern gave different results:")
            lines.extend(f"  {d.where}: {d.detail}" for d in self.nondeterministic)
            return "\n".join(lines) + "\n"
        if not self.slots:
            lines.append("nothing to check: no get_empty(..., zero=False) hand-out was made")
            return "\n".join(lines) + "\n"
        if not self.differences and self.nothing_compared:
            lines.append("inconclusive: the program printed nothing, so only its exit status was compared; print what it computes (a checksum of the output tensors will do)")
            return "\n".join(lines) + "\n"
        if not self.differences:
            lines.append(f"safe: the results are identical with the hand-outs filled with 0x{a:02X} and 0x{b:02X} bytes")
            return "\n".join(lines) + "\n"
        lines.append(f"STALE READ: the results differ with the hand-outs filled with 0x{a:02X} and 0x{b:02X} bytes:")
        lines.extend(f"  {d.where}: {d.detail}" for d in self.differences)
        if self.isolation_skipped:
            lines.append(f"  (more than {MAX_ISOLATED_SLOTS} slots: not isolated one by one)")
        for slot in self.implicated:
            lines.append(f"  slot {slot.cache_name!r} on {slot.device} is read before it is written; requested at {', '.join(slot.sites)}")
        if self.differences and not self.implicated and not self.isolation_skipped:
            lines.append("  no single slot changes the result alone; several slots together do")
        lines.append("  use zero=True for these slots, or write every element before reading it")
        return "\n".join(lines) + "\n"


class _PatternRun:
    """A fresh cache whose poison hook fills each non-zeroed hand-out with a byte pattern chosen
    per slot, and records the slots and call sites it served."""

    def __init__(self, pattern_of: Callable[[str, str], int]) -> None:
        self.pattern_of = pattern_of
        self.uses: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.cache = WorkspaceCache("stale-check", poison=self._pattern, strict=False)

    def _pattern(self, cache_name: str, device: str) -> int:
        key = (cache_name, device)
        count, sites = self.uses.get(key, (0, []))
        site = _caller_site()
        if site not in sites:
            sites.append(site)
        self.uses[key] = (count + 1, sites)
        return self.pattern_of(*key)


def _caller_site() -> str:
    import allocaudit.runtime as runtime

    skip = (__file__, runtime.cache.__file__)
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in skip:
        frame = frame.f_back
    return "<unknown>" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


# -- comparing results --------------------------------------------------------------------


def _snapshot(value: Any) -> Any:
    """A copy of the result that later runs cannot change (a hand-out may be returned)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return [_snapshot(v) for v in value]  # compared by position only
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    return value


def _leaves(value: Any, where: str):
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{where}[{k!r}]")
    else:
        yield where, value


def _tensor_difference(a: torch.Tensor, b: torch.Tensor) -> Optional[str]:
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    same = a == b
    if a.is_floating_point():
        same |= torch.isnan(a) & torch.isnan(b)
    if bool(same.all()):
        return None
    differ = (~same).nonzero()
    first = tuple(int(i) for i in differ[0])
    x, y = a[first].item(), b[first].item()
    return f"{differ.shape[0]} of {a.numel()} elements differ (first at {first}: {x!r} vs {y!r})"


def compare(a: Any, b: Any, where: str = "out") -> list[Difference]:
    """The parts of two results that differ; tensors compare element-wise with NaN equal to NaN."""
    left, right = dict(_leaves(a, where)), dict(_leaves(b, where))
    found = []
    for key in left.keys() | right.keys():
        if key not in left or key not in right:
            found.append(Difference(key, "present in one run only"))
            continue
        x, y = left[key], right[key]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            detail = _tensor_difference(x, y)
        elif isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            detail = None
        else:
            try:
                equal = bool(x == y)
            except Exception:  # objects whose == is not a truth value
                equal = x is y
            detail = None if equal else f"{x!r} vs {y!r}"
        if detail is not None:
            found.append(Difference(key, detail))
    return sorted(found, key=lambda d: d.where)


# -- running ------------------------------------------------------------------------------


def _run(fn: Callable[[], Any], pattern_of: Callable[[str, str], int], seed: int) -> tuple[Any, _PatternRun]:
    run = _PatternRun(pattern_of)
    torch.manual_seed(seed)
    with use_cache(run.cache):
        result = _snapshot(fn())
    return result, run


def check(
    fn: Callable[[], Any],
    patterns: Sequence[int] = DEFAULT_PATTERNS,
    seed: int = 0,
    isolate: bool = True,
    compare_results: Callable[[Any, Any], list[Difference]] = compare,
) -> StaleReport:
    """Run ``fn()`` with two byte patterns in every non-zeroed `get_empty` hand-out and compare.

    ``fn`` takes no arguments (use a lambda or `functools.partial`) and returns its result:
    tensors, or lists, tuples and dicts of them and of plain values. Each run starts with
    ``torch.manual_seed(seed)`` and a fresh workspace cache. Returns a `StaleReport`; its
    ``stale`` is True when the result depends on the hand-outs' former contents.
    """
    if len(patterns) != 2 or not all(isinstance(p, int) and 0 <= p <= 0xFF for p in patterns) or patterns[0] == patterns[1]:
        raise ValueError(f"patterns must be two different byte values, got {patterns!r}")
    first, second = patterns
    report = StaleReport(patterns=(first, second))
    baseline, run = _run(fn, lambda *_: first, seed)
    again, _ = _run(fn, lambda *_: first, seed)
    report.slots = [SlotUse(n, d, c, tuple(s)) for (n, d), (c, s) in sorted(run.uses.items())]
    report.nondeterministic = compare_results(baseline, again)
    if report.nondeterministic or not report.slots:
        return report
    other, _ = _run(fn, lambda *_: second, seed)
    report.differences = compare_results(baseline, other)
    if not report.differences or not isolate:
        return report
    if len(report.slots) > MAX_ISOLATED_SLOTS:
        report.isolation_skipped = True
        return report
    for slot in report.slots:
        key = (slot.cache_name, slot.device)
        alone, _ = _run(fn, lambda *k, key=key: second if k == key else first, seed)
        if compare_results(baseline, alone):
            report.implicated.append(slot)
    return report


def check_program(command: Sequence[str], patterns: Sequence[int] = DEFAULT_PATTERNS, seed: int = 0, isolate: bool = True) -> tuple[StaleReport, int]:
    """The stale-read check of a program (``python script.py ARGS`` or ``-m module``): its result
    is what it prints to stdout and its exit status. Returns the report and the first run's status."""
    from allocaudit.auditor.profiling.runner import parse_command, run_target

    target = parse_command(command)
    outputs = []

    def run_program():
        buffer = io.StringIO()
        errors = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            outcome = run_target(target, stderr=errors)
        outputs.append({"exit status": outcome.exit_code, "stdout": buffer.getvalue().splitlines()})
        return outputs[-1]

    report = check(run_program, patterns, seed, isolate, compare_results=_compare_output)
    report.nothing_compared = not outputs[0]["stdout"]
    return report, outputs[0]["exit status"]


def _compare_output(a: dict, b: dict) -> list[Difference]:
    found = []
    if a["exit status"] != b["exit status"]:
        found.append(Difference("exit status", f"{a['exit status']} vs {b['exit status']}"))
    lines_a, lines_b = a["stdout"], b["stdout"]
    for i in range(max(len(lines_a), len(lines_b))):
        x = lines_a[i] if i < len(lines_a) else "<no line>"
        y = lines_b[i] if i < len(lines_b) else "<no line>"
        if x != y:
            found.append(Difference(f"stdout line {i + 1}", f"{x!r} vs {y!r}"))
    return found
