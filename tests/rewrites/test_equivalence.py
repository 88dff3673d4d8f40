"""The normal form that decides whether `unfix` gave back what `fix` was given."""

import pytest

from allocaudit.rewrites.equivalence import equivalent


@pytest.mark.parametrize(
    "a, b",
    [
        ("torch.zeros(m, n, device='cuda')", "torch.zeros((m, n), device='cuda')"),
        ("x.new_empty(n)", "torch.empty(n, dtype=x.dtype, device=x.device)"),
        ("torch.zeros_like(x, memory_format=torch.contiguous_format)", "torch.zeros(x.shape, dtype=x.dtype, device=x.device)"),
        ("torch.empty_like(x, memory_format=torch.preserve_format)", "torch.empty_like(x)"),
        ("torch.full_like(x, 0)", "torch.zeros_like(x)"),
        ("torch.empty_like(x, dtype=None, requires_grad=False)", "torch.empty_like(x)"),
        # ones is a full of 1; torch.full's inferred dtype is spelled out.
        ("torch.ones(m, device='cuda')", "torch.full(m, 1, dtype=torch.get_default_dtype(), device='cuda')"),
        ("torch.full((m,), 7)", "torch.full((m,), 7, dtype=torch.int64)"),
        ("torch.full((m,), -1)", "torch.full((m,), -1, dtype=torch.int64)"),
        ("torch.full((m,), True)", "torch.full((m,), True, dtype=torch.bool)"),
        ("torch.full((m,), 2.5)", "torch.full((m,), 2.5, dtype=torch.get_default_dtype())"),
        ("x.new_full(s, v)", "torch.full(s, v, dtype=x.dtype, device=x.device)"),
        ("x.new_ones(s)", "torch.ones(s, dtype=x.dtype, device=x.device)"),
        ("torch.ones_like(x)", "torch.full_like(x, 1)"),
        # A fill the code writes itself: `unfix` makes a full of it.
        ("torch.empty((m, n), dtype=x.dtype).fill_(0)", "torch.full((m, n), 0, dtype=x.dtype)"),
        ("torch.empty_like(x).fill_(v)", "torch.full_like(x, v)"),
        ("torch.full_like(x, v, memory_format=torch.contiguous_format)", "torch.full(x.shape, v, dtype=x.dtype, device=x.device)"),
    ],
)
def test_same_allocation_in_other_words(a, b):
    assert equivalent(f"import torch\ny = {a}\n", f"import torch\ny = {b}\n")


@pytest.mark.parametrize(
    "a, b",
    [
        # The input's layout is not the contiguous layout of its shape.
        ("torch.empty_like(x)", "torch.empty(x.shape, dtype=x.dtype, device=x.device)"),
        ("torch.empty_like(x)", "torch.zeros_like(x)"),
        ("torch.empty_like(x)", "torch.empty_like(x, memory_format=torch.channels_last)"),
        ("torch.empty_like(x, dtype=torch.float32)", "torch.empty_like(x)"),
        # Fills: the value and the dtype torch.full infers from it.
        ("torch.ones(m)", "torch.zeros(m)"),
        ("torch.ones(m)", "torch.empty(m)"),
        ("torch.ones(m)", "torch.full(m, 1)"),  # int64
        ("torch.full(m, 7)", "torch.full(m, 7, dtype=torch.get_default_dtype())"),
        ("torch.full(m, v)", "torch.full(m, v, dtype=torch.float32)"),
        ("torch.full(m, 2)", "torch.full(m, 3)"),
        ("torch.ones_like(x)", "torch.ones(x.shape, dtype=x.dtype, device=x.device)"),
        ("torch.full_like(x, 2)", "torch.full_like(x, 3)"),
    ],
)
def test_different_allocations(a, b):
    assert not equivalent(f"import torch\ny = {a}\n", f"import torch\ny = {b}\n")
