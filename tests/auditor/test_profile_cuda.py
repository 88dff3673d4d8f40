"""The tracer on a GPU: the device filter and the graph-capture flag (skipped without CUDA)."""

import pytest

torch = pytest.importorskip("torch")

from allocaudit.auditor.profiling.stale import check  # noqa: E402
from allocaudit.auditor.profiling.tracer import profile_allocations  # noqa: E402
from allocaudit.runtime import WorkspaceCache, get_empty  # noqa: E402

pytestmark = pytest.mark.cuda


def allocate_both():
    torch.empty(16, device="cuda")
    torch.zeros(16)


def test_device_filter_on_cuda():
    line = allocate_both.__code__.co_firstlineno + 1
    with profile_allocations(device="cuda") as recorder:
        allocate_both()
    assert [(s.line, s.devices, s.bytes) for s in recorder.profile().sites] == [(line, ["cuda:0"], 64)]
    with profile_allocations(device="cpu") as recorder:
        allocate_both()
    assert [s.line for s in recorder.profile().sites] == [line + 1]
    with profile_allocations(device="any") as recorder:
        allocate_both()
    assert len(recorder.profile().sites) == 2


def test_allocations_during_graph_capture_are_flagged():
    cache = WorkspaceCache("graphs", share_with_graphs=True)  # the capture takes the warm-up's buffer
    x = torch.ones(8, device="cuda")

    def step():
        tmp = torch.empty_like(x)
        ws = get_empty(8, torch.float32, device="cuda", cache_name="ws", cache=cache)
        torch.mul(x, 2, out=tmp)
        ws.copy_(tmp)
        return ws

    step()  # warm-up, outside capture: the slot's buffer is allocated here
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with profile_allocations(device="cuda") as recorder:
        step()
        with torch.cuda.graph(graph):
            step()
    sites = {s.line - step.__code__.co_firstlineno: s for s in recorder.profile().sites}
    empty_like, get_empty_site = sites[1], sites[2]
    assert (empty_like.calls, empty_like.captured_calls, empty_like.captured_bytes) == (2, 1, 32)
    assert get_empty_site.cache.hits == 2 and get_empty_site.calls == 0  # both hits: nothing allocated
    graph.replay()
    torch.cuda.synchronize()
    assert cache.stats()[("ws", "cuda:0")].bytes_pinned > 0


def test_stale_check_on_cuda():
    x = torch.arange(8.0, device="cuda")

    def stale():
        out = get_empty(8, torch.float32, device="cuda", cache_name="acc")
        out += x
        return out

    report = check(stale)
    assert report.stale and [s.device for s in report.implicated] == ["cuda:0"]


def test_profile_command_writes_a_memory_snapshot(tmp_path):
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "prog.py").write_text("import torch\nfor n in (1, 2):\n    torch.zeros(1024 * n, device='cuda')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "allocaudit.auditor.profiling", "profile", "--memory-snapshot", "snap.pickle", "--", "python", "prog.py"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["memory_snapshot"] == "snap.pickle" and (tmp_path / "snap.pickle").stat().st_size > 0
    (site,) = data["sites"]
    assert (site["line"], site["calls"], site["bytes"], site["devices"]) == (3, 2, 12288, ["cuda:0"])


def test_capture_spans_are_recorded_and_the_graph_class_restored():
    from allocaudit.auditor.profiling.profile import ALLOC

    x = torch.ones(1024, device="cuda")
    original = torch.cuda.CUDAGraph.capture_begin

    def step():
        tmp = torch.empty_like(x)
        torch.mul(x, 2, out=tmp)
        return tmp

    step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with profile_allocations(device="cuda") as recorder:
        step()
        with torch.cuda.graph(graph):
            out = step()
        step()
    assert torch.cuda.CUDAGraph.capture_begin is original
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, x * 2)
    profile = recorder.profile()
    (capture,) = profile.timeline.captures
    assert capture.device == f"cuda:{torch.cuda.current_device()}"
    inside = profile.timeline.events[capture.start:capture.end]
    line = step.__code__.co_firstlineno + 1
    assert [(e[0], profile.sites[e[2]].line, e[3]) for e in inside] == [(ALLOC, line, 4096)]
    (site,) = profile.sites
    assert site.captured_calls == 1 and site.peak_live_bytes == 8192  # the captured output and the last step's
