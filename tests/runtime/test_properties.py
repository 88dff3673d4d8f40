"""Invariants of get_empty over random sequences of requests (hypothesis)."""

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
    st.booleans(),  # keep the hand-out alive afterwards
)


def round64(n):
    return -(-n // 64) * 64


def check_exact(out, shape, dtype):
    assert tuple(out.shape) == shape
    assert out.dtype == dtype
    assert out.device == torch.device("cpu")
    assert out.is_contiguous()


@settings(max_examples=150, deadline=None)
@given(st.lists(requests, max_size=40), st.sampled_from(["exact", "pow2"]))
def test_strict_sequences_are_exact_zeroed_alias_free_and_bounded(ops, growth):
    cache = WorkspaceCache("prop", growth=growth, strict=True, poison=False)
    alive = {}
    largest = {}
    for name, shape, dtype, zero, keep in ops:
        if name in alive:
            with pytest.raises(WorkspaceAliasError):
                get_empty(shape, dtype, device="cpu", cache_name=name, zero=zero, cache=cache)
            del alive[name]
            continue
        out = get_empty(shape, dtype, device="cpu", cache_name=name, zero=zero, cache=cache)
        check_exact(out, shape, dtype)
        if zero:
            assert out.view(-1).view(torch.uint8).eq(0).all()
        out.view(-1).view(torch.uint8).fill_(0x5A)  # leave stale bytes for the next hand-out
        nbytes = out.numel() * out.element_size()
        if keep:
            alive[name] = out
        del out  # the loop variable would otherwise keep the hand-out alive
        largest[name] = max(largest.get(name, 0), nbytes)
        stats = cache.stats()
        for slot_name, biggest in largest.items():
            bound = round64(biggest) if growth == "exact" else max(64, 1 << max(biggest - 1, 0).bit_length())
            assert stats[(slot_name, "cpu")].bytes_held <= bound
            assert stats[(slot_name, "cpu")].bytes_pinned == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(requests, max_size=40), st.integers(0, 4096))
def test_budget_bounds_bytes_held_and_poison_marks_every_unzeroed_float(ops, budget):
    cache = WorkspaceCache("budget", max_bytes=budget, poison=True, strict=False)
    requested = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the budget warning, once per cache
        for name, shape, dtype, zero, keep in ops:
            out = get_empty(shape, dtype, device="cpu", cache_name=name, zero=zero, cache=cache)
            requested += 1
            check_exact(out, shape, dtype)
            if zero:
                assert out.view(-1).view(torch.uint8).eq(0).all()
            elif dtype in FLOAT_DTYPES:
                assert out.isnan().all()
            elif dtype is not torch.bool:
                assert out.view(-1).view(torch.uint8).eq(0xFF).all()
            out.view(-1).view(torch.uint8).fill_(0)  # stale zeros must not survive into the next hand-out
            stats = cache.stats()
            assert sum(s.bytes_held for s in stats.values()) <= budget
    stats = cache.stats()
    assert sum(s.hits + s.misses + s.growths + s.fallbacks for s in stats.values()) == requested
