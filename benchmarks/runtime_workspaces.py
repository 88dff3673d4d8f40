"""Workspace reuse in a DeepGEMM-MoE-shaped model: memory, correctness and hit cost, side by side.

Per MoE layer three workspaces, as DeepGemmFusedMoE.get_workspace asks for them (TensorRT-LLM
PR 7390): fp8 ``E x m_max x max(hidden, inter)``, bf16 ``E x m_max x max(2*inter, hidden)`` and
int32 scale factors ``E x m_max x max(hidden, inter)/512``, with ``m_max`` the token count padded
to 128. Each layer writes them, then reads them (quantise, a GEMM stand-in, combine), and drops
them. The cache names are shared by all layers, as the PR's class-level recorder shares them.

Variants, each run in a fresh process:
  empty      plain torch.empty
  zeros      plain torch.zeros
  seed       the PR's cache: a list of buffers per name, first fit, never freed (its buffers are
             kept flat so that ``buffer[:numel]`` slices elements, as the PR meant)
  review     the review's fix: keyed by (name, dtype, device), zeroed on reuse, only the largest
             buffer kept (a smaller one is dropped when a larger one is allocated)
  allocaudit get_empty(..., zero=False) on a fresh WorkspaceCache (default: graphs and eager
             work never share a buffer)
  shared     the same with WorkspaceCache(share_with_graphs=True)

Flows (graphs captured largest first into one shared memory pool, each capture preceded by one
eager warm-up run at its batch size, as PyTorch's CUDA graph documentation asks):
  A  eager 1024 tokens, graphs for 256, 128, ..., 1, then eager 512 and 1024
  B  the same without the first eager 1024 (larger batches only after capture)
  C  K=8 different stage functions in sequence, each with its own 64 MiB workspace name: eager,
     then the whole sequence captured in one CUDA graph and replayed
  D  the MoE model on two streams back to back (a two-micro-batch overlap), no synchronisation
     between them, each output compared with the same input run alone
  E  two Python threads running the MoE model at the same time, outputs compared likewise

Reported: peak reserved memory (above what the process held before the flow) and its ratio to
torch.empty's; for A and B reserved memory after capture, the largest difference between graph
replays and eager runs on the same inputs, and the number of sentinel tensors that graph
replays overwrote (allocated after the flow outside the graphs' pool, sized like the workspaces,
where the allocator hands out memory that a cache let go of; sentinels inside a shared pool
would be overwritten by any variant: a later capture into the pool may reuse what an earlier
graph freed during its capture, by PyTorch's design); for C, D and E the outputs that differ
from the reference. Then the CPU cost of a hit, per call, against torch.empty (zero=False) and
torch.zeros (zero=True), timed in interleaved rounds in the same process.

    python benchmarks/runtime_workspaces.py            # on a CUDA GPU
    python benchmarks/runtime_workspaces.py --smoke    # reduced, on the CPU, no graphs or streams
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

VARIANTS = ["empty", "zeros", "seed", "review", "allocaudit", "shared"]
FLOWS = ["A", "B", "C", "D", "E"]
NAMES = ("workspace_0", "workspace_1", "workspace_sf")


class Config:
    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        self.device = torch.device("cpu") if smoke else torch.device("cuda", 0)
        self.experts = 4 if smoke else 32
        self.hidden = 512 if smoke else 4096
        self.inter = 192 if smoke else 1536
        self.layers = 2 if smoke else 8
        self.graph_batches = [256, 128, 64, 32, 16, 8, 4, 2, 1]

    def m_max(self, tokens: int) -> int:
        return -(-tokens // 128) * 128

    def workspace_shapes(self, tokens: int):
        m = self.m_max(tokens)
        k = max(self.hidden, self.inter)
        return [
            ((self.experts, m, k), torch.float8_e4m3fn),
            ((self.experts, m, max(2 * self.inter, self.hidden)), torch.bfloat16),
            ((self.experts, m, k // 512), torch.int32),  # one ue8m0 byte per 128 values, 4 per int32
        ]


# --------------------------------------------------------------------------------------------
# The allocation variants: each is a function (shape, dtype, name) -> tensor.


class SeedCache:
    """TensorRT-LLM PR 7390's get_empty: a list per name, the first buffer large enough wins."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.buffers: dict = {}

    def __call__(self, shape, dtype, name):
        numel = math.prod(shape)
        for buffer in self.buffers.get(name, []):
            if buffer.numel() >= numel:
                return buffer[:numel].view(shape)
        buffer = torch.zeros(numel, dtype=dtype, device=self.device)
        self.buffers.setdefault(name, []).append(buffer)
        return buffer.view(shape)


class ReviewCache:
    """The review's proposed fix: keyed by (name, dtype, device), zero on reuse, keep the largest."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.buffers: dict = {}

    def __call__(self, shape, dtype, name):
        numel = math.prod(shape)
        key = (name, dtype, self.device)
        buffer = self.buffers.get(key)
        if buffer is not None and buffer.numel() >= numel:
            view = buffer[:numel].view(shape)
            view.zero_()
            return view
        buffer = torch.zeros(numel, dtype=dtype, device=self.device)
        self.buffers[key] = buffer  # drops the smaller buffer, even if a captured graph uses it
        return buffer.view(shape)


def make_variant(name: str, device: torch.device):
    if name == "empty":
        return lambda shape, dtype, cache_name: torch.empty(shape, dtype=dtype, device=device)
    if name == "zeros":
        return lambda shape, dtype, cache_name: torch.zeros(shape, dtype=dtype, device=device)
    if name == "seed":
        return SeedCache(device)
    if name == "review":
        return ReviewCache(device)
    if name in ("allocaudit", "shared"):
        from allocaudit.runtime import WorkspaceCache, get_empty

        cache = WorkspaceCache("benchmark", poison=False, strict=False, share_with_graphs=name == "shared")
        return lambda shape, dtype, cache_name: get_empty(
            shape, dtype, device=device, cache_name=cache_name, cache=cache
        )
    raise ValueError(name)


# --------------------------------------------------------------------------------------------
# The model.


def moe_layer(h: torch.Tensor, alloc, cfg: Config) -> torch.Tensor:
    tokens, hidden = h.shape
    (s0, d0), (s1, d1), (s2, d2) = cfg.workspace_shapes(tokens)
    ws0 = alloc(s0, d0, NAMES[0])
    ws1 = alloc(s1, d1, NAMES[1])
    sf = alloc(s2, d2, NAMES[2])
    # "Quantise" the tokens into every expert's rows, with a scale per token (writes ws0, sf).
    ws0[:, :tokens, :hidden].copy_(h.unsqueeze(0).expand(cfg.experts, tokens, hidden))
    sf[:, :tokens, :].copy_((h[:, : s2[2]] > 0).to(torch.int32).add_(1).unsqueeze(0).expand(cfg.experts, tokens, s2[2]))
    # The grouped GEMM stand-in: reads ws0 and sf, writes ws1.
    ws1[:, :tokens, :hidden].copy_(ws0[:, :tokens, :hidden])
    ws1[:, :tokens, :hidden].mul_(sf[:, :tokens, :1])
    # Combine the experts: reads ws1.
    out = ws1[:, :tokens, :hidden].sum(0)
    return (h + out / cfg.experts) * 0.5


def model(h: torch.Tensor, alloc, cfg: Config) -> torch.Tensor:
    for _ in range(cfg.layers):
        h = moe_layer(h, alloc, cfg)
    return h


def random_tokens(tokens: int, cfg: Config) -> torch.Tensor:
    # Drawn in bf16 directly: no float32 staging tensor, which is no part of the model.
    return torch.randn(tokens, cfg.hidden, device=cfg.device, dtype=torch.bfloat16)


# --------------------------------------------------------------------------------------------
# One variant, one flow, in this process.

SENTINEL = 0x5A


def memory_baseline(empty_cache: bool = True) -> int:
    """Reserved memory now, with the peak counter reset (and the allocator's cache emptied)."""
    torch.cuda.synchronize()
    if empty_cache:
        torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_reserved()


def run_graph_flow(variant: str, flow: str, cfg: Config) -> dict:
    """Flows A and B."""
    torch.manual_seed(0)
    cuda = cfg.device.type == "cuda"
    # Load every kernel first, with plain allocations, so that the flow measures only its own.
    model(random_tokens(8, cfg), make_variant("empty", cfg.device), cfg)
    alloc = make_variant(variant, cfg.device)
    base = memory_baseline() if cuda else 0

    if flow == "A":
        model(random_tokens(1024, cfg), alloc, cfg)
    graphs = {}
    pool = torch.cuda.graph_pool_handle() if cuda else None
    for tokens in cfg.graph_batches:
        static_in = random_tokens(tokens, cfg)
        model(static_in, alloc, cfg)  # warm-up
        if cuda:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                static_out = model(static_in, alloc, cfg)
        else:
            graph, static_out = None, model(static_in, alloc, cfg)
        graphs[tokens] = (graph, static_in, static_out)
    if cuda:
        torch.cuda.synchronize()
        after_capture = torch.cuda.memory_reserved() - base
    for tokens in (512, 1024):
        model(random_tokens(tokens, cfg), alloc, cfg)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_reserved() - base

    result = {"variant": variant, "flow": flow}
    if not cuda:
        return result

    # Sentinels where a workspace that a cache let go of would be handed out again. Each is
    # filled, then every graph is replayed, then each is checked.
    sizes = [math.prod(s) * d.itemsize for t in (1024, 512, 256, 128) for s, d in cfg.workspace_shapes(t)]
    sentinels = [torch.empty(n, dtype=torch.uint8, device=cfg.device) for n in sizes]
    for s in sentinels:
        s.fill_(SENTINEL)
    replayed = {}
    for tokens, (graph, static_in, static_out) in graphs.items():
        static_in.copy_(random_tokens(tokens, cfg))
        graph.replay()
        replayed[tokens] = (static_in.clone(), static_out.clone())
    torch.cuda.synchronize()
    corrupted = sum(int(not bool(s.eq(SENTINEL).all())) for s in sentinels)
    max_diff = 0.0
    for tokens, (inputs, outputs) in replayed.items():
        eager = model(inputs, alloc, cfg)
        max_diff = max(max_diff, (eager.float() - outputs.float()).abs().max().item())
    result.update(
        peak_mib=peak / 2**20,
        after_capture_mib=after_capture / 2**20,
        corrupted=corrupted,
        sentinels=len(sentinels),
        replay_max_diff=max_diff,
    )
    return result


STAGES = 8


def stage_functions(cfg: Config):
    """K different stages, each with its own workspace name, its result a scalar."""
    numel = (1 if cfg.smoke else 64) * 2**20 // 4  # 64 MiB of float32 per workspace

    def make(i):
        def stage(x, alloc):
            ws = alloc((numel,), torch.float32, f"stage{i}")
            torch.mul(x, i + 1, out=ws)
            return ws.sum()
        return stage

    return numel, [make(i) for i in range(STAGES)]


def run_stages_flow(variant: str, cfg: Config) -> dict:
    """Flow C: the stages in sequence eagerly, then the whole sequence in one CUDA graph."""
    cuda = cfg.device.type == "cuda"
    numel, stages = stage_functions(cfg)
    x = torch.randn(numel, device=cfg.device)
    sequence = lambda alloc: sum(stage(x, alloc) for stage in stages)  # noqa: E731
    reference = sequence(make_variant("empty", cfg.device))
    alloc = make_variant(variant, cfg.device)
    base = memory_baseline() if cuda else 0
    eager = sequence(alloc)
    wrong = int(not torch.equal(eager, reference))
    result = {"variant": variant, "flow": "C", "wrong": wrong, "outputs": 1}
    if not cuda:
        return result
    torch.cuda.synchronize()
    peak_eager = torch.cuda.max_memory_reserved() - base
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = sequence(alloc)
    for _ in range(3):
        x.normal_()
        graph.replay()
        expected = sequence(make_variant("empty", cfg.device))
        torch.cuda.synchronize()
        wrong += int(not torch.allclose(captured, expected, rtol=1e-4, atol=1e-1))
    torch.cuda.synchronize()
    result.update(
        wrong=wrong, outputs=4, peak_mib=peak_eager / 2**20,
        peak_graph_mib=(torch.cuda.max_memory_reserved() - base) / 2**20,
    )
    return result


def run_concurrent_flow(variant: str, flow: str, cfg: Config, trials: int = 10) -> dict:
    """Flow D (two streams back to back) or E (two threads): outputs against a serial reference."""
    import threading

    cuda = cfg.device.type == "cuda"
    inputs = [random_tokens(1024, cfg), random_tokens(1024, cfg)]
    references = [model(h, make_variant("empty", cfg.device), cfg) for h in inputs]
    alloc = make_variant(variant, cfg.device)
    # The references' blocks stay cached: every variant starts from the same allocator state.
    base = memory_baseline(empty_cache=False) if cuda else 0
    wrong = 0
    if flow == "D":
        streams = [torch.cuda.Stream(), torch.cuda.Stream()]
        for _ in range(trials):
            torch.cuda.synchronize()
            outputs = []
            for h, stream in zip(inputs, streams):
                with torch.cuda.stream(stream):
                    outputs.append(model(h, alloc, cfg))
            torch.cuda.synchronize()
            wrong += sum(int(not torch.equal(o, r)) for o, r in zip(outputs, references))
    else:
        counts = [0, 0]
        start = threading.Barrier(2)

        def worker(k):
            start.wait()
            for _ in range(trials):
                out = model(inputs[k], alloc, cfg)
                if cuda:
                    torch.cuda.synchronize()
                counts[k] += int(not torch.equal(out, references[k]))

        threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wrong = sum(counts)
    result = {"variant": variant, "flow": flow, "wrong": wrong, "outputs": 2 * trials}
    if cuda:
        result["peak_mib"] = (torch.cuda.max_memory_reserved() - base) / 2**20
    return result


def per_call_ns(fns: dict, calls: int = 100, rounds: int = 101) -> dict:
    """Median CPU time per call of each function, timed in interleaved rounds (the host's speed
    drifts); the device is drained between timed batches, never inside one."""
    samples = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            samples[key].append((time.perf_counter_ns() - start) / calls)
    return {key: statistics.median(values) for key, values in samples.items()}


def hit_costs(variant: str, cfg: Config) -> dict:
    """CPU cost of a hit at the 128-token workspace shapes, next to torch.empty and torch.zeros."""
    shapes = cfg.workspace_shapes(128)
    device = cfg.device

    def plain(factory):
        def run():
            for shape, dtype in shapes:
                factory(shape, dtype=dtype, device=device)
        return run

    def cached(zero):
        if variant not in ("allocaudit", "shared"):
            alloc = make_variant(variant, device)
            fn = lambda: [alloc(shape, dtype, NAMES[i]) for i, (shape, dtype) in enumerate(shapes)]  # noqa: E731
        else:
            from allocaudit.runtime import WorkspaceCache, get_empty

            cache = WorkspaceCache("hits", poison=False, strict=False)

            def fn():
                for i, (shape, dtype) in enumerate(shapes):
                    get_empty(shape, dtype, device=device, cache_name=NAMES[i], zero=zero, cache=cache)
        fn()  # the first call allocates; what follows are hits
        return fn

    fns = {"empty_ns": plain(torch.empty), "zeros_ns": plain(torch.zeros),
           "hit_ns": cached(False), "hit_zero_ns": cached(True)}
    per_call_ns(fns, rounds=5)  # warm
    return {key: t / len(shapes) for key, t in per_call_ns(fns).items()}


def worker(variant: str, flow: str, smoke: bool) -> None:
    cfg = Config(smoke)
    if flow in ("A", "B"):
        result = run_graph_flow(variant, flow, cfg)
    elif flow == "C":
        result = run_stages_flow(variant, cfg)
    else:
        result = run_concurrent_flow(variant, flow, cfg)
    if flow == "A":
        result.update(hit_costs(variant, cfg))
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------
# The driver: every (variant, flow) in a fresh process, then one table.


def run_all(smoke: bool, json_path: str | None) -> int:
    results = {}
    flows = ["A", "C", "E"] if smoke else FLOWS  # the CPU has no graphs and no streams
    for flow in flows:
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--worker", variant, flow] + (["--smoke"] if smoke else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
            if proc.returncode != 0:
                print(f"{variant} flow {flow} failed:\n{proc.stderr}", file=sys.stderr)
                return 1
            results[(variant, flow)] = json.loads(proc.stdout.strip().splitlines()[-1])
    if json_path:
        with open(json_path, "w") as f:
            json.dump([r for r in results.values()], f, indent=1)
    print_table(results, smoke)
    return 0


def print_table(results: dict, smoke: bool) -> None:
    device = "cpu (smoke)" if smoke else torch.cuda.get_device_name(0)
    print(f"device: {device}; torch {torch.__version__}")
    if not smoke:
        print("\nflows A and B: memory and graph safety (peak: reserved above the start, MiB; ratio to torch.empty)")
        print(f"{'variant':<11} {'flow':<4} {'peak':>9} {'x empty':>8} {'after capture':>13} "
              f"{'replay diff':>11} {'corrupted':>11}")
        for flow in ("A", "B"):
            empty_peak = results[("empty", flow)]["peak_mib"]
            for variant in VARIANTS:
                r = results[(variant, flow)]
                print(f"{variant:<11} {flow:<4} {r['peak_mib']:>9.1f} {r['peak_mib'] / empty_peak:>8.3f} "
                      f"{r['after_capture_mib']:>13.1f} {r['replay_max_diff']:>11.3g} "
                      f"{r['corrupted']:>5} / {r['sentinels']:<3}")
        print("\nflow C (8 stages x 64 MiB), D (two streams), E (two threads): wrong outputs and peak (MiB; ratio to torch.empty)")
        print(f"{'variant':<11} {'flow':<4} {'wrong':>9} {'peak':>9} {'x empty':>8} {'graph peak':>11} {'x empty':>8}")
        for flow in ("C", "D", "E"):
            empty = results[("empty", flow)]
            for variant in VARIANTS:
                r = results[(variant, flow)]
                graph = (f"{r['peak_graph_mib']:>11.1f} {r['peak_graph_mib'] / empty['peak_graph_mib']:>8.3f}"
                         if flow == "C" else "")
                print(f"{variant:<11} {flow:<4} {r['wrong']:>4} / {r['outputs']:<3} {r['peak_mib']:>9.1f} "
                      f"{r['peak_mib'] / empty['peak_mib']:>8.3f} {graph}".rstrip())
    else:
        for flow in ("C", "E"):
            for variant in VARIANTS:
                r = results[(variant, flow)]
                print(f"{variant:<11} flow {flow}: {r['wrong']} / {r['outputs']} wrong outputs")
    print("\nCPU cost per call of a hit (ns, median; ratio to torch.empty / torch.zeros in the same process)")
    print(f"{'variant':<11} {'torch.empty':>11} {'hit':>8} {'x empty':>8} {'torch.zeros':>11} "
          f"{'hit zero':>8} {'x zeros':>8}")
    for variant in VARIANTS:
        r = results[(variant, "A")]
        zero_hit = r["hit_zero_ns"] if variant in ("allocaudit", "shared") else float("nan")
        print(f"{variant:<11} {r['empty_ns']:>11.0f} {r['hit_ns']:>8.0f} {r['hit_ns'] / r['empty_ns']:>8.2f} "
              f"{r['zeros_ns']:>11.0f} {zero_hit:>8.0f} {zero_hit / r['zeros_ns']:>8.2f}")
    print("(hit: each variant's own request on a warm cache; seed never zeroes, review always does;"
          " 'hit zero' is get_empty(zero=True))")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="reduced model on the CPU, no CUDA graphs")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "FLOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, smoke=args.smoke)
        return 0
    if not args.smoke and not torch.cuda.is_available():
        parser.error("needs a CUDA GPU; use --smoke on the CPU")
    return run_all(args.smoke, args.json)


if __name__ == "__main__":
    sys.exit(main())
