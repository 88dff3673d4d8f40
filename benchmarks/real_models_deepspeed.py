"""DeepSpeed's own MoE unit tests before and after `allocaudit fix` of `deepspeed/moe`, on the CPU.

    python benchmarks/real_models_deepspeed.py --deepspeed /path/to/DeepSpeed --python /path/to/venv/bin/python
                                               [--tests unit/v1/moe] [--out DIR]

Copies the DeepSpeed source tree twice into a temporary folder (nothing of it is kept), runs
``allocaudit fix --all-sizes --no-cache deepspeed/moe`` on one copy (every fixable site), and runs the same pytest selection in
each copy with the given interpreter (a virtual environment with torch and DeepSpeed's
requirements; DeepSpeed itself is imported from the copy through ``PYTHONPATH``):
``DS_ACCELERATOR=cpu`` (DeepSpeed's CPU accelerator, gloo), ``LOCAL_SIZE=4`` (the CPU accelerator
reports 4 devices, so the 2- and 4-rank distributed tests run as processes instead of being
skipped), ``-p no:randomly``. Both runs write JUnit XML; the outcome of every test id is
compared. A ``sitecustomize`` on ``PYTHONPATH`` (both runs) registers a runtime observer that
writes the cache names of the ``get_empty`` requests each process makes, so the report says
which rewritten sites the tests executed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

SITECUSTOMIZE = '''
import os
_dir = os.environ.get("ALLOCAUDIT_SITES_DIR")
if _dir:
    try:
        import allocaudit.runtime as _rt

        _seen = set()

        def _note(event, _seen=_seen):
            if event.name not in _seen:
                _seen.add(event.name)
                with open(os.path.join(_dir, "sites-%d.txt" % os.getpid()), "a") as f:
                    f.write("%s %s\\n" % (event.name, event.kind))

        _rt.add_observer(_note)
    except Exception:
        pass
'''


TESTS = ("unit/v1/moe/test_moe.py", "unit/v1/moe/test_autoep_unit.py", "unit/v1/moe/test_fused_expert_layout.py")
# fp16 engine tests: "ValueError: Type fp16 is not supported on your device." in deepspeed.initialize on
# the CPU accelerator, before any MoE code runs (the same in both runs; they only cost minutes of timeouts).
# (--deselect matches id prefixes: "::TestMoE" alone would also drop TestMoESingleton.)
DESELECT = ("unit/v1/moe/test_moe.py::TestSimpleMoE::test", "unit/v1/moe/test_moe.py::TestMoE::test",
            "unit/v1/moe/test_moe.py::TestPRMoE::test")


def outcomes(xml_path: Path) -> dict[str, str]:
    out = {}
    if not xml_path.exists():
        return out
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                state = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                if child.tag == "skipped":
                    state += ": " + (child.get("message") or "")[:100]
        out[test_id] = state
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deepspeed", type=Path, required=True, help="a DeepSpeed source tree (git clone)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with torch and DeepSpeed's requirements")
    parser.add_argument("--tests", nargs="+", default=list(TESTS), help="pytest paths, relative to tests/")
    parser.add_argument("--deselect", action="append", default=None,
                        help="test ids to leave out (default: the fp16 engine tests, which fail on the CPU "
                             "accelerator in deepspeed.initialize before any MoE code runs)")
    parser.add_argument("--out", type=Path, default=Path("real_models_deepspeed_out"))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per pytest run")
    args = parser.parse_args()
    if args.deselect is None:
        args.deselect = list(DESELECT)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="allocaudit-ds-"))
    commit = subprocess.run(["git", "-C", str(args.deepspeed), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    report: dict = {"deepspeed": str(args.deepspeed), "commit": commit, "tests": args.tests, "deselected": args.deselect,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": {}}
    site_dir = work / "site"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    trees = {}
    for variant in ("orig", "fix"):
        tree = work / variant
        shutil.copytree(args.deepspeed, tree, ignore=shutil.ignore_patterns(".git", "__pycache__"), symlinks=True)
        trees[variant] = tree
    fixed = subprocess.run([sys.executable, "-m", "allocaudit.auditor", "fix", "--all-sizes", "--no-cache", "deepspeed/moe"],
                           cwd=trees["fix"], capture_output=True, text=True)
    report["fix"] = {"exit": fixed.returncode, "output": (fixed.stdout + fixed.stderr)[-6000:]}
    diff = subprocess.run(["diff", "-ru", str(args.deepspeed / "deepspeed" / "moe"), str(trees["fix"] / "deepspeed" / "moe")],
                          capture_output=True, text=True).stdout
    report["fix"]["rewritten_lines"] = [line[1:].strip() for line in diff.splitlines()
                                        if line.startswith("+") and "get_empty(" in line and "import" not in line]
    for variant, tree in trees.items():
        sites = work / f"sites-{variant}"
        sites.mkdir()
        env = dict(os.environ, DS_ACCELERATOR="cpu", LOCAL_SIZE="4", ALLOCAUDIT_SITES_DIR=str(sites),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(tree), str(site_dir), os.environ.get("PYTHONPATH")])))
        xml = args.out / f"deepspeed-{variant}.xml"
        start = time.time()
        try:
            deselect = [a for d in args.deselect for a in ("--deselect", d)]
            proc = subprocess.run([args.python, "-m", "pytest", *args.tests, *deselect, "-q", "-p", "no:randomly",
                                   "-p", "no:cacheprovider", f"--junitxml={xml}"], cwd=tree / "tests", env=env,
                                  capture_output=True, text=True, timeout=args.timeout)
            code, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
        except subprocess.TimeoutExpired as exc:
            code, tail = "timeout", str(exc)[-3000:]
        names = Counter()
        for f in sites.glob("sites-*.txt"):
            for line in f.read_text().splitlines():
                names[line.split()[0]] += 1
        report["runs"][variant] = {"exit": code, "seconds": round(time.time() - start, 1), "tail": tail,
                                   "outcomes": outcomes(xml), "sites_executed": dict(names)}
        print(f"{variant}: exit {code} in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    a, b = report["runs"]["orig"]["outcomes"], report["runs"]["fix"]["outcomes"]
    changed = {t: [a.get(t), b.get(t)] for t in sorted(set(a) | set(b)) if a.get(t) != b.get(t)}
    report["changed"] = changed
    (args.out / "real_models_deepspeed.json").write_text(json.dumps(report, indent=1))
    count = lambda o: Counter(s.split(":")[0] for s in o.values())  # noqa: E731
    print(f"DeepSpeed {commit[:10]} {' '.join(args.tests)} on the CPU (DS_ACCELERATOR=cpu, LOCAL_SIZE=4); "
          f"deselected: {' '.join(args.deselect)}")
    print(f"fix of deepspeed/moe: exit {fixed.returncode}, {(fixed.stdout + fixed.stderr).strip().splitlines()[-1:]}")
    for line in report["fix"]["rewritten_lines"]:
        print(f"  rewritten: {line[:150]}")
    for variant in ("orig", "fix"):
        run = report["runs"][variant]
        print(f"{variant:<5} {dict(count(run['outcomes']))} ({run['seconds']} s); get_empty names executed: "
              f"{sorted(run['sites_executed']) or 'none'}")
    print(f"tests whose outcome changed: {len(changed)}")
    for t, (x, y) in list(changed.items())[:20]:
        print(f"  {t}: {x} -> {y}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
