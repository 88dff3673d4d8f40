"""The device an allocation lands on: classified from the expression that names it
(`DeviceClassifier`), and found for each factory call of a module (`SiteDevices`)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Optional

from allocaudit.auditor.analysis.factories import TENSOR_METHOD_FACTORIES, BoundArgs
from allocaudit.auditor.analysis.syntax import FunctionNode, argument, unparse

if TYPE_CHECKING:  # passed in by sites.py, which finds the allocation sites
    from allocaudit.auditor.analysis.index import ModuleIndex

# Device forms, as reported in findings (and in the JSON schema).
DeviceForm = Literal["cuda", "cuda-current", "inherited", "variable", "default", "not-cuda"]
Confidence = Literal["high", "medium", "low"]
CUDA: DeviceForm = "cuda"  # a literal CUDA device: 'cuda', 'cuda:1', f'cuda:{i}', torch.device('cuda'), 3
CUDA_CURRENT: DeviceForm = "cuda-current"  # torch.cuda.current_device() and friends
INHERITED: DeviceForm = "inherited"  # x.device, self.device, *_like, new_*: the device of another tensor
VARIABLE: DeviceForm = "variable"  # a name or call we cannot resolve
DEFAULT: DeviceForm = "default"  # no device: the default device (CPU unless the program changed it)
NOT_CUDA: DeviceForm = "not-cuda"  # 'cpu', 'meta', torch.device('cpu'), ...

CONFIDENCE: dict[DeviceForm, Confidence] = {CUDA: "high", CUDA_CURRENT: "high", INHERITED: "medium", VARIABLE: "low"}
CONFIDENCE_ORDER: dict[Confidence, int] = {"low": 0, "medium": 1, "high": 2}

_CUDA_PREFIXES = ("cuda",)
# `.to(torch.float16)` converts, it does not move: a first argument of these is no device.
DTYPE_NAMES = frozenset(
    f"torch.{n}"
    for n in (
        "float", "float32", "float64", "double", "float16", "half", "bfloat16", "int", "int8",
        "int16", "int32", "int64", "long", "uint8", "bool", "float8_e4m3fn", "float8_e5m2",
        "float8_e4m3fnuz", "float8_e5m2fnuz", "complex64", "complex128", "uint16", "uint32", "uint64",
    )
)
# The test of an `if` whose body runs only on CPU (`current_platform.is_cpu()`, `x.device.type == "cpu"`).
CPU_TEST = re.compile(r"^(?!not\b).*(?:\bis_cpu\w*\(\)|\btype\s*==\s*['\"]cpu['\"]|==\s*['\"]cpu['\"])")


@dataclass(frozen=True)
class Device:
    form: DeviceForm
    text: Optional[str] = None  # the expression as written, where there is one

    @property
    def on_cuda(self) -> bool:
        """Could this allocation be on a CUDA device (reported as a CUDA allocation)?"""
        return self.form in CONFIDENCE

    @property
    def confidence(self) -> Optional[Confidence]:
        return CONFIDENCE.get(self.form)


def _string_form(value: str) -> DeviceForm:
    return CUDA if value.split(":")[0].strip().lower() in _CUDA_PREFIXES else NOT_CUDA


class DeviceClassifier:
    """Classifies device expressions of one function.

    ``resolve`` gives the qualified torch names an expression may denote; ``lookup``
    gives the single value a plain name was assigned (in the function or the module),
    or None when it is a parameter or bound several ways.
    """

    def __init__(
        self,
        resolve: Callable[[ast.AST], frozenset[str]],
        lookup: Callable[[str], Optional[ast.expr]],
        text: Callable[[ast.AST], str],
    ) -> None:
        self.resolve = resolve
        self.lookup = lookup
        self.text = text

    def classify(self, expr: Optional[ast.AST], _depth: int = 0) -> Device:
        if expr is None:
            return Device(DEFAULT)
        form = self._form(expr, _depth)
        text = self.text(expr)
        if isinstance(expr, ast.Name):
            value = self.lookup(expr.id)
            if value is not None:
                text = f"{text} = {self.text(value)}"
        return Device(form, text)

    def _form(self, expr: ast.AST, depth: int) -> DeviceForm:
        if depth > 4:
            return VARIABLE
        if isinstance(expr, ast.Constant):
            if isinstance(expr.value, str):
                return _string_form(expr.value)
            if isinstance(expr.value, int) and not isinstance(expr.value, bool):
                return CUDA  # a bare index names a CUDA device in every torch factory
            if expr.value is None:
                return DEFAULT
            return VARIABLE
        if isinstance(expr, ast.JoinedStr):
            head = expr.values[0] if expr.values else None
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value:
                return _string_form(head.value)
            if isinstance(head, ast.FormattedValue):
                return self._form(head.value, depth + 1)
            return VARIABLE
        if isinstance(expr, ast.Attribute):
            if expr.attr == "device":
                return INHERITED
            return VARIABLE
        if isinstance(expr, ast.Call):
            names = self.resolve(expr.func)
            if names & {"torch.device", "torch.cuda.device"}:
                if "torch.cuda.device" in names:
                    return CUDA
                if not expr.args:
                    kind = next((k.value for k in expr.keywords if k.arg == "type"), None)
                    return self._form(kind, depth + 1) if kind is not None else VARIABLE
                return self._form(expr.args[0], depth + 1)
            if any(n.startswith("torch.cuda.") for n in names):
                return CUDA_CURRENT  # torch.cuda.current_device(), torch.cuda.device_count()-1...
            callee = expr.func.attr if isinstance(expr.func, ast.Attribute) else getattr(expr.func, "id", "")
            if callee in ("current_device", "current_device_name"):
                return CUDA_CURRENT  # accelerator abstractions: get_accelerator().current_device()
            return VARIABLE
        if isinstance(expr, ast.IfExp):
            forms = {self._form(expr.body, depth + 1), self._form(expr.orelse, depth + 1)}
            if len(forms) == 1:
                return forms.pop()
            if forms <= {CUDA, CUDA_CURRENT}:
                return CUDA
            return VARIABLE
        if isinstance(expr, ast.Name):
            value = self.lookup(expr.id)
            if value is None:
                return VARIABLE
            return self._form(value, depth + 1)
        return VARIABLE


class SiteDevices:
    """The device each factory call of one module allocates on, and whether it is allocated
    on the default device and then moved: its `device=` argument, the tensor a `*_like` or
    `new_*` call inherits from, a `.cuda()`/`.to(...)` on the result, an enclosing
    `with torch.device(...):`. An inherited or unresolved device in a CPU-only branch is
    not CUDA. ``value_of(name, function)`` gives the one value a plain name is assigned in
    ``function`` or else at module level, or None (sites.py's, which other facts read too)."""

    def __init__(self, index: "ModuleIndex", value_of: Callable[[str, Optional[FunctionNode]], Optional[ast.expr]]) -> None:
        self.index = index
        self.value_of = value_of
        self.parents = index.parents

    def of(self, call: ast.Call, factory: Optional[str], bound: BoundArgs, function: Optional[FunctionNode]) -> tuple[Device, bool]:
        device, moved = self._device(call, factory, bound, function)
        if device.form in (INHERITED, VARIABLE) and self._in_cpu_branch(call):
            device = Device(NOT_CUDA, f"{device.text} (in a CPU-only branch)")
        return device, moved

    def _device(self, call: ast.Call, factory: Optional[str], bound: BoundArgs, function) -> tuple[Device, bool]:
        classifier = DeviceClassifier(
            resolve=lambda e: self.index.resolve(e, call),
            lookup=lambda name: self.value_of(name, function),
            text=unparse,
        )
        moved = self._moved_to(call, classifier)
        if moved is not None:
            return moved, True
        device_expr = argument(call, bound.keyword("device"))
        if device_expr is not None:
            return classifier.classify(device_expr), False
        if bound.like is not None:
            return Device(INHERITED, f"{unparse(argument(call, bound.like))}.device"), False
        if factory in TENSOR_METHOD_FACTORIES and isinstance(call.func, ast.Attribute):
            return Device(INHERITED, f"{unparse(call.func.value)}.device"), False
        context = self._default_device_context(call)
        if context is not None:
            return classifier.classify(context), False
        return Device(DEFAULT), False

    def _moved_to(self, call: ast.Call, classifier: DeviceClassifier) -> Optional[Device]:
        """`torch.empty(n).cuda()` / `.to("cuda")`: the device it is moved to, if CUDA."""
        attr = self.parents.get(call)
        method = self.parents.get(attr)
        if not (isinstance(attr, ast.Attribute) and isinstance(method, ast.Call) and method.func is attr):
            return None
        if attr.attr == "cuda":
            return Device(CUDA, ".cuda()")
        if attr.attr != "to":
            return None
        target = next((k.value for k in method.keywords if k.arg == "device"), None)
        if target is None and method.args:
            first = method.args[0]
            if self.index.resolve(first, call) & DTYPE_NAMES or (isinstance(first, ast.Name) and "dtype" in first.id):
                return None
            target = first
        if target is None:
            return None
        device = classifier.classify(target)
        return device if device.on_cuda else None

    def _default_device_context(self, call: ast.Call) -> Optional[ast.expr]:
        """The device of an enclosing `with torch.device(...):` block."""
        parent = self.parents.get(call)
        while parent is not None:
            if isinstance(parent, (ast.With, ast.AsyncWith)):
                for item in parent.items:
                    ctx = item.context_expr
                    if isinstance(ctx, ast.Call) and self.index.resolve(ctx.func, call) & {"torch.device"} and ctx.args:
                        return ctx.args[0]
            parent = self.parents.get(parent)
        return None

    def _in_cpu_branch(self, node: ast.AST) -> bool:
        """Inside the body of `if current_platform.is_cpu():` or `if x.device.type == "cpu":`."""
        child, parent = node, self.parents.get(node)
        while parent is not None and not isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if isinstance(parent, ast.If) and child in parent.body and CPU_TEST.search(ast.unparse(parent.test)):
                return True
            child, parent = parent, self.parents.get(parent)
        return False
