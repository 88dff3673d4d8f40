"""`compare`: matching sites across two profiles, the totals and the table. No torch needed."""

from rich.console import Console

from allocaudit.auditor.profiling.compare import chart, compare, match, render_markdown, render_rich
from allocaudit.auditor.profiling.profile import CacheCounts, Profile, Site

MIB = 2**20


def site(path, line, function="f", function_line=0, calls=1, nbytes=MIB, peak=0, cache=None):
    return Site(
        path=path, line=line, function=function, calls=calls, bytes=nbytes,
        peak_live_bytes=peak, function_line=function_line, cache=cache,
    )


def profile(*sites, peak=None, held=None):
    return Profile(
        command=["python", "m.py"], device_filter="cpu", torch_version="2", devices_seen=["cpu"],
        exit_code=0, exception=None, duration_s=1.0, sites=list(sites),
        peak_live_bytes=peak, peak_cache_held_bytes=held,
    )


def lines(pairs):
    """(before line, after line) pairs, 0 for a missing side."""
    return sorted((b.line if b else 0, a.line if a else 0) for b, a in pairs)


def test_an_import_added_above_moves_lines_but_not_offsets_in_functions():
    before = profile(site("m.py", 10, "A.f", 8), site("m.py", 12, "A.f", 8), site("m.py", 30, "g", 28))
    after = profile(site("m.py", 11, "A.f", 9), site("m.py", 13, "A.f", 9), site("m.py", 31, "g", 29))
    assert lines(match(before, after)) == [(10, 11), (12, 13), (30, 31)]


def test_without_function_lines_the_nearest_line_after_the_files_shift():
    # Old profiles have no function_line: pairs by nearest line within the function.
    before = profile(site("m.py", 10), site("m.py", 12), site("m.py", 40, "h"))
    after = profile(site("m.py", 11), site("m.py", 13), site("m.py", 41, "h"))
    assert lines(match(before, after)) == [(10, 11), (12, 13), (40, 41)]
    # A site whose offset changed (the function grew above it) pairs by the file's shift of 3.
    before = profile(site("m.py", 10, "f", 5), site("m.py", 20, "g", 18), site("m.py", 24, "g", 18))
    after = profile(site("m.py", 13, "f", 8), site("m.py", 23, "g", 21), site("m.py", 28, "g", 21))
    assert lines(match(before, after)) == [(10, 13), (20, 23), (24, 28)]


def test_sites_of_other_functions_never_pair_and_leftovers_are_one_sided():
    before = profile(site("m.py", 10, "f", 9), site("m.py", 20, "gone", 19))
    after = profile(site("m.py", 11, "f", 10), site("m.py", 21, "new", 20))
    assert lines(match(before, after)) == [(0, 21), (10, 11), (20, 0)]
    labels = {r.label for r in compare(before, after).rows}
    assert labels == {"m.py:10→11 f", "m.py:20 gone (before only)", "m.py:21 new (after only)"}


def test_copies_of_a_file_in_two_folders_pair_by_the_tail_of_their_paths():
    before = profile(site("/tmp/a/before/pkg/moe.py", 10, "f", 9), site("/tmp/a/before/pkg/other.py", 5, "g", 4))
    after = profile(site("/tmp/a/after/pkg/moe.py", 11, "f", 10), site("/tmp/a/after/pkg/other.py", 6, "g", 5))
    assert lines(match(before, after)) == [(5, 6), (10, 11)]
    # Two candidates with the same tail: ambiguous, so no pairing.
    before = profile(site("/x/a/moe.py", 10, "f", 9), site("/x/b/moe.py", 10, "f", 9))
    after = profile(site("/y/moe.py", 10, "f", 9))
    assert lines(match(before, after)) == [(0, 10), (10, 0), (10, 0)]


def test_totals_rows_chart_and_table():
    ws = CacheCounts(requests=3, hits=2, misses=1)
    before = profile(
        site("m.py", 48, "L.get_workspace", 46, calls=3, nbytes=4 * MIB, peak=2 * MIB),
        site("m.py", 40, "L.__init__", 36, calls=1, nbytes=2 * MIB, peak=2 * MIB),
        peak=5 * MIB, held=0,
    )
    after = profile(
        site("m.py", 49, "L.get_workspace", 47, calls=1, nbytes=2 * MIB, peak=0, cache=ws),
        site("m.py", 41, "L.__init__", 37, calls=1, nbytes=2 * MIB, peak=2 * MIB),
        peak=4 * MIB, held=2 * MIB,
    )
    result = compare(before, after, "b.json", "a.json")
    assert [r.label for r in result.rows] == ["m.py:48→49 L.get_workspace", "m.py:40→41 L.__init__"]
    assert result.rows[0].calls() == (3, 1) and result.rows[0].bytes() == (4 * MIB, 2 * MIB)
    assert result.totals() == {
        "calls": (4, 2), "bytes": (6 * MIB, 4 * MIB), "peak_live": (5 * MIB, 4 * MIB), "peak_cache_held": (0, 2 * MIB),
    }
    bars = chart(result, top=1)
    assert bars.labels == ("m.py:48→49 L.get_workspace",)
    assert (bars.mib_before, bars.mib_after, bars.calls_before, bars.calls_after) == ((4.0,), (2.0,), (3,), (1,))
    assert bars.total_mib == (6.0, 4.0) and bars.peak_mib == (5.0, 4.0)
    assert bars.title == "allocaudit compare: b.json → a.json"
    text = render_markdown(result)
    assert "| m.py:48→49 L.get_workspace | 3 | 1 | 4.0 MiB | 2.0 MiB | -2.0 MiB, 0.50x | 2.0 MiB | 0 B | 2/1/0/0 |" in text
    assert "allocated 6.0 MiB in 4 calls → 4.0 MiB in 2 calls (-2.0 MiB, 0.67x)" in text
    assert "peak live 5.0 MiB → 4.0 MiB (-1.0 MiB, 0.80x); get_empty buffers held at most 0 B → 2.0 MiB" in text
    assert "2 sites matched by file, function and line within the function; 0 before only, 0 after only" in text
    console = Console(record=True, width=200)
    render_rich(result, console, limit=1)
    shown = console.export_text()
    assert "m.py:48→49 L.get_workspace" in shown and "(the 1 largest of 2 sites shown)" in shown


def test_profiles_without_peaks_say_so():
    result = compare(profile(site("m.py", 1)), profile(site("m.py", 1)))
    assert "peak live: not recorded in both profiles" in render_markdown(result)
    assert chart(result).peak_mib == (None, None)
