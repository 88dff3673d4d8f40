"""Whether an allocation's size grows with the batch: a static estimate from its shape.

A reuse cache pays for buffers whose size follows the tokens of a step: they are the ones
the caching allocator serves again at every step and that every captured CUDA graph keeps
its own copy of. A buffer whose size is fixed by the model's configuration (one entry per
expert, per rank, a 0-d or 2-element tensor) is small and the same at every step; a
`get_empty` call there saves nothing and costs a Python call.

Each dimension of the shape is judged on its own, from how MoE code names things:

- **grows**: a token count by its name (`num_tokens`, `M`, `m_max`, `batch_size`, `seq_len`,
  `total_padded_rows`), the leading dimension of a tensor (`x.shape[0]`, `x.size(0)`,
  `len(x)`, `x.numel()`), and anything computed from one;
- **fixed**: a literal, an upper-case constant (`BLOCK_SIZE_M`), a name or attribute that reads
  as configuration (`num_experts`, `n_routed_experts`, `local_E`, `world_size`, `ep_size`,
  `top_k`, `num_experts_per_tok`, `n_group`, `chunk_size`) or as a width of the model
  (`hidden_size`, `d_model`, `intermediate_size`), a dimension of a fixed-size tensor
  (`w1.size(0)`), and arithmetic of fixed dimensions;
- anything else is **unknown**: it may grow, so the site is kept.

A shape is fixed when every dimension is; it is then weighed with nominal sizes (see
NOMINAL_COUNT), and a fixed shape that may be large (`(num_experts, hidden_size)`, a copy of
a weight, `(4096, 4096)`) is kept too. So what is left out is what the issue names: constants,
expert counts, world sizes, 0-d and 1-element tensors, a padding row of the model's width.

A name is judged by the one value the function assigns it where there is one (`local_E =
w1.size(0)`, `M, K = x.shape`), else by its words: the last word that is not a filler
(`num`, `max`, `size`, `local`) says what it counts, and `X_per_Y` counts X (`num_experts_per_tok`
is the top-k), while a tensor named `X_per_Y` holds one entry per Y (`tokens_per_expert`).
`*_like(x)` has x's size: fixed for a weight (`w13_weight`, `bias`: large unless a vector), a
loss (`aux_loss`, 0-d), a tensor allocated with a fixed size in the function; unknown otherwise.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence, TypeVar

from allocaudit.auditor.analysis.factories import TENSOR_METHOD_FACTORIES, TORCH_FACTORIES, FactoryKind, bind
from allocaudit.auditor.analysis.syntax import arg_specs, argument, unparse

SizeKind = Literal["grows", "unknown", "large", "fixed"]
GROWS: SizeKind = "grows"
UNKNOWN: SizeKind = "unknown"
LARGE: SizeKind = "large"
FIXED: SizeKind = "fixed"

FIXED_SIZE = "size does not grow with the batch"
# A fixed shape is weighed by nominal sizes: a literal is its value, a count from the
# configuration (experts, ranks, top-k, a chunk) NOMINAL_COUNT, a width of the model (hidden,
# intermediate, vocab), a weight's dimension or an imported constant NOMINAL_WIDTH. A fixed
# shape of LARGE_ELEMENTS or more of those is kept: `(num_experts, hidden_size)`, a copy of a
# weight, `(4096, 4096)`; `(num_experts, 3)`, `(1, d_model)`, `(chunk_size, chunk_size)` are not.
NOMINAL_COUNT = 64
NOMINAL_WIDTH = 1 << 14
LARGE_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class SizeEstimate:
    """The estimate for one allocation: its kind and the evidence, the dimension that decided
    (`` `M` ``, `` `x.shape[0]` ``) or, for a fixed size, the shape as written."""

    kind: SizeKind
    evidence: str

    def describe(self) -> str:
        """A clause for a message: why the size pays, or why it does not."""
        if self.kind == GROWS:
            return f"grows with the batch (dim {self.evidence})"
        if self.kind == UNKNOWN:
            return f"may grow with the batch ({self.evidence} unknown)"
        if self.kind == LARGE:
            return f"fixed, but may be large: {self.evidence}"
        return f"{FIXED_SIZE}: {self.evidence}"


# A name's one value in the function that allocates, or None where it has none (a parameter,
# a name bound several times or by a loop): then the name is judged by its words.
Lookup = Callable[[str], Optional[ast.expr]]
T = TypeVar("T")

_FILLERS = frozenset(
    "num n nr number count cnt size sz total tot max min local global sum padded pad actual new cur "
    "current dim dims value values gpu cpu cuda device".split()
)
_BATCH_WORDS = frozenset(
    "tokens token toks tok ntok ntoks ntokens batch batches bs bsz seq seqs seqlen seqlens len lens length "
    "lengths rows m".split()
)
_CONFIG_WORDS = frozenset(
    "experts expert expts expt e ranks rank world tp ep dp pp cp gpus topk group groups chunk chunks "
    "block buckets bits layers layer shards shard splits stages warps heads head".split()
)
_MODEL_WORDS = frozenset("hidden intermediate inter ffn vocab model embed embedding".split())
# Words of a tensor that is a parameter of the model, not an activation: its size is fixed.
_WEIGHT_WORDS = frozenset("w w1 w2 w3 w13 w31 weight qweight bias param params parameter".split())
# ... unless a word says it is per token: `topk_weight` is the routing weight of each token.
_PER_TOKEN_WORDS = frozenset("topk routing token tokens".split())
# ... a vector, not a matrix, when one of these says so.
_VECTOR_WORDS = frozenset("bias scale scales zero zeros".split())
# 0-d tensors by name.
_SCALAR_WORDS = frozenset("loss".split())
# Functions of sizes whose result is fixed when their arguments are.
_ARITHMETIC = frozenset(
    "int max min abs round ceil floor cdiv ceil_div ceildiv div_up round_up align next_power_of_2 "
    "next_power_of_two prod".split()
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def words(identifier: str) -> list[str]:
    """`num_local_experts` -> num, local, experts; `localE` -> local, e; `top_k` -> topk."""
    parts = [p.lower() for p in _CAMEL.sub("_", identifier).split("_") if p]
    joined: list[str] = []
    for part in parts:
        if joined and joined[-1] == "top" and part == "k":
            joined[-1] = "topk"
        else:
            joined.append(part)
    return joined


def _noun(identifier: str, tensor: bool) -> Optional[str]:
    """The word that says what a name counts: the last one that is not a filler. A count
    `X_per_Y` counts X; a tensor `X_per_Y` has one entry per Y."""
    parts = words(identifier)
    if "per" in parts:
        at = parts.index("per")
        parts = parts[at + 1 :] if tensor else parts[:at]
    meaningful = [w for w in parts if w not in _FILLERS]
    return meaningful[-1] if meaningful else None


def _is_constant_name(identifier: str) -> bool:
    """`BLOCK_SIZE_M`, `MAX_TOKENS`: an upper-case name of more than one letter."""
    return len(identifier) > 1 and identifier.isupper()


def _identifier(expr: ast.expr) -> Optional[str]:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return None


@dataclass(frozen=True)
class _Dim:
    kind: SizeKind  # GROWS, UNKNOWN or FIXED
    evidence: str  # the dimension that decided, as code in backticks
    elements: int = NOMINAL_WIDTH  # a fixed dimension's value, or its nominal size
    exact: bool = False  # elements is the value (computed from literals), not a nominal size


def _worst(dims: Sequence[_Dim], combine: Callable[[Sequence[int]], int] = math.prod) -> _Dim:
    """Dimensions together: growing if one grows, else unknown if one is unknown, else fixed
    with their elements combined (a product for a shape)."""
    for kind in (GROWS, UNKNOWN):
        for d in dims:
            if d.kind == kind:
                return d
    return _Dim(FIXED, "", combine([d.elements for d in dims]), all(d.exact for d in dims))


def _arithmetic(op: ast.operator, left: int, right: int) -> int:
    """The nominal elements of `left op right`, kept finite."""
    if isinstance(op, ast.Mult):
        return left * right
    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Pow):
        return left ** min(right, 4)
    if isinstance(op, ast.LShift):
        return left << min(right, 40)
    return left  # -, //, /, %, >>: no more than the left operand


def _leading(index: ast.expr) -> bool:
    """`[0]`, `[:-1]`, `[:2]`: an index or slice that takes a tensor's leading dimension."""
    if isinstance(index, ast.Slice):
        return index.lower is None or (isinstance(index.lower, ast.Constant) and index.lower.value == 0)
    return isinstance(index, ast.Constant) and index.value == 0


class _Estimator:
    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.seen: set[str] = set()

    # -- a dimension (an int expression), or a part of a shape -------------------------

    def dim(self, expr: ast.expr) -> _Dim:
        code = f"`{unparse(expr, 40)}`"
        if isinstance(expr, ast.Constant) and isinstance(expr.value, int) and not isinstance(expr.value, bool):
            return _Dim(FIXED, code, abs(expr.value), exact=True)
        if isinstance(expr, ast.Name):
            return self._name(expr.id, code)
        if isinstance(expr, (ast.Tuple, ast.List)):
            return _worst([self.dim(e.value if isinstance(e, ast.Starred) else e) for e in expr.elts])
        if isinstance(expr, ast.Attribute):
            if expr.attr == "shape":  # a whole shape: the tensor's
                return self._tensor_dim(expr.value, ast.Slice(), code)
            return self._by_words(expr.attr, code)
        if isinstance(expr, ast.UnaryOp):
            return self.dim(expr.operand)
        if isinstance(expr, ast.BinOp):
            left, right = self.dim(expr.left), self.dim(expr.right)
            return _worst([left, right], lambda e: _arithmetic(expr.op, e[0], e[1]))
        if isinstance(expr, ast.IfExp):
            return _worst([self.dim(expr.body), self.dim(expr.orelse)], max)
        if isinstance(expr, ast.Subscript):
            return self._subscript(expr, code)
        if isinstance(expr, ast.Call):
            return self._call(expr, code)
        return _Dim(UNKNOWN, code)

    def _through(self, name: str, judge: Callable[[ast.expr], T]) -> Optional[T]:
        """``judge`` of the one value the function assigns ``name``, or None where it has no
        one value (or is being judged already: `n = n + 1` in a loop)."""
        value = self.lookup(name) if name not in self.seen else None
        if value is None:
            return None
        self.seen.add(name)
        try:
            return judge(value)
        finally:
            self.seen.discard(name)

    def _name(self, name: str, code: str) -> _Dim:
        """A name by its value where it has one; by its words where it has none, or where the
        value says nothing (`d_model = x.size(-1)`)."""
        found = self._through(name, self.dim)
        by_words = self._by_words(name, code)
        if found is not None and found.kind == FIXED:
            if found.exact or by_words.kind != FIXED:
                return _Dim(FIXED, code, found.elements, found.exact)
            # `num_experts = w1.size(0)`: the words say which dimension of the weight it is.
            return _Dim(FIXED, code, min(found.elements, by_words.elements))
        if found is not None and found.kind == GROWS:
            origin = found.evidence.split(" from ")[-1]
            return _Dim(GROWS, code if origin == code else f"{code} from {origin}")
        return by_words

    @staticmethod
    def _by_words(identifier: str, code: str) -> _Dim:
        if _is_constant_name(identifier):
            return _Dim(FIXED, code)
        noun = "e" if identifier in ("E", "e") else _noun(identifier, tensor=False)
        if noun in _BATCH_WORDS:
            return _Dim(GROWS, code)
        if noun in _CONFIG_WORDS:
            return _Dim(FIXED, code, NOMINAL_COUNT)
        if noun in _MODEL_WORDS:
            return _Dim(FIXED, code, NOMINAL_WIDTH)
        return _Dim(UNKNOWN, code)

    def _subscript(self, expr: ast.Subscript, code: str) -> _Dim:
        """`x.shape[i]`, `x.size()[i]`, `x.shape[1:]`."""
        base = expr.value
        if isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute) and base.func.attr == "size" and not base.args:
            base = base.func
        if isinstance(base, ast.Attribute) and base.attr in ("shape", "size"):
            return self._tensor_dim(base.value, expr.slice, code)
        return _Dim(UNKNOWN, code)

    def _call(self, call: ast.Call, code: str) -> _Dim:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "size" and len(call.args) <= 1 and not call.keywords:
            return self._tensor_dim(func.value, call.args[0] if call.args else ast.Slice(), code)
        if isinstance(func, ast.Attribute) and func.attr == "numel" and not call.args:
            return self._tensor_dim(func.value, ast.Slice(), code)
        name = _identifier(func)
        if name == "len" and len(call.args) == 1:
            return self._tensor_dim(call.args[0], ast.Constant(0), code)
        if name == "Size" and len(call.args) == 1:  # torch.Size([m, n])
            return self.dim(call.args[0])
        args = [*call.args, *(k.value for k in call.keywords)]
        if name in _ARITHMETIC and args and not any(isinstance(a, ast.Starred) for a in args):
            return _worst([self.dim(a) for a in args], max)
        return _Dim(UNKNOWN, code)

    def _tensor_dim(self, tensor: ast.expr, index: ast.expr, code: str) -> _Dim:
        """Dimension(s) ``index`` of ``tensor`` (`w1.size(0)`, `x.shape[0]`, `x.shape`): fixed
        for a fixed-size tensor, growing where they take an activation's leading dimension,
        else unknown."""
        elements = self.tensor(tensor)
        if elements is not None:
            return _Dim(FIXED, code, elements if isinstance(index, ast.Slice) else min(elements, NOMINAL_WIDTH))
        return _Dim(GROWS if _leading(index) else UNKNOWN, code)

    # -- a tensor whose size is taken (`*_like(x)`, `x.shape`) ---------------------------

    def tensor(self, expr: ast.expr) -> Optional[int]:
        """The nominal elements of a tensor whose size is fixed (a weight, a loss, one entry
        per expert, a fixed-size allocation), or None."""
        if isinstance(expr, ast.Subscript):  # `w13[e]`: a part of a weight
            return self.tensor(expr.value)
        if isinstance(expr, ast.BinOp):  # `(counts + 127) // 128`
            parts = [self.tensor(o) if not isinstance(o, ast.Constant) else 1 for o in (expr.left, expr.right)]
            return None if None in parts else max(parts)  # type: ignore[type-var]
        if isinstance(expr, ast.Call):
            return self._allocation(expr)
        identifier = _identifier(expr)
        if identifier is None:
            return None
        elements = self._through(identifier, self.tensor) if isinstance(expr, ast.Name) else None
        if elements is not None:
            return elements
        parts = words(identifier)
        if any(w in _SCALAR_WORDS for w in parts):
            return 1
        if any(w in _WEIGHT_WORDS for w in parts) and not any(w in _PER_TOKEN_WORDS for w in parts):
            # A weight of an expert layer: as large as the model, unless a vector (bias, scales).
            return NOMINAL_WIDTH if any(w in _VECTOR_WORDS for w in parts) else NOMINAL_WIDTH**2
        if "per" in parts and _noun(identifier, tensor=True) in _CONFIG_WORDS:
            return NOMINAL_COUNT  # tokens_per_expert: one entry per expert
        return None

    def _allocation(self, call: ast.Call) -> Optional[int]:
        """The nominal elements of `torch.zeros(num_experts, ...)` assigned to a name, or None."""
        name = _identifier(call.func)
        kind = TORCH_FACTORIES.get(name or "") or TENSOR_METHOD_FACTORIES.get(name or "")
        if kind is None:
            return None
        found = self.estimate(call, name, kind)  # type: ignore[arg-type]
        return found.elements if found.kind == FIXED else None

    def estimate(self, call: ast.Call, factory: str, kind: FactoryKind) -> _Dim:
        """The whole size of a factory call: its shape's dimensions together."""
        bound = bind(factory, arg_specs(call))
        if kind in ("like", "full_like"):
            like = argument(call, bound.like)
            elements = self.tensor(like) if like is not None else None
            if elements is None:
                return _Dim(UNKNOWN, f"`{unparse(like, 40)}.shape`" if like is not None else "the input's size")
            return _Dim(FIXED, f"the size of `{unparse(like, 40)}`", elements)
        if bound.size_keyword is not None:
            size = [argument(call, bound.size_keyword)]
        else:
            size = [argument(call, i) for i in bound.size]
        dims = [self.dim(d.value if isinstance(d, ast.Starred) else d) for d in size if d is not None]
        if not dims:
            return _Dim(UNKNOWN, "the size")
        worst = _worst(dims)
        return worst if worst.kind != FIXED else _Dim(FIXED, _shape_text(size), worst.elements)


def estimate(call: ast.Call, factory: str, lookup: Lookup) -> SizeEstimate:
    """The size estimate of a call of ``factory`` (`zeros`, `new_empty`, `ones_like`);
    ``lookup`` gives the value of a name in the function that allocates."""
    kind = TORCH_FACTORIES.get(factory) or TENSOR_METHOD_FACTORIES[factory]
    found = _Estimator(lookup).estimate(call, factory, kind)
    if found.kind != FIXED:
        return SizeEstimate(found.kind, found.evidence)
    if found.elements >= LARGE_ELEMENTS:
        return SizeEstimate(LARGE, found.evidence)
    return SizeEstimate(FIXED, found.evidence)


def _shape_text(size: Sequence[Optional[ast.expr]]) -> str:
    """The size as written, for a message: `(num_experts,)`, `(e, 3)`, `()`."""
    if len(size) == 1 and isinstance(size[0], (ast.Tuple, ast.List)):
        return unparse(size[0], 60)
    inner = ", ".join(ast.unparse(s) for s in size if s is not None)
    text = f"({inner},)" if len(size) == 1 else f"({inner})"
    return text if len(text) <= 60 else text[:59] + "…"
