"""Two profiles of one program, before and after a change such as `allocaudit fix`: site by site.

A pure function of two `Profile` values (no torch, no matplotlib), and its renderings: a
terminal table, Markdown, and `CompareChart`, the numbers the compare picture draws.

How sites are matched. `fix` adds an import near the top of a file, so every line below moves
down, and it may add lines elsewhere; a site's line is not its identity, but its place within
its function is. So sites pair up within the same file and the same function:
1. by the line's offset from the function's first line (``line - function_line``), which an
   import added above the function does not change;
2. the sites of that function left over (profiles written without ``function_line``, or a
   rewrite that changed the function's length above the site), by nearest line, once the
   file's shift (the median shift of the pairs found in step 1) is allowed for.
Files pair up by path; a file of one profile whose path is in the other profile nowhere pairs
with the one file there whose path ends the same (the longest common tail, at least the file
name), so that copies of a tree in two folders compare. Sites left unpaired are shown as
"before only" or "after only".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from allocaudit.auditor.plural import plural
from allocaudit.auditor.profiling.profile import Profile, Site, format_bytes
from allocaudit.auditor.profiling.timeline import MemorySeries, memory_series, short_path

MIB = 2**20


@dataclass(frozen=True)
class Row:
    """One site in either profile, or both."""

    before: Optional[Site]
    after: Optional[Site]

    @property
    def label(self) -> str:
        site = self.after or self.before
        if self.before is None:
            where, note = f"{self.after.line}", " (after only)"
        elif self.after is None:
            where, note = f"{self.before.line}", " (before only)"
        elif self.before.line == self.after.line:
            where, note = f"{self.after.line}", ""
        else:
            where, note = f"{self.before.line}→{self.after.line}", ""
        return f"{short_path(site.path)}:{where} {site.function}{note}"

    def calls(self) -> tuple[int, int]:
        return (_get(self.before, "calls"), _get(self.after, "calls"))

    def bytes(self) -> tuple[int, int]:
        return (_get(self.before, "bytes"), _get(self.after, "bytes"))

    def peak_live(self) -> tuple[int, int]:
        return (_get(self.before, "peak_live_bytes"), _get(self.after, "peak_live_bytes"))

    def get_empty(self) -> str:
        """The after side's get_empty hits/misses/growths/fallbacks, or ``""``."""
        cache = self.after.cache if self.after is not None else None
        return "" if cache is None else f"{cache.hits}/{cache.misses}/{cache.growths}/{cache.fallbacks}"


def _get(site: Optional[Site], name: str) -> int:
    return getattr(site, name) if site is not None else 0


@dataclass(frozen=True)
class Comparison:
    before: Profile
    after: Profile
    before_name: str
    after_name: str
    rows: tuple[Row, ...]  # by the larger of the two bytes, largest first

    def totals(self) -> dict[str, tuple[Optional[int], Optional[int]]]:
        """calls, bytes (allocated), peak_live (sites + runtime cache) and peak_cache_held."""
        b, a = self.before, self.after
        return {
            "calls": (b.total_calls, a.total_calls),
            "bytes": (b.total_bytes, a.total_bytes),
            "peak_live": (b.peak_live_bytes, a.peak_live_bytes),
            "peak_cache_held": (b.peak_cache_held_bytes, a.peak_cache_held_bytes),
        }

    @property
    def matched(self) -> int:
        return sum(1 for r in self.rows if r.before is not None and r.after is not None)


# -- matching ---------------------------------------------------------------------------------


def _tail_length(a: str, b: str) -> int:
    x, y = a.replace("\\", "/").split("/"), b.replace("\\", "/").split("/")
    n = 0
    while n < min(len(x), len(y)) and x[-1 - n] == y[-1 - n]:
        n += 1
    return n


def _pair_files(before: Sequence[str], after: Sequence[str]) -> dict[str, str]:
    """after path -> before path."""
    pairs = {p: p for p in after if p in set(before)}
    left_before = [p for p in before if p not in pairs]
    for path in (p for p in after if p not in pairs):
        scored = [(_tail_length(path, q), q) for q in left_before]
        best = max((n for n, _ in scored), default=0)
        candidates = [q for n, q in scored if n == best]
        if best >= 1 and len(candidates) == 1:
            pairs[path] = candidates[0]
            left_before.remove(candidates[0])
    return pairs


def _by_offset(site: Site) -> Optional[tuple[str, int]]:
    return (site.function, site.line - site.function_line) if site.function_line else None


def match(before: Profile, after: Profile) -> list[tuple[Optional[Site], Optional[Site]]]:
    """Pairs of the same site in both profiles, and the sites of one only (see the module doc)."""
    files = _pair_files(sorted({s.path for s in before.sites}), sorted({s.path for s in after.sites}))
    before_in = {}
    for s in before.sites:
        before_in.setdefault(s.path, []).append(s)
    pairs: list[tuple[Optional[Site], Optional[Site]]] = []
    used: set[int] = set()
    for after_path in sorted({s.path for s in after.sites}):
        mine = [s for s in after.sites if s.path == after_path]
        theirs = before_in.get(files.get(after_path, ""), [])
        # 1. the same offset within the same function
        offsets = {}
        for s in theirs:
            key = _by_offset(s)
            if key is not None:
                offsets.setdefault(key, s)
        left = []
        for s in mine:
            twin = offsets.get(_by_offset(s)) if _by_offset(s) is not None else None
            if twin is not None and id(twin) not in used:
                pairs.append((twin, s))
                used.add(id(twin))
            else:
                left.append(s)
        shifts = [a.line - b.line for b, a in pairs if b is not None and a is not None and a.path == after_path]
        shift = round(statistics.median(shifts)) if shifts else 0
        # 2. the nearest line within the same function, after the file's shift
        candidates = sorted(
            (abs(a.line - b.line - shift), b.line, a.line, i, j)
            for i, a in enumerate(left)
            for j, b in enumerate(theirs)
            if id(b) not in used and a.function == b.function
        )
        taken = set()
        for _, _, _, i, j in candidates:
            if i in taken or id(theirs[j]) in used:
                continue
            pairs.append((theirs[j], left[i]))
            taken.add(i)
            used.add(id(theirs[j]))
        pairs.extend((None, a) for i, a in enumerate(left) if i not in taken)
    pairs.extend((b, None) for b in before.sites if id(b) not in used)
    return pairs


def compare(before: Profile, after: Profile, before_name: str = "before", after_name: str = "after") -> Comparison:
    rows = [Row(b, a) for b, a in match(before, after)]
    rows.sort(key=lambda r: (-max(r.bytes()), -max(r.calls()), r.label))
    return Comparison(before, after, before_name, after_name, tuple(rows))


# -- the numbers the picture draws ------------------------------------------------------------


@dataclass(frozen=True)
class CompareChart:
    """The paired bars: per site (the ``top`` largest), MiB allocated and calls, before and after;
    and the totals: MiB allocated and peak MiB live (None where a profile has no peak)."""

    labels: tuple[str, ...]
    mib_before: tuple[float, ...]
    mib_after: tuple[float, ...]
    calls_before: tuple[int, ...]
    calls_after: tuple[int, ...]
    total_mib: tuple[float, float]
    peak_mib: tuple[Optional[float], Optional[float]]
    title: str
    subtitle: str


def _mib(n: Optional[int]) -> Optional[float]:
    return None if n is None else n / MIB


def chart(comparison: Comparison, top: int = 10) -> CompareChart:
    rows = comparison.rows[:top]
    totals = comparison.totals()
    return CompareChart(
        labels=tuple(r.label for r in rows),
        mib_before=tuple(r.bytes()[0] / MIB for r in rows),
        mib_after=tuple(r.bytes()[1] / MIB for r in rows),
        calls_before=tuple(r.calls()[0] for r in rows),
        calls_after=tuple(r.calls()[1] for r in rows),
        total_mib=(totals["bytes"][0] / MIB, totals["bytes"][1] / MIB),
        peak_mib=(_mib(totals["peak_live"][0]), _mib(totals["peak_live"][1])),
        title=f"allocaudit compare: {comparison.before_name} → {comparison.after_name}",
        subtitle="; ".join(summary_lines(comparison)[:2]),
    )


# -- text -------------------------------------------------------------------------------------


def _change(before: Optional[int], after: Optional[int]) -> str:
    if before is None or after is None:
        return "n/a"
    sign = "+" if after >= before else "-"
    ratio = f", {after / before:.2f}x" if before else ""
    return f"{sign}{format_bytes(abs(after - before))}{ratio}"


def summary_lines(comparison: Comparison) -> list[str]:
    """The totals, the peak difference, and how many sites matched."""
    t = comparison.totals()
    (cb, ca), (bb, ba), (pb, pa) = t["calls"], t["bytes"], t["peak_live"]
    lines = [
        f"allocated {format_bytes(bb)} in {plural(cb, 'call')} → {format_bytes(ba)} in {plural(ca, 'call')} ({_change(bb, ba)})",
    ]
    if pb is None or pa is None:
        lines.append("peak live: not recorded in " + ("both profiles" if pb is None and pa is None else "one profile"))
    else:
        lines.append(f"peak live {format_bytes(pb)} → {format_bytes(pa)} ({_change(pb, pa)})")
        hb, ha = t["peak_cache_held"]
        if ha or hb:
            lines[-1] += f"; get_empty buffers held at most {format_bytes(hb or 0)} → {format_bytes(ha or 0)}"
    before_only = sum(1 for r in comparison.rows if r.after is None)
    after_only = sum(1 for r in comparison.rows if r.before is None)
    lines.append(
        f"{plural(comparison.matched, 'site')} matched by file, function and line within the function; "
        f"{before_only} before only, {after_only} after only"
    )
    return lines


TABLE_HEADER = ("site", "calls", "", "bytes", "", "change", "peak live", "", "get_empty h/m/g/f")
SUBHEADER = ("", "before", "after", "before", "after", "", "before", "after", "after")


def table_rows(comparison: Comparison, limit: Optional[int] = 20) -> list[tuple[str, ...]]:
    rows = []
    for r in comparison.rows[:limit]:
        (cb, ca), (bb, ba), (pb, pa) = r.calls(), r.bytes(), r.peak_live()
        rows.append((
            r.label, str(cb), str(ca), format_bytes(bb), format_bytes(ba), _change(bb, ba),
            format_bytes(pb), format_bytes(pa), r.get_empty(),
        ))
    return rows


def render_markdown(comparison: Comparison, limit: Optional[int] = 20) -> str:
    header = ("site", "calls before", "calls after", "bytes before", "bytes after", "change",
              "peak live before", "peak live after", "get_empty h/m/g/f after")
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table_rows(comparison, limit):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines.append("")
    lines.extend(summary_lines(comparison))
    return "\n".join(lines) + "\n"


def render_rich(comparison: Comparison, console, limit: Optional[int] = 20) -> None:
    from rich.table import Table

    table = Table(
        title=f"allocaudit compare: {comparison.before_name} → {comparison.after_name}, sites by bytes allocated",
        title_justify="left",
    )
    for i, (name, sub) in enumerate(zip(TABLE_HEADER, SUBHEADER)):
        table.add_column(f"{name}\n{sub}" if sub else name, justify="left" if i == 0 else "right", overflow="fold")
    for row in table_rows(comparison, limit):
        table.add_row(*row)
    console.print(table)
    if limit is not None and len(comparison.rows) > limit:
        console.print(f"(the {limit} largest of {plural(len(comparison.rows), 'site')} shown)")
    for line in summary_lines(comparison):
        console.print(line)



def timeline_pair(comparison: Comparison, top: int = 6) -> tuple[Optional[MemorySeries], Optional[MemorySeries]]:
    """Both runs' memory series, naming the same sites in both under their rows' labels (the
    ``top`` rows by peak live bytes), so that a site has one color in both pictures;
    (None, None) unless both profiles have a timeline."""
    before, after = comparison.before, comparison.after
    if before.timeline is None or after.timeline is None:
        return None, None
    rows = sorted((r for r in comparison.rows if max(r.peak_live())), key=lambda r: (-max(r.peak_live()), r.label))[:top]
    return (
        memory_series(before, named=[(r.before, r.label) for r in rows if r.before is not None]),
        memory_series(after, named=[(r.after, r.label) for r in rows if r.after is not None]),
    )
