"""get_empty on the CPU: exact results, zeroing, validation, reuse across names, bounds, freeze, budget."""

import warnings

import pytest
import torch

from allocaudit.runtime import WorkspaceCache, WorkspaceGrowthError, get_empty


@pytest.fixture
def cache():
    return WorkspaceCache("test")


def ask(cache, shape, name="ws", dtype=torch.float32, **kwargs):
    return get_empty(shape, dtype, device="cpu", cache_name=name, cache=cache, **kwargs)


def stats(cache, name="ws"):
    return cache.stats()[(name, "cpu")]


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((2, 3, 4), (2, 3, 4)),
        ([5, 7], (5, 7)),
        (torch.Size([3, 1, 2]), (3, 1, 2)),
        (6, (6,)),
        ((), ()),
        ((0,), (0,)),
        ((4, 0, 3), (4, 0, 3)),
    ],
)
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.float64, torch.int32, torch.uint8, torch.bool,
              torch.float8_e4m3fn, torch.complex64, torch.int64]
)
def test_result_has_exact_shape_dtype_device_and_is_contiguous(cache, shape, dtype, expected):
    out = get_empty(shape, dtype, device="cpu", cache_name="ws", cache=cache)
    assert tuple(out.shape) == expected
    assert out.dtype == dtype
    assert out.device == torch.device("cpu")
    assert out.is_contiguous()
    assert out.stride() == torch.empty(expected, dtype=dtype).stride()
    assert not out.requires_grad


def test_a_request_reuses_an_idle_buffer_across_dtypes(cache):
    big = ask(cache, (64, 64))
    ptr = big.data_ptr()
    del big
    small = ask(cache, (10, 3), dtype=torch.bfloat16)
    assert small.data_ptr() == ptr
    assert small.dtype == torch.bfloat16
    s = stats(cache)
    assert (s.misses, s.hits, s.growths) == (1, 1, 0)


def test_names_that_run_one_after_another_share_one_buffer(cache):
    # Eight stages, each with its own workspace, dead before the next stage: the caching
    # allocator would reuse one block for all of them, and so does the cache.
    ptrs = set()
    for step in range(3):
        for stage in range(8):
            ws = ask(cache, (256, 256), name=f"stage{stage}")
            ptrs.add(ws.data_ptr())
            ws.fill_(stage)
            del ws
    assert len(ptrs) == 1
    assert cache.bytes_held() == 256 * 256 * 4
    (buffer,) = cache.buffers()
    assert buffer.names == tuple(f"stage{i}" for i in range(8))
    assert "served several cache names" in cache.report()
    assert sum(s.misses for s in cache.stats().values()) == 1


def test_names_alive_at_the_same_time_get_separate_memory(cache):
    a = ask(cache, 100, name="a")
    b = ask(cache, 100, name="b")
    a.fill_(1.0)
    b.fill_(2.0)
    assert a.eq(1.0).all() and b.eq(2.0).all()


def test_a_small_request_does_not_take_a_much_larger_buffer_of_another_name(cache):
    big = ask(cache, 1 << 20, name="big")  # 4 MiB
    del big
    small = ask(cache, 16, name="small")
    big = ask(cache, 1 << 20, name="big")  # free to take its buffer again: small did not
    assert cache.bytes_held() == 4 * (1 << 20) + 64
    del small, big


def test_a_name_gets_the_same_address_while_its_buffer_is_idle(cache):
    ptrs = {ask(cache, n).data_ptr() for n in (1000, 500, 1000, 10)}
    assert len(ptrs) == 1


def test_devices_are_separate(cache):
    ask(cache, 16)
    m = get_empty(16, torch.float32, device="meta", cache_name="ws", cache=cache)
    assert m.device.type == "meta"
    assert set(cache.stats()) == {("ws", "cpu"), ("ws", "meta")}


def test_device_spellings_name_the_same_device(cache):
    for device in ["cpu", torch.device("cpu"), None]:
        get_empty(16, torch.float32, device=device, cache_name="ws", cache=cache)
    assert set(cache.stats()) == {("ws", "cpu")}
    assert stats(cache).hits == 2


def test_none_device_follows_torch_default_device(cache):
    torch.set_default_device("meta")
    try:
        out = get_empty((2, 2), torch.float32, cache_name="ws", cache=cache)
    finally:
        torch.set_default_device(None)
    assert out.device.type == "meta"
    assert get_empty(2, torch.float32, cache_name="ws", cache=cache).device.type == "cpu"


def test_zero_true_zeroes_on_every_hand_out(cache):
    first = ask(cache, (8, 8), zero=True)
    assert torch.count_nonzero(first) == 0
    first.fill_(3.0)
    del first
    again = ask(cache, (8, 8), zero=True)
    assert torch.count_nonzero(again) == 0
    del again
    as_int = ask(cache, (4, 8), dtype=torch.int32, zero=True)
    assert torch.count_nonzero(as_int) == 0


def test_zero_true_zeroes_a_buffer_another_name_left_dirty(cache):
    dirty = ask(cache, 1000, name="writer", dtype=torch.int32)
    dirty.fill_(-1)
    del dirty
    clean = ask(cache, 1000, name="reader", dtype=torch.int32, zero=True)
    assert torch.count_nonzero(clean) == 0


def test_zero_true_on_a_fresh_buffer_over_recycled_memory(cache):
    # The allocator hands back memory just filled with ones; zero=True must still give zeros.
    for i in range(20):
        junk = torch.full((1000 + i,), -1, dtype=torch.int32)
        del junk
        out = ask(cache, (1000 + i,), name=f"ws{i}", dtype=torch.int32, zero=True)
        assert torch.count_nonzero(out) == 0


def test_zero_true_zeroes_only_the_requested_bytes(cache):
    big = ask(cache, 100, dtype=torch.uint8)
    big.fill_(7)
    del big
    small = ask(cache, 10, dtype=torch.uint8, zero=True)
    del small
    big = ask(cache, 100, dtype=torch.uint8)
    assert big[:10].eq(0).all()
    assert big[10:].eq(7).all()
    assert stats(cache).zeroed_bytes == 10


def test_zero_false_keeps_contents_and_runs_no_kernel(cache):
    a = ask(cache, 32, dtype=torch.int32)
    a.fill_(5)
    del a
    b = ask(cache, 32, dtype=torch.int32)
    assert b.eq(5).all()
    assert stats(cache).zeroed_bytes == 0


def test_a_larger_request_of_the_same_name_is_a_growth(cache):
    for n in [10, 100, 50, 1000, 999]:
        ask(cache, n)
    s = stats(cache)
    assert (s.misses, s.growths, s.hits) == (1, 2, 2)
    assert s.largest_request == 4000
    # Growth let go of the smaller idle buffers: one buffer, rounded up to 64 bytes, is left.
    assert [b.nbytes for b in cache.buffers()] == [4032]


def test_growth_policy_exact_rounds_to_64_bytes_and_pow2_to_a_power_of_two():
    exact = WorkspaceCache("exact")
    pow2 = WorkspaceCache("pow2", growth="pow2")
    for c in (exact, pow2):
        ask(c, 1000, dtype=torch.uint8)
    assert exact.bytes_held() == pow2.bytes_held() == 1024
    for c in (exact, pow2):
        ask(c, 1100, dtype=torch.uint8)
    assert exact.bytes_held() == 1152
    assert pow2.bytes_held() == 2048
    with pytest.raises(ValueError, match="growth"):
        WorkspaceCache("bad", growth="double")


def test_zero_size_requests_hold_no_buffer(cache):
    out = ask(cache, (3, 0), dtype=torch.float16, zero=True)
    assert out.shape == (3, 0) and out.numel() == 0
    again = ask(cache, 0, dtype=torch.float16)
    assert again.shape == (0,)
    assert cache.bytes_held() == 0
    assert stats(cache).hits == 2


@pytest.mark.parametrize(
    "shape, error, words",
    [
        ((2, -1), ValueError, "negative"),
        ((2.0, 3), TypeError, "2.0"),
        ((True, 3), TypeError, "True"),
        ("abc", TypeError, "'abc'"),
        (((2,), 3), TypeError, "(2,)"),
        (None, TypeError, "None"),
        (2.5, TypeError, "2.5"),
    ],
)
def test_bad_shapes_raise_errors_naming_the_cache_name(cache, shape, error, words):
    with pytest.raises(error) as info:
        ask(cache, shape, name="moe.ws0")
    assert "moe.ws0" in str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize("dtype", ["float32", float, None, 4])
def test_bad_dtype_raises_naming_the_cache_name(cache, dtype):
    with pytest.raises(TypeError, match="moe.ws0.*dtype"):
        ask(cache, (2, 2), name="moe.ws0", dtype=dtype)


@pytest.mark.parametrize("device, error", [("gpu:0", ValueError), ("cuda:x", ValueError),
                                           (["cpu"], TypeError), (1.5, TypeError), (True, TypeError)])
def test_bad_device_raises_naming_the_cache_name(cache, device, error):
    with pytest.raises(error, match="moe.ws0"):
        get_empty((2, 2), torch.float32, device=device, cache_name="moe.ws0", cache=cache)


@pytest.mark.parametrize("name", ["", None, 3, b"ws", ["ws"]])
def test_bad_cache_name_raises(cache, name):
    with pytest.raises(ValueError, match="cache_name"):
        ask(cache, (2, 2), name=name)


def test_a_float_shape_is_rejected_even_after_the_equal_int_shape():
    # (2.0, 3) == (2, 3) as a dict key: the remembered layout must not serve it.
    get_empty((2, 3), torch.float32, device="cpu", cache_name="float-after-int")
    with pytest.raises(TypeError, match="2.0"):
        get_empty((2.0, 3), torch.float32, device="cpu", cache_name="float-after-int")


def test_numpy_style_index_types_are_accepted(cache):
    out = ask(cache, (torch.tensor(3), 2))
    assert out.shape == (3, 2)


def test_freeze_turns_a_request_larger_than_every_buffer_into_an_error_naming_it(cache):
    ask(cache, 100, name="moe.ws1", dtype=torch.uint8)
    cache.freeze()
    assert cache.frozen
    assert ask(cache, 64, name="moe.ws1", dtype=torch.uint8).shape == (64,)
    with pytest.raises(WorkspaceGrowthError) as info:
        ask(cache, 500, name="moe.ws1", dtype=torch.uint8)
    message = str(info.value)
    assert "moe.ws1" in message and "128" in message and "500" in message
    cache.unfreeze()
    assert ask(cache, 500, name="moe.ws1", dtype=torch.uint8).shape == (500,)


def test_freeze_never_raises_for_a_request_that_only_finds_its_buffer_busy(cache):
    # The buffer fits; it is busy. torch.empty would have served this, so the cache does too.
    ask(cache, 100, dtype=torch.uint8)
    cache.freeze()
    held = ask(cache, 100, dtype=torch.uint8)
    second = ask(cache, 100, dtype=torch.uint8)
    assert second.data_ptr() != held.data_ptr()
    s = stats(cache)
    assert (s.fallbacks, s.overlaps) == (1, 1)
    assert cache.bytes_held() == 128


def test_freeze_with_fallback_serves_plain_allocations_and_counts_them(cache):
    ask(cache, 100, dtype=torch.uint8)
    cache.freeze(on_growth="fallback")
    out = ask(cache, (50, 50), zero=True)
    assert out.shape == (50, 50) and torch.count_nonzero(out) == 0
    assert stats(cache).fallbacks == 1 and cache.bytes_held() == 128
    with pytest.raises(ValueError, match="on_growth"):
        cache.freeze(on_growth="ignore")


def test_budget_falls_back_to_plain_allocations_with_one_warning():
    cache = WorkspaceCache("budget", max_bytes=1024)
    a = ask(cache, 512, name="a", dtype=torch.uint8)
    with pytest.warns(ResourceWarning, match="budget"):
        out = ask(cache, 1024, name="b", dtype=torch.uint8)
    assert out.shape == (1024,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ask(cache, 2048, name="b", dtype=torch.uint8)
    assert stats(cache, "b").fallbacks == 2
    assert cache.bytes_held() <= 1024
    del a
    # With a's buffer idle, the budget lets go of it to make room.
    ask(cache, 1000, name="b", dtype=torch.uint8)
    assert stats(cache, "b").misses == 1
    assert cache.bytes_held() == 1024 and len(cache.buffers()) == 1


@pytest.mark.parametrize("bad", [-1, 1.5, "1MB"])
def test_bad_budget_is_rejected_naming_the_cache(bad):
    with pytest.raises(ValueError, match="'ws'.*max_bytes"):
        WorkspaceCache("ws", max_bytes=bad)


def test_allocating_lets_go_of_smaller_idle_buffers_but_not_live_ones(cache):
    # The allocator may then reuse their memory for the new buffer, as for freed torch.empty blocks.
    ask(cache, 1000, name="idle", dtype=torch.uint8)
    live = ask(cache, 1000, name="live", dtype=torch.uint8)
    live.fill_(3)
    ask(cache, 5000, name="grower", dtype=torch.uint8)
    assert sorted((b.nbytes, b.busy) for b in cache.buffers()) == [(1024, True), (5056, False)]
    assert live.eq(3).all()


def test_idle_buffers_that_no_request_uses_go_back_to_the_allocator(cache):
    from allocaudit.runtime import cache as runtime_cache

    burst = [ask(cache, 1000, name="burst") for _ in range(10)]  # ten alive at once: ten buffers
    del burst
    assert len(cache.buffers()) == 10
    for _ in range(3 * runtime_cache._SWEEP_EVERY):
        ask(cache, 1000, name="steady")
    assert len(cache.buffers()) == 1
    assert stats(cache, "steady").misses == 0


def test_clear_drops_buffers_and_keeps_counters(cache):
    kept = ask(cache, 100)
    kept.fill_(1.0)
    cache.clear()
    assert cache.bytes_held() == 0 and cache.buffers() == []
    assert stats(cache).misses == 1
    assert kept.eq(1.0).all()  # a tensor already handed out stays valid
    ask(cache, 10)
    assert cache.bytes_held() == 64


def test_stats_report_and_buffers(cache):
    ask(cache, 100, name="moe.ws0", zero=True)
    ask(cache, 10, name="moe.ws0")
    s = stats(cache, "moe.ws0")
    assert (s.hits, s.misses, s.growths, s.fallbacks, s.overlaps) == (1, 1, 0, 0, 0)
    assert (s.bytes_held, s.bytes_pinned, s.zeroed_bytes, s.largest_request) == (448, 0, 400, 400)
    (buffer,) = cache.buffers()
    assert (buffer.device, buffer.stream, buffer.nbytes, buffer.pinned, buffer.busy) == ("cpu", None, 448, False, False)
    assert buffer.address == ask(cache, 10, name="moe.ws0").data_ptr()
    table = cache.report()
    assert "'test'" in table and "1 buffer, 448 B held" in table
    assert "moe.ws0" in table and "hits" in table and "overlaps" in table


def test_release_pinned_without_graphs_changes_nothing(cache):
    ask(cache, 100)
    cache.release_pinned()
    assert cache.bytes_held() == 448
    assert stats(cache).bytes_pinned == 0


def test_release_lets_go_of_everything(cache):
    ask(cache, 100)
    cache.release()
    assert cache.bytes_held() == 0


def test_owner_collection_releases_the_cache():
    import gc

    class Engine:
        pass

    engine = Engine()
    cache = WorkspaceCache("engine", owner=engine)
    ask(cache, 1000)
    assert cache.bytes_held() == 4032  # 4000 rounded up to 64
    del engine
    gc.collect()
    assert cache.bytes_held() == 0


def test_after_warm_up_a_repeating_pattern_over_several_names_is_all_hits(cache):
    # Names must not let go of each other's buffers on every request.
    pattern = [((32, 128, 64), torch.float8_e4m3fn, "ws0"), ((32, 128, 64), torch.bfloat16, "ws1"),
               ((32, 128, 2), torch.int32, "sf")]
    for keep in (False, True):
        cache.clear()
        for _ in range(2):  # warm-up
            alive = [ask(cache, shape, name, dtype) for shape, dtype, name in pattern]
            if not keep:
                alive.clear()
            del alive
        before = {name: (s.misses, s.growths) for (name, _), s in cache.stats().items()}
        for _ in range(5):
            alive = [ask(cache, shape, name, dtype) for shape, dtype, name in pattern]
            if not keep:
                alive.clear()
            del alive
        after = {name: (s.misses, s.growths) for (name, _), s in cache.stats().items()}
        assert after == before


def test_hand_outs_have_independent_metadata(cache):
    a = ask(cache, (4, 4))
    a.unsqueeze_(0)
    a.requires_grad_()
    del a
    b = ask(cache, (4, 4))
    assert b.shape == (4, 4) and b.stride() == (4, 1) and not b.requires_grad
