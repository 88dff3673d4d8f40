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
    ],
)
def test_different_allocations(a, b):
    assert not equivalent(f"import torch\ny = {a}\n", f"import torch\ny = {b}\n")
