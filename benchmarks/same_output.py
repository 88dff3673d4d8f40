"""Does a refactoring change what allocaudit prints? Record its outputs, then compare.

For each target, and for the bundled example, runs (without the cache, from the target's
root so that paths read the same in every run):

    allocaudit scan --no-cache TARGET
    allocaudit scan --no-cache --output-format json TARGET
    allocaudit scan --no-cache --statistics TARGET
    allocaudit fix --diff --no-cache TARGET

and writes each command's stdout, stderr and exit status into one file of OUT. With
``--against DIR`` (an earlier OUT), it then says which outputs differ, byte for byte, and
exits 1 if any does. `fix --diff` writes nothing, so the trees are read in place.

    python benchmarks/same_output.py --out /tmp/before \\
        /work/ext/vllm-src:vllm/model_executor/layers/fused_moe \\
        /work/ext/sglang-src:sglang/srt/layers/moe /work/ext/transformers-src:transformers
    (change the code)
    python benchmarks/same_output.py --out /tmp/after --against /tmp/before ROOT:TARGET ...
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE_ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "scan.txt": ["scan", "--no-cache"],
    "scan.json": ["scan", "--no-cache", "--output-format", "json"],
    "statistics.txt": ["scan", "--no-cache", "--statistics"],
    "fix-diff.txt": ["fix", "--diff", "--no-cache"],
}


def run(root: Path, target: str, args: list[str]) -> bytes:
    proc = subprocess.run(["allocaudit", *args, target], cwd=root, capture_output=True)
    return b"exit %d\n-- stdout\n%s\n-- stderr\n%s" % (proc.returncode, proc.stdout, proc.stderr)


def slug(root: Path, target: str) -> str:
    where = "" if root == EXAMPLE_ROOT else f"{root.name}/"  # the example's name is the same in every checkout
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{where}{target}").strip("_")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="ROOT:TARGET, the folder to run in and the path to scan from there")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the outputs into")
    parser.add_argument("--against", type=Path, help="an earlier --out folder to compare with")
    options = parser.parse_args()

    pairs = [(EXAMPLE_ROOT, "examples")]
    for spec in options.targets:
        root, _, target = spec.partition(":")
        pairs.append((Path(root), target or "."))
    options.out.mkdir(parents=True, exist_ok=True)
    differ = []
    for root, target in pairs:
        for name, args in COMMANDS.items():
            output = options.out / f"{slug(root, target)}.{name}"
            output.write_bytes(run(root, target, args))
            if options.against is None:
                print(f"wrote {output}", flush=True)
                continue
            before = options.against / output.name
            same = before.exists() and before.read_bytes() == output.read_bytes()
            print(f"{'same' if same else 'DIFFERENT'}  {output.name}", flush=True)
            if not same:
                differ.append(output.name)
                old = before.read_text(errors="replace").splitlines() if before.exists() else []
                diff = difflib.unified_diff(old, output.read_text(errors="replace").splitlines(), str(before), str(output), lineterm="", n=1)
                print("\n".join(list(diff)[:40]))
    if options.against is not None:
        print(f"{len(differ)} of {len(pairs) * len(COMMANDS)} outputs differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
