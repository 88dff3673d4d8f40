"""AA206: the same cached workspace requested twice while the first result is in use."""

from __future__ import annotations

import ast
from fnmatch import fnmatchcase
from typing import Iterator, Optional

from allocaudit.auditor.analysis.caches import hand_written_caches
from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.sites import ModuleFacts
from allocaudit.auditor.analysis.syntax import positional_parameters, root_name, unparse
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid

# Callees that hand out a cached buffer by name.
CACHE_GETTERS = ("*get_empty*", "*get_buffer*", "*get_cached*", "*cached_workspace*")
NAME_KEYWORDS = ("cache_name", "name", "key", "buffer_name")
MANAGER_METHODS = frozenset({"get", "get_buffer", "get_workspace"})


WORKSPACE_WORDS = ("workspace", "cache", "buf", "scratch")


def _is_workspace_buffer(facts: ModuleFacts, call: ast.Call, arg: ast.AST) -> bool:
    """A buffer that views are carved from: allocated in this function, or named like
    one (`workspace13`, `cache13`, `self._buf`). Views of an input tensor are not."""
    if not isinstance(arg, (ast.Name, ast.Attribute)):
        return False
    text = unparse(arg).lower()
    if any(word in text for word in WORKSPACE_WORDS) or "ws" in text.replace(".", "_").split("_"):
        return True
    function = facts.index.owner(call)
    if function is None or not isinstance(arg, ast.Name):
        return False
    values = facts.effects.flow(function).stores.get(arg.id, [])
    return bool(values) and all(isinstance(v, ast.Call) and facts.index.factory_of(v) for v in values)


def _may_return_a_view(facts: ModuleFacts, call: ast.Call) -> bool:
    """Cheap test before the summary: does the callee (a def of this module, by name)
    return an expression rooted at one of its parameters?"""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    candidates = [facts.index.module_function(name), *facts.index.methods_named(name)]
    for fn in candidates:
        if fn is None:
            continue
        params = set(positional_parameters(fn))
        if any(isinstance(r, ast.Return) and r.value is not None and root_name(r.value) in params for r in ast.walk(fn)):
            return True
    return False


class WorkspaceAliasing(Rule):
    CODE = "AA206"
    NAME = "workspace-aliasing"
    # A hand-written cache allocates (a factory); the others are called by name or asked through
    # an object named for its workspace. A view helper's buffer named only `ws`, `buf` or
    # `cache` is seen in files that pass for another reason: those words are in most files.
    HINTS = (*FACTORY_HINTS, b"get_empty", b"get_buffer", b"get_cached", b"cached_workspace", b"workspace", b"scratch")
    SUMMARY = "a cached workspace is requested again while an earlier result of it is still in use"
    EXPLAIN = """\
Why: a reuse cache hands out the same memory for the same name (or the same manager, or
views of the same buffer). Asking twice in one function and using both results means
both tensors are one buffer: writing the second overwrites the first. The typical case
is copy-paste: two workspaces requested under the same cache name, or a `_resize_cache`
style helper (`buf.flatten()[:n].view(shape)`) applied twice to one buffer. Sometimes
it is deliberate (the first result is dead before the second is written); then say so
with `# noqa: AA206` and a comment.

Fix: give each workspace its own cache name (`allocaudit fix` derives one per site), or
request them together (`get_simultaneous`), or make the first result's last use come
before the second request. `allocaudit.runtime`'s strict mode (`ALLOCAUDIT_RUNTIME_DEBUG=strict`)
finds the aliasing at run time and names both call sites.

    a = get_empty((m, k), torch.bfloat16, device="cuda", cache_name="moe.ws")
    b = get_empty((m, n), torch.bfloat16, device="cuda", cache_name="moe.ws")   # AA206
    kernel(a, b)
"""
    VALID = (
        Valid(
            """
            def forward(x):
                a = get_empty((4,), dt, cache_name='moe.a')
                b = get_empty((4,), dt, cache_name='moe.b')
                kernel(a, b)
            """
        ),
        # The first result is dead before the second request.
        Valid(
            """
            def forward(x):
                a = get_empty((4,), dt, cache_name='moe.ws')
                kernel(a)
                b = get_empty((8,), dt, cache_name='moe.ws')
                kernel(b)
            """
        ),
        Valid(
            """
            def resize(x, shape):
                return x.flatten()[: shape[0]].view(*shape)
            def forward(workspace, y):
                a = resize(workspace, (4,))
                b = resize(y, (4,))
                k(a, b)
            """
        ),
        # Names that `allocaudit fix` derives share a long prefix; they are still distinct.
        Valid(
            """
            from allocaudit.runtime import get_empty
            def run_cutlass_moe_fp8(x, dt, m):
                problem_sizes1 = get_empty((m, 3), dt, device=x.device, cache_name="vllm.model_executor.layers.fused_moe.experts.cutlass_moe.run_cutlass_moe_fp8.problem_sizes1")
                problem_sizes2 = get_empty((m, 3), dt, device=x.device, cache_name="vllm.model_executor.layers.fused_moe.experts.cutlass_moe.run_cutlass_moe_fp8.problem_sizes2")
                kernel(problem_sizes1, problem_sizes2)
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            from allocaudit.runtime import get_empty
            def forward(x, dt):
                a = get_empty((4,), dt, cache_name='moe.ws')
                b = get_empty((8,), dt, device='cuda', cache_name='moe.ws')  # expect
                kernel(a, b)
            """
        ),
        # A _resize_cache-style helper applied twice to one buffer.
        Invalid(
            """
            def resize_cache(x, shape):
                return x.flatten()[: shape[0] * shape[1]].view(*shape)
            def experts(workspace13, m, n, k):
                c1 = resize_cache(workspace13, (m, n))
                c3 = resize_cache(workspace13, (m, k))  # expect
                gemm(c1, c3)
            """
        ),
        # A workspace manager asked twice.
        Invalid(
            """
            def attention(self, q):
                s = self.workspace.get((q.shape[0], 64), q.dtype)
                p = self.workspace.get((q.shape[0], 64), q.dtype)  # expect
                softmax(s, out=p)
            """
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        cache_functions = {cache.function.name for cache in hand_written_caches(facts)}
        by_function: dict[ast.AST, list[tuple[str, ast.Call]]] = {}
        for call in facts.index.calls:
            key = self._request_key(facts, call, cache_functions)
            function = facts.index.owner(call)
            if key is not None and function is not None:
                by_function.setdefault(function, []).append((key, call))
        for function, requests in by_function.items():
            flow = facts.effects.flow(function)
            seen: dict[str, tuple[ast.Call, str]] = {}
            for key, call in sorted(requests, key=lambda kc: (kc[1].lineno, kc[1].col_offset)):
                first = seen.get(key)
                name = self._bound_name(facts, call)
                if first is not None and self._live_after(flow, first[1], call):
                    yield Report(
                        call,
                        f"`{unparse(call.func)}` hands out the same buffer as line {first[0].lineno} (`{first[1]}`), which is "
                        f"still used afterwards: both results alias ({key.split('|', 1)[1]})",
                    )
                if name is not None:
                    seen[key] = (call, name)

    @staticmethod
    def _request_key(facts: ModuleFacts, call: ast.Call, cache_functions: set[str]) -> Optional[str]:
        func = call.func
        callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if callee in cache_functions or any(fnmatchcase(callee, p) for p in CACHE_GETTERS):
            name = next((k.value for k in call.keywords if k.arg in NAME_KEYWORDS), None)
            if name is None:
                name = next((a for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)), None)
            if name is not None:
                # The whole name, not a message-length cut of it: cache names often share
                # a long prefix (the module and function they were derived from).
                return f"{callee}|cache name {ast.unparse(name)}"
            return None
        if isinstance(func, ast.Attribute) and callee in MANAGER_METHODS and "workspace" in unparse(func.value).lower():
            return f"{callee}|workspace manager `{unparse(func.value)}`"
        local = None
        if call.args and _is_workspace_buffer(facts, call, call.args[0]) and _may_return_a_view(facts, call):
            local = facts.index.local_callee(call)
        if local is not None:
            first_param = facts.index.parameter_for(local, call, call.args[0])
            if first_param is not None and facts.effects.summary(local, first_param, callee).kind == "returns":
                return f"{callee}|views of `{unparse(call.args[0])}`"
        return None

    @staticmethod
    def _bound_name(facts: ModuleFacts, call: ast.Call) -> Optional[str]:
        parent = facts.index.parents.get(call)
        if isinstance(parent, ast.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0], ast.Name):
            return parent.targets[0].id
        return None

    @staticmethod
    def _live_after(flow, name: str, call: ast.Call) -> bool:
        end = (call.end_lineno, call.end_col_offset)
        return any((use.lineno, use.col_offset) > end for use in flow.loads.get(name, ()))
