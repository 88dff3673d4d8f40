"""`allocaudit fix` over source trees, as a new user would run it, then checks.

For each tree: copy it, run `allocaudit fix --all --all-sizes` (every fixable site; timed, no cache; `--default-scope`
leaves out `--all`, `--target` names the folder of the copy to run on, e.g. the MoE layers),
compile every file it wrote, run `fix` again (must change nothing), run `allocaudit unfix`
(timed) and compare each restored file with the original (equal ASTs after the normal form
of `allocaudit.rewrites.equivalence`; identical ASTs counted too). Prints files and sites
rewritten, sites skipped by reason, and the times; `--sites FILE` also writes the AA101
and AA104 findings of the untouched copy (the scan `fix` runs, as JSON), to compare two versions.
Dead allocations that `fix` deletes (AA104, listed first by `fix --check`) are left out of
the original before it is compared with what `unfix` restored.

    python benchmarks/codemod_trees.py /work/ext/vllm-0.33.0 --work /work/ext/codemod-run
    python benchmarks/codemod_trees.py /work/ext/vllm --target vllm/model_executor/layers/fused_moe \
        --default-scope --work /work/ext/codemod-run --sites fused_moe.json
"""

from __future__ import annotations

import argparse
import ast
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from allocaudit.rewrites.equivalence import equivalent

ROW = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): skipped: (?P<reason>.*)$")
PENDING = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): would rewrite (?P<what>.*)$")
SUMMARY = re.compile(r"^(?:Fixed|Restored) (?P<sites>\d+) sites? in (?P<files>\d+) files?")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*.py") if p.is_file()}


def allocaudit(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(["allocaudit", *args], capture_output=True, text=True)
    return proc, time.perf_counter() - start


def reason_group(reason: str) -> str:
    """Reasons name functions and variables; group them by their wording."""
    return re.sub(r"`[^`]*`", "`…`", reason)


def run_tree(source: Path, work: Path, exclude: list[str], target: str = "", scope: tuple[str, ...] = ("--all",), sites: Path | None = None) -> dict:
    tree = work / source.name
    if tree.exists():
        shutil.rmtree(tree)
    shutil.copytree(source, tree, symlinks=True)
    if exclude:  # what a user would write in the tree's pyproject.toml
        globs = ", ".join(f'"{g}"' for g in exclude)
        (tree / "pyproject.toml").write_text(f"[tool.allocaudit]\nextend-exclude = [{globs}]\n")
    before = snapshot(tree)
    where = str(tree / target) if target else str(tree)
    if sites is not None:
        listing, _ = allocaudit("scan", *scope, "--all-sizes", "--no-cache", "--select", "AA101,AA104", "--format", "json", "--exit-zero", where)
        sites.write_text(listing.stdout)

    # The dead allocations fix deletes (AA104), by file: unfix does not bring them back.
    # Every fixable site, whatever its size: this checks how the codemod writes, not which sites pay.
    check, _ = allocaudit("fix", *scope, "--all-sizes", "--no-cache", "--check", where)
    deleted: dict[str, list[int]] = {}
    for m in map(PENDING.match, check.stdout.splitlines()):
        if m and m["what"].endswith("deleted: never read"):
            deleted.setdefault(os.path.abspath(m["path"]), []).append(int(m["line"]))

    fix, fix_s = allocaudit("fix", *scope, "--all-sizes", "--no-cache", where)
    print(f"{source.name}: fix --all took {fix_s:.1f} s", file=sys.stderr, flush=True)
    summary = next((m for m in map(SUMMARY.match, fix.stdout.splitlines()) if m), None)
    skipped = Counter(reason_group(m["reason"]) for m in map(ROW.match, fix.stdout.splitlines()) if m)
    errors = [line for line in fix.stdout.splitlines() if ": error: " in line]
    after = snapshot(tree)
    changed = sorted(p for p in before if after.get(p) != before[p])

    compile_failures = []
    with tempfile.TemporaryDirectory() as scratch:
        for number, path in enumerate(changed):
            try:
                py_compile.compile(path, cfile=os.path.join(scratch, f"{number}.pyc"), doraise=True)
            except py_compile.PyCompileError as exc:
                compile_failures.append(f"{path}: {exc.msg}")

    again, again_s = allocaudit("fix", *scope, "--all-sizes", "--no-cache", where)
    second_changed = sorted(p for p, data in snapshot(tree).items() if after.get(p) != data)

    unfix, unfix_s = allocaudit("unfix", *scope, where)
    unfix_skipped = Counter(reason_group(m["reason"]) for m in map(ROW.match, unfix.stdout.splitlines()) if m)
    restored = snapshot(tree)
    identical_ast = equivalent_files = 0
    differences = []
    for path in changed:
        original, back = before[path].decode("utf-8", "surrogateescape"), restored[path].decode("utf-8", "surrogateescape")
        if ast.dump(ast.parse(original)) == ast.dump(ast.parse(back)):
            identical_ast += 1
        if equivalent(original, back, deleted.get(os.path.abspath(path), ())):
            equivalent_files += 1
        else:
            differences.append(path)
    untouched_changed = [p for p in before if p not in changed and restored.get(p) != before[p]]
    return {
        "tree": str(source),
        "python_files": len(before),
        "fix_exit": fix.returncode,
        "files_rewritten": int(summary["files"]) if summary else None,
        "sites_rewritten": int(summary["sites"]) if summary else None,
        "files_changed_on_disk": len(changed),
        "sites_skipped": sum(skipped.values()),
        "skipped_by_reason": skipped.most_common(),
        "error_rows": errors,
        "fix_seconds": fix_s,
        "compile_failures": compile_failures,
        "second_fix_exit": again.returncode,
        "second_fix_changed_files": second_changed,
        "second_fix_seconds": again_s,
        "unfix_exit": unfix.returncode,
        "unfix_seconds": unfix_s,
        "unfix_skipped_by_reason": unfix_skipped.most_common(),
        "unfix_identical_ast": identical_ast,
        "unfix_equivalent": equivalent_files,
        "unfix_differences": differences,
        "unfix_touched_other_files": untouched_changed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="folder for the copies (rewritten in place)")
    parser.add_argument("--exclude", action="append", default=[], help="glob to leave out (written to the copy's pyproject.toml)")
    parser.add_argument("--target", default="", help="folder inside each tree to run on (default: the whole tree)")
    parser.add_argument("--default-scope", action="store_true", help="run without --all: the default scope")
    parser.add_argument("--sites", type=Path, help="write the AA101 and AA104 findings of the untouched copy here (JSON; one tree)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    scope = () if args.default_scope else ("--all",)
    for source in args.trees:
        r = run_tree(source.resolve(), args.work, args.exclude, args.target, scope, args.sites)
        print(f"== {r['tree']} ({r['python_files']} Python files)")
        print(f"fix {' '.join(scope)}: exit {r['fix_exit']}, {r['sites_rewritten']} sites rewritten in {r['files_rewritten']} files "
              f"({r['files_changed_on_disk']} changed on disk), {r['sites_skipped']} skipped, {r['fix_seconds']:.1f} s")
        for reason, count in r["skipped_by_reason"]:
            print(f"  {count:5d}  skipped: {reason}")
        for row in r["error_rows"]:
            print(f"  error row: {row}")
        print(f"compile: {len(r['compile_failures'])} of {r['files_changed_on_disk']} written files fail")
        for failure in r["compile_failures"]:
            print(f"  {failure}")
        print(f"second fix: exit {r['second_fix_exit']}, {len(r['second_fix_changed_files'])} files changed, {r['second_fix_seconds']:.1f} s")
        print(f"unfix {' '.join(scope)}: exit {r['unfix_exit']}, {r['unfix_seconds']:.1f} s; "
              f"{r['unfix_equivalent']} of {r['files_changed_on_disk']} files equivalent to the original, "
              f"{r['unfix_identical_ast']} with an identical AST; other files touched: {len(r['unfix_touched_other_files'])}")
        for reason, count in r["unfix_skipped_by_reason"]:
            print(f"  {count:5d}  unfix skipped: {reason}")
        for path in r["unfix_differences"]:
            print(f"  not equivalent: {path}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
