"""The dynamic auditor on the CPU: tracer attribution, get_empty counts, the JSON schema, the join."""

import importlib.util
import json
import textwrap

import jsonschema
import pytest

torch = pytest.importorskip("torch")

from allocaudit.auditor.findings import Finding, ScanResult  # noqa: E402
from allocaudit.auditor.profiling import join, profile as profiles  # noqa: E402
from allocaudit.auditor.profiling.tracer import profile_allocations  # noqa: E402
from allocaudit.runtime import WorkspaceCache, get_empty, use_cache  # noqa: E402

USER_CODE = '''\
import torch as th
from torch import zeros as Z

def wrapper(n):
    return th.empty(n, 4)

alloc = th.ones

def run(x):
    wrapper(2)
    wrapper(3)
    Z(5, dtype=th.int32)
    alloc(6, dtype=th.float64)
    x.new_zeros(7)
    th.empty_like(x)
    th.full((2, 2), 1.5)
    x.new_full((3,), 2.0)
    th.zeros_like(x, dtype=th.int8)
    th.empty_strided((2, 3), (3, 1))
    th.zeros(3, out=x[:3])
    return x + 1
'''


def load_module(tmp_path, name="user_code", source=USER_CODE):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, str(path)


def by_line(profile):
    return {s.line: s for s in profile.sites}


def test_factories_through_aliases_and_wrappers_are_charged_to_their_lines(tmp_path):
    module, path = load_module(tmp_path)
    x = torch.ones(8)
    with profile_allocations(device="cpu") as recorder:
        module.run(x)
    profile = recorder.profile()
    sites = by_line(profile)
    assert {s.path for s in profile.sites} == {path}
    # x + 1 is no factory; the out= call allocates nothing.
    assert sorted(sites) == [5, 12, 13, 14, 15, 16, 17, 18, 19]
    wrapper = sites[5]
    assert (wrapper.function, wrapper.calls, wrapper.bytes) == ("wrapper", 2, (2 * 4 + 3 * 4) * 4)
    assert wrapper.shapes == ["(2, 4) float32", "(3, 4) float32"]
    assert wrapper.stack[0] == f"{path}:5 in wrapper" and wrapper.stack[1] == f"{path}:10 in run"
    assert (sites[12].ops, sites[12].bytes, sites[12].shapes) == ({"aten.zeros": 1}, 20, ["(5,) int32"])
    assert (sites[13].ops, sites[13].bytes) == ({"aten.ones": 1}, 48)
    assert sites[14].ops == {"aten.new_zeros": 1} and sites[14].bytes == 28
    assert sites[15].ops == {"aten.empty_like": 1} and sites[15].bytes == 32
    assert sites[16].ops == {"aten.full": 1}
    assert sites[17].ops == {"aten.new_full": 1}
    assert sites[18].shapes == ["(8,) int8"]
    assert sites[19].ops == {"aten.empty_strided": 1} and sites[19].bytes == 24
    assert all(s.function == "run" and s.devices == ["cpu"] for line, s in sites.items() if line != 5)
    assert profile.devices_seen == ["cpu"]


def test_device_filter(tmp_path):
    module, _ = load_module(tmp_path)
    x = torch.ones(8)
    with profile_allocations(device="cuda") as recorder:
        module.run(x)
    assert recorder.profile().sites == []
    with profile_allocations(device="any") as recorder:
        module.run(x)
        torch.empty(3, device="meta")
    assert "meta" in recorder.profile().devices_seen
    with pytest.raises(ValueError, match="device must be one of"):
        with profile_allocations(device="gpu"):
            pass


def test_get_empty_hits_misses_growths_through_the_observer(tmp_path):
    source = textwrap.dedent('''\
        import torch
        from allocaudit.runtime import get_empty

        def step(n):
            return get_empty((n, 4), torch.float32, cache_name="ws")
    ''')
    module, path = load_module(tmp_path, "ws_code", source)
    cache = WorkspaceCache("t")
    with use_cache(cache), profile_allocations(device="cpu") as recorder:
        for n in (4, 2, 4, 64, 8):
            module.step(n)
    site = by_line(recorder.profile())[5]
    assert site.path == path and site.function == "step"
    counts = site.cache
    assert (counts.requests, counts.hits, counts.misses, counts.growths, counts.fallbacks) == (5, 3, 1, 1, 0)
    assert counts.cache_names == ["ws"]
    assert counts.requested_bytes == (4 + 2 + 4 + 64 + 8) * 16
    # The slot's buffers, allocated by the runtime for this call: a miss then a growth.
    assert site.ops == {"allocaudit.runtime": 2}
    assert site.calls == 2 and site.runtime_bytes == site.bytes == 64 + 1024
    stats = cache.stats()[("ws", "cpu")]
    assert (stats.hits, stats.misses, stats.growths) == (3, 1, 1)


def test_the_observer_is_removed_and_a_crash_keeps_what_was_recorded():
    from allocaudit.runtime import get_empty

    with pytest.raises(RuntimeError, match="boom"):
        with profile_allocations(device="cpu") as recorder:
            torch.zeros(4)
            raise RuntimeError("boom")
    get_empty(4, torch.float32, device="cpu", cache_name="after", cache=WorkspaceCache("after"))
    profile = recorder.profile()
    assert profile.total_calls == 1
    assert all(s.cache is None for s in profile.sites)


def write_profile(recorder, tmp_path, **kwargs):
    profile = recorder.profile(command=("python", "x.py"), exit_code=0, **kwargs)
    out = tmp_path / "profile.json"
    profiles.write(profile, str(out))
    return out, json.loads(out.read_text())


def test_profile_json_matches_its_schema_and_round_trips(tmp_path):
    module, _ = load_module(tmp_path)
    x = torch.ones(8)
    with use_cache(WorkspaceCache()), profile_allocations(device="cpu") as recorder:
        module.run(x)
        get_empty(3, torch.float32, cache_name="c")
    out, data = write_profile(recorder, tmp_path)
    jsonschema.validate(data, profiles.SCHEMA)
    jsonschema.Draft202012Validator.check_schema(profiles.SCHEMA)
    assert data["schema_version"] == profiles.SCHEMA_VERSION == 1
    assert data["summary"]["calls"] == sum(s["calls"] for s in data["sites"])
    loaded = profiles.load(str(out))
    assert loaded.to_dict() == data
    assert [s["bytes"] for s in data["sites"]] == sorted((s["bytes"] for s in data["sites"]), reverse=True)


def test_a_profile_with_added_fields_is_still_version_1(tmp_path):
    # The stated policy: an added optional field keeps the schema version, so a reader of
    # version 1 (the schema, `scan --profile`) takes a later writer's profile.
    import subprocess
    import sys

    module, path = load_module(tmp_path)
    with use_cache(WorkspaceCache()), profile_allocations(device="cpu") as recorder:
        module.run(torch.ones(8))
        get_empty(3, torch.float32, cache_name="c")
    out, data = write_profile(recorder, tmp_path)
    data["host"] = "node-7"
    data["summary"]["peak_bytes"] = 1
    for site in data["sites"]:
        site["thread"] = "main"
        if site["cache"] is not None:
            site["cache"]["pinned_bytes"] = 0
    out.write_text(json.dumps(data))
    jsonschema.validate(data, profiles.SCHEMA)
    joined = subprocess.run(
        [sys.executable, "-m", "allocaudit.auditor", "scan", "--no-cache", "--all-sizes", "--profile", str(out), path],
        capture_output=True, text=True,
    )
    assert joined.returncode == 1, joined.stdout + joined.stderr  # findings, read from the extended profile
    assert "user_code.py:14:5: AA101 [*] 1 call, 28 B" in joined.stdout


def test_profile_load_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(profiles.ProfileError, match="not JSON"):
        profiles.load(str(bad))
    bad.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(profiles.ProfileError, match="schema version 99"):
        profiles.load(str(bad))
    with pytest.raises(profiles.ProfileError, match="cannot read"):
        profiles.load(str(tmp_path / "missing.json"))


def test_text_table_and_rich_table(tmp_path):
    from rich.console import Console

    module, _ = load_module(tmp_path)
    x = torch.ones(8)
    with profile_allocations(device="cpu") as recorder:
        module.run(x)
    profile = recorder.profile()
    text = profiles.render_text(profile, limit=3)
    assert text.count("\n| ") == 3  # three rows below the header
    console = Console(record=True, width=200)
    profiles.render_rich(profile, console, limit=3)
    shown = console.export_text()
    assert "user_code.py:5" in shown and "(the 3 largest shown)" in shown


def finding(path, line, code="AA101", api="torch.empty", end_line=None):
    return Finding(
        path=path, line=line, col=5, end_line=end_line or line, end_col=20, code=code, message="m",
        api=api, function="run", fixable=True, fix_safety="safe",
    )


def test_join_ranks_by_bytes_lists_never_executed_and_missed(tmp_path):
    module, path = load_module(tmp_path)
    x = torch.ones(8)
    with profile_allocations(device="cpu") as recorder:
        module.run(x)
    profile = recorder.profile()
    scan = ScanResult(findings=[
        finding(path, 12, api="torch.zeros"),           # 20 bytes
        finding(path, 5),                                # 80 bytes over two calls
        finding(path, 13, end_line=14, api="torch.ones"),  # a span holding two sites: 48 + 28
        finding(path, 30),                               # never runs
        finding(path, 1, code="AA204", api=None),        # a cache rule: not an allocation site
    ])
    joined = join.join(scan, profile)
    assert [(m.finding.line, m.calls, m.bytes) for m in joined.executed] == [(5, 2, 80), (13, 2, 76), (12, 1, 20)]
    assert [f.line for f in joined.never_executed] == [30]
    assert [f.code for f in joined.other_findings] == ["AA204"]
    assert sorted(s.line for s in joined.missed) == [15, 16, 17, 18, 19]
    text = join.render_text(joined, "p.json", scanned=[str(tmp_path / "elsewhere")])
    assert "Findings never executed in the profiled run (1):" in text
    assert "[outside the scanned paths]" in text
    assert f"{path}:5:5: AA101 [*] 2 calls, 80 B" in text
    assert "called from" not in text.split("did not report")[1].split("\n")[1]  # line 15's stack is run's own
    data = json.loads(join.render_json(joined, "p.json"))
    assert data["executed"][0]["measured"]["bytes"] == 80 and len(data["missed"]) == 5


def test_join_shows_the_stack_of_a_missed_site(tmp_path):
    source = "import torch\n\ndef hidden(n):\n    return torch.empty(n)\n\ndef caller():\n    return hidden(3)\n"
    module, path = load_module(tmp_path, "hidden_code", source)
    with profile_allocations(device="cpu") as recorder:
        module.caller()
    text = join.render_text(join.join(ScanResult(), recorder.profile()), "p.json")
    assert f"{path}:4: 1 call, 12 B in hidden" in text
    assert f"called from {path}:7 in caller" in text


def test_join_skips_sites_that_only_asked_the_runtime(tmp_path):
    with use_cache(WorkspaceCache()), profile_allocations(device="cpu") as recorder:
        get_empty(3, torch.float32, cache_name="c")
    assert join.join(ScanResult(), recorder.profile()).missed == []
