"""The end-to-end story on the bundled example, on a GPU: profile before `fix`, after `fix`, with CUDA graphs.

    python benchmarks/example_end_to_end.py [--tokens 256,128,64,32,16,8,4,1] [--json OUT] [--pictures DIR]

Copies `examples/moe_layer.py` into a temporary folder twice, runs `allocaudit fix` on one copy
(the "after" variant; needs libcst), and measures each variant in a fresh process:

- eager: the example's own forward once per token count, under the allocation tracer
  (`profile_allocations(device="cuda")`): CUDA bytes allocated by factory calls per step, and
  get_empty hits/misses;
- graphs: one CUDA graph per token count, captured largest first, each in its own memory pool
  (what `torch.cuda.graph` does by default). The example's forward calls `torch.nonzero`, which
  waits for the GPU and cannot be captured, so the captured step is the router, the layer's own
  `get_workspace` (three of the five sites `fix` rewrites) and a dense expert pass over those
  workspaces. Reported: bytes the tracer saw allocated during capture, and the memory reserved
  by the graphs' pools;
- peak reserved: `torch.cuda.max_memory_reserved()` over the whole flow, above what the process
  held before it.

Every replay is checked against the same step run eagerly.

With ``--pictures DIR`` the whole flow of each variant also runs under one more tracer, whose
profile is written to ``DIR/before.json`` and ``DIR/after.json`` with its memory picture
(``before.png``, ``after.png``: the eager steps, then the captures, shaded); then the two are
compared as `allocaudit compare` does: ``DIR/compare.png`` and the table ``DIR/compare.md``.
The tracer holds no tensor, so the measures above do not change with it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "moe_layer.py"
SIZES = dict(hidden=2048, intermediate=1024, num_experts=16, top_k=2)


def prepare(workdir: Path) -> dict[str, Path]:
    """The two variants of the example: as written, and as `allocaudit fix` rewrites it."""
    variants = {}
    for name in ("before", "after"):
        # <variant>/examples/moe_layer.py: the pictures label sites by the last two path parts.
        folder = workdir / name / "examples"
        folder.mkdir(parents=True)
        shutil.copy(EXAMPLE, folder / "moe_layer.py")
        variants[name] = folder / "moe_layer.py"
    fixed = subprocess.run(
        [sys.executable, "-m", "allocaudit.auditor", "fix", "--no-cache", str(variants["after"].parent)],
        capture_output=True, text=True,
    )
    if fixed.returncode != 0:
        raise SystemExit(f"allocaudit fix failed ({fixed.returncode}):\n{fixed.stdout}{fixed.stderr}")
    print(fixed.stdout.strip(), file=sys.stderr)
    return variants


def measure(path: Path, tokens: list[int], profile_out: Optional[Path] = None) -> dict:
    """One variant, in this (fresh) process; with ``profile_out``, the whole flow's profile
    and its memory picture (the same path, ``.png``) are written there too."""
    if profile_out is None:
        return _measure(path, tokens)
    from allocaudit.auditor.profiling import profile as profiles
    from allocaudit.auditor.profiling.plots import plot_memory
    from allocaudit.auditor.profiling.timeline import memory_series
    from allocaudit.auditor.profiling.tracer import profile_allocations

    variant = path.parent.parent.name
    with profile_allocations(device="cuda") as recorder:
        result = _measure(path, tokens)
    profile = recorder.profile(command=("python", f"benchmarks/{Path(__file__).name}", "--measure", variant))
    profiles.write(profile, str(profile_out))
    title = f"The example {variant} fix, eager steps then {len(tokens)} CUDA graph captures: live CUDA memory by site"
    try:
        plot_memory(memory_series(profile), str(profile_out.with_suffix(".png")), title=title)
    except Exception as exc:  # the measures and the profile stand without the picture (`allocaudit plot` redraws it)
        print(f"no picture of {variant}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return result


def _measure(path: Path, tokens: list[int]) -> dict:
    import torch
    import torch.nn.functional as F

    from allocaudit.auditor.profiling.tracer import profile_allocations

    spec = importlib.util.spec_from_file_location("moe_layer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    device = torch.device("cuda")
    torch.manual_seed(0)
    layer = module.MoELayer(**SIZES, device=device)
    inputs = {n: torch.randn(n, layer.hidden, device=device) for n in tokens}
    torch.cuda.synchronize()
    base_reserved = torch.cuda.memory_reserved()
    torch.cuda.reset_peak_memory_stats()

    def step(h):
        """The capturable part of the forward pass: router, get_workspace, dense experts."""
        n = h.shape[0]
        weights, ids = layer.router(h)
        ws = layer.get_workspace(module.round_up(n, 128), h.dtype, h.device)
        x = ws["workspace_0"][:, :n, : layer.hidden]
        x.copy_(h.expand(layer.num_experts, n, layer.hidden))
        gate_up = ws["workspace_1"][:, :n]
        torch.bmm(x, layer.w13.transpose(1, 2), out=gate_up)
        act = F.silu(gate_up[..., : layer.intermediate]) * gate_up[..., layer.intermediate :]
        down = torch.bmm(act, layer.w2.transpose(1, 2))
        gate = torch.zeros(n, layer.num_experts, device=h.device).scatter(1, ids, weights)
        return (down * gate.t().unsqueeze(-1)).sum(0)

    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    with torch.no_grad():
        # Eager: the example's forward, as written (or as fixed), one step per token count.
        eager_steps = []
        for n in tokens:
            with profile_allocations(device="cuda") as recorder:
                layer(inputs[n])
            torch.cuda.synchronize()
            profile = recorder.profile()
            rows = [s for s in profile.sites if os.path.samefile(s.path, path)]
            eager_steps.append({
                "tokens": n,
                "bytes": sum(s.bytes for s in rows),
                "calls": sum(s.calls for s in rows),
                "get_empty_hits": sum(s.cache.hits for s in rows if s.cache),
            })
        result["eager"] = eager_steps
        result["eager_reserved"] = torch.cuda.memory_reserved() - base_reserved

        # Graphs: one per token count, largest first, each in its own pool.
        graphs, outputs, expected = {}, {}, {}
        captured_bytes = 0
        before_graphs = torch.cuda.memory_reserved()
        for n in sorted(tokens, reverse=True):
            expected[n] = step(inputs[n]).clone()  # the eager warm-up run, and the reference
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with profile_allocations(device="cuda") as recorder:
                with torch.cuda.graph(graph):
                    outputs[n] = step(inputs[n])
            captured = recorder.profile()
            captured_bytes += sum(s.captured_bytes for s in captured.sites if os.path.samefile(s.path, path))
            graphs[n] = graph
        torch.cuda.synchronize()
        result["graphs"] = len(graphs)
        result["graph_pools_reserved"] = torch.cuda.memory_reserved() - before_graphs
        result["captured_workspace_bytes"] = captured_bytes
        mismatches = 0
        for n in sorted(tokens):  # replay smallest first: a shared buffer must not be corrupted
            graphs[n].replay()
        torch.cuda.synchronize()
        for n in tokens:
            mismatches += not torch.allclose(outputs[n], expected[n], rtol=1e-4, atol=1e-5)
        result["replay_mismatches"] = mismatches
    result["peak_reserved"] = torch.cuda.max_memory_reserved() - base_reserved
    return result


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def table(results: dict) -> str:
    before, after = results["before"], results["after"]
    lines = [
        "| measure | before `fix` | after `fix` | after / before |",
        "|---|---:|---:|---:|",
    ]

    def row(label, a, b, fmt=mib):
        ratio = f"{b / a:.2f}x" if a else ""
        lines.append(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} |")

    for i, step in enumerate(before["eager"]):
        row(f"eager step {i + 1} ({step['tokens']} tokens): MiB allocated by the example's lines", step["bytes"], after["eager"][i]["bytes"])
    row("eager steps, all: MiB allocated", sum(s["bytes"] for s in before["eager"]), sum(s["bytes"] for s in after["eager"]))
    row(f"{before['graphs']} CUDA graphs: MiB allocated by the example's lines during capture",
        before["captured_workspace_bytes"], after["captured_workspace_bytes"])
    row("CUDA graphs: MiB reserved by their pools", before["graph_pools_reserved"], after["graph_pools_reserved"])
    row("peak reserved over the whole flow, MiB", before["peak_reserved"], after["peak_reserved"])
    row("graph replays that differ from eager", before["replay_mismatches"], after["replay_mismatches"], fmt=str)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="256,128,64,32,16,8,4,1")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--pictures", metavar="DIR", help="also write each variant's profile and picture, and their comparison, here")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure one variant
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)  # internal: ... and profile it
    args = parser.parse_args()
    tokens = [int(t) for t in args.tokens.split(",")]
    if args.measure:
        profile_out = Path(args.profile_out) if args.profile_out else None
        print(json.dumps(measure(Path(args.measure), tokens, profile_out)))
        return
    pictures = Path(args.pictures) if args.pictures else None
    if pictures is not None:
        pictures.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        variants = prepare(Path(workdir))
        results = {}
        for name, path in variants.items():
            extra = ["--profile-out", str(pictures / f"{name}.json")] if pictures is not None else []
            proc = subprocess.run(
                [sys.executable, __file__, "--measure", str(path), "--tokens", args.tokens, *extra],
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                raise SystemExit(f"measuring {name} failed:\n{proc.stdout}{proc.stderr}")
            sys.stderr.writelines(line for line in proc.stderr.splitlines(True) if line.startswith("no picture"))
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"device: {results['before']['device']}, torch {results['before']['torch']}, example sizes {SIZES}, tokens {tokens}")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if pictures is not None:
        try:
            compare_pictures(pictures)
        except Exception as exc:  # the table above stands; `allocaudit compare` redraws it
            print(f"no comparison picture: {type(exc).__name__}: {exc}", file=sys.stderr)


def compare_pictures(folder: Path) -> None:
    """`allocaudit compare before.json after.json --plot compare.png --format markdown`, in folder."""
    from allocaudit.auditor.profiling import compare
    from allocaudit.auditor.profiling.plots import plot_compare
    from allocaudit.auditor.profiling.profile import load

    result = compare.compare(load(str(folder / "before.json")), load(str(folder / "after.json")), "before fix", "after fix")
    (folder / "compare.md").write_text(compare.render_markdown(result))
    plot_compare(compare.chart(result), str(folder / "compare.png"), *compare.timeline_pair(result))
    print(f"profiles, pictures and compare.md written to {folder}")


if __name__ == "__main__":
    main()
