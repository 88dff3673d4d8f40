"""get_empty across CUDA streams and threads, and under torch.compile(mode="reduce-overhead")."""

import threading

import pytest
import torch

from allocaudit.runtime import WorkspaceCache, get_empty, use_cache

pytestmark = pytest.mark.cuda

N = 1 << 20
SPIN = 20_000_000  # GPU cycles (~10 ms): keeps a stream busy while the host moves on


def moe_step(x, value, alloc):
    """Writes x * value into a workspace, keeps its stream busy, then reads it back."""
    ws = alloc()
    torch.mul(x, value, out=ws)
    torch.cuda._sleep(SPIN)  # the other stream's launches happen while this one sleeps
    return ws.sum()


def naive_alloc():
    # One buffer per name, handed out again whatever is pending on it: the seed's cache's reuse.
    return naive_alloc.buffer


def test_two_streams_back_to_back_never_share_pending_memory():
    # SGLang's --enable-pdmux and two-micro-batch overlap run the same MoE code on two streams.
    x = torch.randn(N, device="cuda")
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    cache = WorkspaceCache("two-streams")
    ours = lambda: get_empty(N, torch.float32, device="cuda", cache_name="moe.ws", cache=cache)  # noqa: E731
    naive_alloc.buffer = torch.empty(N, device="cuda")

    def run(alloc):
        wrong = 0
        for _ in range(10):
            torch.cuda.synchronize()
            with torch.cuda.stream(s1):
                a = moe_step(x, 1.0, alloc)
            with torch.cuda.stream(s2):
                b = moe_step(x, 2.0, alloc)
            torch.cuda.synchronize()
            expected = x.sum()
            wrong += int(not torch.allclose(a, expected, rtol=1e-3, atol=1e-1))
            wrong += int(not torch.allclose(b, 2 * expected, rtol=1e-3, atol=1e-1))
        return wrong

    assert run(naive_alloc) > 0  # the hazard is real on this machine
    assert run(ours) == 0
    # One buffer per stream, as the caching allocator keeps one block per stream.
    assert len(cache.buffers()) == 2
    assert sorted(b.stream for b in cache.buffers()) == sorted([s1.cuda_stream, s2.cuda_stream])


def test_a_buffer_moves_to_another_stream_once_its_work_is_done():
    cache = WorkspaceCache("move")
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    x = torch.randn(N, device="cuda")
    with torch.cuda.stream(s1):
        moe_step(x, 1.0, lambda: get_empty(N, torch.float32, device="cuda", cache_name="ws", cache=cache))
    torch.cuda.synchronize()
    (first,) = cache.buffers()
    with torch.cuda.stream(s2):
        out = get_empty(N, torch.float32, device="cuda", cache_name="ws", cache=cache)
    assert out.data_ptr() == first.address
    assert [b.stream for b in cache.buffers()] == [s2.cuda_stream]


def test_two_threads_with_their_own_streams():
    cache = WorkspaceCache("threads")
    x = torch.randn(N, device="cuda")
    wrong = []
    barrier = threading.Barrier(2)

    def worker(value):
        stream = torch.cuda.Stream()
        barrier.wait()
        with torch.cuda.stream(stream), use_cache(cache):
            for _ in range(10):
                got = moe_step(x, value, lambda: get_empty(N, torch.float32, device="cuda", cache_name="moe.ws"))
                stream.synchronize()
                if not torch.allclose(got, x.sum() * value, rtol=1e-3, atol=1e-1):
                    wrong.append(value)

    threads = [threading.Thread(target=worker, args=(v,)) for v in (1.0, 3.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_threads_on_one_stream_never_share_a_live_hand_out():
    cache = WorkspaceCache("same-stream")
    x = torch.randn(N, device="cuda")
    wrong = []

    def worker(value):
        with use_cache(cache):
            for _ in range(20):
                ws = get_empty(N, torch.float32, device="cuda", cache_name="moe.ws")
                torch.mul(x, value, out=ws)
                torch.cuda._sleep(SPIN // 10)
                if not torch.allclose(ws.sum(), x.sum() * value, rtol=1e-3, atol=1e-1):
                    wrong.append(value)
                del ws

    threads = [threading.Thread(target=worker, args=(v,)) for v in (1.0, 3.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_reduce_overhead_compiles_get_empty_as_plain_allocations():
    torch._dynamo.reset()
    cache = WorkspaceCache("compiled")

    @torch.compile(mode="reduce-overhead", fullgraph=True)
    def step(x):
        ws = get_empty(x.shape, x.dtype, device=x.device, cache_name="compiled.ws", zero=True, cache=cache)
        ws.add_(x)
        return ws * 2

    for _ in range(4):
        x = torch.randn(1024, device="cuda")
        out = step(x).clone()
        assert torch.equal(out, x * 2)
    assert cache.stats() == {}
