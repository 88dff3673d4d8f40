"""The pictures: the numbers they are drawn from, the PNGs of the bundled example, the commands,
and what happens without matplotlib. CPU only."""

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from allocaudit.auditor.profiling import compare as comparing  # noqa: E402
from allocaudit.auditor.profiling import plots  # noqa: E402
from allocaudit.auditor.profiling import profile as profiles  # noqa: E402
from allocaudit.auditor.profiling.runner import run_profiled  # noqa: E402
from allocaudit.auditor.profiling.timeline import CACHE_BUSY, CACHE_IDLE, OTHER, NoTimeline, memory_series  # noqa: E402
from allocaudit.runtime import WorkspaceCache, use_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "moe_layer.py"
MIB = 2**20


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The bundled example profiled on the CPU as written, then after `allocaudit fix`, in one folder."""
    work = tmp_path_factory.mktemp("example")
    script = work / "moe_layer.py"
    shutil.copy(EXAMPLE, script)
    runs = {}
    for name in ("before", "after"):
        if name == "after":
            fixed = subprocess.run(
                [sys.executable, "-m", "allocaudit.auditor", "fix", "--no-cache", str(work)], capture_output=True, text=True,
            )
            assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        # A cache of its own: the module default may hold buffers of other tests.
        # The example picks CUDA when it can; the pictures asserted here are those of the CPU.
        with use_cache(WorkspaceCache(name)), mock.patch("torch.cuda.is_available", return_value=False):
            code, runs[name] = run_profiled(["python", str(script)], out=str(work / f"{name}.json"), device="cpu")
        assert code == 0
        runs[name + "_line"] = line_of(script, "workspace_0 = ")
    return work, runs


def site_at(profile, line):
    return next(s for s in profile.sites if s.line == line)


def test_the_memory_series_of_the_example_before_fix(example):
    _, runs = example
    before = runs["before"]
    series = memory_series(before, top=4)
    ws0 = site_at(before, runs["before_line"])
    assert [b.kind for b in series.bands] == ["site"] * 4 + ["other"]
    labels = [b.label for b in series.bands]
    assert labels[-1] == OTHER
    assert f"moe_layer.py:{ws0.line} MoELayer.get_workspace" in " ".join(labels)
    # The named sites are those with the largest live bytes; each band's top is its site's peak.
    for band in series.bands[:-1]:
        assert max(band.values) == band.site.peak_live_bytes
    assert max(series.band(next(x for x in labels if f":{ws0.line} " in x)).values) == 2 * MIB  # 256 tokens
    # Every event is a point here (fewer than MAX_POINTS); the stack's top is the profile's peak.
    assert series.x == tuple(range(before.timeline.total_events))
    assert max(series.totals()) == series.peak_bytes == before.peak_live_bytes
    assert series.totals()[series.x.index(series.peak_x)] == series.peak_bytes
    assert series.captures == ()


def test_the_memory_series_of_the_example_after_fix(example):
    _, runs = example
    after = runs["after"]
    series = memory_series(after)
    kinds = [b.kind for b in series.bands]
    assert kinds[:2] == ["cache busy", "cache idle"]
    busy, idle = series.band(CACHE_BUSY).values, series.band(CACHE_IDLE).values
    assert max(b + i for b, i in zip(busy, idle)) == after.peak_cache_held_bytes > 0
    # The rewritten workspaces allocate only the cache's buffers: no site band of their own.
    ws0 = site_at(after, runs["after_line"])
    assert ws0.cache is not None and ws0.peak_live_bytes == 0
    assert all(b.site is not ws0 for b in series.bands)
    assert max(series.totals()) == after.peak_live_bytes


def test_sampling_many_events_keeps_the_highest_point(example):
    _, runs = example
    before = runs["before"]
    full = memory_series(before)
    sampled = memory_series(before, max_points=10)
    assert len(sampled.x) <= 10 and sampled.peak_bytes == full.peak_bytes
    assert max(sampled.totals()) == full.peak_bytes
    # Each point is the highest of its stretch of events.
    stride = -(-len(full.x) // 10)
    for i, x in enumerate(sampled.x):
        assert sampled.totals()[i] == max(full.totals()[i * stride:(i + 1) * stride])
        assert i * stride <= x < (i + 1) * stride


def test_the_comparison_of_the_example(example):
    _, runs = example
    before, after = runs["before"], runs["after"]
    result = comparing.compare(before, after, "before.json", "after.json")
    row = next(r for r in result.rows if r.before is not None and r.before.line == runs["before_line"])
    assert row.after is not None and row.after.line == runs["after_line"] == runs["before_line"] + 1
    assert result.matched == len(before.sites) == len(after.sites)
    bars = comparing.chart(result, top=5)
    i = bars.labels.index(row.label)
    assert bars.calls_before[i] == 3 and bars.calls_after[i] < 3  # a miss and a growth, then hits
    assert bars.mib_before[i] == 4.0 and bars.mib_after[i] < bars.mib_before[i]
    assert bars.total_mib == (before.total_bytes / MIB, after.total_bytes / MIB)
    assert bars.total_mib[1] < bars.total_mib[0]
    assert bars.peak_mib == (before.peak_live_bytes / MIB, after.peak_live_bytes / MIB)
    first, second = comparing.timeline_pair(result)
    named = {b.label for b in first.bands if b.kind == "site"}
    assert named == {b.label for b in second.bands if b.kind == "site"}  # the same sites, one color each
    assert row.label in named


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_the_pictures_of_the_example(example):
    work, runs = example
    plots.plot_memory(memory_series(runs["before"]), str(work / "memory.png"))
    assert png_size(work / "memory.png") == (1200, 550)
    result = comparing.compare(runs["before"], runs["after"], "before.json", "after.json")
    plots.plot_compare(comparing.chart(result), str(work / "compare.png"), *comparing.timeline_pair(result))
    width, height = png_size(work / "compare.png")
    assert width == 1500 and 700 <= height <= 1200
    plots.plot_compare(comparing.chart(result), str(work / "bars.png"))  # profiles without timelines: bars only
    assert png_size(work / "bars.png")[1] < height
    for name in ("memory.png", "compare.png", "bars.png"):
        assert 10_000 < (work / name).stat().st_size < 300_000


def run_cli(*args, cwd, prelude=""):
    """The `allocaudit` CLI in a fresh interpreter; ``prelude`` runs first (to hide modules)."""
    code = f"import sys\n{prelude}\nfrom allocaudit.auditor.app.cli import main\nsys.argv = ['allocaudit', *sys.argv[1:]]\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


HIDE_MATPLOTLIB = "sys.modules['matplotlib'] = None"
HIDE_TORCH_AND_MATPLOTLIB = "sys.modules['matplotlib'] = None; sys.modules['torch'] = None"


def test_compare_and_plot_commands(example):
    work, _ = example
    proc = run_cli("compare", "before.json", "after.json", "--plot", "cmp.png", "--format", "markdown", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("| site | calls before |") and "sites matched by file, function" in proc.stdout
    assert "comparison picture written to cmp.png" in proc.stderr and png_size(work / "cmp.png")[0] == 1500
    proc = run_cli("plot", "after.json", "-o", "after.png", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert png_size(work / "after.png") == (1200, 550)
    data = json.loads((work / "after.json").read_text())
    del data["timeline"]
    (work / "old.json").write_text(json.dumps(data))
    proc = run_cli("plot", "old.json", "-o", "old.png", cwd=work)
    assert proc.returncode == 2 and "has no timeline" in proc.stderr
    proc = run_cli("compare", "before.json", "missing.json", cwd=work)
    assert proc.returncode == 2 and "cannot read profile missing.json" in proc.stderr


def test_compare_needs_neither_torch_nor_matplotlib_without_plot(example):
    work, _ = example
    proc = run_cli("compare", "before.json", "after.json", cwd=work, prelude=HIDE_TORCH_AND_MATPLOTLIB)
    assert proc.returncode == 0, proc.stderr
    assert "allocated " in proc.stdout and "peak live " in proc.stdout


def test_without_matplotlib_a_picture_is_a_usage_error_that_names_the_extra(example, tmp_path, monkeypatch):
    work, _ = example
    hint = "pip install 'allocaudit[plot]'"
    proc = run_cli("compare", "before.json", "after.json", "--plot", "no.png", cwd=work, prelude=HIDE_MATPLOTLIB)
    assert proc.returncode == 2 and hint in proc.stderr and not (work / "no.png").exists()
    assert proc.stdout == ""  # nothing printed before the error
    # profile --plot fails before the program runs (and before torch is imported).
    (tmp_path / "prog.py").write_text("open('ran', 'w').close()\n")
    proc = run_cli(
        "profile", "--device", "cpu", "--plot", "m.png", "--", "python", "prog.py", cwd=tmp_path, prelude=HIDE_TORCH_AND_MATPLOTLIB,
    )
    assert proc.returncode == 2 and hint in proc.stderr
    assert not (tmp_path / "ran").exists() and not (tmp_path / "profile.json").exists()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(plots.PlotUnavailable, match=r"pip install 'allocaudit\[plot\]'"):
        plots.require_matplotlib()


def test_profile_plot_end_to_end(tmp_path):
    (tmp_path / "prog.py").write_text(
        "import torch\nkeep = torch.zeros(1024)\nfor n in (1, 2, 3):\n    tmp = torch.empty(4096 * n)\n"
    )
    proc = run_cli("profile", "--device", "cpu", "--top", "0", "--plot", "m.png", "--", "python", "prog.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "memory picture written to m.png" in proc.stderr
    assert png_size(tmp_path / "m.png") == (1200, 550)
    profile = profiles.load(str(tmp_path / "profile.json"))
    series = memory_series(profile)
    assert [b.label.rsplit("/", 1)[-1] for b in series.bands] == ["prog.py:4 <module>", "prog.py:2 <module>"]
    # tmp is replaced: each new one is allocated before the old one dies.
    assert series.peak_bytes == profile.peak_live_bytes == 4096 + 4 * (4096 * 2 + 4096 * 3)


def test_a_profile_without_a_timeline_has_no_series():
    profile = profiles.Profile(
        command=[], device_filter="cpu", torch_version="2", devices_seen=[], exit_code=0, exception=None,
        duration_s=0.0, sites=[],
    )
    with pytest.raises(NoTimeline):
        memory_series(profile)
