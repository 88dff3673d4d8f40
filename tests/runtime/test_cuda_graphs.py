"""get_empty under CUDA graphs: pinning, sharing with eager work, streams inside a capture, release."""

import gc

import pytest
import torch

from allocaudit.runtime import WorkspaceAliasError, WorkspaceCache, get_empty

pytestmark = pytest.mark.cuda

MIB = 1 << 20
SENTINEL = 0x5A


def workspace_sum(cache, x, n, name="ws", zero=False):
    """A kernel's use of a workspace: write x[:n] * 2 into it, then read it back."""
    ws = get_empty(n, torch.float32, device="cuda", cache_name=name, zero=zero, cache=cache)
    # No temporaries: under capture they would be freed into the graph's pool, where the
    # sentinels below may legitimately land, and a replay would then overwrite them.
    torch.mul(x[:n], 2, out=ws)
    return ws.sum()


def plain_sentinels(nbytes_list):
    return [torch.full((n,), SENTINEL, dtype=torch.uint8, device="cuda") for n in nbytes_list]


def corrupted(sentinels):
    torch.cuda.synchronize()
    return sum(int(not s.eq(SENTINEL).all()) for s in sentinels)


def warm_up(x):
    # Load the kernels outside capture, on a cache of its own so the caches under test stay empty.
    workspace_sum(WorkspaceCache("warm-up"), x, 16, zero=True)
    torch.cuda.synchronize()


def pinned(cache):
    return [b for b in cache.buffers() if b.pinned]


@pytest.mark.parametrize("first_allocated", ["in capture", "eagerly"])
def test_nothing_lets_go_of_what_a_graph_replays_into(first_allocated):
    cache = WorkspaceCache("graphs")
    x = torch.randn(4 * MIB, device="cuda")
    warm_up(x)
    small, large = MIB, 4 * MIB  # floats: a 4 MiB and a 16 MiB buffer
    if first_allocated == "eagerly":
        workspace_sum(cache, x, small)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = workspace_sum(cache, x, small)
    (captured,) = pinned(cache)
    assert captured.nbytes == small * 4

    # Larger eager batches after capture, other names, clear() and a tight budget: none of them
    # may let go of the buffer the graph replays into.
    workspace_sum(cache, x, large)
    workspace_sum(cache, x, small, name="other")
    workspace_sum(cache, x, large, name="other")
    cache.clear()
    cache.max_bytes = 0
    workspace_sum(cache, x, large, name="over-budget")
    assert [b.address for b in pinned(cache)] == [captured.address]

    outside = plain_sentinels([small * 4, large * 4, small * 4])
    assert all(s.data_ptr() != captured.address for s in outside)
    for _ in range(3):
        x.normal_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.allclose(out, x[:small].sum() * 2, rtol=1e-4, atol=1e-2)
    assert corrupted(outside) == 0


def test_shared_mode_captures_take_the_idle_eager_buffer_and_eager_work_reuses_it_after():
    # Flow A of the benchmark: the largest batch eagerly first, then smaller graphs. The graphs
    # hold no workspace of their own, and eager work after capture needs no new memory.
    cache = WorkspaceCache("share", share_with_graphs=True)
    x = torch.randn(4 * MIB, device="cuda")
    warm_up(x)
    workspace_sum(cache, x, 4 * MIB)
    (eager,) = cache.buffers()
    pool = torch.cuda.graph_pool_handle()
    graphs = []
    for n in (2 * MIB, MIB, MIB // 2):
        workspace_sum(cache, x, n)  # warm-up, as PyTorch asks before capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            out = workspace_sum(cache, x, n)
        graphs.append((graph, n, out))
    assert [(b.address, b.pinned) for b in cache.buffers()] == [(eager.address, True)]
    for n in (3 * MIB, 4 * MIB):
        workspace_sum(cache, x, n)  # eager, on the stream that warmed up: the same buffer
    assert [b.address for b in cache.buffers()] == [eager.address]
    for graph, n, out in graphs:
        x.normal_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.allclose(out, x[:n].sum() * 2, rtol=1e-3, atol=1e-1)


def test_stages_in_one_graph_share_one_buffer_and_the_pool_grows_no_more_than_with_torch_empty():
    stages, n = 8, 4 * MIB  # 16 MiB per stage workspace

    def run(alloc, x):
        h = x
        for i in range(stages):
            ws = alloc(i)
            torch.add(h, i, out=ws)
            h = ws.sum().expand(n)  # the stage's result outlives its workspace
            del ws
        return h

    def pool_growth(alloc):
        x = torch.randn(n, device="cuda")
        run(alloc, x)  # eager warm-up
        torch.cuda.synchronize()
        before = torch.cuda.memory_reserved()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = run(alloc, x)
        torch.cuda.synchronize()
        grown = torch.cuda.memory_reserved() - before
        x.normal_()
        graph.replay()
        expected = run(lambda i: torch.empty(n, device="cuda"), x)
        torch.cuda.synchronize()
        assert torch.allclose(out, expected, rtol=1e-3, atol=1e-1)
        return grown

    def ours(cache):
        return lambda i: get_empty(n, torch.float32, device="cuda", cache_name=f"stage{i}", cache=cache)

    plain = pool_growth(lambda i: torch.empty(n, device="cuda"))
    private, shared = WorkspaceCache("private"), WorkspaceCache("shared", share_with_graphs=True)
    assert pool_growth(ours(private)) <= plain
    assert pool_growth(ours(shared)) < plain  # the capture took the eager buffer
    for cache in (private, shared):
        assert all(b.names == tuple(f"stage{i}" for i in range(stages)) for b in cache.buffers())


def test_two_streams_inside_one_capture_never_share_a_buffer():
    # SGLang and vLLM overlap shared experts on a second stream inside the captured graph: a
    # buffer the main stream used (and dropped) must not serve the side stream, whose kernels
    # the graph runs concurrently with the main stream's.
    cache = WorkspaceCache("forked")
    x = torch.randn(MIB, device="cuda")
    warm_up(x)
    side = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        main = torch.cuda.current_stream()
        side.wait_stream(main)  # fork
        a = get_empty(MIB, torch.float32, device="cuda", cache_name="routed", cache=cache)
        a_ptr = a.data_ptr()
        torch.mul(x, 2, out=a)
        out_a = a.sum()
        del a
        with torch.cuda.stream(side):
            b = get_empty(MIB, torch.float32, device="cuda", cache_name="shared", cache=cache)
            b_ptr = b.data_ptr()
            torch.mul(x, 3, out=b)
            out_b = b.sum()
            del b
        main.wait_stream(side)  # join
    assert a_ptr != b_ptr
    for _ in range(5):
        x.normal_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.allclose(out_a, x.sum() * 2, rtol=1e-3, atol=1e-1)
        assert torch.allclose(out_b, x.sum() * 3, rtol=1e-3, atol=1e-1)


def test_by_default_eager_work_never_gets_a_buffer_a_graph_replays_into():
    cache = WorkspaceCache("private")
    assert not cache.share_with_graphs
    x = torch.randn(MIB, device="cuda")
    warm_up(x)
    workspace_sum(cache, x, MIB)
    (eager,) = cache.buffers()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = workspace_sum(cache, x, MIB)
    (captured,) = pinned(cache)
    assert captured.address == eager.address  # idle, of the right size: the graph took it
    held = get_empty(MIB, torch.float32, device="cuda", cache_name="ws", cache=cache)
    held.fill_(5.0)  # an eager hand-out kept alive across a replay
    x.normal_()
    graph.replay()
    torch.cuda.synchronize()
    assert held.data_ptr() != captured.address and held.eq(5.0).all()
    assert torch.allclose(out, x.sum() * 2, rtol=1e-3, atol=1e-1)


def test_zeroing_inside_capture_is_replayed():
    cache = WorkspaceCache("zero")
    x = torch.randn(MIB, device="cuda")
    warm_up(x)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ws = get_empty(MIB, torch.float32, device="cuda", cache_name="ws", zero=True, cache=cache)
        ws[: MIB // 2].add_(x[: MIB // 2])
        out = ws.sum()
        del ws
    for _ in range(3):
        stale = get_empty(MIB, torch.float32, device="cuda", cache_name="ws", cache=cache)
        stale.fill_(7.0)  # eager use of the same name leaves stale data behind
        del stale
        x.normal_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.allclose(out, x[: MIB // 2].sum(), rtol=1e-4, atol=1e-2)


def test_growth_during_capture_allocates_in_the_graph_pool_and_replays():
    cache = WorkspaceCache("grow-in-capture")
    x = torch.randn(4 * MIB, device="cuda")
    warm_up(x)
    workspace_sum(cache, x, MIB)  # an eager buffer of 4 MiB first
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        a = workspace_sum(cache, x, MIB)
        b = workspace_sum(cache, x, 4 * MIB)  # larger than anything idle: allocated in capture
    assert cache.stats()[("ws", "cuda:0")].growths == 1
    assert sorted(b.nbytes for b in pinned(cache)) == [4 * MIB, 16 * MIB]
    outside = plain_sentinels([16 * MIB, 4 * MIB])
    for _ in range(3):
        x.normal_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.allclose(a, x[:MIB].sum() * 2, rtol=1e-3, atol=1e-1)
        assert torch.allclose(b, x.sum() * 2, rtol=1e-3, atol=1e-1)
    assert corrupted(outside) == 0


def test_release_pinned_and_release_return_the_memory():
    cache = WorkspaceCache("release")
    x = torch.randn(4 * MIB, device="cuda")
    warm_up(x)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        workspace_sum(cache, x, 4 * MIB)
    workspace_sum(cache, x, MIB, name="eager-only")
    with torch.cuda.graph(torch.cuda.CUDAGraph()):
        with pytest.raises(RuntimeError, match="capture"):
            cache.release_pinned()
    cache.clear()
    assert [b.nbytes for b in cache.buffers()] == [16 * MIB]  # only the pinned one is left
    del graph
    cache.release_pinned()
    assert cache.buffers() == []
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - base < MIB  # the graph's pool and the buffer are gone


def test_zero_true_on_a_fresh_cuda_buffer_over_recycled_memory():
    cache = WorkspaceCache("fresh")
    junk = torch.full((3 * MIB,), -1, dtype=torch.int32, device="cuda")
    del junk  # the caching allocator hands this block out again
    out = get_empty(3 * MIB, torch.int32, device="cuda", cache_name="ws", zero=True, cache=cache)
    assert out.count_nonzero().item() == 0


def test_device_spellings_on_cuda():
    cache = WorkspaceCache("devices")
    for device in ["cuda", "cuda:0", torch.device("cuda", 0), 0]:
        out = get_empty((3, 5), torch.bfloat16, device=device, cache_name="ws", cache=cache)
        assert out.device == torch.device("cuda", 0) and out.shape == (3, 5)
        del out
    assert list(cache.stats()) == [("ws", "cuda:0")]
    assert cache.stats()[("ws", "cuda:0")].hits == 3


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_requests_on_two_devices_use_separate_buffers():
    cache = WorkspaceCache("two")
    a = get_empty(1024, torch.float32, device="cuda:0", cache_name="ws", cache=cache)
    b = get_empty(1024, torch.float32, device="cuda:1", cache_name="ws", cache=cache)
    with torch.cuda.device(1):
        c = get_empty(1024, torch.float32, device="cuda", cache_name="ws", cache=cache)
    assert (a.device.index, b.device.index, c.device.index) == (0, 1, 1)
    assert set(cache.stats()) == {("ws", "cuda:0"), ("ws", "cuda:1")}
    assert cache.stats()[("ws", "cuda:1")].overlaps == 1  # b was alive: c got other memory
    b.fill_(1.0)
    c.fill_(2.0)
    assert b.eq(1.0).all() and c.eq(2.0).all()
    del b
    with torch.cuda.device(1):
        assert get_empty(1024, torch.float32, device="cuda", cache_name="ws", cache=cache).device.index == 1
    assert {x.device for x in cache.buffers()} == {"cuda:0", "cuda:1"}


def test_poison_and_strict_on_cuda():
    cache = WorkspaceCache("debug", poison=True, strict=True)
    f = get_empty((64, 64), torch.bfloat16, device="cuda", cache_name="f", cache=cache)
    assert f.isnan().all()
    i = get_empty(100, torch.int32, device="cuda", cache_name="i", cache=cache)
    assert i.eq(-1).all()
    q = get_empty(100, torch.float8_e4m3fn, device="cuda", cache_name="q", cache=cache)
    assert q.view(torch.uint8).eq(0xFF).all()
    z = get_empty(100, torch.float32, device="cuda", cache_name="z", zero=True, cache=cache)
    assert z.eq(0).all()
    row = f[3]
    del f
    with pytest.raises(WorkspaceAliasError, match="'f'"):
        get_empty((64, 64), torch.bfloat16, device="cuda", cache_name="f", cache=cache)
    del row
    assert get_empty((8, 8), torch.bfloat16, device="cuda", cache_name="f", cache=cache).isnan().all()


def test_poison_inside_capture_is_replayed():
    cache = WorkspaceCache("poison-graph", poison=True)
    x = torch.randn(1024, device="cuda")
    warm_up(x)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ws = get_empty(1024, torch.float32, device="cuda", cache_name="ws", cache=cache)
        ws[:512].copy_(x[:512])
        out = ws.sum()  # reads the stale half: NaN under poison
        del ws
    graph.replay()
    torch.cuda.synchronize()
    assert out.isnan().item()


def test_a_capture_leaves_a_much_larger_eager_buffer_to_eager_work():
    cache = WorkspaceCache("sizes")
    x = torch.randn(4 * MIB, device="cuda")
    warm_up(x)
    workspace_sum(cache, x, 4 * MIB)  # 16 MiB, eagerly: the largest batch first
    (eager,) = cache.buffers()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        workspace_sum(cache, x, MIB // 4)  # 1 MiB: the graph allocates what it needs
    (captured,) = pinned(cache)
    assert captured.nbytes == MIB and captured.address != eager.address
    held = get_empty(4 * MIB, torch.float32, device="cuda", cache_name="ws", cache=cache)
    assert held.data_ptr() == eager.address  # eager work keeps its buffer
