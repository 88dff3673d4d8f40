"""Fix safety through the real CLI, as ruff has it: `fix` applies safe fixes, `--unsafe-fixes`
(or `unsafe-fixes = true`) the others too; `scan` marks safe fixes `[*]` and held-back unsafe
ones `[!]` and says how many `--unsafe-fixes` would add; JSON and SARIF carry the safety and
its reason. And the case the issue reported: a workspace helper called twice with both
results alive computes the same after `fix` as before, because the runtime never hands out
memory a live tensor uses."""

import json
import subprocess
import sys

import pytest

from allocaudit.auditor.analysis.fix_safety import RECORD_STREAM
from tests.rewrites.helpers import cli, moe_file

# Two calls of a workspace helper whose results are alive together (on the CPU: the runtime
# serves any device, and the scan sees an inherited device it would rewrite).
HELPER_TWICE = """\
import torch


class MoE:
    def get_workspace(self, x):
        ws = torch.zeros(x.shape[0], device=x.device)
        return ws

    def forward(self, x):
        gate = self.get_workspace(x)
        gate += 3.0
        up = self.get_workspace(x)
        up += 9.0
        return gate + up


print(MoE().forward(torch.ones(4)).sum().item())
"""

SAFE_AND_UNSAFE = """\
import torch


def forward(x, side):
    ws = torch.zeros(x.shape, device='cuda')
    kernel(x, ws)
    tmp = torch.empty(x.shape, device='cuda')
    tmp.record_stream(side)
    kernel(x, tmp)
"""
UNSAFE_REASON = RECORD_STREAM.format(where="")
CHOSEN = " [static: grows with the batch (dim `x.shape`)]"  # why `fix` chose the site (--show-fixes)


@pytest.fixture
def layer(tmp_path):
    return moe_file(tmp_path, SAFE_AND_UNSAFE)


def test_helper_called_twice_computes_the_same_after_fix(tmp_path):
    program = moe_file(tmp_path, HELPER_TWICE, "program.py")

    def run():
        done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == "48.0"  # (3 + 9) * 4
    scanned = cli("scan", "--no-cache", "--output-format", "json", str(program))
    [finding] = json.loads(scanned.stdout)["findings"]
    assert (finding["fixable"], finding["fix_safety"], finding["unsafe_reason"]) == (True, "safe", None)
    fixed = cli("fix", "--no-cache", str(program))
    assert fixed.stdout.strip() == "Fixed 1 site in 1 file (0 skipped)."
    assert "gate = self.get_workspace(x)" in program.read_text() and "get_empty(" in program.read_text()
    assert run() == "48.0"  # the second call got its own buffer, not the live first one


def test_scan_marks_safe_and_unsafe_fixes_and_counts_the_hidden_ones(layer):
    result = cli("scan", "--no-cache", str(layer))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{layer}:5:10: AA101 [*] `torch.zeros`")
    assert lines[1].startswith(f"{layer}:7:11: AA101 [!] `torch.empty`")
    assert lines[2] == (
        "Found 2 findings in 1 file scanned. [*] 1 fixable with `allocaudit fix` "
        "(1 hidden fix can be enabled with the `--unsafe-fixes` option)."
    )

    opted_in = cli("scan", "--no-cache", "--unsafe-fixes", str(layer)).stdout.splitlines()
    assert f"{layer}:7:11: AA101 [*] `torch.empty`" in opted_in[1]
    assert opted_in[2] == "Found 2 findings in 1 file scanned. [*] 2 fixable with `allocaudit fix`."

    opted_out = cli("scan", "--no-cache", "--no-unsafe-fixes", str(layer)).stdout.splitlines()
    assert opted_out[1].startswith(f"{layer}:7:11: AA101 `torch.empty`")  # no mark, no hint
    assert opted_out[2] == "Found 2 findings in 1 file scanned. [*] 1 fixable with `allocaudit fix`."

    stats = cli("scan", "--no-cache", "--statistics", str(layer)).stdout.splitlines()
    assert stats[0] == "     2\tAA101\tper-call-cuda-workspace\t[*] 1 fixable, [!] 1 unsafe"


def test_only_unsafe_fixes_say_no_fixes_are_available(tmp_path):
    path = tmp_path / "experts.py"
    path.write_text(SAFE_AND_UNSAFE.replace("    ws = torch.zeros(x.shape, device='cuda')\n    kernel(x, ws)\n", ""))
    lines = cli("scan", "--no-cache", str(path)).stdout.splitlines()
    assert lines[-1] == (
        "Found 1 finding in 1 file scanned. No fixes available (1 hidden fix can be enabled with the `--unsafe-fixes` option)."
    )


def test_json_and_sarif_carry_the_safety_and_its_reason(layer):
    jsonschema = pytest.importorskip("jsonschema")
    from allocaudit.auditor.formats.json_report import SCHEMA

    document = json.loads(cli("scan", "--no-cache", "--output-format", "json", str(layer)).stdout)
    jsonschema.validate(document, SCHEMA)
    assert document["schema_version"] == 1
    safety = [(f["fixable"], f["fix_safety"], f["unsafe_reason"]) for f in document["findings"]]
    assert safety == [(True, "safe", None), (True, "unsafe", UNSAFE_REASON)]
    assert (document["summary"]["fixable"], document["summary"]["unsafe_fixable"]) == (2, 1)

    sarif = json.loads(cli("scan", "--no-cache", "--output-format", "sarif", str(layer)).stdout)
    properties = [r["properties"] for r in sarif["runs"][0]["results"]]
    assert [(p["fix_safety"], p["unsafe_reason"]) for p in properties] == [("safe", None), ("unsafe", UNSAFE_REASON)]


def test_fix_applies_safe_fixes_and_unsafe_ones_only_when_asked(layer):
    check = cli("fix", "--check", "--no-cache", str(layer))
    assert check.returncode == 1 and "would rewrite `torch.zeros`" in check.stdout
    assert "would rewrite `torch.empty`" not in check.stdout

    result = cli("fix", "--no-cache", str(layer))
    assert result.returncode == 0, result.stderr
    text = layer.read_text()
    assert "ws = get_empty(" in text and "tmp = torch.empty(x.shape, device='cuda')" in text
    assert result.stdout.splitlines() == [
        f"{layer}:7:11: unsafe fix not applied: {UNSAFE_REASON}",  # where the scan found it
        "Fixed 1 site in 1 file (0 skipped). 1 hidden fix can be enabled with the `--unsafe-fixes` option.",
    ]
    # Nothing safe is left: --check passes although an unsafe fix is pending (a hook passes).
    assert cli("fix", "--check", "--no-cache", str(layer)).returncode == 0

    unsafe = cli("fix", "--no-cache", "--unsafe-fixes", "--show-fixes", str(layer))
    assert unsafe.returncode == 0, unsafe.stderr
    assert "tmp = get_empty(" in layer.read_text()
    assert unsafe.stdout.splitlines() == [
        f"{layer}:8:11: fixed `torch.empty` -> get_empty(cache_name='layer.forward.tmp') (unsafe fix: {UNSAFE_REASON}){CHOSEN}",
        "Fixed 1 site in 1 file (0 skipped).",
    ]


def test_show_fixes_lists_each_site_rewritten(layer):
    result = cli("fix", "--no-cache", "--show-fixes", str(layer))
    assert result.stdout.splitlines()[0] == f"{layer}:5:10: fixed `torch.zeros` -> get_empty(cache_name='layer.forward.ws'){CHOSEN}"


def test_unsafe_fixes_from_the_config_and_the_flag_over_it(tmp_path, layer):
    (tmp_path / "pyproject.toml").write_text("[tool.allocaudit]\nunsafe-fixes = true\n")
    held = cli("fix", "--no-cache", "--no-unsafe-fixes", "--diff", str(layer))
    assert "+    tmp = get_empty(" not in held.stdout and "+    ws = get_empty(" in held.stdout
    assert "hidden fix" not in held.stderr  # unsafe fixes turned off: no hint either
    result = cli("fix", "--no-cache", str(layer))
    assert result.stdout.strip() == "Fixed 2 sites in 1 file (0 skipped)."
    assert "tmp = get_empty(" in layer.read_text()
    settings = cli("scan", "--show-settings", str(layer)).stdout
    assert "unsafe-fixes = true" in settings
