"""Static scan throughput, side by side in one run: allocaudit, TorchFix and grep.

    python benchmarks/scan_speed.py --tree /path/to/vllm-0.33.0 --torchfix /path/to/venv/bin/torchfix

--tree is an unpacked source tree (the vLLM 0.33.0 sdist: `pip download --no-deps
--no-binary :all: vllm==0.33.0`, never committed). --torchfix is a `torchfix` executable
(TorchFix 0.7 lives in its own virtual environment: it pins an older libcst). TorchFix
over the whole tree takes many minutes; --torchfix-all opts into it.
Each command runs as a subprocess; times are wall-clock seconds of the whole command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FUSED_MOE = "vllm/model_executor/layers/fused_moe"


def timed(label: str, command: list[str], cwd: Path, rows: list) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = (proc.stdout.strip().splitlines() or [""])[-1][:90]
    rows.append((label, seconds, proc.returncode, tail))
    print(f"{label:<48} {seconds:8.2f} s  exit {proc.returncode}  {tail}", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, required=True)
    parser.add_argument("--torchfix", help="path of a torchfix executable (optional)")
    parser.add_argument("--torchfix-all", action="store_true", help="also run TorchFix over the whole tree (slow)")
    args = parser.parse_args()
    tree = args.tree.resolve()
    allocaudit = [sys.executable, "-m", "allocaudit.auditor", "scan"]
    cache = Path(tempfile.mkdtemp(prefix="allocaudit-bench-"))
    rows: list = []
    print(f"tree: {tree}  cores: {os.cpu_count()}  python: {sys.version.split()[0]}\n")
    try:
        grep = timed("grep -rlE 'torch\\.(zeros|empty)' (whole tree)", ["grep", "-rlE", r"torch\.(zeros|empty)", "."], tree, rows)
        cold_all = timed("allocaudit scan --all . (cold, empty cache)", [*allocaudit, "--all", "--cache-dir", str(cache), "--statistics", "."], tree, rows)
        warm_all = timed("allocaudit scan --all . (warm)", [*allocaudit, "--all", "--cache-dir", str(cache), "--statistics", "."], tree, rows)
        nocache_all = timed("allocaudit scan --all --no-cache .", [*allocaudit, "--all", "--no-cache", "--statistics", "."], tree, rows)
        cold_moe = timed(f"allocaudit scan --no-cache {FUSED_MOE}", [*allocaudit, "--no-cache", "--statistics", FUSED_MOE], tree, rows)
        tf_moe = tf_all = None
        if args.torchfix:
            tf_moe = timed(f"torchfix {FUSED_MOE}", [args.torchfix, FUSED_MOE], tree, rows)
            if args.torchfix_all:
                tf_all = timed("torchfix . (whole tree)", [args.torchfix, "."], tree, rows)
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    print("\nratios (same run):")
    print(f"  scan --all cold / grep            {cold_all / grep:8.1f}x")
    print(f"  scan --all warm / grep            {warm_all / grep:8.1f}x")
    print(f"  scan --all cold / no-cache        {cold_all / nocache_all:8.2f}")
    if tf_moe:
        print(f"  torchfix fused_moe / scan fused_moe  {tf_moe / cold_moe:8.1f}x")
    if tf_all:
        print(f"  torchfix all / scan --all cold    {tf_all / cold_all:8.1f}x")
    targets = [("scan --all cold <= 20 s", cold_all <= 20), ("scan --all warm <= 1 s", warm_all <= 1), ("fused_moe cold <= 2 s", cold_moe <= 2)]
    print("\ntargets: " + ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
