"""get_empty on a CUDA GPU: graph capture, pinning, zeroing under capture, debug modes, devices."""

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


def pool_sentinels(pool, nbytes_list):
    """Tensors allocated in ``pool`` (where a freed workspace of a graph would be reused), filled."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        sentinels = [torch.empty(n, dtype=torch.uint8, device="cuda") for n in nbytes_list]
    for s in sentinels:
        s.fill_(SENTINEL)
    return graph, sentinels


def plain_sentinels(nbytes_list):
    return [torch.full((n,), SENTINEL, dtype=torch.uint8, device="cuda") for n in nbytes_list]


def corrupted(sentinels):
    torch.cuda.synchronize()
    return sum(int(not s.eq(SENTINEL).all()) for s in sentinels)


def warm_up(x):
    # Load the kernels outside capture, on a cache of its own so the caches under test stay empty.
    workspace_sum(WorkspaceCache("warm-up"), x, 16, zero=True)
    torch.cuda.synchronize()


@pytest.mark.parametrize("first_allocated", ["in capture", "eagerly"])
def test_growth_between_captures_never_frees_what_a_graph_replays_into(first_allocated):
    cache = WorkspaceCache("graphs")
    x = torch.randn(4 * MIB, device="cuda")
    warm_up(x)
    small, large = MIB, 4 * MIB  # floats: a 4 MiB and a 16 MiB buffer
    if first_allocated == "eagerly":
        workspace_sum(cache, x, small)
    pool = torch.cuda.graph_pool_handle()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = workspace_sum(cache, x, small)
    captured_ptr = get_empty(1, torch.uint8, device="cuda", cache_name="ws", cache=cache).data_ptr()

    # Larger eager batches after capture grow the slot; then another slot grows, which lets go
    # of idle buffers, but never of pinned ones.
    workspace_sum(cache, x, large)
    stats = cache.stats()[("ws", "cuda:0")]
    assert stats.growths == 1
    assert stats.bytes_pinned == small * 4
    assert stats.bytes_held == (small + large) * 4
    workspace_sum(cache, x, small, name="other")
    workspace_sum(cache, x, large, name="other")  # a growth: lets go of the idle 16 MiB buffer, not the pinned one
    stats = cache.stats()[("ws", "cuda:0")]
    assert stats.bytes_pinned == stats.bytes_held == small * 4

    sentinel_graph, in_pool = pool_sentinels(pool, [small * 4, large * 4, small * 4])
    outside = plain_sentinels([small * 4, large * 4])
    for _ in range(3):
        x.normal_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.allclose(out, x[:small].sum() * 2, rtol=1e-4, atol=1e-2)
    assert corrupted(in_pool + outside) == 0
    assert all(s.data_ptr() != captured_ptr for s in in_pool + outside)
    del sentinel_graph


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
        stale.fill_(7.0)  # eager use of the same slot leaves stale data behind
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
    pool = torch.cuda.graph_pool_handle()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        a = workspace_sum(cache, x, MIB)
        b = workspace_sum(cache, x, 4 * MIB)  # grows the slot inside the capture
    stats = cache.stats()[("ws", "cuda:0")]
    assert stats.growths == 1
    assert stats.bytes_pinned == stats.bytes_held == 20 * MIB
    sentinel_graph, in_pool = pool_sentinels(pool, [16 * MIB, 4 * MIB])
    outside = plain_sentinels([4 * MIB])
    for _ in range(3):
        x.normal_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.allclose(a, x[:MIB].sum() * 2, rtol=1e-3, atol=1e-1)
        assert torch.allclose(b, x.sum() * 2, rtol=1e-3, atol=1e-1)
    assert corrupted(in_pool + outside) == 0
    del sentinel_graph


def test_pinned_buffers_survive_clear_and_go_with_release_pinned():
    cache = WorkspaceCache("clear")
    x = torch.randn(4 * MIB, device="cuda")
    warm_up(x)
    pool = torch.cuda.graph_pool_handle()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = workspace_sum(cache, x, MIB)
    workspace_sum(cache, x, MIB, name="eager-only")
    with torch.cuda.graph(torch.cuda.CUDAGraph(), pool=pool):
        with pytest.raises(RuntimeError, match="capture"):
            cache.release_pinned()

    cache.clear()
    stats = cache.stats()
    assert stats[("ws", "cuda:0")].bytes_pinned == 4 * MIB
    assert stats[("eager-only", "cuda:0")].bytes_held == 0
    sentinel_graph, in_pool = pool_sentinels(pool, [4 * MIB, 4 * MIB])
    outside = plain_sentinels([4 * MIB, 4 * MIB])
    x.normal_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.allclose(out, x[:MIB].sum() * 2, rtol=1e-4, atol=1e-2)
    assert corrupted(in_pool + outside) == 0

    del graph, sentinel_graph
    cache.release_pinned()
    assert cache.stats()[("ws", "cuda:0")].bytes_pinned == 0
    cache.clear()
    assert cache.stats()[("ws", "cuda:0")].bytes_held == 0


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
    assert list(cache.stats()) == [("ws", "cuda:0")]
    assert cache.stats()[("ws", "cuda:0")].hits == 3


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_requests_on_two_devices_land_in_separate_slots():
    cache = WorkspaceCache("two")
    a = get_empty(1024, torch.float32, device="cuda:0", cache_name="ws", cache=cache)
    b = get_empty(1024, torch.float32, device="cuda:1", cache_name="ws", cache=cache)
    with torch.cuda.device(1):
        c = get_empty(1024, torch.float32, device="cuda", cache_name="ws", cache=cache)
    assert (a.device.index, b.device.index, c.device.index) == (0, 1, 1)
    assert set(cache.stats()) == {("ws", "cuda:0"), ("ws", "cuda:1")}
    assert cache.stats()[("ws", "cuda:1")].hits == 1


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
