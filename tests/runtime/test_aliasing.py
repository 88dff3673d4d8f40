"""get_empty never hands out memory that a live tensor uses: hand-outs, views, autograd, threads."""

import threading

import pytest
import torch

from allocaudit.runtime import WorkspaceCache, get_empty, use_cache


@pytest.fixture
def cache():
    return WorkspaceCache("alias")


def ask(cache, shape, name="ws", dtype=torch.float32, **kwargs):
    return get_empty(shape, dtype, device="cpu", cache_name=name, cache=cache, **kwargs)


def test_a_name_requested_while_its_hand_out_is_alive_gets_other_memory(cache):
    # SGLang's humming runner returns a view of its workspace and keeps it across a yield.
    first = ask(cache, 64)
    first.fill_(1.0)
    second = ask(cache, 64)
    second.fill_(2.0)
    assert first.eq(1.0).all()
    s = cache.stats()[("ws", "cpu")]
    assert s.overlaps == 1
    assert "overlap: 'ws' on cpu was requested 1 time while its earlier hand-out was still alive" in cache.report()


@pytest.mark.parametrize(
    "make_view",
    [
        lambda t: t[3:],
        lambda t: t.view(8, 8),
        lambda t: t.view(torch.int32),
        lambda t: t.t() if t.dim() == 2 else t.unsqueeze(0).t(),
        lambda t: t.detach(),
        lambda t: t.as_strided((4,), (2,)),
        lambda t: torch.utils.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(t)),
    ],
    ids=["slice", "view", "dtype-view", "transpose", "detach", "as_strided", "dlpack"],
)
def test_a_view_of_a_dead_hand_out_keeps_its_memory(cache, make_view):
    out = ask(cache, 64)
    view = make_view(out)
    view.fill_(7)
    del out
    again = ask(cache, 64)
    again.fill_(0)
    assert view.eq(7).all()


def test_a_tensor_saved_for_backward_keeps_its_memory(cache):
    # After `fix`, Aria's MoE reused an expert buffer that autograd had saved for a multiply:
    # backward raised "modified by an inplace operation". The saved buffer must stay busy.
    torch.manual_seed(0)
    weights = [torch.randn(16, 16, requires_grad=True) for _ in range(4)]
    x = torch.randn(8, 16)

    def forward(alloc):
        h = x
        for w in weights:
            buf = alloc((8, 16))
            buf.copy_(h @ w)  # autograd records the copy into the workspace
            h = torch.tanh(buf) * buf  # saves buf for backward
        return h.sum()

    def grads(alloc):
        for w in weights:
            w.grad = None
        forward(alloc).backward()
        return [w.grad.clone() for w in weights]

    expected = grads(lambda shape: torch.empty(shape))
    got = grads(lambda shape: ask(cache, shape, name="expert"))
    for e, g in zip(expected, got):
        assert torch.equal(e, g)
    assert cache.stats()[("expert", "cpu")].overlaps == 3  # layers 2-4 found layer 1's buffer saved


def test_a_comprehension_of_one_name_gets_distinct_memory_and_the_buffers_stay_held(cache):
    # Why `fix` may leave comprehensions alone for cost, not for safety: with one cache name,
    # elements alive together never share memory, but the cache then holds one buffer each.
    def gather(n):
        parts = [ask(cache, 64, name="moe.shards") for _ in range(n)]
        for i, p in enumerate(parts):
            p.fill_(float(i))
        return parts

    parts = gather(4)
    spans = sorted((p.data_ptr(), p.data_ptr() + p.nbytes) for p in parts)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))  # disjoint
    assert [p[0].item() for p in parts] == [0.0, 1.0, 2.0, 3.0] and all(bool(p.eq(p[0]).all()) for p in parts)
    assert cache.stats()[("moe.shards", "cpu")].overlaps == 3
    del parts
    assert len(cache.buffers()) == 4  # held between calls
    gather(4)
    assert len(cache.buffers()) == 4  # and reused


def test_strict_mode_raises_on_a_comprehension_of_one_name():
    from allocaudit.runtime import WorkspaceAliasError

    cache = WorkspaceCache("strict", strict=True)
    with pytest.raises(WorkspaceAliasError, match="'moe.shards'"):
        [ask(cache, 8, name="moe.shards") for _ in range(2)]


def test_strict_mode_raises_instead_of_serving_the_overlap():
    from allocaudit.runtime import WorkspaceAliasError

    cache = WorkspaceCache("strict", strict=True)
    held = ask(cache, 8, name="moe.ws1")
    with pytest.raises(WorkspaceAliasError, match="'moe.ws1'.*test_aliasing.py:.*test_aliasing.py:"):
        ask(cache, 8, name="moe.ws1")
    del held
    ask(cache, 8, name="moe.ws1")


def test_two_threads_running_the_same_function_get_correct_results():
    # Each call writes its thread's value into the workspace, lets the other thread run, then
    # reads it back. Shared memory between live hand-outs would mix the two values.
    cache = WorkspaceCache("threads")
    wrong = []
    start = threading.Barrier(2)

    def layer(value):
        ws = get_empty((256, 256), torch.float32, device="cpu", cache_name="layer.ws")
        ws.fill_(value)
        for _ in range(5):
            torch.mm(ws, ws)  # releases the GIL: the other thread runs meanwhile
        return float(ws.sum())

    def worker(value):
        start.wait()
        with use_cache(cache):
            for _ in range(20):
                got = layer(value)
                if got != value * 256 * 256:
                    wrong.append((value, got))

    threads = [threading.Thread(target=worker, args=(v,)) for v in (1.0, 2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    # The threads shared the cache's buffers: never more than two, one per thread.
    assert len(cache.buffers()) <= 2


def test_many_threads_hammering_several_names():
    cache = WorkspaceCache("hammer")
    errors = []

    def worker(tid):
        try:
            for i in range(200):
                name = f"ws{i % 3}"
                a = get_empty(100 + i % 7, torch.int64, device="cpu", cache_name=name, cache=cache)
                b = get_empty(100 + i % 5, torch.int64, device="cpu", cache_name=name, cache=cache)
                a.fill_(tid)
                b.fill_(-tid)
                if not (a.eq(tid).all() and b.eq(-tid).all()):
                    errors.append((tid, i))
        except Exception as e:  # any exception fails the test with its message
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = cache.stats()
    assert sum(x.hits + x.misses + x.growths + x.fallbacks for x in s.values()) == 6 * 200 * 2
