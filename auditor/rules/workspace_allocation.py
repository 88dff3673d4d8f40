"""AA101: a CUDA tensor allocated on every call and dead by its end — a reuse candidate."""

from __future__ import annotations

from typing import Iterator

from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.fix_safety import RECORD_STREAM, RESIZE, STORAGE
from allocaudit.auditor.analysis.sites import WORKSPACE, ModuleFacts
from allocaudit.auditor.rules.base import FixAvailability, Invalid, Report, Rule, Valid, evidence


class WorkspaceAllocation(Rule):
    """Fix safety: the rewrite to `get_empty` keeps what the call allocates (shape, dtype and
    device as written, zeros where `torch.zeros` gave zeros, and `.fill_(value)` where ones or
    full wrote a value, in the dtype they would have had) and is offered only for sites
    that die within the call or that a workspace helper hands to its caller
    (`allocaudit.auditor.analysis.fixability` says which forms keep their meaning exactly,
    and why the others do not). The runtime then guards what static analysis cannot see: it
    never hands out memory a live tensor still uses, so a helper called twice while both
    results are alive gives two buffers. The fix is safe, and `fix` applies it, unless the
    buffer reaches what the runtime cannot see (`allocaudit.auditor.analysis.fix_safety`):
    `.record_stream()`, `.resize_()`/`.resize_as_()`, or its storage (`.untyped_storage()`,
    `.storage()`), in the function, in a function of the module it is passed to, or in a
    caller of the helper. Those fixes are unsafe: only `fix --unsafe-fixes` applies them.

    What pays is decided apart from safety: a site whose size does not grow with the batch
    (`allocaudit.auditor.analysis.sizes`: expert counts, world sizes, 0-d and 1-element
    tensors, small literal shapes) is not fixable unless `all-sizes` is set, as its rewrite,
    safe as it would be, saves nothing; with a profile, `fix --profile` keeps only the sites
    that ran (`allocaudit.auditor.profiling.selection`)."""

    CODE = "AA101"
    NAME = "per-call-cuda-workspace"
    HINTS = FACTORY_HINTS
    SUMMARY = "CUDA workspace allocated on every call; reuse it with get_empty"
    FIX = FixAvailability.SOMETIMES
    EXPLAIN = """\
Why: a per-call function (a MoE layer's forward, a kernel wrapper) allocates a CUDA
tensor that dies before the call returns. Every step pays the caching allocator again,
memory fragments across batch sizes, and under CUDA graphs each captured batch size keeps
its own copy of the workspace in the graph pool: peak memory grows with every size
captured. The device may be literal ('cuda', torch.device('cuda', i)), inherited
(x.device, new_*, *_like: reported with medium confidence) or an unresolved variable
(low confidence; `--min-confidence medium` hides those).

Fix: `allocaudit fix` rewrites fixable sites to the runtime cache, which keeps one buffer
per site and device, validates dtype/device/size, zeroes exactly what `torch.zeros` would,
and never frees a buffer a captured graph still uses:

    ws = torch.zeros(m, hidden, dtype=torch.bfloat16, device="cuda")

becomes

    from allocaudit.runtime import get_empty
    ws = get_empty((m, hidden), torch.bfloat16, device="cuda",
                   cache_name="mypkg.moe.MoE.forward.ws", zero=True)

`torch.empty_like(x)` / `torch.zeros_like(x)` become `get_empty_like(x, cache_name=...,
zero=...)`, which keeps x's layout exactly as `*_like` does.

`torch.ones`/`torch.full` (and their `*_like`, `new_*`) become `get_empty(...).fill_(value)`
(`zero=False`): every element is written, in the dtype the call would have had.

Sites the codemod leaves alone say why in the JSON output (`not_fixable_reason`):
torch.compile'd functions, `out=`/`requires_grad=`/`pin_memory=`, `torch.full` of a
non-literal value without `dtype=`, strides, memory formats other than contiguous (or the
input's, for `*_like`), buffers alive together (comprehensions, lists built in a loop).

Fix safety: the fix is safe ([*]) unless the buffer reaches what the runtime cannot
see: `.record_stream()`, `.resize_()`/`.resize_as_()` or its storage
(`.untyped_storage()`, `.storage()`). Those fixes are unsafe ([!], `unsafe_reason` in
the JSON output): only `allocaudit fix --unsafe-fixes` applies them.

What pays: a reuse cache saves the allocations whose size follows the tokens of a step,
which every step and every captured CUDA graph pays again. An allocation whose size does
not grow with the batch (an expert count, the world size, top-k, a 0-d or 1-element
tensor, a small literal shape, `*_like` of a loss) is small and the same at every step:
`fix` leaves it out, says why (`size does not grow with the batch: (num_experts,)`) and
scan does not mark it [*]. `--all-sizes` (or `all-sizes = true`) rewrites those too.
With a profile from `allocaudit profile`, `fix --profile PROFILE.json` rewrites only the
sites that ran, largest first, and `--min-bytes 64KiB` only those that allocated at least
that much per call; `--show-fixes` says for each site why it was chosen.
"""
    VALID = (
        # Not CUDA, or the default device.
        Valid(
            """
            import torch
            def forward(x):
                a = torch.empty(4, device='cpu')
                b = torch.zeros(4)
                kernel(a, b)
            """
        ),
        # Returned or stored: escapes, not a workspace.
        Valid(
            """
            import torch
            def forward(x):
                out = torch.empty_like(x)
                kernel(x, out)
                return out
            """
        ),
        Valid(
            """
            import torch
            class M:
                def forward(self, x):
                    self.buf = torch.empty(4, device='cuda')
            """
        ),
        # Set-up code runs once.
        Valid(
            """
            import torch
            class M:
                def __init__(self):
                    w = torch.empty(4, device='cuda')
                    self.w = w * 2
                def create_weights(self, n):
                    scratch = torch.zeros(n, device='cuda')
                    fill(scratch)
            """
        ),
        # One-off lazy init.
        Valid(
            """
            import torch
            class M:
                def forward(self, x):
                    if self._ws is None:
                        self._ws = torch.empty(8, device='cuda')
                    kernel(x, self._ws)
            """
        ),
        # `torch` shadowed by a parameter is not torch.
        Valid(
            """
            def forward(torch, x):
                ws = torch.empty(4, device='cuda')
                kernel(x, ws)
            """
        ),
        # A size of zero is a placeholder that allocates nothing, not a workspace.
        Valid(
            """
            import torch
            def forward(d, n):
                empty = torch.empty(0, device='cuda')
                none = torch.zeros((0, n), dtype=torch.int32, device='cuda')
                k(d.get('x', empty), none)
            """
        ),
        # Fake kernels run on fake tensors while tracing.
        Valid(
            """
            import torch
            @torch.library.register_fake('moe::gemm')
            def _(x):
                ws = torch.empty(4, device=x.device)
                return x
            def gemm_fake(x):
                tmp = torch.empty(4, device=x.device)
                return x
            """
        ),
    )
    INVALID = (
        # Literal devices, aliases and separate-int / tuple / list / starred shapes.
        Invalid(
            """
            import torch
            import torch as th
            from torch import empty as E
            def forward(x, m):
                a = torch.zeros(m, 4096, dtype=torch.bfloat16, device='cuda')  # expect
                b = th.empty((m, 4096), device='cuda:1')  # expect
                c = E([m, 8], device=torch.device('cuda', 0))  # expect
                d = torch.empty(*x.shape, device=f'cuda:{x.device.index}')  # expect
                e = torch.empty(x.shape, device=torch.cuda.current_device())  # expect
                kernel(x, a, b, c, d, e)
            """
        ),
        # Inherited and variable devices, new_* and a local alias of several factories.
        Invalid(
            """
            import torch
            def forward(x, device, deterministic):
                init = torch.zeros if deterministic else torch.empty
                a = init((4,), device='cuda')  # expect
                b = x.new_zeros(4, 4)  # expect
                c = torch.empty(4, device=device)  # expect
                dev = x.device
                d = torch.empty(torch.Size([4, 4]), device=dev)  # expect
                kernel(a, b, c, d)
            """
        ),
        # Workspace helpers return scratch buffers to their caller.
        Invalid(
            """
            import torch
            class DeepGemmMoE:
                def get_workspace(self, m_max, dtype):
                    ws0 = torch.empty((32, m_max, 4096), dtype=torch.float8_e4m3fn, device='cuda')  # expect
                    ws1 = torch.empty((32, m_max, 3072), dtype=dtype, device='cuda')  # expect
                    return {'workspace_0': ws0, 'workspace_1': ws1}
            """
        ),
        # A helper called twice while both results are alive: the runtime gives each call
        # its own buffer, so the fix is safe.
        Invalid(
            """
            import torch
            class MoE:
                def get_workspace(self, x):
                    ws = torch.zeros(x.shape, device=x.device)  # expect
                    return ws
                def forward(self, x):
                    gate = self.get_workspace(x)
                    up = self.get_workspace(x)
                    return kernel(x, gate, up)
            """,
            fixable=True,
            fix_safety="safe",
            fix="""
            import torch
            from allocaudit.runtime import get_empty
            class MoE:
                def get_workspace(self, x):
                    ws = get_empty(x.shape, torch.get_default_dtype(), device=x.device, cache_name="case.MoE.get_workspace.ws", zero=True)  # expect
                    return ws
                def forward(self, x):
                    gate = self.get_workspace(x)
                    up = self.get_workspace(x)
                    return kernel(x, gate, up)
            """,
        ),
        # A raw address is no less safe than torch.empty's: the runtime hands the memory to
        # no one while the tensor lives, and the allocator reuses it after it died.
        Invalid(
            """
            import torch
            def forward(x, seen):
                ws = torch.empty(x.shape, device='cuda')  # expect
                seen[ws.data_ptr()] = x.shape
                kernel(x, ws)
            """,
            fixable=True,
            fix_safety="safe",
        ),
        # What the runtime cannot see makes the fix unsafe: a stream recorded on the buffer
        # or a view of it, here or in a function of the module it is passed to.
        Invalid(
            """
            import torch
            def forward(x, side):
                ws = torch.empty(x.shape, device='cuda')  # expect
                flat = ws.view(-1)
                flat.record_stream(side)
                kernel(x, ws)
            """,
            fixable=True,
            fix_safety="unsafe",
            unsafe_reason=RECORD_STREAM.format(where=""),
            fix="""
            import torch
            def forward(x, side):
                ws = torch.empty(x.shape, device='cuda')  # expect
                flat = ws.view(-1)
                flat.record_stream(side)
                kernel(x, ws)
            """,
        ),
        Invalid(
            """
            import torch
            def _record_stream(*tensors):
                for t in tensors:
                    if t is not None:
                        t.record_stream(torch.cuda.current_stream())
            def forward(x):
                ws = torch.empty(x.shape, device='cuda')  # expect
                _record_stream(ws, None)
                kernel(x, ws)
            """,
            fix_safety="unsafe",
            unsafe_reason=RECORD_STREAM.format(where=" in `_record_stream`"),
        ),
        # A caller of the helper records a stream on what it hands out.
        Invalid(
            """
            import torch
            class MoE:
                def get_scratch(self, n):
                    return torch.empty(n, device='cuda')  # expect
                def forward(self, x, side):
                    s = self.get_scratch(x.numel())
                    s.record_stream(side)
                    kernel(x, s)
            """,
            fix_safety="unsafe",
            unsafe_reason=RECORD_STREAM.format(where=" by `forward`"),
        ),
        # Growing a hand-out, or reading its storage: the runtime's whole, shared buffer.
        Invalid(
            """
            import torch
            def forward(x):
                acc = torch.zeros(x.shape[0], device='cuda')  # expect
                acc.resize_(x.numel())
                kernel(x, acc)
            """,
            fix_safety="unsafe",
            unsafe_reason=RESIZE.format(method="resize_", where=""),
        ),
        Invalid(
            """
            import torch
            def forward(x):
                ws = torch.empty(x.shape, device='cuda')  # expect
                if ws.untyped_storage().nbytes() == x.nbytes:
                    kernel(x, ws)
            """,
            fix_safety="unsafe",
            unsafe_reason=STORAGE.format(method="untyped_storage", where=""),
        ),
        # Loops, comprehensions and moved allocations; `with torch.device`.
        Invalid(
            """
            import torch
            def forward(chunks, n):
                for c in chunks:
                    tmp = torch.empty(n, device='cuda')  # expect
                    kernel(c, tmp)
                bufs = [torch.zeros(n, device='cuda') for _ in chunks]  # expect
                kernel(*bufs)
                host = torch.empty(n).cuda()  # expect
                kernel(host)
                with torch.device('cuda'):
                    scratch = torch.empty(n)  # expect
                    kernel(scratch)
            """
        ),
        # Every shape form is carried into get_empty as written.
        Invalid(
            """
            import torch
            def forward(x, m, shape, rest, big):
                a = torch.empty((m, 4), device='cuda')  # expect
                b = torch.empty([m, 4], device='cuda')  # expect
                c = torch.empty((m), device='cuda')  # expect
                d = torch.empty(m, 4, device='cuda')  # expect
                e = torch.empty(*shape, device='cuda')  # expect
                f = torch.empty(m, *rest, device='cuda')  # expect
                g = torch.empty(x.shape, device='cuda')  # expect
                h = torch.empty(torch.Size([m, 4]), device='cuda')  # expect
                i = torch.empty(shape, device='cuda')  # expect
                j = torch.empty((m, 4) if big else (4, m), device='cuda')  # expect
                k = torch.empty(size=(m, 4), device='cuda')  # expect
                kernel(a, b, c, d, e, f, g, h, i, j, k)
            """,
            site_class="workspace",
            fixable=True,
            fix="""
            import torch
            from allocaudit.runtime import get_empty
            def forward(x, m, shape, rest, big):
                a = get_empty((m, 4), torch.get_default_dtype(), device='cuda', cache_name="case.forward.a", zero=False)  # expect
                b = get_empty([m, 4], torch.get_default_dtype(), device='cuda', cache_name="case.forward.b", zero=False)  # expect
                c = get_empty((m), torch.get_default_dtype(), device='cuda', cache_name="case.forward.c", zero=False)  # expect
                d = get_empty((m, 4), torch.get_default_dtype(), device='cuda', cache_name="case.forward.d", zero=False)  # expect
                e = get_empty((*shape,), torch.get_default_dtype(), device='cuda', cache_name="case.forward.e", zero=False)  # expect
                f = get_empty((m, *rest), torch.get_default_dtype(), device='cuda', cache_name="case.forward.f", zero=False)  # expect
                g = get_empty(x.shape, torch.get_default_dtype(), device='cuda', cache_name="case.forward.g", zero=False)  # expect
                h = get_empty(torch.Size([m, 4]), torch.get_default_dtype(), device='cuda', cache_name="case.forward.h", zero=False)  # expect
                i = get_empty(shape, torch.get_default_dtype(), device='cuda', cache_name="case.forward.i", zero=False)  # expect
                j = get_empty((m, 4) if big else (4, m), torch.get_default_dtype(), device='cuda', cache_name="case.forward.j", zero=False)  # expect
                k = get_empty((m, 4), torch.get_default_dtype(), device='cuda', cache_name="case.forward.k", zero=False)  # expect
                kernel(a, b, c, d, e, f, g, h, i, j, k)
            """,
        ),
        # Consumed by kernels, local containers, `out=` and views: dead by the end of the call.
        Invalid(
            """
            import torch
            def forward1(x):
                ws = torch.empty(4, device='cuda')  # expect
                kernel(x, ws)
                return x
            def forward2(x):
                ws = torch.empty(4, device='cuda')  # expect
                local = []
                local.append(ws)
                kernel(*local)
            def forward3(x):
                ws = torch.empty(4, device='cuda')  # expect
                kernel(out=ws)
                return ws.sum()
            def forward4(x):
                ws = torch.empty(4, device='cuda')  # expect
                y = ws.view(2, 2)
                kernel(y)
            def scatter_rows(src, order, out):
                tmp = src.new_zeros(src.shape)  # expect
                tmp[order] = src
                src = tmp[order]
                out.copy_(src)
            """,
            site_class="workspace",
        ),
        # Rewritten only where get_empty keeps the meaning exactly: a literal zero fill, a
        # contiguous *_like, the default requires_grad.
        Invalid(
            """
            import torch
            def forward(x):
                a = torch.full((4,), 0, device='cuda')  # expect
                b = torch.zeros_like(x, memory_format=torch.contiguous_format)  # expect
                c = torch.empty(4, device='cuda', requires_grad=False)  # expect
                kernel(a, b, c)
            """,
            fixable=True,
            all_sizes=True,
            fix="""
            import torch
            from allocaudit.runtime import get_empty
            def forward(x):
                a = get_empty((4,), torch.int64, device='cuda', cache_name="case.forward.a", zero=True)  # expect
                b = get_empty(x.shape, x.dtype, device=x.device, cache_name="case.forward.b", zero=True)  # expect
                c = get_empty(4, torch.get_default_dtype(), device='cuda', cache_name="case.forward.c", zero=False)  # expect
                kernel(a, b, c)
            """,
        ),
        # A buffer used within each iteration of a loop is one buffer, reused.
        Invalid(
            """
            import torch
            def chunks(x, g):
                for c in x.split(g):
                    tmp = torch.empty(c.shape, device='cuda')  # expect
                    k(c, tmp)
            """,
            fixable=True,
        ),
        # torch functions return new tensors: passing the buffer to one leaves it a workspace.
        Invalid(
            """
            import torch
            def forward(x):
                ws = torch.empty(x.shape, device='cuda')  # expect
                return torch.cat([x, ws])
            """,
            fixable=True,
        ),
        # An alias of several factories: which one runs is decided at run time.
        Invalid(
            """
            import torch
            def forward(x, det):
                init = torch.zeros if det else torch.empty
                ws = init(4, device='cuda')  # expect
                k(ws)
            """,
            message="`torch.empty|torch.zeros` allocates a CUDA workspace",
            fixable=False,
            reason="the callee is an alias of several factories",
        ),
        # Arguments get_empty cannot carry.
        Invalid(
            """
            import torch
            def forward(x):
                ws = torch.empty(4, device='cuda', requires_grad=True)  # expect
                k(ws)
            """,
            fixable=False,
            reason="`requires_grad=`: a reused buffer cannot carry autograd state",
        ),
        Invalid(
            """
            import torch
            def forward(x, flag):
                ws = torch.empty(4, device='cuda', pin_memory=flag)  # expect
                k(ws)
            """,
            fixable=False,
            reason="`pin_memory=`: pinned host memory is not a device workspace",
        ),
        Invalid(
            """
            import torch
            def forward(x, kw):
                ws = torch.empty(4, device='cuda', **kw)  # expect
                k(ws)
            """,
            fixable=False,
            reason="`**kwargs` hides some arguments",
        ),
        Invalid(
            """
            import torch
            def forward(x):
                ws = torch.empty(4, device='cuda', layout=torch.sparse_coo)  # expect
                k(ws)
            """,
            fixable=False,
            reason="non-strided `layout=`",
        ),
        # Fills: `get_empty(...).fill_(value)` writes every element, as ones and full do, in
        # the dtype they would have: ones and `*_like`/`new_*` as written or the input's, full
        # as written or what it infers from a literal (int64, bool, the default dtype).
        Invalid(
            """
            import torch
            def forward(x, v):
                ws = torch.ones(4, device='cuda')  # expect
                ids = torch.full((4,), -1, device='cuda')  # expect
                w = x.new_full((4, 2), scale(v))  # expect
                mask = torch.ones_like(x, dtype=torch.bool)  # expect
                k(ws, ids, w, mask)
            """,
            fixable=True,
            all_sizes=True,
            fix="""
            import torch
            from allocaudit.runtime import get_empty, get_empty_like
            def forward(x, v):
                ws = get_empty(4, torch.get_default_dtype(), device='cuda', cache_name="case.forward.ws", zero=False).fill_(1)  # expect
                ids = get_empty((4,), torch.int64, device='cuda', cache_name="case.forward.ids", zero=False).fill_(-1)  # expect
                w = get_empty((4, 2), x.dtype, device=x.device, cache_name="case.forward.w", zero=False).fill_(scale(v))  # expect
                mask = get_empty_like(x, dtype=torch.bool, cache_name="case.forward.mask", zero=False).fill_(1)  # expect
                k(ws, ids, w, mask)
            """,
        ),
        # torch.full infers its dtype from the value: only a literal's can be written down.
        Invalid(
            """
            import torch
            def forward(x, v):
                ws = torch.full((4,), v, device='cuda')  # expect
                k(ws)
            """,
            fixable=False,
            reason="`torch.full` infers its dtype from the fill value, which is not a real or bool literal here: give `dtype=`",
        ),
        Invalid(
            """
            import torch
            def forward(x, shape_and_value):
                ws = torch.full(*shape_and_value, dtype=torch.float32, device='cuda')  # expect
                k(ws)
            """,
            fixable=False,
            reason="a starred argument hides which argument is the fill value",
        ),
        # `.fill_(value)` runs after the device expression: two calls would swap.
        Invalid(
            """
            import torch
            def forward(x, v):
                ws = torch.full((4,), scale(v), dtype=torch.float32, device=pick_device())  # expect
                k(ws)
            """,
            fixable=False,
            reason="the fill value would be evaluated after a later argument (`get_empty(...).fill_(value)`), and both may have effects",
        ),
        Invalid(
            """
            import torch
            def forward(x):
                ws = torch.empty_strided((4,), (1,), device='cuda')  # expect
                k(ws)
            """,
            fixable=False,
            reason="explicit strides: get_empty returns contiguous tensors",
        ),
        # `*_like` keeps the input's layout, as get_empty_like does; other formats stay.
        Invalid(
            """
            import torch
            def forward(x):
                ws = torch.empty_like(x)  # expect
                acc = torch.zeros_like(x, dtype=torch.float32)  # expect
                k(ws, acc)
            """,
            fixable=True,
            fix="""
            import torch
            from allocaudit.runtime import get_empty_like
            def forward(x):
                ws = get_empty_like(x, cache_name="case.forward.ws", zero=False)  # expect
                acc = get_empty_like(x, dtype=torch.float32, cache_name="case.forward.acc", zero=True)  # expect
                k(ws, acc)
            """,
        ),
        Invalid(
            """
            import torch
            def forward(x):
                ws = torch.empty_like(x, memory_format=torch.channels_last)  # expect
                k(ws)
            """,
            fixable=False,
            reason="`memory_format=` other than torch.contiguous_format (or torch.preserve_format for `*_like`)",
        ),
        # What a function of the tree returns decides: new tensors, or one element of a
        # tuple that is not this buffer (the callee may be in another module of the tree).
        Invalid(
            """
            import torch
            def quant(x, group, out_q=None):
                x_q = out_q if out_q is not None else torch.empty(x.shape, device=x.device)
                x_s = torch.empty(x.shape[0], group, device=x.device)
                kernel(x, x_q, x_s)
                return x_q, x_s
            def act_quant(inp, output, group):
                act_out = torch.empty(inp.shape, device='cuda')  # expect
                act(act_out, inp)
                return quant(act_out, group, out_q=output)
            def scales_only(x, group):
                q = torch.empty(x.shape, device='cuda')  # expect
                return quant(x, group, q)[1]
            """,
            fixable=True,
        ),
        # The result of an unknown call may be the buffer itself.
        Invalid(
            """
            import torch
            def forward(x):
                out = torch.empty(x.shape, device='cuda')  # expect
                return external_kernel(x, out)
            """,
            fixable=False,
            reason="passed to `external_kernel(...)`, whose result is returned: it may be this buffer",
        ),
        # Custom-op implementations run eagerly, and so does what a compiled function calls
        # when it is called from elsewhere: rewritten.
        Invalid(
            """
            import torch
            def helper(x):
                ws = torch.empty(x.shape, device='cuda')  # expect
                k(x, ws)
            def op_impl(x):
                helper(x)
                tmp = torch.zeros(x.shape, device='cuda')  # expect
                k(x, tmp)
            direct_register_custom_op('op', op_impl)
            @torch.compile
            def step(x):
                helper(x)
            """,
            fixable=True,
        ),
        # The body of a compiled function is traced on every call: nothing to gain.
        Invalid(
            """
            import torch
            @torch.compile(dynamic=True)
            def grouped_topk(x):
                ws = torch.empty(4, device='cuda')  # expect
                k(x, ws)
            """,
            fixable=False,
            reason="inside torch.compile'd `grouped_topk`: dynamo traces it on every call and inductor plans its buffers, so get_empty would be plain torch.empty there",
        ),
        # TorchScript compiles what it reaches, and cannot compile get_empty.
        Invalid(
            """
            import torch
            def helper(x):
                ws = torch.empty(4, device='cuda')  # expect
                k(x, ws)
            @torch.jit.script
            def scripted(x):
                helper(x)
            """,
            fixable=False,
            reason="reached from TorchScript `scripted`: get_empty cannot be scripted",
        ),
        # Buffers alive together: correct to rewrite (the runtime gives each live hand-out its
        # own memory), but the runtime would hold all of them and strict mode would raise.
        Invalid(
            """
            import torch
            def gather(x, g):
                parts = [torch.empty(x.shape, device='cuda') for _ in range(g)]  # expect
                all_gather(parts, x)
                return torch.cat(parts)
            """,
            fixable=False,
            reason="the elements of a comprehension are alive together: get_empty would give each its own buffer and hold them all between calls, and strict mode would raise on the second",
        ),
        Invalid(
            """
            import torch
            def gather(x, g):
                parts = []
                for _ in range(g):
                    parts.append(torch.empty(x.shape, device='cuda'))  # expect
                all_gather(parts, x)
                return torch.cat(parts)
            """,
            fixable=False,
            reason="collected in `parts` across iterations, alive together: get_empty would give each its own buffer and hold them all between calls, and strict mode would raise on the second",
        ),
        # Collected by concatenation across iterations: the buffers are alive together.
        Invalid(
            """
            import torch
            def rows(n):
                out = ()
                for i in range(3):
                    buf = torch.empty(n, device='cuda')  # expect
                    fill(buf, i)
                    out = out + (buf,)
                show(out)
            """,
            fixable=False,
            reason="collected in `out` across iterations, alive together: get_empty would give each its own buffer and hold them all between calls, and strict mode would raise on the second",
        ),
        # A slice store copies the value into the tensor: the buffer itself dies.
        Invalid(
            """
            import torch
            def reduce_into(out, chunks, n):
                for i, c in enumerate(chunks):
                    partial = torch.empty(n, device='cuda')  # expect
                    kernel(c, partial)
                    out[i * n:(i + 1) * n] = partial
                return out
            """,
            site_class="workspace",
            fixable=True,
        ),
        # Sizes that do not grow with the batch are small and the same at every step: a reuse
        # cache saves nothing there. Left out, with the shape as written; `--all-sizes` fixes
        # them too.
        Invalid(
            """
            import torch
            def route(topk_ids, num_experts):
                counts = torch.zeros(num_experts, dtype=torch.int32, device='cuda')  # expect
                k(topk_ids, counts)
            """,
            fixable=False,
            reason="size does not grow with the batch: (num_experts,)",
        ),
        Invalid(
            """
            import torch
            def combine(x, mask):
                neg = torch.full((), float('-inf'), dtype=x.dtype, device=x.device)  # expect
                return torch.where(mask, x, neg)
            """,
            fixable=False,
            reason="size does not grow with the batch: ()",
        ),
        Invalid(
            """
            import torch
            def backward_scale(aux_loss, scale):
                grad = torch.ones_like(aux_loss)  # expect
                return grad * scale
            """,
            fixable=False,
            reason="size does not grow with the batch: the size of `aux_loss`",
        ),
        Invalid(
            """
            import torch
            def route(topk_ids, num_experts):
                counts = torch.zeros(num_experts, dtype=torch.int32, device='cuda')  # expect
                k(topk_ids, counts)
            """,
            fixable=True,
            all_sizes=True,
        ),
        # What grows with the tokens of a step is kept: a token count by its name or as the
        # leading dimension of an activation, and a fixed shape as wide as the model.
        Invalid(
            """
            import torch
            def experts(hidden_states, topk_ids, num_experts, hidden_size):
                M = hidden_states.shape[0]
                a = torch.empty(M * topk_ids.shape[1], hidden_size, device='cuda')  # expect
                b = torch.zeros(topk_ids.numel(), dtype=torch.int32, device='cuda')  # expect
                c = torch.empty(num_experts, hidden_size, device='cuda')  # expect
                k(hidden_states, a, b, c)
            """,
            fixable=True,
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for site in facts.sites:
            if site.site_class != WORKSPACE or not site.device.on_cuda:
                continue
            message = f"`{site.api}` allocates a CUDA workspace on every call of `{site.qualname}` ({evidence(site)}): reuse it with get_empty"
            yield Report(site.call, message, site)
