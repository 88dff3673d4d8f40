"""Debug modes: poison exposes stale reads, strict catches two live hand-outs of one cache name."""

import math
import sys

import pytest
import torch

from allocaudit.runtime import WorkspaceAliasError, WorkspaceCache, get_empty


@pytest.fixture
def poisoned():
    return WorkspaceCache("poisoned", poison=True, strict=False)


@pytest.fixture
def strict():
    return WorkspaceCache("strict", poison=False, strict=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_poison_fills_floats_with_nan(poisoned, dtype):
    out = get_empty((4, 5), dtype, device="cpu", cache_name="ws", cache=poisoned)
    assert out.isnan().all()
    out.fill_(1.0)
    del out
    again = get_empty((3, 3), dtype, device="cpu", cache_name="ws", cache=poisoned)
    assert again.isnan().all()


@pytest.mark.parametrize(
    "dtype, value",
    [(torch.int32, -1), (torch.int64, -1), (torch.int8, -1), (torch.uint8, 255), (torch.int16, -1)],
)
def test_poison_fills_integers_with_all_ones_bits(poisoned, dtype, value):
    out = get_empty(7, dtype, device="cpu", cache_name="ws", cache=poisoned)
    assert out.eq(value).all()


def test_poison_fills_fp8_with_all_ones_bits_and_bool_with_true(poisoned):
    fp8 = get_empty(9, torch.float8_e4m3fn, device="cpu", cache_name="a", cache=poisoned)
    assert fp8.view(torch.uint8).eq(0xFF).all()
    flags = get_empty(9, torch.bool, device="cpu", cache_name="b", cache=poisoned)
    assert flags.all() and flags.view(torch.uint8).eq(1).all()
    z = get_empty(3, torch.complex64, device="cpu", cache_name="c", cache=poisoned)
    assert z.real.isnan().all() and z.imag.isnan().all()


def test_poison_spares_zeroed_hand_outs_and_fallbacks_are_poisoned_too(poisoned):
    out = get_empty(16, torch.float32, device="cpu", cache_name="ws", zero=True, cache=poisoned)
    assert out.eq(0).all()
    poisoned.freeze(on_growth="fallback")
    fallback = get_empty(1000, torch.float32, device="cpu", cache_name="ws", cache=poisoned)
    assert fallback.isnan().all()
    assert poisoned.stats()[("ws", "cpu")].fallbacks == 1


def test_poison_of_a_zero_dim_request(poisoned):
    out = get_empty((), torch.float32, device="cpu", cache_name="ws", cache=poisoned)
    assert math.isnan(out.item())


def test_strict_raises_on_a_second_hand_out_while_the_first_is_alive_naming_both_sites(strict):
    first = get_empty(10, torch.float32, device="cpu", cache_name="moe.ws0", cache=strict); line_a = sys._getframe().f_lineno  # noqa: E702,E501
    with pytest.raises(WorkspaceAliasError) as info:
        line_b = sys._getframe().f_lineno + 1
        get_empty(10, torch.float32, device="cpu", cache_name="moe.ws0", cache=strict)
    message = str(info.value)
    assert "moe.ws0" in message
    assert f"{__file__}:{line_a}" in message
    assert f"{__file__}:{line_b}" in message
    del first
    assert get_empty(10, torch.float32, device="cpu", cache_name="moe.ws0", cache=strict).shape == (10,)


def test_strict_sees_views_derived_from_a_hand_out(strict):
    out = get_empty((4, 4), torch.float32, device="cpu", cache_name="ws", cache=strict)
    row = out[1]
    del out
    with pytest.raises(WorkspaceAliasError):
        get_empty(4, torch.float32, device="cpu", cache_name="ws", cache=strict)
    reshaped = row.view(2, 2)
    del row
    with pytest.raises(WorkspaceAliasError):
        get_empty(4, torch.float32, device="cpu", cache_name="ws", cache=strict)
    del reshaped
    get_empty(4, torch.float32, device="cpu", cache_name="ws", cache=strict)


def test_strict_raises_also_when_the_second_request_is_larger(strict):
    first = get_empty(10, torch.float32, device="cpu", cache_name="ws", cache=strict)
    with pytest.raises(WorkspaceAliasError):
        get_empty(10_000, torch.float32, device="cpu", cache_name="ws", cache=strict)
    del first


def test_strict_allows_live_hand_outs_of_different_names(strict):
    a = get_empty(10, torch.float32, device="cpu", cache_name="a", cache=strict)
    b = get_empty(10, torch.float32, device="cpu", cache_name="b", cache=strict)
    m = get_empty(10, torch.float32, device="meta", cache_name="a", cache=strict)
    assert a.data_ptr() != b.data_ptr() and m.device.type == "meta"


def test_strict_allows_sequential_use_across_dtypes(strict):
    for dtype in [torch.float32, torch.int8, torch.bfloat16, torch.float32, torch.int64]:
        out = get_empty(16, dtype, device="cpu", cache_name="ws", cache=strict)
        out.zero_()
        del out


def test_debug_modes_can_be_switched_on_an_existing_cache():
    cache = WorkspaceCache("switch", poison=False, strict=False)
    a = get_empty(4, torch.float32, device="cpu", cache_name="ws", cache=cache)
    a.fill_(1.0)
    cache.poison = True
    cache.strict = True
    with pytest.raises(WorkspaceAliasError):
        get_empty(4, torch.float32, device="cpu", cache_name="ws", cache=cache)
    del a
    assert get_empty(4, torch.float32, device="cpu", cache_name="ws", cache=cache).isnan().all()
    assert cache.poison and cache.strict


def test_poison_with_a_chosen_byte():
    cache = WorkspaceCache("byte", poison=0x00)
    dirty = get_empty(8, torch.int32, device="cpu", cache_name="ws", cache=cache)
    dirty.fill_(7)
    del dirty
    assert get_empty(8, torch.int32, device="cpu", cache_name="ws", cache=cache).eq(0).all()


def test_poison_chosen_per_name_by_a_callable():
    # The stale-read check fills each name with its own pattern through this hook.
    seen = []

    def pattern(name, device):
        seen.append((name, device))
        return {"a": 0x01, "b": None}[name]

    cache = WorkspaceCache("per-name", poison=pattern)
    a = get_empty(4, torch.uint8, device="cpu", cache_name="a", cache=cache)
    b = get_empty(4, torch.uint8, device="cpu", cache_name="b", cache=cache)
    z = get_empty(4, torch.uint8, device="cpu", cache_name="a", cache=cache, zero=True)
    assert a.eq(1).all() and z.eq(0).all()
    assert seen == [("a", "cpu"), ("b", "cpu")]  # never asked for zeroed hand-outs
    del b


@pytest.mark.parametrize("bad", [256, -1, 1.5, "nan"])
def test_a_bad_poison_value_is_rejected_naming_the_cache(bad):
    with pytest.raises(ValueError, match="'ws'.*poison"):
        WorkspaceCache("ws", poison=bad)
