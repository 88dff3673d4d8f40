"""Classify the device an allocation lands on, from the expression that names it."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Callable, Literal, Optional

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
