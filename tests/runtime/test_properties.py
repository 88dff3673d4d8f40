"""Invariants of get_empty over random sequences of requests (hypothesis)."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from allocaudit.runtime import WorkspaceAliasError, WorkspaceCache, get_empty

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int32, torch.int64,
          torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn]
FLOAT_DTYPES = {torch.float32, torch.bfloat16, torch.float16, torch.float64}

shapes = st.lists(st.integers(0, 24), min_size=0, max_size=3).map(tuple)
requests = st.tuples(
    st.sampled_from(["a", "b", "c"]),  # cache name
    shapes,
    st.sampled_from(DTYPES),
    st.booleans(),  # zero
    st.integers(0, 3),  # keep the hand-out alive for this many more requests
)


def check_exact(out, shape, dtype):
    assert tuple(out.shape) == shape
    assert out.dtype == dtype
    assert out.device == torch.device("cpu")
    assert out.is_contiguous()


def raw(t):
    return t.view(-1).view(torch.uint8)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, max_size=40), st.sampled_from(["exact", "pow2"]))
def test_live_hand_outs_never_share_memory_and_keep_their_contents(ops, growth):
    cache = WorkspaceCache("prop", growth=growth, strict=False, poison=False)
    alive = []  # (tensor, byte it was filled with, requests left to live)
    for i, (name, shape, dtype, zero, keep) in enumerate(ops):
        out = get_empty(shape, dtype, device="cpu", cache_name=name, zero=zero, cache=cache)
        check_exact(out, shape, dtype)
        if zero:
            assert raw(out).eq(0).all()
        byte = i % 200 + 1
        raw(out).fill_(byte)
        for other, other_byte, _ in alive:
            assert raw(other).eq(other_byte).all()
        alive = [(t, b, left - 1) for t, b, left in alive if left > 0]
        if keep:
            alive.append((out, byte, keep))
        del out  # the loop variable would otherwise keep the hand-out alive
    stats = cache.stats()
    assert sum(s.hits + s.misses + s.growths + s.fallbacks for s in stats.values()) == len(ops)
    assert all(s.bytes_pinned == 0 for s in stats.values())


@settings(max_examples=150, deadline=None)
@given(st.lists(requests, max_size=40))
def test_strict_mode_raises_exactly_when_the_name_is_still_alive(ops):
    cache = WorkspaceCache("strict", strict=True, poison=False)
    alive = {}
    for name, shape, dtype, zero, keep in ops:
        # A request of no bytes allocates nothing, so it can alias nothing: never an error.
        if any(t.numel() for t in alive.get(name, ())) and math.prod(shape):
            with pytest.raises(WorkspaceAliasError, match=repr(name)):
                get_empty(shape, dtype, device="cpu", cache_name=name, zero=zero, cache=cache)
            del alive[name]
            continue
        out = get_empty(shape, dtype, device="cpu", cache_name=name, zero=zero, cache=cache)
        check_exact(out, shape, dtype)
        alive[name] = [out] if keep else []
        del out


@settings(max_examples=150, deadline=None)
@given(st.lists(requests, max_size=40), st.integers(0, 4096))
def test_budget_bounds_bytes_held_and_poison_marks_every_unzeroed_float(ops, budget):
    cache = WorkspaceCache("budget", max_bytes=budget, poison=True, strict=False)
    alive = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the budget warning, once per cache
        for name, shape, dtype, zero, keep in ops:
            out = get_empty(shape, dtype, device="cpu", cache_name=name, zero=zero, cache=cache)
            check_exact(out, shape, dtype)
            if zero:
                assert raw(out).eq(0).all()
            elif dtype in FLOAT_DTYPES:
                assert out.isnan().all()
            elif dtype is torch.bool:
                assert out.all()
            else:
                assert raw(out).eq(0xFF).all()
            raw(out).fill_(0)  # stale zeros must not survive into the next hand-out
            assert cache.bytes_held() <= budget
            alive = alive[-keep:] + [out] if keep else []
            del out
