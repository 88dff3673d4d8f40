"""The PyTorch factory functions allocaudit knows, and how their arguments bind.

Binding works on an abstract argument list (positional, starred, keyword, double-star),
so the static auditor (which reads Python's ``ast``) and the codemod (which edits a
libcst tree) share one definition of each signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

# Factory name -> how it takes its arguments.
#   "size":   torch.empty(*size, ...) / torch.empty(size, ...); also x.new_empty(...)
#   "full":   torch.full(size, fill_value, ...); x.new_full(size, fill_value, ...)
#   "strided": torch.empty_strided(size, stride, ...)
#   "like":   torch.empty_like(input, ...)
#   "full_like": torch.full_like(input, fill_value, ...)
FactoryKind = Literal["size", "full", "strided", "like", "full_like"]
TORCH_FACTORIES: dict[str, FactoryKind] = {
    "empty": "size",
    "zeros": "size",
    "ones": "size",
    "full": "full",
    "empty_strided": "strided",
    "empty_like": "like",
    "zeros_like": "like",
    "ones_like": "like",
    "full_like": "full_like",
}
TENSOR_METHOD_FACTORIES: dict[str, FactoryKind] = {
    "new_empty": "size",
    "new_zeros": "size",
    "new_ones": "size",
    "new_full": "full",
}
ALL_FACTORY_NAMES = frozenset(TORCH_FACTORIES) | frozenset(TENSOR_METHOD_FACTORIES)
# A file that calls a factory holds one of these bytes (`torch.empty(`, `x.new_zeros(`, a name
# taken with `from torch import empty`): the prefilter hints of the rules that read allocation
# sites. Aliases that another module of the tree defines are the scan's own concern.
FACTORY_HINTS = (b".empty", b".zeros", b".ones", b".full", b".new_", b"from torch import")

# What a factory fills its result with: None = uninitialised, "0", "1", "fill" = a value argument.
FILL: dict[str, Optional[Literal["0", "1", "fill"]]] = {
    "empty": None, "empty_strided": None, "empty_like": None, "new_empty": None,
    "zeros": "0", "zeros_like": "0", "new_zeros": "0",
    "ones": "1", "ones_like": "1", "new_ones": "1",
    "full": "fill", "full_like": "fill", "new_full": "fill",
}


@dataclass(frozen=True)
class ArgSpec:
    """One argument of a call as written: ``kind`` is pos, star, kw or dstar."""

    kind: Literal["pos", "star", "kw", "dstar"]
    name: Optional[str] = None


@dataclass
class BoundArgs:
    """Indices (into the call's argument list) of each role a factory argument plays."""

    size: list[int] = field(default_factory=list)  # positional/starred args that form the size
    size_keyword: Optional[int] = None  # size=...
    fill: Optional[int] = None
    stride: Optional[int] = None
    like: Optional[int] = None
    keywords: dict[str, int] = field(default_factory=dict)  # every other keyword by name
    has_dstar: bool = False  # **kwargs: the arguments are not all visible

    def keyword(self, name: str) -> Optional[int]:
        return self.keywords.get(name)


def bind(factory: str, args: Sequence[ArgSpec]) -> BoundArgs:
    """Bind the arguments of a call of ``factory`` (a name from ALL_FACTORY_NAMES)."""
    kind = TORCH_FACTORIES.get(factory) or TENSOR_METHOD_FACTORIES[factory]
    bound = BoundArgs()
    positional = []
    for i, arg in enumerate(args):
        if arg.kind in ("pos", "star"):
            positional.append(i)
        elif arg.kind == "dstar":
            bound.has_dstar = True
        elif arg.name == "size":
            bound.size_keyword = i
        elif arg.name == "fill_value":
            bound.fill = i
        elif arg.name == "stride":
            bound.stride = i
        elif arg.name == "input" and kind in ("like", "full_like"):
            bound.like = i
        else:
            bound.keywords[arg.name or ""] = i
    if kind == "size":
        bound.size = positional
    elif kind in ("full", "strided"):
        if positional:
            bound.size = positional[:1]
        if len(positional) > 1:
            if kind == "full":
                bound.fill = positional[1]
            else:
                bound.stride = positional[1]
    else:  # like, full_like
        if positional:
            bound.like = positional[0]
        if kind == "full_like" and len(positional) > 1:
            bound.fill = positional[1]
    return bound
