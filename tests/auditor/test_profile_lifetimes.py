"""When allocations are freed, peaks, the timeline and its cap, capture spans: the tracer on the CPU."""

import json
import textwrap

import jsonschema
import pytest

torch = pytest.importorskip("torch")

import allocaudit.runtime as runtime  # noqa: E402
from allocaudit.auditor.profiling import profile as profiles  # noqa: E402
from allocaudit.auditor.profiling import tracer  # noqa: E402
from allocaudit.auditor.profiling.profile import ALLOC, CACHE, FREE  # noqa: E402
from allocaudit.auditor.profiling.tracer import profile_allocations  # noqa: E402
from allocaudit.runtime import WorkspaceCache, use_cache  # noqa: E402

from .test_profile import load_module  # noqa: E402

VIEWS = textwrap.dedent('''\
    import torch

    def step():
        a = torch.empty(256)
        v = a[:10]
        del a
        b = torch.zeros(512)
        del b
        return v
''')


def events_of(profile):
    """The timeline as (kind, line, bytes) rows; cache rows as (kind, line, held, busy)."""
    rows = []
    for event in profile.timeline.events:
        line = None if event[2] is None else profile.sites[event[2]].line
        rows.append((event[0], line, *event[3:]))
    return rows


def test_a_view_keeps_the_allocation_alive_until_it_dies(tmp_path):
    module, _ = load_module(tmp_path, "views", VIEWS)
    with profile_allocations(device="cpu") as recorder:
        v = module.step()
        assert events_of(recorder.profile()) == [(ALLOC, 4, 1024), (ALLOC, 7, 2048), (FREE, 7, 2048)]
        del v  # the view was the last tensor on a's memory
    profile = recorder.profile()
    assert events_of(profile) == [(ALLOC, 4, 1024), (ALLOC, 7, 2048), (FREE, 7, 2048), (FREE, 4, 1024)]
    sites = {s.line: s for s in profile.sites}
    assert (sites[4].peak_live_bytes, sites[7].peak_live_bytes) == (1024, 2048)
    assert profile.peak_live_bytes == 3072 and profile.peak_cache_held_bytes == 0
    assert sites[4].function_line == 3 and sites[4].function == "step"
    times = [e[1] for e in profile.timeline.events]
    assert times == sorted(times)


def test_what_is_alive_when_recording_stops_stays_alive(tmp_path):
    module, _ = load_module(tmp_path, "views", VIEWS)
    with profile_allocations(device="cpu") as recorder:
        kept = module.step()
    del kept
    assert [e[0] for e in recorder.profile().timeline.events] == [ALLOC, ALLOC, FREE]


WORKSPACES = textwrap.dedent('''\
    import torch
    from allocaudit.runtime import get_empty

    def step(n):
        ws = get_empty((n,), torch.float32, cache_name="ws")
        return ws.sum()
''')


def test_get_empty_buffers_are_the_cache_band_not_a_site(tmp_path):
    module, _ = load_module(tmp_path, "ws", WORKSPACES)
    with use_cache(WorkspaceCache("t")), profile_allocations(device="cpu") as recorder:
        for n in (256, 256, 1024):
            module.step(n)
    profile = recorder.profile()
    (site,) = profile.sites
    assert site.cache.misses == 1 and site.cache.growths == 1 and site.calls == 2
    assert site.peak_live_bytes == 0  # its buffers are the runtime's
    rows = events_of(profile)
    assert all(kind == CACHE for kind, *_ in rows)
    # held, busy after each request: a buffer of 1 KiB, in use; idle and reused; grown to 4 KiB.
    assert [row[2:] for row in rows] == [(1024, 1024), (1024, 1024), (4096, 4096)]
    assert profile.peak_cache_held_bytes == 4096 and profile.peak_live_bytes == 4096


def test_a_fallback_is_a_plain_allocation_of_its_site(tmp_path):
    module, _ = load_module(tmp_path, "ws", WORKSPACES)
    with use_cache(WorkspaceCache("t", max_bytes=512)), profile_allocations(device="cpu") as recorder:
        with pytest.warns(ResourceWarning):
            module.step(256)  # 1 KiB over a budget of 512 B: a plain allocation, dead at return
    profile = recorder.profile()
    assert profile.sites[0].cache.fallbacks == 1
    assert events_of(profile) == [(ALLOC, 5, 1024), (CACHE, 5, 0, 0), (FREE, 5, 1024)]
    assert profile.sites[0].peak_live_bytes == 1024


def test_with_the_runtime_off_get_empty_allocations_are_the_sites(tmp_path, monkeypatch):
    module, _ = load_module(tmp_path, "ws", WORKSPACES)
    monkeypatch.setenv("ALLOCAUDIT_RUNTIME", "off")
    runtime.reload_env()
    try:
        with profile_allocations(device="cpu") as recorder:
            module.step(256)
            module.step(256)
    finally:
        monkeypatch.delenv("ALLOCAUDIT_RUNTIME")
        runtime.reload_env()
    profile = recorder.profile()
    assert events_of(profile) == [(ALLOC, 5, 1024), (FREE, 5, 1024), (ALLOC, 5, 1024), (FREE, 5, 1024)]
    assert profile.sites[0].peak_live_bytes == 1024 and profile.sites[0].cache is None


LOOP = textwrap.dedent('''\
    import torch

    def run(n):
        for i in range(n):
            torch.empty(4 * (i + 1))
''')


def test_the_timeline_is_capped_and_peaks_cover_the_whole_run(tmp_path):
    module, _ = load_module(tmp_path, "loop", LOOP)
    with profile_allocations(device="cpu", max_events=5) as recorder:
        module.run(10)
    profile = recorder.profile()
    timeline = profile.timeline
    assert (len(timeline.events), timeline.total_events, timeline.dropped) == (5, 20, 15)
    assert profile.sites[0].peak_live_bytes == 160  # the last, largest one: past the cap
    assert profile.peak_live_bytes == 160
    assert any("first 5 of 20 events" in note for note in profile.notes)
    with pytest.raises(ValueError, match="max_events"):
        tracer.Recorder("cpu", max_events=-1)


def test_capture_spans_and_the_wrapped_graph_class():
    original = torch.cuda.CUDAGraph.capture_begin
    with profile_allocations(device="cpu") as outer, profile_allocations(device="cpu") as inner:
        assert torch.cuda.CUDAGraph.capture_begin is tracer._capture_begin
        torch.empty(4)
        graph = object()
        for recorder in (outer, inner):  # what the wrapper tells each active recorder
            recorder.capture_began(graph)
        torch.empty(8)
        torch.empty(8)
        for recorder in (outer, inner):
            recorder.capture_ended(graph)
        torch.empty(4)
        inner.capture_began(object())  # still open when recording stops
    assert torch.cuda.CUDAGraph.capture_begin is original
    (capture,) = outer.profile().timeline.captures
    assert (capture.start, capture.end) == (2, 6)  # two allocations and their frees inside
    assert capture.t_start_us <= capture.t_end_us
    assert [(c.start, c.end) for c in inner.profile().timeline.captures] == [(2, 6), (8, 8)]


def test_the_timeline_in_json_follows_the_schema_and_round_trips(tmp_path):
    module, _ = load_module(tmp_path, "ws", WORKSPACES)
    views, _ = load_module(tmp_path, "views", VIEWS)
    with use_cache(WorkspaceCache()), profile_allocations(device="cpu") as recorder:
        views.step()
        module.step(8)
        views.step()
    profile = recorder.profile(command=("python", "x.py"), exit_code=0)
    out = tmp_path / "p.json"
    profiles.write(profile, str(out))
    text = out.read_text()
    data = json.loads(text)
    jsonschema.validate(data, profiles.SCHEMA)
    assert data["schema_version"] == 1
    assert text.count('\n   ["') == len(data["timeline"]["events"])  # one line per event
    # Sites are written largest first; the events name them by their written index.
    written = [(s["line"], s["path"].endswith("views.py")) for s in data["sites"]]
    in_memory = events_of(profile)
    in_json = [
        (e[0], None if e[2] is None else data["sites"][e[2]]["line"], *e[3:]) for e in data["timeline"]["events"]
    ]
    assert in_json == in_memory and written[0] == (7, True)
    loaded = profiles.load(str(out))
    assert loaded.to_dict() == data and loaded.peak_live_bytes == profile.peak_live_bytes


def test_a_profile_without_lifetimes_still_loads(tmp_path):
    with profile_allocations(device="cpu") as recorder:
        torch.zeros(4)
    data = recorder.profile().to_dict()
    del data["timeline"], data["summary"]["peak_live_bytes"], data["summary"]["peak_cache_held_bytes"]
    for site in data["sites"]:
        del site["peak_live_bytes"], site["function_line"]
    out = tmp_path / "old.json"
    out.write_text(json.dumps(data))
    loaded = profiles.load(str(out))
    assert loaded.timeline is None and loaded.peak_live_bytes is None
    assert loaded.sites[0].function_line == 0
    data["timeline"] = {"max_events": 1, "total_events": 1, "captures": [], "events": [["a", 0, 7, 16]]}
    out.write_text(json.dumps(data))
    with pytest.raises(profiles.ProfileError, match="names no site"):
        profiles.load(str(out))
