"""Patched third-party MoE code on real engines: Hugging Face transformers MoE models, original vs `allocaudit fix`.

    python benchmarks/real_models.py [--device cuda|cpu] [--out DIR] [--budget SECONDS]
                                     [--models mixtral,qwen3_moe,...] [--sizes tiny,real]

Three variants of the installed `transformers` package, each measured in fresh processes:

- ``orig``: the installed package, as it is;
- ``fix``: a copy of the whole package (made at run time in a temporary folder, first on
  ``PYTHONPATH``, so it shadows the installed one completely: every worker checks
  ``transformers.__file__``) on which ``allocaudit fix --all-sizes`` ran with its default scope
  (``*moe*``/``*expert*`` paths of the whole package);
- ``fix-all``: a copy on which ``allocaudit fix --all`` ran over every file the target models can
  import: the package outside ``models/``, ``models/auto`` and the targets' own folders (the
  other 400-odd model folders are left as installed; ``fix --all`` over all of them takes
  minutes and none of them is imported).

Both fixed variants are written with ``--all-sizes``: every fixable site is rewritten, also those whose
size does not grow with the batch, so that the checks cover every rewrite `fix` can make.

Targets: the causal-LM classes of mixtral, qwen3_moe, olmoe, deepseek_v3, gpt_oss, jetmoe and aria
(its text model), built from their config classes with random weights (nothing is downloaded), at
two sizes: ``tiny`` (hidden 64, 2 layers) and ``real`` (the released model's hidden, intermediate,
expert, head and vocabulary sizes with 2 layers; DeepSeek-V3's first layer dense, as in the real
model), ``attn_implementation="eager"``, the transformers default experts implementation
(``grouped_mm`` where the model supports it), bf16 on CUDA and float32 on CPU.

Per model, size and variant ("eager" workers, one process per variant running every model):
- ``build``: parameter count and a bitwise digest of every parameter (the same random init in
  every variant is a precondition of the comparisons);
- ``logits``: ``model(ids).logits`` in eval mode, twice (``repeatable``: the two runs are bitwise
  equal), a bitwise digest compared across variants;
- ``generate``: greedy ``generate`` of 8 new tokens, the tokens compared;
- ``graph`` (CUDA, with SDPA attention for the check: the eager attention's mask is built from a
  host scalar, which no graph can capture): one forward run under
  ``torch.cuda.set_sync_debug_mode("error")`` first (a
  model that synchronises, e.g. ``.tolist()`` of routing counts, cannot be captured: the reason
  and the line are recorded), else warm-up on a side stream, capture of ``model(ids).logits``
  into a CUDA graph (its own pool), replay compared bitwise with eager (SDPA) on the captured input
  and on a second input copied in; the memory the graph's pool reserves and the runtime's pinned bytes;
- ``profile`` (``--profile-models``, CUDA, size ``real``): a second capture under the allocation
  tracer (factory calls and ``get_empty`` by site) and PyTorch's memory history (every
  allocation during capture by source line): where the memory of a captured MoE step goes;
- ``train``: two steps of ``loss = model(ids, labels=ids).loss; loss.backward()`` then plain SGD,
  in train mode: the losses and a bitwise digest of every gradient, compared across variants.

Every check records peak memory (``torch.cuda.max_memory_reserved`` / ``max_memory_allocated``
during the check, the allocator's cache emptied before it; the report shows them above the
weights) and the runtime's per-name counters (``default_cache().stats()``: the rewritten sites
that ran, with hits and misses). "compile" workers (tiny size) run ``torch.compile(model)`` and
``torch.compile(model, fullgraph=True)`` on the eval forward, for the original as well (a
failure there is not the rewrite's), with graph breaks counted.

Deterministic settings in every worker: ``torch.manual_seed(0)`` before each model is built (on
the device it runs on), inputs drawn from a seeded CPU generator, ``torch.use_deterministic_algorithms(True,
warn_only=True)`` (which also fills ``torch.empty`` results with NaN), ``CUBLAS_WORKSPACE_CONFIG=:4096:8``,
cuDNN deterministic, eager attention, eval mode for inference, dropout 0 (the configs' default).

Results are appended per check to JSON-lines files as they come (a timeout keeps what was
measured), merged into ``OUT/real_models.json``; ``OUT/real_models.txt`` has the tables, and the
last lines printed are the summary table. Workers run concurrently where they can (on CUDA: the
three tiny workers, ``--real-procs`` real-size workers, three compile workers per variant, each
model's results independent of the others running); ``--budget`` (330 s on CUDA) stops everything
in time to write the report.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

# The two models whose rewritten sites run come first (a run cut by --budget keeps them), the
# largest (DeepSeek-V3 trains in about 56 GB at size real) last.
MODELS = ("jetmoe", "aria", "mixtral", "qwen3_moe", "olmoe", "gpt_oss", "deepseek_v3")
SIZES = ("tiny", "real")
VARIANTS = ("orig", "fix", "fix-all")
SEED = 0
LR = 1e-2
NEW_TOKENS = 8
# (batch, sequence) of the forward, train and graph inputs, and the generate prompt length.
SHAPES = {"tiny": (2, 16, 8), "real": (4, 128, 32)}
MIB = 2**20


# ---------------------------------------------------------------------------------------------
# The models


def model_config(T: Any, name: str, size: str) -> Any:
    """The config of one target: ``T`` is the imported transformers module."""
    special = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if size == "tiny":
        base = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, **special)
        heads = dict(num_attention_heads=4, num_key_value_heads=2)
        if name == "mixtral":
            return T.MixtralConfig(**base, **heads, intermediate_size=128, num_local_experts=4, num_experts_per_tok=2)
        if name == "qwen3_moe":
            return T.Qwen3MoeConfig(**base, **heads, head_dim=16, intermediate_size=128, moe_intermediate_size=32,
                                    num_experts=8, num_experts_per_tok=2, norm_topk_prob=True)
        if name == "olmoe":
            return T.OlmoeConfig(**base, **heads, intermediate_size=32, num_experts=8, num_experts_per_tok=2)
        if name == "deepseek_v3":
            return T.DeepseekV3Config(**base, num_attention_heads=4, num_key_value_heads=4, intermediate_size=128,
                                      moe_intermediate_size=32, n_routed_experts=8, n_shared_experts=1,
                                      num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1,
                                      kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8,
                                      v_head_dim=16)
        if name == "gpt_oss":
            return T.GptOssConfig(**base, **heads, head_dim=16, intermediate_size=64, num_local_experts=4,
                                  num_experts_per_tok=2, sliding_window=8)
        if name == "jetmoe":
            return T.JetMoeConfig(**base, num_key_value_heads=2, kv_channels=16, intermediate_size=64,
                                  num_local_experts=4, num_experts_per_tok=2)
        if name == "aria":
            return T.AriaTextConfig(**base, **heads, intermediate_size=32, moe_num_experts=4, moe_topk=2,
                                    moe_num_shared_experts=2)
    else:
        # The released models' layer shapes, two layers each.
        layers = dict(num_hidden_layers=2, **special)
        if name == "mixtral":  # Mixtral-8x7B
            return T.MixtralConfig(**layers, vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                                   num_attention_heads=32, num_key_value_heads=8, num_local_experts=8,
                                   num_experts_per_tok=2)
        if name == "qwen3_moe":  # Qwen3-30B-A3B
            return T.Qwen3MoeConfig(**layers, vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                                    moe_intermediate_size=768, num_attention_heads=32, num_key_value_heads=4,
                                    head_dim=128, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True)
        if name == "olmoe":  # OLMoE-1B-7B
            return T.OlmoeConfig(**layers, vocab_size=50304, hidden_size=2048, intermediate_size=1024,
                                 num_attention_heads=16, num_key_value_heads=16, num_experts=64,
                                 num_experts_per_tok=8)
        if name == "deepseek_v3":  # DeepSeek-V3 (the config class's defaults), first layer dense
            return T.DeepseekV3Config(**layers, first_k_dense_replace=1)
        if name == "gpt_oss":  # gpt-oss-120b
            return T.GptOssConfig(**layers, vocab_size=201088, hidden_size=2880, intermediate_size=2880,
                                  head_dim=64, num_attention_heads=64, num_key_value_heads=8,
                                  num_local_experts=128, num_experts_per_tok=4)
        if name == "jetmoe":  # JetMoE-8B
            return T.JetMoeConfig(**layers, vocab_size=32000, hidden_size=2048, num_key_value_heads=16,
                                  kv_channels=128, intermediate_size=5632, num_local_experts=8,
                                  num_experts_per_tok=2)
        if name == "aria":  # Aria's text model (rhymes-ai/Aria)
            return T.AriaTextConfig(**layers, vocab_size=100352, hidden_size=2560, intermediate_size=1664,
                                    num_attention_heads=20, num_key_value_heads=20, moe_num_experts=64,
                                    moe_topk=6, moe_num_shared_experts=2)
    raise ValueError(f"unknown model {name!r} or size {size!r}")


# ---------------------------------------------------------------------------------------------
# Worker helpers (run inside a fresh process per variant; torch is imported lazily)

_MASK = (1 << 64) - 1


def digest(t) -> str:
    """A bitwise fingerprint of a tensor: shape, dtype and two 64-bit sums of its raw bits."""
    import torch

    t = t.detach()
    flat = t.contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    ints = flat.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()])
    s1 = torch.zeros((), dtype=torch.int64, device=flat.device)
    s2 = torch.zeros((), dtype=torch.int64, device=flat.device)
    chunk = 1 << 24
    for start in range(0, ints.numel(), chunk):
        c = ints[start:start + chunk].to(torch.int64)
        w = torch.arange(start, start + c.numel(), device=c.device, dtype=torch.int64) % 65521 + 1
        s1 += c.sum()
        s2 += (c * w).sum()
    return f"{tuple(t.shape)}|{str(t.dtype)[6:]}|{int(s1) & _MASK:016x}{int(s2) & _MASK:016x}"


def combined(digests: dict) -> str:
    return hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()[:24]


class Emitter:
    """Appends one JSON object per line to the worker's results file, flushed at once."""

    def __init__(self, path: str, base: dict) -> None:
        self.file = open(path, "a", buffering=1)
        self.base = base

    def emit(self, **record) -> None:
        self.file.write(json.dumps({**self.base, **record, "t": round(time.time(), 2)}, default=str) + "\n")
        self.file.flush()


def error_text(exc: BaseException) -> dict:
    """The exception, and the innermost frame in transformers (where the model code failed)."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = next((f"{_short(f.filename)}:{f.lineno} in {f.name}" for f in reversed(tb)
                  if "transformers" in f.filename), None)
    text = f"{type(exc).__name__}: {exc}".strip()
    return {"error": text[:800], "where": where}


def _short(path: str) -> str:
    i = path.rfind("transformers" + os.sep)
    return path[i:] if i >= 0 else path


def cache_counts() -> dict:
    from allocaudit.runtime import default_cache

    return {name: (s.hits, s.misses, s.growths, s.fallbacks, s.overlaps)
            for (name, _device), s in default_cache().stats().items()}


def counts_delta(before: dict, after: dict) -> dict:
    out = {}
    for name, now in after.items():
        was = before.get(name, (0, 0, 0, 0, 0))
        d = [a - b for a, b in zip(now, was)]
        if any(d):
            out[name] = d
    return out


class Memory:
    """Peak memory during one check, with the allocator's cache emptied before it."""

    def __init__(self, device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self):
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.reserved0 = torch.cuda.memory_reserved()
            self.allocated0 = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.result = {
                "start_reserved": self.reserved0, "start_allocated": self.allocated0,
                "peak_reserved": torch.cuda.max_memory_reserved(), "peak_allocated": torch.cuda.max_memory_allocated(),
            }
        else:
            self.result = {}
        from allocaudit.runtime import default_cache

        buffers = default_cache().buffers()
        self.result["cache_held"] = sum(b.nbytes for b in buffers)
        self.result["cache_pinned"] = sum(b.nbytes for b in buffers if b.pinned)


def setup_determinism() -> None:
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def inputs(vocab: int, size: str, device) -> dict:
    import torch

    batch, seq, prompt = SHAPES[size]
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    ids2 = torch.randint(3, vocab, (batch, seq), generator=g)
    return {"ids": ids.to(device), "ids2": ids2.to(device), "prompt": ids[:, :prompt].to(device)}


def build(T, name: str, size: str, device, dtype):
    """``name`` is a target, or ``target:eager`` for its per-expert loop (``experts_implementation="eager"``)."""
    import torch

    base, _, experts = name.partition(":")
    config = model_config(T, base, size)
    torch.manual_seed(SEED)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(SEED)
    extra = {"experts_implementation": experts} if experts else {}
    with torch.device(device):
        model = T.AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="eager", **extra)
    model.to(device)
    model.eval()
    model.generation_config.pad_token_id = 0
    return model


def release_cache() -> None:
    from allocaudit.runtime import default_cache

    default_cache().release()


# ---------------------------------------------------------------------------------------------
# Worker checks. Each returns a dict of results; the caller adds memory, counters and errors.


def check_logits(ctx: dict) -> dict:
    import torch

    model, ids = ctx["model"], ctx["inputs"]["ids"]
    with torch.no_grad():
        first = model(ids, use_cache=False).logits
        second = model(ids, use_cache=False).logits
    d1, d2 = digest(first), digest(second)
    ctx["logits"] = first
    keep = first if ctx["size"] == "tiny" else first[:, -1]
    torch.save(keep.float().cpu(), ctx["save"]("logits"))
    return {"digest": d1, "repeatable": d1 == d2, "finite": bool(torch.isfinite(first).all()),
            "shape": list(first.shape)}


def check_generate(ctx: dict) -> dict:
    import torch

    model, prompt = ctx["model"], ctx["inputs"]["prompt"]
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    return {"tokens": out[:, prompt.shape[1]:].tolist(), "digest": digest(out)}


@contextlib.contextmanager
def sdpa_attention(model):
    """The model with SDPA attention for a while. transformers 5.17's eager attention builds its
    mask with `torch.tensor(0.0, device=...)`, a copy from host memory that no CUDA graph can
    capture; SDPA with no padding mask takes the causal flag instead. Every variant is captured
    this way, so their replays compare with each other, and each with its own SDPA eager run."""
    model.set_attn_implementation("sdpa")
    try:
        yield model
    finally:
        model.set_attn_implementation("eager")


def sdpa_refusal(model) -> Optional[str]:
    """Why the model cannot take SDPA attention (gpt_oss: its sinks), or None."""
    try:
        model.set_attn_implementation("sdpa")
    except ValueError as exc:
        return str(exc).split(".")[0]
    model.set_attn_implementation("eager")
    return None


def warm_up_for_capture(model, static) -> int:
    """Two forwards on a side stream, as before a capture, then the allocator's cache emptied:
    the memory reserved after, against which the graph's pool is measured."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(2):
            model(static, use_cache=False)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    return torch.cuda.memory_reserved()


def check_graph(ctx: dict) -> dict:
    refusal = sdpa_refusal(ctx["model"])
    if refusal is not None:
        return {"capturable": False, "reason": "eager attention builds its mask from a host scalar, and " + refusal}
    with sdpa_attention(ctx["model"]):
        return _check_graph(ctx)


def _check_graph(ctx: dict) -> dict:
    import torch

    from allocaudit.runtime import default_cache

    model, ids, ids2 = ctx["model"], ctx["inputs"]["ids"], ctx["inputs"]["ids2"]
    with torch.no_grad():
        eager1 = model(ids, use_cache=False).logits.clone()
    # A model that synchronises with the host in its forward (data-dependent routing read on the
    # CPU) cannot be captured: find out without a failed capture, which can poison the process.
    # transformers skips its own eager-only checks (`padding_mask.all()`, ...) when
    # `is_tracing()` says a CUDA stream is capturing: make it say so here too.
    from transformers.utils import import_utils

    saved = import_utils.is_cuda_stream_capturing
    import_utils.is_cuda_stream_capturing = lambda: True
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            model(ids, use_cache=False)
    except RuntimeError as exc:
        return {"capturable": False, "reason": "synchronizes with the host", **error_text(exc)}
    finally:
        torch.cuda.set_sync_debug_mode(0)
        import_utils.is_cuda_stream_capturing = saved
    static = ids.clone()
    reserved0 = warm_up_for_capture(model, static)
    pinned0 = sum(b.nbytes for b in default_cache().buffers() if b.pinned)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.no_grad(), torch.cuda.graph(graph):
            static_out = model(static, use_cache=False).logits
        torch.cuda.synchronize()
    except Exception as exc:
        return {"capturable": False, "reason": "capture failed", **error_text(exc)}
    pool = torch.cuda.memory_reserved() - reserved0
    pinned = sum(b.nbytes for b in default_cache().buffers() if b.pinned) - pinned0
    graph.replay()
    torch.cuda.synchronize()
    replay_digest = digest(static_out)
    same1 = replay_digest == digest(eager1)
    static.copy_(ids2)
    graph.replay()
    torch.cuda.synchronize()
    replayed2 = static_out.clone()
    with torch.no_grad():
        eager2 = model(ids2, use_cache=False).logits
    same2 = digest(replayed2) == digest(eager2)
    diff = (replayed2.float() - eager2.float()).abs().max().item()
    del graph, static_out, replayed2, eager2
    gc.collect()
    default_cache().release_pinned()
    ctx["capturable"] = True
    return {"capturable": True, "replay_digest": replay_digest, "replay_equal": same1 and same2, "replay_equal_captured_input": same1,
            "replay_equal_new_input": same2, "replay_max_abs_diff": diff, "pool_reserved": pool,
            "pinned_by_capture": pinned}


def check_profile(ctx: dict) -> dict:
    """Where the memory of one captured forward goes: factory calls vs operator outputs."""
    if not ctx.get("capturable", False):
        return _check_profile(ctx)  # one eager forward, as the other checks run it
    with sdpa_attention(ctx["model"]):
        return _check_profile(ctx)


def _check_profile(ctx: dict) -> dict:
    import torch

    from allocaudit.auditor.profiling.tracer import profile_allocations
    from allocaudit.runtime import default_cache

    model, ids = ctx["model"], ctx["inputs"]["ids"]
    cuda = ids.is_cuda and ctx.get("capturable", False)  # else: one eager forward, factory calls only
    static = ids.clone()
    if cuda:
        reserved0 = warm_up_for_capture(model, static)
        torch.cuda.memory._record_memory_history(max_entries=500000, stacks="python")
    graph = torch.cuda.CUDAGraph() if cuda else None
    with profile_allocations(device=ids.device.type) as recorder:
        with torch.no_grad(), (torch.cuda.graph(graph) if cuda else contextlib.nullcontext()):
            out = model(static, use_cache=False).logits
    result: dict = {"captured": cuda}
    profile = recorder.profile()
    factory_lines = {}
    for s in profile.sites:
        nbytes = s.captured_bytes if cuda else s.bytes
        via = "get_empty" if s.cache is not None else "factory"
        if nbytes or s.cache is not None:
            factory_lines[(s.path, s.line)] = via
    result["factory_sites"] = sorted(
        ({"site": f"{_short(s.path)}:{s.line}", "function": s.function, "calls": s.captured_calls if cuda else s.calls,
          "bytes": s.captured_bytes if cuda else s.bytes, "shapes": s.shapes[:3],
          "get_empty": None if s.cache is None else [s.cache.hits, s.cache.misses, s.cache.growths, s.cache.fallbacks]}
         for s in profile.sites if (s.captured_bytes if cuda else s.bytes) or s.cache is not None),
        key=lambda r: -r["bytes"])[:20]
    result["factory_bytes"] = sum(r["bytes"] for r in result["factory_sites"])
    if cuda:
        torch.cuda.synchronize()
        result["pool_reserved"] = torch.cuda.memory_reserved() - reserved0
        snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        by_line: dict = {}
        live = peak = total = 0
        sizes = {}
        for trace in snapshot.get("device_traces", []):
            for e in trace:
                action = e.get("action")
                if action == "alloc":
                    frames = e.get("frames") or []
                    site = next((f for f in frames if "transformers" in f.get("filename", "")
                                 or f.get("filename", "").endswith("runtime/cache.py")), None)
                    if site is None:
                        key, kind = "<other>", "operator"
                    elif site["filename"].endswith("runtime/cache.py"):
                        key, kind = "allocaudit runtime (get_empty)", "get_empty"
                    else:
                        key = f"{_short(site['filename'])}:{site['line']}"
                        kind = factory_lines.get((site["filename"], site["line"]), "operator")
                    row = by_line.setdefault(key, {"site": key, "kind": kind, "function": (site or {}).get("name"),
                                                   "allocs": 0, "bytes": 0})
                    row["allocs"] += 1
                    row["bytes"] += e["size"]
                    total += e["size"]
                    sizes[e["addr"]] = e["size"]
                    live += e["size"]
                    peak = max(peak, live)
                elif action in ("free_requested",) and e.get("addr") in sizes:
                    live -= sizes.pop(e["addr"])
        rows = sorted(by_line.values(), key=lambda r: -r["bytes"])
        result["allocated_during_capture"] = total
        result["peak_live_during_capture"] = peak
        result["by_kind"] = {k: sum(r["bytes"] for r in rows if r["kind"] == k) for k in ("factory", "get_empty", "operator")}
        result["top_lines"] = rows[:15]
        del graph, out
        gc.collect()
        default_cache().release_pinned()
    return result


def check_train(ctx: dict) -> dict:
    import torch

    model, ids = ctx["model"], ctx["inputs"]["ids"]
    model.train()
    losses, loss_bits, grads, per_param = [], [], [], {}
    try:
        for step in range(2):
            loss = model(ids, labels=ids, use_cache=False).loss
            loss.backward()
            losses.append(float(loss))
            loss_bits.append(digest(loss))
            digests = {n: digest(p.grad) for n, p in model.named_parameters() if p.grad is not None}
            grads.append(combined(digests))
            if step == 0:
                per_param = digests
            with torch.no_grad():
                params = [p for p in model.parameters() if p.grad is not None]
                torch._foreach_add_(params, [p.grad for p in params], alpha=-LR)
            model.zero_grad(set_to_none=True)
            del loss
    finally:
        model.eval()
    return {"losses": losses, "loss_digests": loss_bits, "grad_digests": grads, "params_with_grad": len(per_param),
            "per_param": per_param, "finite": all(map(lambda x: x == x, losses))}


def run_eager_model(T, emitter: Emitter, name: str, size: str, device, dtype, workdir: Path, profile: bool) -> None:
    import torch

    base = {"model": name, "size": size}
    counts0 = cache_counts()
    started = time.perf_counter()
    try:
        model = build(T, name, size, device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        params = {n: digest(p) for n, p in model.named_parameters()}
        weights = torch.cuda.memory_allocated() if device.type == "cuda" else None
        emitter.emit(**base, check="build", ok=True, cls=type(model).__name__,
                     module=_short(sys.modules[type(model).__module__].__file__),
                     experts_implementation=getattr(model.config, "_experts_implementation", None),
                     n_params=sum(p.numel() for p in model.parameters()), param_digest=combined(params),
                     weights=weights, seconds=round(time.perf_counter() - started, 2))
    except Exception as exc:
        emitter.emit(**base, check="build", ok=False, **error_text(exc))
        return
    ctx = {"model": model, "size": size, "inputs": inputs(model.config.vocab_size, size, device),
           "save": lambda what: str(workdir / f"{name}-{size}-{what}.pt")}
    checks: list[tuple[str, Callable]] = [("logits", check_logits), ("generate", check_generate)]
    if device.type == "cuda":
        checks.append(("graph", check_graph))
    if profile:
        checks.append(("profile", check_profile))
    checks.append(("train", check_train))
    for check, fn in checks:
        if check == "graph" and "logits" not in ctx:
            emitter.emit(**base, check=check, ok=False, error="skipped: no eager logits")
            continue
        before = cache_counts()
        t0 = time.perf_counter()
        try:
            with Memory(device) as mem:
                result = fn(ctx)
            emitter.emit(**base, check=check, ok=True, **result, memory=mem.result,
                         sites=counts_delta(before, cache_counts()), seconds=round(time.perf_counter() - t0, 2))
        except Exception as exc:
            emitter.emit(**base, check=check, ok=False, **error_text(exc), sites=counts_delta(before, cache_counts()),
                         seconds=round(time.perf_counter() - t0, 2))
            if device.type == "cuda" and not cuda_healthy():
                emitter.emit(**base, check="process", ok=False, error="CUDA context unusable after this check")
                raise SystemExit(3)
    emitter.emit(**base, check="sites", ok=True, sites=counts_delta(counts0, cache_counts()),
                 seconds=round(time.perf_counter() - started, 2))
    del ctx, model
    gc.collect()
    release_cache()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def cuda_healthy() -> bool:
    import torch

    try:
        torch.cuda.synchronize()
        return torch.ones(1, device="cuda").add_(1).item() == 2
    except Exception:
        return False


def run_compile_model(T, emitter: Emitter, name: str, device, dtype, backend: str) -> None:
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    base = {"model": name, "size": "tiny"}
    try:
        model = build(T, name, "tiny", device, dtype)
        ids = inputs(model.config.vocab_size, "tiny", device)["ids"]
        with torch.no_grad():
            eager = model(ids, use_cache=False).logits
    except Exception as exc:
        emitter.emit(**base, check="compile-build", ok=False, **error_text(exc))
        return
    for mode in ("default", "fullgraph"):
        torch._dynamo.reset()
        counters.clear()
        before = cache_counts()
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(model, fullgraph=mode == "fullgraph", backend=backend)
            with torch.no_grad():
                out = compiled(ids, use_cache=False).logits
                again = compiled(ids, use_cache=False).logits
            breaks = dict(counters["graph_break"])
            emitter.emit(**base, check=f"compile-{mode}", ok=True, backend=backend, digest=digest(out),
                         repeatable=digest(out) == digest(again), equal_to_eager=digest(out) == digest(eager),
                         max_abs_diff_to_eager=(out.float() - eager.float()).abs().max().item(),
                         graph_breaks=sum(breaks.values()), break_reasons=sorted(breaks, key=breaks.get)[-3:],
                         unique_graphs=counters["stats"].get("unique_graphs", 0),
                         sites=counts_delta(before, cache_counts()), seconds=round(time.perf_counter() - t0, 2))
            del compiled, out, again
        except Exception as exc:
            emitter.emit(**base, check=f"compile-{mode}", ok=False, backend=backend, **error_text(exc),
                         seconds=round(time.perf_counter() - t0, 2))
    torch._dynamo.reset()
    del model
    gc.collect()
    release_cache()


def worker(args: argparse.Namespace) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    setup_determinism()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    emitter = Emitter(args.results, {"variant": args.worker, "phase": args.phase})
    import transformers as T

    location = os.path.dirname(os.path.abspath(T.__file__))
    expected = args.expect_root
    shadowed = expected is None or location.startswith(os.path.abspath(expected) + os.sep)
    emitter.emit(check="process", ok=shadowed, transformers=location, transformers_version=T.__version__,
                 torch=torch.__version__, python=sys.version.split()[0],
                 device_name=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                 runtime_disabled=os.environ.get("ALLOCAUDIT_RUNTIME", ""), pid=os.getpid())
    if not shadowed:
        raise SystemExit(f"transformers came from {location}, not from {expected}")
    T.logging.set_verbosity_error()
    workdir = Path(args.results).parent / args.worker
    workdir.mkdir(parents=True, exist_ok=True)
    models = args.models.split(",")
    if args.phase == "eager":
        profile_models = set(filter(None, args.profile_models.split(",")))
        for size in args.sizes.split(","):
            for name in models:
                profile = name in profile_models and (size == "real" or device.type == "cpu")
                run_eager_model(T, emitter, name, size, device, dtype, workdir, profile)
    else:
        for name in models:
            run_compile_model(T, emitter, name, device, dtype, args.compile_backend)
    loaded = sorted({_short(m.__file__) for k, m in list(sys.modules.items())
                     if (k == "transformers" or k.startswith("transformers.")) and getattr(m, "__file__", None)})
    emitter.emit(check="imports", ok=True, files=loaded)


# ---------------------------------------------------------------------------------------------
# The orchestrator: copies, fix, scheduling, comparison, tables.

SUMMARY = re.compile(r"(?:Fixed|Would fix) (\d+) sites? in (\d+) files?")
SKIPPED = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): skipped: (?P<reason>.*)$")
CACHE_NAME = re.compile(r'cache_name="([^"]+)"')


def installed_transformers() -> Path:
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("transformers is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def fix_all_files(package: Path) -> list[str]:
    """What `fix --all` is given: the package outside models/, models/auto, and the targets' folders."""
    files = [p for p in package.rglob("*.py") if "models" not in p.relative_to(package).parts[:1]]
    files.append(package / "models" / "__init__.py")
    for folder in ("auto", *MODELS):
        files.extend((package / "models" / folder).rglob("*.py"))
    return sorted(str(p) for p in files)


def rewritten_sites(original: Path, copy: Path) -> dict:
    """Per changed file (relative to the package): the cache names `fix` wrote into it."""
    out = {}
    for path in copy.rglob("*.py"):
        rel = path.relative_to(copy)
        before = original / rel
        new = path.read_bytes()
        if before.exists() and before.read_bytes() == new:
            continue
        old_names = set(CACHE_NAME.findall(before.read_text(errors="replace"))) if before.exists() else set()
        names = [n for n in CACHE_NAME.findall(new.decode("utf-8", "replace")) if n not in old_names]
        out[str(rel)] = names
    return out


def target_file(rel: str) -> bool:
    parts = Path(rel).parts
    return rel == "integrations/moe.py" or (len(parts) == 3 and parts[0] == "models" and parts[1] in MODELS
                                            and parts[2].startswith("modeling_"))


class Job:
    def __init__(self, name: str, cmd: list[str], kind: str, needs: tuple = (), env: Optional[dict] = None,
                 log: Optional[Path] = None, timeout: float = 600, on_done: Optional[Callable] = None) -> None:
        self.name, self.cmd, self.kind, self.needs, self.env = name, cmd, kind, needs, env
        self.log, self.timeout, self.on_done = log, timeout, on_done
        self.proc: Optional[subprocess.Popen] = None
        self.started = self.ended = None
        self.status = "waiting"
        self.output = ""


def run_jobs(jobs: list[Job], limits: dict, deadline: float, on_finish: Callable) -> None:
    """Start jobs when their dependencies succeeded and their kind has a free slot; stop all at the deadline."""
    while True:
        now = time.time()
        for job in jobs:
            if job.status != "running":
                continue
            code = job.proc.poll()
            timed_out = now - job.started > job.timeout or now > deadline
            if code is None and not timed_out:
                continue
            if code is None:
                _kill(job.proc)
                job.proc.wait()
                job.status = "timeout"
            else:
                job.status = "ok" if code == 0 else f"exit {code}"
            job.ended = time.time()
            if job.log is not None:
                job.log_handle.close()
                job.output = job.log.read_text(errors="replace")[-4000:]
            print(f"[{time.strftime('%H:%M:%S')}] {job.name}: {job.status} after {job.ended - job.started:.0f} s",
                  file=sys.stderr, flush=True)
            if job.on_done is not None:
                try:
                    job.on_done(job)
                except Exception as exc:  # the report must still be written
                    print(f"{job.name}: post-processing failed: {exc!r}", file=sys.stderr)
            on_finish(job)
        by_name = {j.name: j for j in jobs}
        for job in jobs:
            if job.status != "waiting":
                continue
            states = [by_name[n].status for n in job.needs]
            if any(s not in ("ok", "waiting", "running") for s in states):
                job.status = "skipped (a dependency failed)"
                continue
            if any(s != "ok" for s in states) or now > deadline:
                continue
            running = [j for j in jobs if j.status == "running"]
            if sum(j.kind == job.kind for j in running) >= limits.get(job.kind, 1) or len(running) >= limits["total"]:
                continue
            job.log_handle = open(job.log, "w") if job.log else subprocess.DEVNULL
            job.proc = subprocess.Popen(job.cmd, env=job.env, stdout=job.log_handle, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            job.started = time.time()
            job.status = "running"
            print(f"[{time.strftime('%H:%M:%S')}] {job.name}: started", file=sys.stderr, flush=True)
        if all(j.status not in ("waiting", "running") for j in jobs):
            return
        if now > deadline and all(j.status != "running" for j in jobs):
            for job in jobs:
                if job.status == "waiting":
                    job.status = "not started (budget)"
            return
        time.sleep(0.25)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own session: it and its compile workers
    except ProcessLookupError:
        pass


def load_records(results_dir: Path) -> list[dict]:
    records = []
    for path in sorted(results_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a kill
    return records


def index(records: list[dict]) -> dict:
    """(variant, model, size, check) -> the last record."""
    out = {}
    for r in records:
        if "model" in r:
            out[(r["variant"], r["model"], r["size"], r["check"])] = r
    return out


def saved_diff(work: Optional[Path], variant: str, model: str, size: str, what: str) -> Optional[float]:
    """max |patched - orig| of a tensor both workers saved (logits: all of them for tiny, the last position for real)."""
    if work is None:
        return None
    try:
        import torch

        a = torch.load(work / "results" / "orig" / f"{model}-{size}-{what}.pt")
        b = torch.load(work / "results" / variant / f"{model}-{size}-{what}.pt")
        return (a - b).abs().max().item()
    except Exception:
        return None


def compare(records: list[dict], fixes: dict, work: Optional[Path] = None) -> list[dict]:
    """One row per model and size: identity per check for each patched variant, memory, sites."""
    idx = index(records)
    rows = []
    models = sorted({(r["model"], r["size"]) for r in records if "model" in r},
                    key=lambda ms: (SIZES.index(ms[1]), ":" in ms[0], MODELS.index(ms[0].split(":")[0])
                                    if ms[0].split(":")[0] in MODELS else 99))
    for model, size in models:
        row: dict = {"model": model, "size": size, "variants": {}}
        ref = {c: idx.get(("orig", model, size, c)) for c in
               ("build", "logits", "generate", "graph", "train", "sites", "compile-default", "compile-fullgraph")}
        for variant in VARIANTS:
            got = {c: idx.get((variant, model, size, c)) for c in ref}
            v: dict = {}
            if all(r is None for r in got.values()):
                row["variants"][variant] = v  # not run
                continue

            def same(check: str, key: str) -> Optional[str]:
                a, b = ref[check], got[check]
                if b is None or a is None:
                    return None
                if not b.get("ok") or not a.get("ok"):
                    return "error" if not b.get("ok") else "orig error"
                if key not in a or key not in b:
                    return None
                return "same" if a[key] == b[key] else "differs"

            if variant != "orig":
                v["init"] = same("build", "param_digest")
                v["logits"] = same("logits", "digest")
                if v["logits"] == "differs":
                    v["logits_max_abs_diff"] = saved_diff(work, variant, model, size, "logits")
                v["generate"] = same("generate", "tokens")
                v["grads"] = same("train", "grad_digests")
                v["losses"] = same("train", "loss_digests")
                if v["grads"] == "differs":
                    a, b = ref["train"]["per_param"], got["train"]["per_param"]
                    v["grads_differ_in"] = sorted(k for k in a if a.get(k) != b.get(k))[:10]
            if variant != "orig" and got["graph"] is not None:
                v["graph_replay_vs_orig"] = same("graph", "replay_digest")
            graph = got["graph"]
            if graph is not None:
                if not graph.get("ok"):
                    v["graph"] = "error: " + (graph.get("error") or "")[:120]
                elif not graph.get("capturable"):
                    v["graph"] = "not capturable: " + (graph.get("where") or graph.get("error", "")[:80])
                else:
                    v["graph"] = "replay = eager" if graph.get("replay_equal") else "replay != eager"
                    v["graph_pool"] = graph.get("pool_reserved")
                    v["graph_pinned"] = graph.get("pinned_by_capture")
            for mode in ("default", "fullgraph"):
                c = got[f"compile-{mode}"]
                if c is not None:
                    v[f"compile_{mode}"] = ("ok" if c.get("ok") else "FAIL: " + (c.get("error") or "")[:160])
                    if c.get("ok"):
                        v[f"compile_{mode}_breaks"] = c.get("graph_breaks")
                        if variant != "orig" and ref[f"compile-{mode}"] and ref[f"compile-{mode}"].get("ok"):
                            v[f"compile_{mode}_same"] = c.get("digest") == ref[f"compile-{mode}"].get("digest")
            weights = (got["build"] or {}).get("weights")
            for check in ("logits", "generate", "train", "graph"):
                r = got[check]
                if r and r.get("ok") and r.get("memory", {}).get("peak_reserved") is not None and weights is not None:
                    v[f"peak_{check}"] = r["memory"]["peak_reserved"] - weights
            sites = got["sites"]
            if sites is not None:
                v["sites_run"] = sorted(sites.get("sites", {}))
                v["requests"] = {k: sum(x[:4]) for k, x in sites.get("sites", {}).items()}
            if variant != "orig":
                files = fixes.get(variant, {}).get("sites", {})
                own = [f for f in files if f.startswith(f"models/{model.split(':')[0]}/modeling_")]
                v["rewritten_own"] = sum(len(files[f]) for f in own)
                v["rewritten_moe_integration"] = len(files.get("integrations/moe.py", []))
            row["variants"][variant] = v
        rows.append(row)
    return rows


def mib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / MIB:.0f}"


def mark(value: Optional[str]) -> str:
    return {"same": "=", "differs": "X", "error": "E", "orig error": "e", None: "-"}.get(value, "?")


def summary_table(rows: list[dict], fixes: dict, meta: dict, records: list[dict]) -> list[str]:
    lines = [
        f"real models: transformers {meta.get('transformers_version')} | torch {meta.get('torch')} | "
        f"{meta.get('device_name')} | {'bf16' if meta.get('device') == 'cuda' else 'float32'} | {meta.get('date')}",
        "marks for fix,fix-all vs orig: = bitwise equal, X differs, E error, e orig failed, - not run | "
        "graph: = replay equals eager, n/c not capturable | compile default,fullgraph: o ok, F failed",
        f"{'model':<18}{'size':<5}{'rewr':>5}{'ran':>5} {'init':>4} {'logit':>5} {'gen':>3} {'grad':>4}  "
        f"{'graph o|f|a':<12}{'compile o|f|a':<15}{'infer MiB o/f/a':<18}{'train MiB o/f/a':<18}{'pool MiB o/f/a':<15}",
    ]
    for row in rows:
        v = row["variants"]
        o, f, a = v.get("orig", {}), v.get("fix", {}), v.get("fix-all", {})

        def pair(key: str) -> str:
            return mark(f.get(key)) + mark(a.get(key))

        def graph_mark(x: dict) -> str:
            g = x.get("graph")
            if g is None:
                return "-"
            return "=" if g == "replay = eager" else "n/c" if g.startswith("not capturable") else "X" if "!=" in g else "E"

        def comp(x: dict) -> str:
            return "".join("-" if x.get(f"compile_{m}") is None else "o" if x[f"compile_{m}"] == "ok" else "F"
                           for m in ("default", "fullgraph"))

        def count(x: dict, key: str):
            return len(x[key]) if key in x else "-"

        rewr = f"{f.get('rewritten_own', '-')}/{a.get('rewritten_own', '-')}"
        ran = f"{count(f, 'sites_run')}/{count(a, 'sites_run')}"
        graphs = f"{graph_mark(o)}|{graph_mark(f)}|{graph_mark(a)}"
        comps = f"{comp(o)}|{comp(f)}|{comp(a)}"
        infer = "/".join(mib(x.get("peak_logits")) for x in (o, f, a))
        train = "/".join(mib(x.get("peak_train")) for x in (o, f, a))
        pools = "/".join(mib(x.get("graph_pool")) for x in (o, f, a))
        lines.append(f"{row['model']:<18}{row['size']:<5}{rewr:>5}{ran:>5} {pair('init'):>4} {pair('logits'):>5} "
                     f"{pair('generate'):>3} {pair('grads'):>4}  {graphs:<12}{comps:<15}{infer:<18}{train:<18}{pools:<15}")
    for variant in ("fix", "fix-all"):
        fx = fixes.get(variant)
        if fx:
            sites = fx.get("sites", {})
            core = {k: n for k, n in sites.items() if not k.startswith("models/")}
            own = [f"{k.split('/')[1]} {len(n)}" for k, n in sorted(sites.items()) if target_file(k) and n]
            lines.append(f"{variant}: {fx.get('summary')} ({fx.get('seconds')} s); in the targets' modeling files: "
                         f"{', '.join(own) or 'none'}; outside models/: {sum(map(len, core.values()))} sites in "
                         f"{len(core)} files")
    failures = [r for r in records if r.get("ok") is False and r.get("check") != "process"]
    for r in failures[:6]:
        lines.append(f"failed: {r.get('variant')} {r.get('model')} {r.get('size')} {r.get('check')}: "
                     f"{(r.get('error') or '')[:110]} @ {r.get('where')}")
    if len(failures) > 6:
        lines.append(f"... {len(failures) - 6} more failed checks in the JSON")
    return lines


def detail_tables(rows: list[dict], records: list[dict]) -> list[str]:
    lines = ["", "Per model and variant (memory in MiB above the weights; graph pool = reserved by the captured graph's pool)"]
    for row in rows:
        lines.append(f"== {row['model']} {row['size']}")
        for variant, v in row["variants"].items():
            keep = {k: v[k] for k in v if k not in ("requests",)}
            for k in list(keep):
                if k.startswith("peak_") or k in ("graph_pool", "graph_pinned"):
                    keep[k] = mib(keep[k]) if isinstance(keep[k], int) else keep[k]
            lines.append(f"  {variant:<8} " + json.dumps(keep, default=str))
            if v.get("requests"):
                lines.append("           get_empty requests: " + ", ".join(f"{k}: {n}" for k, n in sorted(v["requests"].items())))
    profiles = [r for r in records if r.get("check") == "profile" and r.get("ok")]
    for p in profiles:
        lines.append(f"== profile of one captured forward: {p['model']} {p['size']} ({p['variant']})")
        lines.append(f"  pool reserved {mib(p.get('pool_reserved'))} MiB; allocated during capture "
                     f"{mib(p.get('allocated_during_capture'))} MiB (peak live {mib(p.get('peak_live_during_capture'))} MiB); "
                     f"by kind (MiB): " + ", ".join(f"{k} {mib(b)}" for k, b in (p.get("by_kind") or {}).items())
                     + f"; factory calls seen by the tracer: {mib(p.get('factory_bytes'))} MiB")
        for t in (p.get("top_lines") or [])[:8]:
            lines.append(f"    {t['kind']:<9} {mib(t['bytes']):>7} MiB {t['allocs']:>4} allocs  {t['site']} ({t.get('function')})")
        for t in (p.get("factory_sites") or [])[:6]:
            lines.append(f"    factory call {t['bytes']:>10} B {t['calls']:>4} calls  {t['site']} ({t['function']}) "
                         f"{', '.join(t['shapes'])}" + (f" get_empty h/m/g/f {t['get_empty']}" if t.get("get_empty") else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sizes", default=None, help="tiny,real on CUDA; tiny on CPU")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=None, help="results folder (default: $OUT, else ./real_models_out)")
    parser.add_argument("--work", default=None, help="folder for the package copies (default: a temporary folder)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for everything (default 330 on CUDA)")
    parser.add_argument("--job-timeout", type=float, default=None, help="seconds per worker process")
    parser.add_argument("--compile", default="on", choices=("on", "off"))
    parser.add_argument("--compile-backend", default=None, help="inductor on CUDA, aot_eager on CPU")
    parser.add_argument("--compile-procs", type=int, default=None, help="compile workers per variant, models split (default 3 on CUDA)")
    parser.add_argument("--profile-models", default="qwen3_moe,mixtral")
    parser.add_argument("--eager-experts", default="mixtral,qwen3_moe,olmoe,deepseek_v3,gpt_oss",
                        help="also run these at size tiny with experts_implementation='eager' (the per-expert loop)")
    parser.add_argument("--parallel", type=int, default=None, help="processes at once (default 14 on CUDA, 2 on CPU)")
    parser.add_argument("--real-procs", type=int, default=2,
                        help="size-real workers at once (GPU memory: about 56 GB each at DeepSeek-V3)")
    parser.add_argument("--from-json", help="print the tables of an earlier run's real_models.json, run nothing")
    # internal: one worker process
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--phase", default="eager", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--expect-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.sizes = args.sizes or ("tiny,real" if cuda else "tiny")
    args.compile_backend = args.compile_backend or ("inductor" if cuda else "aot_eager")
    if args.worker:
        worker(args)
        return
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        rows = compare(saved["records"], saved["fix"])
        print("\n".join(summary_table(rows, saved["fix"], saved["meta"], saved["records"])
                        + detail_tables(rows, saved["records"])))
        return

    start = time.time()
    budget = args.budget if args.budget is not None else (330 if cuda else 7200)
    deadline = start + budget
    job_timeout = args.job_timeout or (budget if cuda else 3600)
    out = Path(args.out or os.environ.get("OUT") or "real_models_out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="allocaudit-real-", dir=args.work))
    results_dir = work / "results"
    results_dir.mkdir()
    variants = [v for v in args.variants.split(",") if v]
    models = args.models.split(",")
    package = installed_transformers()
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "device": args.device,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "transformers_installed": str(package),
            "budget_s": budget, "sizes": args.sizes, "models": models, "compile_backend": args.compile_backend,
            "shapes": SHAPES, "seed": SEED, "work": str(work),
            "deterministic": "torch.manual_seed(0) per model; seeded CPU generator for inputs; "
                             "use_deterministic_algorithms(True, warn_only=True) (fills torch.empty with NaN); "
                             "CUBLAS_WORKSPACE_CONFIG=:4096:8; cudnn deterministic; eager attention; eval mode"}
    fixes: dict = {}
    report = {"meta": meta, "fix": fixes, "jobs": {}, "records": [], "rows": []}

    def write_report() -> list[str]:
        records = load_records(results_dir)
        procs = [r for r in records if r.get("check") == "process"]
        if procs:
            for key in ("transformers_version", "torch", "device_name", "python"):
                meta[key] = procs[0].get(key)
        rows = compare(records, fixes, work)
        report.update(records=records, rows=rows)
        (out / "real_models.json").write_text(json.dumps(report, indent=1, default=str))
        lines = summary_table(rows, fixes, meta, records)
        (out / "real_models.txt").write_text("\n".join(lines + detail_tables(rows, records)) + "\n")
        return lines

    env = dict(os.environ)
    env.pop("ALLOCAUDIT_RUNTIME", None)
    env.pop("ALLOCAUDIT_RUNTIME_DEBUG", None)
    env.pop("ALLOCAUDIT_RUNTIME_GRAPHS", None)
    env.update(CUBLAS_WORKSPACE_CONFIG=":4096:8", PYTHONHASHSEED="0", TRANSFORMERS_VERBOSITY="error",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    allocaudit = [sys.executable, "-m", "allocaudit.auditor"]
    roots = {"orig": None}
    jobs: list[Job] = []

    def fix_done(variant: str, copy: Path) -> Callable:
        def done(job: Job) -> None:
            text = job.log.read_text(errors="replace")
            summary = SUMMARY.search(text)
            sites = rewritten_sites(package, copy)
            skipped = [m.groupdict() for m in map(SKIPPED.match, text.splitlines()) if m]
            for s in skipped:
                s["path"] = _short(s["path"])
            fixes[variant] = {
                "command": ("allocaudit fix --no-cache <copy>/transformers" if variant == "fix" else
                            f"allocaudit fix --all --no-cache <{len(job.cmd) - 7} files of the copy>"),
                "exit": job.status, "seconds": round(job.ended - job.started, 1),
                "summary": summary.group(0) if summary else None,
                "sites": sites,
                "skipped_in_target_files": [s for s in skipped if target_file(s["path"][len("transformers/"):])],
                "skipped_total": len(skipped),
            }
        return done

    for variant in variants:
        if variant == "orig":
            continue
        root = work / variant
        copy = root / "transformers"
        shutil.copytree(package, copy, symlinks=True)
        roots[variant] = root
        if variant == "fix":
            cmd = [*allocaudit, "fix", "--all-sizes", "--no-cache", str(copy)]
        else:
            cmd = [*allocaudit, "fix", "--all", "--all-sizes", "--no-cache", *fix_all_files(copy)]
        jobs.append(Job(f"{variant}: allocaudit fix", cmd, "fix", env=env, log=out / "logs" / f"{variant}-fix.log",
                        timeout=job_timeout, on_done=fix_done(variant, copy)))

    compile_procs = args.compile_procs or (3 if cuda else 1)
    for variant in variants:
        venv = dict(env)
        root = roots.get(variant)
        if root is not None:
            venv["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        needs = () if variant == "orig" else (f"{variant}: allocaudit fix",)
        common = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--device", args.device,
                  "--compile-backend", args.compile_backend]
        if root is not None:
            common += ["--expect-root", str(root)]
        for size in args.sizes.split(","):
            # tiny: the three variants at once; real: --real-procs at once (DeepSeek-V3 trains in ~56 GB).
            names = models + ([f"{m}:eager" for m in args.eager_experts.split(",") if m in models] if size == "tiny" else [])
            jobs.append(Job(f"{variant}: eager {size}", [*common, "--phase", "eager", "--models", ",".join(names),
                                                        "--sizes", size, "--profile-models", args.profile_models,
                                                        "--results", str(results_dir / f"{variant}-eager-{size}.jsonl")],
                            f"eager-{size}", needs, env=venv, log=out / "logs" / f"{variant}-eager-{size}.log",
                            timeout=job_timeout))
        if args.compile == "on" and "tiny" in args.sizes.split(","):
            shards = [models[i::compile_procs] for i in range(compile_procs)]
            for i, shard in enumerate(filter(None, shards)):
                cenv = dict(venv, TORCHINDUCTOR_COMPILE_THREADS=str(max(2, (os.cpu_count() or 2) // (3 * compile_procs))))
                jobs.append(Job(f"{variant}: compile {i}", [*common, "--phase", "compile", "--models", ",".join(shard),
                                                           "--results", str(results_dir / f"{variant}-compile{i}.jsonl")],
                                "compile", needs, env=cenv, log=out / "logs" / f"{variant}-compile{i}.log",
                                timeout=job_timeout))
    limits = {"fix": 2, "eager-tiny": 3 if cuda else 1, "eager-real": args.real_procs,
              "compile": 3 * compile_procs if cuda else 1, "total": args.parallel or (14 if cuda else 2)}

    def finished(job: Job) -> None:
        report["jobs"][job.name] = {"status": job.status, "seconds": round((job.ended or 0) - (job.started or 0), 1),
                                    "log_tail": job.output[-1500:] if job.status != "ok" else ""}
        write_report()

    print(f"work folder {work}; results in {out}", file=sys.stderr, flush=True)
    try:
        run_jobs(jobs, limits, deadline, finished)
    finally:
        for job in jobs:
            if job.status == "running":
                _kill(job.proc)
            report["jobs"].setdefault(job.name, {"status": job.status})
        lines = write_report()
    meta["wall_s"] = round(time.time() - start, 1)
    (out / "real_models.json").write_text(json.dumps(report, indent=1, default=str))
    for job in jobs:
        if job.status != "ok":
            print(f"job {job.name}: {job.status}" + (f" — {job.output.strip().splitlines()[-1][:200]}" if job.output.strip() else ""))
    print("\n".join(lines))
    print(f"wall {meta['wall_s']} s; tables: {out / 'real_models.txt'}; raw: {out / 'real_models.json'}")
    shutil.rmtree(work, ignore_errors=True) if os.environ.get("REAL_MODELS_KEEP_WORK") is None else None


if __name__ == "__main__":
    main()
