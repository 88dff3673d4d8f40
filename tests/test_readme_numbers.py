"""README's numbers have one source: the results files `benchmarks/readme_numbers.py` writes.

Each quote below is a passage of README with its numbers taken from a results file
(whitespace and line breaks do not matter). A test fails when README no longer says it: a
number edited by hand, or a benchmark re-run whose numbers README does not show yet. For the
bundled example the numbers are measured again on every run, so a change of the code that
changes them fails too: then run `python benchmarks/readme_numbers.py example --write`
(with `--picture docs/example_compare.png`) and update README where it quotes them. A new
number in README about the example or the trees belongs here, with its quote.
"""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORKSPACE_SITE = "examples/moe_layer.py:48→49 MoELayer.get_workspace"
ACT_SITE = "examples/moe_layer.py:77→78 MoELayer.forward"

EXAMPLE_QUOTES = (
    "allocaudit scan examples/ # {aa101} AA101 findings, {fixable} marked [*]",
    "allocaudit fix examples/ --profile before.json --show-fixes # the {fixed} sites that ran -> get_empty, in place",
    "allocaudit unfix examples/ # back to torch calls, equivalent; {left_changed} lines keep fix's shape tuple",
    "`get_workspace`'s two workspaces (orange and green before) become the runtime's buffers (the slate band "
    "after): their sites allocate {workspace_after} of {workspace_before} times, the expert loop's `act` (line 77→78) "
    "{act_after} of {act_before}; in all {calls_before} → {calls_after} allocations, {mib_before} → {mib_after} MiB. "
    "The peak stays {peak} MiB",
    "{table}\n\n{summary}",
)
TREES_QUOTES = (
    "On vLLM 0.33.0's `fused_moe` ({vllm_moe} fixable sites) and SGLang 0.5.23's `srt/layers/moe` ({sglang_moe}) "
    "every fix is safe. Over the whole packages (`--all`), {vllm_unsafe} of vLLM's {vllm_all:,} fixable sites are unsafe:",
    "SGLang: {sglang_unsafe} of {sglang_all:,}.",
    "on vLLM 0.33.0's package (its wheel's `vllm/`, default scope), {hook_sites} sites in {hook_files} files",
)


def _words(text: str) -> str:
    return " ".join(text.split())


def _readme_says(quotes, values) -> list[str]:
    readme = _words((ROOT / "README.md").read_text())
    return [quote for quote in (_words(q.format(**values)) for q in quotes) if quote not in readme]


def _example_values(measured: dict) -> dict:
    compare = measured["compare"]
    by_site = compare["calls_by_site"]
    assert compare["peak_live_mib"][0] == compare["peak_live_mib"][1], "README says the peak stays"
    return {
        "aa101": measured["scan"]["by_code"]["AA101"],
        "fixable": measured["scan"]["fixable"],
        "fixed": measured["fix"]["sites"],
        "left_changed": measured["unfix"]["lines_left_changed"],
        "workspace_before": by_site[WORKSPACE_SITE][0],
        "workspace_after": by_site[WORKSPACE_SITE][1],
        "act_before": by_site[ACT_SITE][0],
        "act_after": by_site[ACT_SITE][1],
        "calls_before": compare["calls"][0],
        "calls_after": compare["calls"][1],
        "mib_before": compare["mib"][0],
        "mib_after": compare["mib"][1],
        "peak": compare["peak_live_mib"][0],
        "table": "\n".join(compare["table"]),
        "summary": "\n".join(compare["summary"]),
    }


def test_readme_quotes_the_recorded_example_numbers():
    recorded = json.loads((RESULTS / "example.json").read_text())
    assert _readme_says(EXAMPLE_QUOTES, _example_values(recorded)) == []


def test_readme_quotes_the_recorded_tree_numbers():
    trees = json.loads((RESULTS / "trees.json").read_text())
    vllm, sglang = trees["vllm"], trees["sglang"]
    assert vllm["moe_unsafe"] == sglang["moe_unsafe"] == 0, "README says every fix in the MoE folders is safe"
    values = {
        "vllm_moe": vllm["moe_fixable"], "sglang_moe": sglang["moe_fixable"],
        "vllm_unsafe": vllm["all_unsafe"], "vllm_all": vllm["all_fixable"],
        "sglang_unsafe": sglang["all_unsafe"], "sglang_all": sglang["all_fixable"],
        "hook_sites": vllm["fix_default_scope"]["sites"], "hook_files": vllm["fix_default_scope"]["files"],
    }
    assert _readme_says(TREES_QUOTES, values) == []


def test_the_example_still_gives_the_recorded_numbers():
    pytest.importorskip("torch")  # the example runs under the profiler
    spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "benchmarks" / "readme_numbers.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    recorded = json.loads((RESULTS / "example.json").read_text())
    assert benchmark.example() == recorded, "run `python benchmarks/readme_numbers.py example --write` and update README"
