"""The numbers README quotes, measured by the commands README names, into one results file each.

    python benchmarks/readme_numbers.py example [--write] [--picture docs/example_compare.png]
    python benchmarks/readme_numbers.py trees --vllm ROOT --sglang ROOT [--write]

``example``: the bundled example, run as README's end-to-end section runs it, in a temporary
copy of ``examples/`` on the CPU (CUDA hidden): `scan`, `profile --device cpu` before and
after `fix`, `compare`, `unfix` and how many lines it leaves different from the original.
tests/test_readme_numbers.py measures the same on every test run and compares with
``benchmarks/results/example.json``, and checks that README quotes that file.

``trees``: vLLM's and SGLang's source trees (ROOT holds the package folder: ``vllm/``,
``sglang/``), not in the repository: the MoE folders' fixable and unsafe sites (default
scope), the whole packages' (`--all`), and the sites `fix` rewrites in vLLM's default scope
(what the pre-commit fix hook rewrites). Into ``benchmarks/results/trees.json``; the test
checks README against it.

Without ``--write`` the measured numbers are printed next to the recorded ones, and the exit
status is 1 when they differ.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIXED = re.compile(r"^(?:Would fix|Fixed|Restored|Would restore) (\d+) sites? in (\d+) files?", re.M)
MOE_FOLDERS = {"vllm": "vllm/model_executor/layers/fused_moe", "sglang": "sglang/srt/layers/moe"}


def allocaudit(*args: str, cwd: Path, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "allocaudit.auditor", *args], cwd=cwd, env=env, capture_output=True, text=True)


def sites_and_files(output: str) -> tuple[int, int]:
    found = FIXED.search(output)
    if found is None:
        raise SystemExit(f"no `N sites in M files` line in:\n{output}")
    return int(found.group(1)), int(found.group(2))


def example(picture: Optional[Path] = None) -> dict:
    """The example's numbers (see the module's docstring); ``picture``: also draw
    `compare --plot` there."""
    from allocaudit.auditor.profiling import compare
    from allocaudit.auditor.profiling.profile import load

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "examples", work / "examples")
        original = (work / "examples" / "moe_layer.py").read_text()
        cpu = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        scanned = json.loads(allocaudit("scan", "--no-cache", "--output-format", "json", "examples/", cwd=work).stdout)["summary"]
        profile = ("profile", "--device", "cpu", "--out")
        before = allocaudit(*profile, "before.json", "--", sys.executable, "examples/moe_layer.py", cwd=work, env=cpu)
        fixed = allocaudit("fix", "--no-cache", "examples/", cwd=work)
        after = allocaudit(*profile, "after.json", "--", sys.executable, "examples/moe_layer.py", cwd=work, env=cpu)
        for step in (before, fixed, after):
            if step.returncode != 0:
                raise SystemExit(f"{' '.join(map(str, step.args))} exited {step.returncode}:\n{step.stdout}{step.stderr}")
        result = compare.compare(load(str(work / "before.json")), load(str(work / "after.json")), "before.json", "after.json")
        unfixed = allocaudit("unfix", "examples/", cwd=work)
        restored = (work / "examples" / "moe_layer.py").read_text()
        if picture is not None:
            from allocaudit.auditor.profiling.plots import plot_compare

            plot_compare(compare.chart(result), str(picture), *compare.timeline_pair(result))
    changed = [line for line in difflib.ndiff(original.splitlines(), restored.splitlines()) if line.startswith("+ ")]
    calls = {row.label: row.calls() for row in result.rows}
    totals = result.totals()
    return {
        "scan": {"findings": scanned["findings"], "fixable": scanned["fixable"], "by_code": scanned["by_code"]},
        "fix": dict(zip(("sites", "files"), sites_and_files(fixed.stdout))),
        "unfix": {**dict(zip(("sites", "files"), sites_and_files(unfixed.stdout))), "lines_left_changed": len(changed)},
        "compare": {
            "summary": compare.summary_lines(result),
            "calls": list(totals["calls"]),
            "mib": [round(n / 2**20, 1) for n in totals["bytes"]],
            "peak_live_mib": [round(n / 2**20, 1) for n in totals["peak_live"]],
            "table": compare.render_markdown(result, limit=8).split("\n\n")[0].splitlines(),
            "calls_by_site": {label: list(pair) for label, pair in calls.items()},
        },
    }


def _summary(root: Path, *args: str) -> dict:
    report = allocaudit("scan", "--no-cache", "--output-format", "json", *args, cwd=root)
    return json.loads(report.stdout)


def trees(roots: dict[str, Path]) -> dict:
    """The trees' numbers (see the module's docstring)."""
    found: dict = {"date": date.today().isoformat()}
    for name, root in roots.items():
        folder = _summary(root, MOE_FOLDERS[name])
        whole = _summary(root, "--all", name)["summary"]
        found[name] = {
            "moe_folder": MOE_FOLDERS[name],
            "moe_fixable": folder["summary"]["fixable"],
            "moe_unsafe": folder["summary"]["unsafe_fixable"],
            "all_fixable": whole["fixable"],
            "all_unsafe": whole["unsafe_fixable"],
        }
    if "vllm" in roots:
        checked = allocaudit("fix", "--check", "--no-cache", ".", cwd=roots["vllm"])
        found["vllm"]["fix_default_scope"] = dict(zip(("sites", "files"), sites_and_files(checked.stdout)))
    return found


def report(measured: dict, results: Path, write: bool) -> int:
    if write:
        RESULTS.mkdir(exist_ok=True)
        results.write_text(json.dumps(measured, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {results}")
        return 0
    recorded = json.loads(results.read_text()) if results.exists() else {}
    recorded.pop("date", None)
    measured = {k: v for k, v in measured.items() if k != "date"}
    print(json.dumps(measured, indent=1, ensure_ascii=False))
    if measured == recorded:
        print(f"the same as {results}")
        return 0
    print(f"DIFFERENT from {results}: run again with --write, and update README where it quotes them")
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("example", "trees"))
    parser.add_argument("--write", action="store_true", help="write the results file")
    parser.add_argument("--picture", type=Path, help="example: draw `compare --plot` there too")
    parser.add_argument("--vllm", type=Path, help="trees: the folder that holds vllm/")
    parser.add_argument("--sglang", type=Path, help="trees: the folder that holds sglang/")
    options = parser.parse_args()
    if options.what == "example":
        return report(example(options.picture), RESULTS / "example.json", options.write)
    roots = {name: path for name, path in (("vllm", options.vllm), ("sglang", options.sglang)) if path is not None}
    if not roots:
        parser.error("trees needs --vllm and/or --sglang")
    return report(trees(roots), RESULTS / "trees.json", options.write)


if __name__ == "__main__":
    sys.exit(main())
