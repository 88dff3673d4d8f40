"""Under torch.compile, get_empty / get_empty_like are the plain factories: fullgraph traces them."""

import pytest
import torch

from allocaudit.runtime import WorkspaceCache, get_empty, get_empty_like, use_cache


def moe_like(x, w):
    # The shape of a rewritten MoE forward: two workspaces, one zeroed, filled by ops.
    acc = get_empty((x.shape[0], w.shape[1]), x.dtype, device=x.device, cache_name="moe.acc", zero=True)
    ws = get_empty_like(x, cache_name="moe.ws")
    torch.mul(x, 2.0, out=ws)
    acc.addmm_(ws, w)
    return acc.relu()


def reference(x, w):
    return (x * 2.0 @ w).relu()


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_fullgraph_compiles_without_a_graph_break(backend):
    torch._dynamo.reset()
    cache = WorkspaceCache("compiled")
    x, w = torch.randn(8, 16), torch.randn(16, 4)
    with use_cache(cache):
        compiled = torch.compile(moe_like, backend=backend, fullgraph=True)
        out = compiled(x, w)
        again = compiled(torch.randn(8, 16), w)
    torch.testing.assert_close(out, reference(x, w))
    assert again.data_ptr() != out.data_ptr()
    # Inductor plans the compiled code's memory itself: the cache served nothing.
    assert cache.stats() == {} and cache.bytes_held() == 0


def test_no_graph_break_is_reported():
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(moe_like)(torch.randn(4, 8), torch.randn(8, 2))
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


def test_eager_calls_around_a_compiled_region_still_use_the_cache():
    torch._dynamo.reset()
    cache = WorkspaceCache("mixed")

    @torch.compile(backend="eager", fullgraph=True)
    def compiled(x):
        return get_empty(x.shape, x.dtype, cache_name="inside", cache=cache).copy_(x) * 2

    with use_cache(cache):
        out = compiled(torch.ones(4))
        eager = get_empty(4, torch.float32, cache_name="outside")
    assert out.eq(2).all() and eager.shape == (4,)
    assert set(cache.stats()) == {("outside", "cpu")}
