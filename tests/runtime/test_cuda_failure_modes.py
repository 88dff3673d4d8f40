"""The failure modes users hit with hand-written workspace caches, each against a naive cache and ours.

1. A buffer freed while a captured graph still replays into it (TensorRT-LLM #16290-like): the
   review's keep-the-largest cache frees the smaller buffer; the replay writes into a tensor
   that now owns that memory.
2. A cache held in a class attribute outlives its owner and its graphs (TensorRT-LLM #18022):
   the memory never comes back.
3. Warm-up missed the worst case, then the workspace was locked (vLLM "Workspace is locked ...
   requires N MB"): the request fails without saying which workspace.
4. A tensor allocated between replays at an address a captured graph writes to (SGLang
   #27664-like): a cache that hands graph memory to eager requests gives a tensor that is still
   alive at the next replay the graph's workspace, and the replay overwrites it.
"""

import gc

import pytest
import torch

from allocaudit.runtime import WorkspaceCache, WorkspaceGrowthError, get_empty, use_cache

pytestmark = pytest.mark.cuda

MIB = 1 << 20


class KeepLargest:
    """The review's proposed fix: one buffer per name, replaced (freed) by a larger one."""

    def __init__(self):
        self.buffers = {}

    def __call__(self, n, name):
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < n:
            buffer = self.buffers[name] = torch.empty(n, device="cuda")
        return buffer[:n]


def ours(cache):
    return lambda n, name: get_empty(n, torch.float32, device="cuda", cache_name=name, cache=cache)


def workspace_sum(alloc, x, n):
    ws = alloc(n, "ws")
    torch.mul(x[:n], 2, out=ws)
    return ws.sum()


@pytest.mark.parametrize("variant", ["keep-largest", "allocaudit"])
def test_1_a_replay_never_writes_into_memory_that_now_belongs_to_another_tensor(variant):
    alloc = KeepLargest() if variant == "keep-largest" else ours(WorkspaceCache("no-use-after-free"))
    x = torch.randn(4 * MIB, device="cuda")
    workspace_sum(alloc, x, MIB)  # eager warm-up: the buffer the graph will capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = workspace_sum(alloc, x, MIB)
    workspace_sum(alloc, x, 4 * MIB)  # a larger eager batch after capture
    torch.cuda.synchronize()
    victim = torch.full((MIB,), 7.0, device="cuda")  # takes whatever the allocator has free
    graph.replay()
    torch.cuda.synchronize()
    intact = bool(victim.eq(7.0).all())
    assert intact == (variant == "allocaudit")
    assert torch.allclose(out, x[:MIB].sum() * 2, rtol=1e-3, atol=1e-1)


class NaiveLayer(torch.nn.Module):
    buffers_by_name = {}  # class-level: shared by every instance, never released

    def forward(self, x):
        ws = self.buffers_by_name.get("ws")
        if ws is None or ws.numel() < x.numel():
            ws = self.buffers_by_name["ws"] = torch.empty(x.numel(), device="cuda")
        return torch.mul(x, 2, out=ws[: x.numel()]).sum()


class PatchedLayer(torch.nn.Module):
    def forward(self, x):
        ws = get_empty(x.numel(), torch.float32, device="cuda", cache_name="layer.ws")
        return torch.mul(x, 2, out=ws).sum()


@pytest.mark.parametrize("variant", ["class-attribute", "allocaudit"])
def test_2_a_cache_goes_with_its_owner_and_its_graphs(variant):
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    x = torch.randn(8 * MIB, device="cuda")
    model = NaiveLayer() if variant == "class-attribute" else PatchedLayer()
    cache = WorkspaceCache("model", owner=model)
    with use_cache(cache):
        model(x)  # warm-up
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
        graph.replay()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - base >= 64 * MIB  # x and the 32 MiB workspace
    del graph, model, x
    gc.collect()
    torch.cuda.synchronize()
    left = torch.cuda.memory_allocated() - base
    if variant == "class-attribute":
        assert left >= 32 * MIB  # the workspace outlives the model and its graph
        NaiveLayer.buffers_by_name.clear()
    else:
        assert left < MIB and cache.buffers() == []


class LockedWorkspace:
    """vLLM-like: a workspace sized at warm-up, then locked; larger requests fail."""

    def __init__(self):
        self.buffer, self.locked = None, False

    def __call__(self, n, name):
        if self.buffer is None or self.buffer.numel() < n:
            if self.locked:
                raise RuntimeError("Workspace is locked but allocation requires more memory")
            self.buffer = torch.empty(n, device="cuda")
        return self.buffer[:n]


def test_3_a_request_beyond_the_warm_up_names_the_workspace_or_falls_back():
    x = torch.randn(4 * MIB, device="cuda")
    naive = LockedWorkspace()
    workspace_sum(naive, x, MIB)
    naive.locked = True
    with pytest.raises(RuntimeError) as info:
        workspace_sum(naive, x, 4 * MIB)
    assert "ws" not in str(info.value)  # which workspace, and by how much, is not said

    cache = WorkspaceCache("engine")
    workspace_sum(ours(cache), x, MIB)
    cache.freeze()
    with pytest.raises(WorkspaceGrowthError) as info:
        workspace_sum(ours(cache), x, 4 * MIB)
    message = str(info.value)
    assert "'ws'" in message and str(16 * MIB) in message and str(4 * MIB) in message
    cache.freeze(on_growth="fallback")
    out = workspace_sum(ours(cache), x, 4 * MIB)
    assert torch.allclose(out, x.sum() * 2, rtol=1e-3, atol=1e-1)
    assert cache.stats()[("ws", "cuda:0")].fallbacks == 1


class SeedCache:
    """TensorRT-LLM PR 7390's get_empty: a list of buffers per name, the first that fits wins."""

    def __init__(self):
        self.buffers = {}

    def __call__(self, n, name):
        for buffer in self.buffers.get(name, []):
            if buffer.numel() >= n:
                return buffer[:n]
        buffer = torch.empty(n, device="cuda")
        self.buffers.setdefault(name, []).append(buffer)
        return buffer


@pytest.mark.parametrize(
    "variant, intact",
    [("seed", False), ("allocaudit", True), ("allocaudit-shared", False)],
)
def test_4_a_tensor_alive_across_a_replay_is_never_the_graphs_workspace(variant, intact):
    # The shared mode trades this protection for memory: there, an eager hand-out must not live
    # across a replay (README, "CUDA graphs").
    if variant == "seed":
        alloc = SeedCache()
    else:
        alloc = ours(WorkspaceCache(variant, share_with_graphs=variant.endswith("shared")))
    x = torch.randn(MIB, device="cuda")
    workspace_sum(alloc, x, MIB)  # warm-up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = workspace_sum(alloc, x, MIB)
    for step in range(3):
        staged = alloc(MIB, "ws")  # e.g. the next batch staged by the same call site
        staged.fill_(5.0)
        x.normal_()
        graph.replay()
        torch.cuda.synchronize()
        assert bool(staged.eq(5.0).all()) == intact
        assert torch.allclose(out, x.sum() * 2, rtol=1e-3, atol=1e-1)
        del staged
