"""`profile` and `stale-check` as commands (through `python -m allocaudit.auditor.profiling`, which
registers them as the `allocaudit` app does), and the stale-read check as an API."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

torch = pytest.importorskip("torch")

from allocaudit.auditor.profiling import profile as profiles  # noqa: E402
from allocaudit.auditor.profiling.stale import check  # noqa: E402
from allocaudit.runtime import get_empty  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "moe_layer.py"

SCRIPT = '''\
import sys
import torch

def main():
    print("args", sys.argv[1:], "name", __name__)
    t = torch.zeros(4, 4)
    print("to stderr", file=sys.stderr)
    if "--crash" in sys.argv:
        raise ValueError("planted failure")
    if "--exit" in sys.argv:
        sys.exit(int(sys.argv[-1]))
    return t

main()
'''


def run_cli(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "allocaudit.auditor.profiling", *args],
        cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(SCRIPT)
    return path


def test_profile_passes_output_and_argv_through_and_writes_the_profile(script, tmp_path):
    proc = run_cli("profile", "--device", "cpu", "--out", "p.json", "--", "python", "prog.py", "-x", "--flag", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "args ['-x', '--flag'] name __main__\n"
    assert "to stderr" in proc.stderr and "profile written to p.json" in proc.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    jsonschema.validate(data, profiles.SCHEMA)
    (site,) = data["sites"]
    assert (Path(site["path"]).name, site["line"], site["function"], site["bytes"]) == ("prog.py", 6, "main", 64)
    assert site["stack"] == [f"{script}:6 in main", f"{script}:14 in <module>"]
    assert data["command"] == ["python", "prog.py", "-x", "--flag"] and data["exit_code"] == 0


def test_profile_passes_the_exit_status_through(script, tmp_path):
    proc = run_cli("profile", "--device", "cpu", "--top", "0", "--", "python", "prog.py", "--exit", "7", cwd=tmp_path)
    assert proc.returncode == 7
    assert json.loads((tmp_path / "profile.json").read_text())["exit_code"] == 7


def test_a_crash_is_printed_as_python_prints_it_and_the_profile_is_still_written(script, tmp_path):
    proc = run_cli("profile", "--device", "cpu", "--out", "crash.json", "--", "python", "prog.py", "--crash", cwd=tmp_path)
    plain = subprocess.run([sys.executable, "prog.py", "--crash"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == plain.returncode == 1
    traceback = proc.stderr[proc.stderr.index("Traceback"):proc.stderr.index("ValueError: planted failure") + 27]
    assert traceback == plain.stderr[plain.stderr.index("Traceback"):].rstrip("\n")
    data = json.loads((tmp_path / "crash.json").read_text())
    assert data["exception"] == "ValueError: planted failure" and data["exit_code"] == 1
    assert data["summary"]["calls"] == 1


def test_profile_a_module_with_dash_m(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text("import sys, torch\nprint(sys.argv[1:])\ntorch.empty(8)\n")
    proc = run_cli("profile", "--device", "any", "--", "python", "-m", "pkg.job", "a", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "['a']\n"
    (site,) = json.loads((tmp_path / "profile.json").read_text())["sites"]
    assert site["path"].endswith(os.path.join("pkg", "job.py")) and site["line"] == 3


def test_default_device_cuda_without_a_gpu_says_so(script, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    proc = run_cli("profile", "--memory-snapshot", "snap.pickle", "--", "python", "prog.py", cwd=tmp_path)
    assert proc.returncode == 0
    assert "CUDA is not available" in proc.stderr
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["sites"] == [] and data["memory_snapshot"] is None
    assert any("snap.pickle not written" in note for note in data["notes"])
    assert not (tmp_path / "snap.pickle").exists()


def test_usage_errors_exit_2_before_running(tmp_path):
    proc = run_cli("profile", "--", "python", "missing.py", cwd=tmp_path)
    assert proc.returncode == 2 and "no such script: missing.py" in proc.stderr
    proc = run_cli("profile", "--", "python", "-X", "dev", "x.py", cwd=tmp_path)
    assert proc.returncode == 2 and "not supported" in proc.stderr
    assert not (tmp_path / "profile.json").exists()


def test_commands_module_imports_no_torch():
    # Nor matplotlib: the pictures import it when they are drawn.
    modules = ("commands", "join", "compare", "timeline", "plots", "profile")
    code = (
        f"import sys\nfor m in {modules!r}:\n    __import__('allocaudit.auditor.profiling.' + m)\n"
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stale_check_of_the_example_after_fix_is_safe(tmp_path):
    rewritten = tmp_path / "moe_layer.py"
    source = EXAMPLE.read_text()
    # What `allocaudit fix` makes of the two workspaces that the forward pass writes before reading.
    old = "workspace_0 = torch.empty((self.num_experts, m_max, max(self.hidden, self.intermediate)), dtype=dtype, device=device)"
    assert old in source
    source = source.replace(
        old,
        'workspace_0 = get_empty((self.num_experts, m_max, max(self.hidden, self.intermediate)), dtype, device=device, cache_name="ws0")',
    ).replace("import torch\n", "import torch\nfrom allocaudit.runtime import get_empty\n", 1)
    rewritten.write_text(source)
    proc = run_cli("stale-check", "--", "python", str(rewritten), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "non-zeroed get_empty slots used: ws0 (" in proc.stdout and "safe:" in proc.stdout


STALE_SCRIPT = '''\
import torch
from allocaudit.runtime import get_empty

def step(x):
    acc = get_empty(x.shape, x.dtype, cache_name="acc")         # was torch.zeros: read before written
    scratch = get_empty(x.shape, x.dtype, cache_name="scratch")  # written whole before read
    torch.mul(x, 2, out=scratch)
    acc += scratch
    return acc

print(step(torch.arange(4.0)).tolist())
'''


def test_stale_check_command_flags_a_stale_read_and_names_the_slot(tmp_path):
    (tmp_path / "stale.py").write_text(STALE_SCRIPT)
    proc = run_cli("stale-check", "--", "python", "stale.py", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "STALE READ" in proc.stdout and "stdout line 1" in proc.stdout
    assert "slot 'acc' on cpu is read before it is written; requested at" in proc.stdout
    assert "slot 'scratch'" not in proc.stdout
    proc = run_cli("stale-check", "--pattern", "0x11", "--pattern", "0x11", "--", "python", "stale.py", cwd=tmp_path)
    assert proc.returncode == 2 and "two different byte values" in proc.stderr


def test_stale_check_of_a_program_that_prints_nothing_is_inconclusive_not_safe(tmp_path):
    # The stale read is real, but nothing the program shows depends on it: only the exit
    # status was compared, which cannot tell.
    (tmp_path / "silent.py").write_text(STALE_SCRIPT.replace("print(step(torch.arange(4.0)).tolist())", "step(torch.arange(4.0))"))
    proc = run_cli("stale-check", "--", "python", "silent.py", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "inconclusive: the program printed nothing" in proc.stdout and "safe" not in proc.stdout


def test_a_bad_pattern_is_named_as_the_option_is_spelled(tmp_path):
    (tmp_path / "stale.py").write_text(STALE_SCRIPT)
    proc = run_cli("stale-check", "--pattern", "0x1FF", "--pattern", "0", "--", "python", "stale.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--pattern: '0x1FF' is not a byte value" in proc.stderr


def accumulate_into_stale(x):
    out = get_empty(x.shape, x.dtype, cache_name="acc")
    out += x
    return out


def overwrite_then_read(x):
    out = get_empty(x.shape, x.dtype, cache_name="tmp")
    out.copy_(x)
    out.mul_(2)
    return {"y": out, "n": int(out.numel())}


def test_stale_check_api_flags_a_read_before_write():
    x = torch.arange(8, dtype=torch.float32).reshape(4, 2)
    report = check(lambda: accumulate_into_stale(x))
    assert report.stale and report.conclusive
    assert [d.where for d in report.differences] == ["out"]
    assert "8 of 8 elements differ" in report.differences[0].detail
    assert [s.cache_name for s in report.implicated] == ["acc"]
    assert report.implicated[0].sites[0].endswith(f"{os.path.basename(__file__)}:{accumulate_into_stale.__code__.co_firstlineno + 1}")
    assert "STALE READ" in report.render()


def test_stale_check_api_passes_code_that_overwrites_first():
    x = torch.arange(6, dtype=torch.int32)
    report = check(lambda: overwrite_then_read(x))
    assert not report.stale and report.conclusive
    assert [s.cache_name for s in report.slots] == ["tmp"]
    assert "safe:" in report.render()


def test_stale_check_zeroed_hand_outs_are_not_filled_and_nondeterminism_is_inconclusive():
    report = check(lambda: get_empty(4, torch.float32, cache_name="z", zero=True).clone())
    assert report.slots == [] and not report.stale
    assert "nothing to check" in report.render()
    calls = []

    def drifting():
        calls.append(1)
        get_empty(2, torch.float32, cache_name="d").fill_(0)
        return torch.tensor([float(len(calls))])

    report = check(drifting)
    assert not report.conclusive and not report.stale and "inconclusive" in report.render()
    with pytest.raises(ValueError, match="two different byte values"):
        check(lambda: None, patterns=(1, 1))


def test_the_readme_registration_lines_work_on_a_typer_app():
    import typer
    from typer.testing import CliRunner

    from allocaudit.auditor.profiling.commands import PROGRAM_CONTEXT, profile_command, stale_check_command

    app = typer.Typer()
    app.command("profile", context_settings=PROGRAM_CONTEXT)(profile_command)
    app.command("stale-check", context_settings=PROGRAM_CONTEXT)(stale_check_command)
    result = CliRunner().invoke(app, ["profile", "--help"])
    assert result.exit_code == 0 and "--memory-snapshot" in result.output and "--device" in result.output
