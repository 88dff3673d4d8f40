"""get_empty_like: exactly torch.empty_like's (and zeros_like's) sizes, strides, dtype and device."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from allocaudit.runtime import WorkspaceCache, get_empty_like


@pytest.fixture
def cache():
    return WorkspaceCache("like")


def like(cache, t, **kwargs):
    return get_empty_like(t, cache_name="ws", cache=cache, **kwargs)


INPUTS = {
    "contiguous": lambda: torch.randn(4, 5, 6),
    "permuted": lambda: torch.randn(4, 5, 6).permute(2, 0, 1),
    "transposed": lambda: torch.randn(7, 3).t(),
    "every-other-column": lambda: torch.randn(4, 6)[:, ::2],
    "expanded": lambda: torch.randn(3, 1).expand(3, 4),
    "channels-last": lambda: torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
    "channels-last-sliced": lambda: torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)[..., :3],
    "scalar": lambda: torch.tensor(3.0),
    "empty": lambda: torch.randn(4, 0, 3),
    "bf16": lambda: torch.randn(8, 8).to(torch.bfloat16),
    "needs-grad": lambda: torch.randn(4, 4, requires_grad=True),
    "parameter": lambda: torch.nn.Parameter(torch.randn(3, 2).t()),
}


@pytest.mark.parametrize("make", INPUTS.values(), ids=INPUTS.keys())
@pytest.mark.parametrize("zero", [False, True])
def test_matches_torch_empty_like(cache, make, zero):
    t = make()
    expected = (torch.zeros_like if zero else torch.empty_like)(t)
    for _ in range(2):  # a miss, then a hit
        out = like(cache, t, zero=zero)
        assert out.shape == expected.shape
        assert out.stride() == expected.stride()
        assert out.dtype == expected.dtype and out.device == expected.device
        assert not out.requires_grad and type(out) is torch.Tensor
        if zero:
            assert torch.count_nonzero(out) == 0
        del out


def test_dtype_and_device_overrides(cache):
    t = torch.randn(4, 6).t()
    out = like(cache, t, dtype=torch.int8)
    assert out.dtype == torch.int8 and out.stride() == torch.empty_like(t, dtype=torch.int8).stride()
    meta = like(cache, t, device="meta")
    assert meta.device.type == "meta" and meta.stride() == t.stride()


def test_hand_outs_of_a_strided_layout_never_overlap_live_ones(cache):
    t = torch.randn(4, 5, 6).permute(2, 0, 1)
    a = like(cache, t)
    a.fill_(1.0)
    b = like(cache, t)
    b.fill_(2.0)
    assert a.eq(1.0).all()


def test_a_sparse_input_gets_the_plain_empty_like(cache):
    t = torch.randn(4, 4).to_sparse()
    out = like(cache, t)
    assert out.layout == torch.sparse_coo and out.shape == t.shape
    assert cache.bytes_held() == 0


def test_a_non_tensor_input_is_an_error_naming_the_cache_name(cache):
    with pytest.raises(TypeError, match="'moe.ws'.*input must be a Tensor"):
        get_empty_like([1, 2], cache_name="moe.ws", cache=cache)


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=0, max_size=4),
    st.randoms(use_true_random=False),
    st.integers(1, 2),
)
def test_any_permutation_and_slice_matches_torch(sizes, rnd, step):
    cache = WorkspaceCache("like-props")
    base = torch.randn(*[s * step for s in sizes]) if sizes else torch.randn(())
    t = base[tuple(slice(None, None, step) for _ in sizes)] if sizes else base
    order = list(range(len(sizes)))
    rnd.shuffle(order)
    t = t.permute(*order) if sizes else t
    out = get_empty_like(t, cache_name="ws", cache=cache)
    expected = torch.empty_like(t)
    assert (out.shape, out.stride()) == (expected.shape, expected.stride())
