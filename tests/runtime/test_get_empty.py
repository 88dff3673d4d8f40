"""get_empty on the CPU: exact results, zeroing, validation, growth, bounds, freeze, budget."""

import pytest
import torch

from allocaudit.runtime import WorkspaceCache, WorkspaceGrowthError, get_empty


@pytest.fixture
def cache():
    return WorkspaceCache("test")


def held(cache, name, device="cpu"):
    return cache.stats()[(name, device)].bytes_held


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
    assert out.storage_offset() == 0


def test_requests_that_fit_reuse_the_slot_memory_across_dtypes(cache):
    big = get_empty((64, 64), torch.float32, device="cpu", cache_name="ws", cache=cache)
    ptr = big.data_ptr()
    del big
    small = get_empty((10, 3), torch.bfloat16, device="cpu", cache_name="ws", cache=cache)
    assert small.data_ptr() == ptr
    assert small.dtype == torch.bfloat16
    s = cache.stats()[("ws", "cpu")]
    assert (s.misses, s.hits, s.growths) == (1, 1, 0)


def test_requests_under_different_names_never_share_memory(cache):
    a = get_empty(100, torch.float32, device="cpu", cache_name="a", cache=cache)
    b = get_empty(100, torch.float32, device="cpu", cache_name="b", cache=cache)
    assert a.data_ptr() != b.data_ptr()


def test_devices_are_separate_slots(cache):
    get_empty(16, torch.float32, device="cpu", cache_name="ws", cache=cache)
    m = get_empty(16, torch.float32, device="meta", cache_name="ws", cache=cache)
    assert m.device.type == "meta"
    assert set(cache.stats()) == {("ws", "cpu"), ("ws", "meta")}


def test_device_spellings_name_the_same_slot(cache):
    for device in ["cpu", torch.device("cpu"), None]:
        get_empty(16, torch.float32, device=device, cache_name="ws", cache=cache)
    assert set(cache.stats()) == {("ws", "cpu")}
    assert cache.stats()[("ws", "cpu")].hits == 2


def test_none_device_follows_torch_default_device(cache):
    torch.set_default_device("meta")
    try:
        out = get_empty((2, 2), torch.float32, cache_name="ws", cache=cache)
    finally:
        torch.set_default_device(None)
    assert out.device.type == "meta"
    assert get_empty(2, torch.float32, cache_name="ws", cache=cache).device.type == "cpu"


def test_zero_true_zeroes_on_every_hand_out(cache):
    first = get_empty((8, 8), torch.float32, device="cpu", cache_name="ws", zero=True, cache=cache)
    assert torch.count_nonzero(first) == 0
    first.fill_(3.0)
    del first
    again = get_empty((8, 8), torch.float32, device="cpu", cache_name="ws", zero=True, cache=cache)
    assert torch.count_nonzero(again) == 0
    as_int = get_empty((4, 8), torch.int32, device="cpu", cache_name="ws", zero=True, cache=cache)
    assert torch.count_nonzero(as_int) == 0


def test_zero_true_on_a_fresh_buffer_over_recycled_memory(cache):
    # The allocator hands back memory just filled with ones; zero=True must still give zeros.
    for i in range(20):
        junk = torch.full((1000 + i,), -1, dtype=torch.int32)
        del junk
        out = get_empty((1000 + i,), torch.int32, device="cpu", cache_name=f"ws{i}", zero=True, cache=cache)
        assert torch.count_nonzero(out) == 0


def test_zero_true_zeroes_only_the_requested_bytes(cache):
    big = get_empty(100, torch.uint8, device="cpu", cache_name="ws", cache=cache)
    big.fill_(7)
    del big
    small = get_empty(10, torch.uint8, device="cpu", cache_name="ws", zero=True, cache=cache)
    del small
    big = get_empty(100, torch.uint8, device="cpu", cache_name="ws", cache=cache)
    assert big[:10].eq(0).all()
    assert big[10:].eq(7).all()
    assert cache.stats()[("ws", "cpu")].zeroed_bytes == 10


def test_zero_false_keeps_contents(cache):
    a = get_empty(32, torch.int32, device="cpu", cache_name="ws", cache=cache)
    a.fill_(5)
    del a
    b = get_empty(32, torch.int32, device="cpu", cache_name="ws", cache=cache)
    assert b.eq(5).all()
    assert cache.stats()[("ws", "cpu")].zeroed_bytes == 0


def test_a_request_that_does_not_fit_grows_the_slot_and_keeps_one_buffer(cache):
    for n in [10, 100, 50, 1000, 999]:
        get_empty(n, torch.float32, device="cpu", cache_name="ws", cache=cache)
    s = cache.stats()[("ws", "cpu")]
    assert (s.misses, s.growths, s.hits) == (1, 2, 2)
    assert s.bytes_held == 4032  # 4000 bytes, rounded up to 64
    assert s.peak_bytes == 4032


def test_growth_policy_exact_rounds_to_64_bytes_and_pow2_to_a_power_of_two():
    exact = WorkspaceCache("exact")
    pow2 = WorkspaceCache("pow2", growth="pow2")
    for c in (exact, pow2):
        get_empty(1000, torch.uint8, device="cpu", cache_name="ws", cache=c)
    assert held(exact, "ws") == 1024
    assert held(pow2, "ws") == 1024
    for c in (exact, pow2):
        get_empty(1100, torch.uint8, device="cpu", cache_name="ws", cache=c)
    assert held(exact, "ws") == 1152
    assert held(pow2, "ws") == 2048
    with pytest.raises(ValueError, match="growth"):
        WorkspaceCache("bad", growth="double")


def test_zero_size_request(cache):
    out = get_empty((3, 0), torch.float16, device="cpu", cache_name="ws", zero=True, cache=cache)
    assert out.shape == (3, 0) and out.numel() == 0
    again = get_empty(0, torch.float16, device="cpu", cache_name="ws", cache=cache)
    assert again.shape == (0,)


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
        get_empty(shape, torch.float32, device="cpu", cache_name="moe.ws0", cache=cache)
    assert "moe.ws0" in str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize("dtype", ["float32", float, None, 4])
def test_bad_dtype_raises_naming_the_cache_name(cache, dtype):
    with pytest.raises(TypeError, match="moe.ws0.*dtype"):
        get_empty((2, 2), dtype, device="cpu", cache_name="moe.ws0", cache=cache)


@pytest.mark.parametrize("device, error", [("gpu:0", ValueError), ("cuda:x", ValueError),
                                           (["cpu"], TypeError), (1.5, TypeError), (True, TypeError)])
def test_bad_device_raises_naming_the_cache_name(cache, device, error):
    with pytest.raises(error, match="moe.ws0"):
        get_empty((2, 2), torch.float32, device=device, cache_name="moe.ws0", cache=cache)


@pytest.mark.parametrize("name", ["", None, 3, b"ws", ["ws"]])
def test_bad_cache_name_raises(cache, name):
    with pytest.raises(ValueError, match="cache_name"):
        get_empty((2, 2), torch.float32, device="cpu", cache_name=name, cache=cache)


def test_numpy_style_index_types_are_accepted(cache):
    out = get_empty((torch.tensor(3), 2), torch.float32, device="cpu", cache_name="ws", cache=cache)
    assert out.shape == (3, 2)


def test_freeze_turns_growth_into_an_error_naming_slot_and_sizes(cache):
    get_empty(100, torch.uint8, device="cpu", cache_name="moe.ws1", cache=cache)
    cache.freeze()
    assert cache.frozen
    assert get_empty(64, torch.uint8, device="cpu", cache_name="moe.ws1", cache=cache).shape == (64,)
    with pytest.raises(WorkspaceGrowthError) as info:
        get_empty(500, torch.uint8, device="cpu", cache_name="moe.ws1", cache=cache)
    message = str(info.value)
    assert "moe.ws1" in message and "128" in message and "500" in message
    with pytest.raises(WorkspaceGrowthError, match="holds 0 bytes"):
        get_empty(8, torch.uint8, device="cpu", cache_name="new", cache=cache)
    cache.unfreeze()
    assert get_empty(500, torch.uint8, device="cpu", cache_name="moe.ws1", cache=cache).shape == (500,)


def test_freeze_with_fallback_serves_plain_allocations_and_counts_them(cache):
    get_empty(100, torch.uint8, device="cpu", cache_name="ws", cache=cache)
    cache.freeze(on_growth="fallback")
    out = get_empty((50, 50), torch.float32, device="cpu", cache_name="ws", zero=True, cache=cache)
    assert out.shape == (50, 50) and torch.count_nonzero(out) == 0
    s = cache.stats()[("ws", "cpu")]
    assert s.fallbacks == 1 and s.bytes_held == 128
    with pytest.raises(ValueError, match="on_growth"):
        cache.freeze(on_growth="ignore")


def test_budget_falls_back_to_plain_allocations_with_one_warning():
    cache = WorkspaceCache("budget", max_bytes=1024)
    get_empty(512, torch.uint8, device="cpu", cache_name="a", cache=cache)
    with pytest.warns(ResourceWarning, match="budget"):
        out = get_empty(1024, torch.uint8, device="cpu", cache_name="b", cache=cache)
    assert out.shape == (1024,)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_empty(2048, torch.uint8, device="cpu", cache_name="b", cache=cache)
    stats = cache.stats()
    assert stats[("b", "cpu")].fallbacks == 2
    assert sum(s.bytes_held for s in stats.values()) <= 1024
    # Growing within the budget, counting the bytes the slot gives back, is allowed.
    get_empty(1000, torch.uint8, device="cpu", cache_name="a", cache=cache)
    assert cache.stats()[("a", "cpu")].growths == 1


def test_growth_lets_go_of_idle_buffers_of_other_slots_but_not_live_ones(cache):
    get_empty(1000, torch.uint8, device="cpu", cache_name="idle", cache=cache)
    live = get_empty(1000, torch.uint8, device="cpu", cache_name="live", cache=cache)
    get_empty(10, torch.uint8, device="cpu", cache_name="grower", cache=cache)
    get_empty(5000, torch.uint8, device="cpu", cache_name="grower", cache=cache)
    assert held(cache, "idle") == 0
    assert held(cache, "live") == 1024
    # The idle slot comes back at its former size, so its next requests do not grow step by step.
    get_empty(10, torch.uint8, device="cpu", cache_name="idle", cache=cache)
    assert held(cache, "idle") == 1024
    assert cache.stats()[("idle", "cpu")].misses == 2
    del live


def test_clear_drops_buffers_and_keeps_counters(cache):
    kept = get_empty(100, torch.float32, device="cpu", cache_name="ws", cache=cache)
    kept.fill_(1.0)
    cache.clear()
    assert held(cache, "ws") == 0
    assert cache.stats()[("ws", "cpu")].misses == 1
    assert kept.eq(1.0).all()  # a tensor already handed out stays valid
    get_empty(10, torch.float32, device="cpu", cache_name="ws", cache=cache)
    assert held(cache, "ws") == 64  # cleared slots start again from the request


def test_stats_and_report(cache):
    get_empty(100, torch.float32, device="cpu", cache_name="moe.ws0", zero=True, cache=cache)
    get_empty(10, torch.float32, device="cpu", cache_name="moe.ws0", cache=cache)
    s = cache.stats()[("moe.ws0", "cpu")]
    assert (s.hits, s.misses, s.growths, s.fallbacks) == (1, 1, 0, 0)
    assert (s.bytes_held, s.bytes_pinned, s.zeroed_bytes, s.peak_bytes) == (448, 0, 400, 448)
    table = cache.report()
    assert "'test'" in table
    assert "moe.ws0" in table and "hits" in table and "448 B" in table


def test_release_pinned_without_graphs_changes_nothing(cache):
    get_empty(100, torch.float32, device="cpu", cache_name="ws", cache=cache)
    cache.release_pinned()
    assert held(cache, "ws") == 448
    assert cache.stats()[("ws", "cpu")].bytes_pinned == 0


def test_after_warm_up_a_repeating_pattern_over_several_slots_is_all_hits(cache):
    # Slots must not let go of each other's buffers on every request.
    pattern = [((32, 128, 64), torch.float8_e4m3fn, "ws0"), ((32, 128, 64), torch.bfloat16, "ws1"),
               ((32, 128, 2), torch.int32, "sf")]
    for _ in range(5):
        for shape, dtype, name in pattern:
            get_empty(shape, dtype, device="cpu", cache_name=name, cache=cache)
    for _, _, name in pattern:
        s = cache.stats()[(name, "cpu")]
        assert (s.misses, s.growths, s.hits) == (1, 0, 4)


def test_hand_outs_have_independent_metadata(cache):
    a = get_empty((4, 4), torch.float32, device="cpu", cache_name="ws", cache=cache)
    a.unsqueeze_(0)
    a.requires_grad_()
    del a
    b = get_empty((4, 4), torch.float32, device="cpu", cache_name="ws", cache=cache)
    assert b.shape == (4, 4) and b.stride() == (4, 1) and not b.requires_grad


def test_a_float_shape_is_rejected_even_after_the_equal_int_shape():
    # (2.0, 3) == (2, 3) as a dict key: the remembered layout must not serve it.
    get_empty((2, 3), torch.float32, device="cpu", cache_name="float-after-int")
    with pytest.raises(TypeError, match="2.0"):
        get_empty((2.0, 3), torch.float32, device="cpu", cache_name="float-after-int")
