"""Which workspace sites `allocaudit fix` may rewrite to `get_empty`, and why not the others.

The scan decides here, on ``ast``, and the codemod trusts the decision; it checks the
argument forms again on libcst only to keep every byte it does not rewrite, and where it
refuses a form for the same cause it gives the same reason (the constants below).

Two kinds of reason: the rewrite would not keep the call's meaning exactly (every reason
but the last), or it would not pay: the allocation's size does not grow with the batch
(`allocaudit.auditor.analysis.sizes`), which `all-sizes` lets through. A site that is both
gets the first kind, which `--all-sizes` cannot change.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Callable, Literal, Optional

from allocaudit.auditor.analysis.devices import Device
from allocaudit.auditor.analysis.escapes import FlowResult
from allocaudit.auditor.analysis.factories import FILL, TENSOR_METHOD_FACTORIES, TORCH_FACTORIES, BoundArgs
from allocaudit.auditor.analysis.functions import FunctionInfo
from allocaudit.auditor.analysis.sizes import FIXED, FIXED_SIZE, SizeEstimate
from allocaudit.auditor.analysis.syntax import argument, is_literal, may_have_effects

if TYPE_CHECKING:  # sites.py judges its sites with this module
    from allocaudit.auditor.analysis.sites import SiteClass

NOT_ON_CUDA = "not a CUDA allocation"
SEVERAL_FACTORIES = "the callee is an alias of several factories"
# Buffers alive together: runtime v2 gives each request its own memory while the others live (it
# never hands out memory a live tensor uses), so rewriting them would be correct. It is not done
# because it does not pay: the runtime would keep every element's buffer between calls (memory the
# caching allocator could otherwise give to any allocation), one site would count an overlap per
# element in `stats()`, and strict mode, meant to catch a name requested while its hand-out lives,
# would raise on correct code.
ALIVE_TOGETHER = (
    "alive together: get_empty would give each its own buffer and hold them all between calls, "
    "and strict mode would raise on the second"
)
COMPREHENSION = f"the elements of a comprehension are {ALIVE_TOGETHER}"
MOVED = "allocated on the default device, then moved: allocate on the device directly first"
HIDDEN_KWARGS = "`**kwargs` hides some arguments"
NOT_STRIDED = "non-strided `layout=`"
MEMORY_FORMAT = "`memory_format=` other than torch.contiguous_format (or torch.preserve_format for `*_like`)"
EXPLICIT_STRIDES = "explicit strides: get_empty returns contiguous tensors"
NO_FILL = "no fill value"
STARRED_FILL = "a starred argument hides which argument is the fill value"
FILL_DTYPE = "`torch.full` infers its dtype from the fill value, which is not a real or bool literal here: give `dtype=`"
FILL_ORDER = "the fill value would be evaluated after a later argument (`get_empty(...).fill_(value)`), and both may have effects"
NO_SIZE = "no size argument"
# Keyword arguments that the codemod cannot carry into get_empty, with the reason.
UNFIXABLE_KEYWORDS = {
    "requires_grad": "`requires_grad=`: a reused buffer cannot carry autograd state",
    "pin_memory": "`pin_memory=`: pinned host memory is not a device workspace",
}


def not_fixable_reason(
    call: ast.Call,
    site_class: SiteClass,
    factory: Optional[str],
    bound: BoundArgs,
    device: Device,
    moved: bool,
    info: Optional[FunctionInfo],
    flow: FlowResult,
    notes: list[str],
    resolve: Callable[[ast.AST], frozenset[str]],
    size: Optional[SizeEstimate] = None,
    all_sizes: bool = False,
) -> Optional[str]:
    """Why the site cannot be rewritten exactly, or is not worth rewriting, or None when
    `fix` rewrites it. ``resolve`` gives the torch names an expression at the call may
    denote; ``size`` is the site's size estimate, which keeps out fixed sizes unless
    ``all_sizes``."""
    if site_class != "workspace":
        return f"{site_class} site: only per-call workspaces are rewritten"
    if not device.on_cuda:
        return NOT_ON_CUDA
    if factory is None:
        return SEVERAL_FACTORIES
    if info.scripted:
        where = f"reached from TorchScript `{info.reached_from}`" if info.reached_from else f"inside TorchScript `{info.qualname}`"
        return f"{where}: get_empty cannot be scripted"
    if info.compiled:
        return f"inside torch.compile'd `{info.qualname}`: dynamo traces it on every call and inductor plans its buffers, so get_empty would be plain torch.empty there"
    if flow.uncertain is not None:
        return flow.uncertain.how
    if any(n.startswith("in a comprehension") for n in notes):
        return COMPREHENSION
    if flow.into_container and any(n.startswith("in a loop") for n in notes):
        return f"collected in `{flow.into_container}` across iterations, {ALIVE_TOGETHER}"
    if moved:
        return MOVED
    if bound.has_dstar:
        return HIDDEN_KWARGS
    for name, reason in UNFIXABLE_KEYWORDS.items():
        value = argument(call, bound.keyword(name))
        if value is not None and not is_literal(value, None, False):
            return reason
    layout = argument(call, bound.keyword("layout"))
    if layout is not None and "torch.strided" not in resolve(layout):
        return NOT_STRIDED
    kind = TORCH_FACTORIES.get(factory) or TENSOR_METHOD_FACTORIES.get(factory)
    # `*_like` keeps the input's layout (get_empty_like does the same); an explicit
    # contiguous format becomes get_empty of the input's shape.
    memory_format = argument(call, bound.keyword("memory_format"))
    formats = {"torch.contiguous_format", "torch.preserve_format"} if kind in ("like", "full_like") else {"torch.contiguous_format"}
    if memory_format is not None and not resolve(memory_format) & formats:
        return MEMORY_FORMAT
    if kind == "strided":
        return EXPLICIT_STRIDES
    if FILL[factory] == "fill":
        if any(isinstance(a, ast.Starred) for a in call.args):
            return STARRED_FILL
        value = argument(call, bound.fill)
        if value is None:
            return NO_FILL
        dtype = argument(call, bound.keyword("dtype"))
        if factory == "full" and (dtype is None or is_literal(dtype, None)) and inferred_fill_dtype(value) is None:
            return FILL_DTYPE
        # `get_empty(...).fill_(value)` evaluates the value after every other argument.
        later = [a for a in (*call.args, *(k.value for k in call.keywords)) if _position(a) > _position(value)]
        if may_have_effects(value) and any(may_have_effects(a) for a in later):
            return FILL_ORDER
    if bound.size_keyword is None and not bound.size and kind not in ("like", "full_like"):
        return NO_SIZE
    if size is not None and size.kind == FIXED and not all_sizes:
        return size.describe()
    return None


def chosen_because(size: SizeEstimate) -> str:
    """Why `fix` rewrites a site that the analysis marks fixable, for `--show-fixes`."""
    if size.kind == FIXED:
        return f"--all-sizes: {size.describe()}"
    return f"static: {size.describe()}"


def left_out_by_size(reason: Optional[str]) -> bool:
    """Whether a site's not-fixable reason is its fixed size only: `--all-sizes` fixes it."""
    return reason is not None and reason.startswith(FIXED_SIZE + ":")


def inferred_fill_dtype(value: ast.expr) -> Optional[Literal["bool", "int64", "default"]]:
    """The dtype `torch.full(size, value)` infers from a literal ``value`` (`True`, `-1`,
    `2.5`): torch.bool, torch.int64 or the default dtype; None for anything else (a complex
    literal's dtype follows the default dtype, a name's is known only at run time)."""
    if not isinstance(value, (ast.Constant, ast.UnaryOp)):
        return None
    try:
        number = ast.literal_eval(value)
    except (ValueError, TypeError):
        return None
    return {bool: "bool", int: "int64", float: "default"}.get(type(number))


def _position(node: ast.expr) -> tuple[int, int]:
    return node.lineno, node.col_offset
