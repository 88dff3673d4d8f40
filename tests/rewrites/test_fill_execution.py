"""`torch.ones`/`torch.full` and their `*_like`/`new_*` after `fix`: run before and after, on
the CPU, and compare bit for bit (dtype, shape, strides, bytes), eagerly on reused buffers
poisoned with stale bytes, and under `torch.compile(fullgraph=True)`."""

import importlib.util

import pytest
import torch

from allocaudit.runtime import WorkspaceCache, use_cache
from tests.rewrites.helpers import fix_file, moe_file

# The device is inherited (`x.device`): the scan rewrites these on any device, so the CPU runs them.
FILLS = """\
import torch


def fills(x, v):
    m = x.shape[0]
    xt = x.t()
    ones = torch.ones(m, 3, device=x.device)
    ids = torch.full((m,), -1, device=x.device)
    big = torch.full((m,), 1099511627776, device=x.device)  # int64: 2**40
    half = torch.full((m, 2), 2.7, dtype=torch.float16, device=x.device)
    trunc = torch.full((m,), 2.7, dtype=torch.int32, device=x.device)
    keep = torch.full((m,), True, device=x.device)
    scale = x.new_full((m,), v * 2)
    w = x.new_ones((m, 2), dtype=torch.bfloat16)
    like = torch.ones_like(xt)
    count = torch.full_like(xt, v, dtype=torch.int32)
    flat = torch.full_like(xt, -0.5, memory_format=torch.contiguous_format)
    return (
        ones.clone(), ids.clone(), big.clone(), half.clone(), trunc.clone(), keep.clone(),
        scale.clone(), w.clone(), like.clone(), count.clone(), flat.clone(),
    )


def ordered(x, log):
    def note(what, value):
        log.append(what)
        return value

    t = x.new_full((note("shape", x.shape[0]),), note("value", 4.5))
    return t.clone()
"""
SITES = 12


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fills")
    before = moe_file(folder, FILLS, "before.py")
    after = moe_file(folder, FILLS, "after.py")
    result = fix_file(after)
    assert not result.errors
    text = after.read_text()
    assert text.count(".fill_(") == SITES and "torch.ones" not in text and "torch.full" not in text
    return _load(before, "fills_before"), _load(after, "fills_after")


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    assert (a.dtype, a.shape, a.stride()) == (b.dtype, b.shape, b.stride())
    assert torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def test_fills_compute_the_same_bits_on_reused_buffers(modules):
    before, after = modules
    x = torch.randn(6, 4)
    expected = before.fills(x, 3)
    cache = WorkspaceCache("fills", poison=True)  # stale bytes everywhere a fill could miss
    with use_cache(cache):
        for _ in range(3):  # the second and third calls reuse the first call's buffers
            got = after.fills(x, 3)
            for e, g in zip(expected, got, strict=True):
                _same_bits(e, g)
    assert sum(s.hits for s in cache.stats().values()) > 0


def test_fills_under_torch_compile_fullgraph(modules):
    before, after = modules
    x = torch.randn(5, 4)
    expected = before.fills(x, 2.5)
    compiled = torch.compile(after.fills, fullgraph=True, backend="eager")
    for e, g in zip(expected, compiled(x, 2.5), strict=True):
        _same_bits(e, g)


def test_the_fill_value_is_evaluated_once_after_the_shape(modules):
    before, after = modules
    x = torch.randn(3, 2)
    logs = [], []
    _same_bits(before.ordered(x, logs[0]), after.ordered(x, logs[1]))
    assert logs[0] == logs[1] == ["shape", "value"]
