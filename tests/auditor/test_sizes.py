"""The static size estimate (auditor/analysis/sizes.py), asserted on the facts of small
modules written in the shapes MoE code uses: which allocations grow with the batch, which
are fixed by the configuration, and the evidence each carries.

Which of them `fix` leaves out, and the reason it gives, are AA101's own cases
(auditor/rules/workspace_allocation.py)."""

import textwrap

import pytest

from allocaudit.auditor.app.engine import scan_source
from allocaudit.auditor.settings import Settings

SIGNATURE = "hidden_states, topk_ids, topk_weights, w1, w13_weight, aux_loss, num_experts, num_tokens, M, n, config"


def size_of(body: str, params: str = SIGNATURE) -> tuple[str, str]:
    """(size, size_evidence) of the allocation on the last line of ``body`` in a forward."""
    lines = textwrap.dedent(body).strip().splitlines()
    lines[-1] = f"ws = {lines[-1]}"
    source = "import torch\nclass MoE:\n    def forward(self, %s):\n%s\n        k(ws)\n" % (
        params, "\n".join("        " + line for line in lines)
    )
    findings = [f for f in scan_source("moe.py", source.encode(), Settings(select=("AA101",))) if f.line == len(lines) + 3]
    (finding,) = findings
    return finding.size, finding.size_evidence


@pytest.mark.parametrize(
    "body, evidence",
    [
        # Token counts by name, and the leading dimension of an activation.
        ("torch.empty(num_tokens, 4096, device='cuda')", "`num_tokens`"),
        ("torch.empty((M, config.hidden_size), device='cuda')", "`M`"),
        ("torch.empty(hidden_states.shape[0], 8, device='cuda')", "`hidden_states.shape[0]`"),
        ("torch.zeros(topk_ids.numel(), dtype=torch.int32, device='cuda')", "`topk_ids.numel()`"),
        ("topk_weights.new_zeros((hidden_states.size(0), num_experts))", "`hidden_states.size(0)`"),
        ("torch.empty(len(hidden_states), device='cuda')", "`len(hidden_states)`"),
        ("torch.empty(hidden_states.shape, device='cuda')", "`hidden_states.shape`"),
        ("torch.empty(*hidden_states.shape[:-1], 4, device='cuda')", "`hidden_states.shape[:-1]`"),
        # A local name by its value: computed from a token count, or unpacked from a shape.
        ("m_max = round_up(num_tokens, 128)\ntorch.empty((num_experts, m_max, 4096), device='cuda')", "`m_max` from `num_tokens`"),
        ("T, H = hidden_states.shape\ntorch.empty(T * 2, H, device='cuda')", "`T` from `hidden_states.shape[0]`"),
        ("self.batch_size = 2\ntorch.full((self.batch_size,), -1, device='cuda')", "`self.batch_size`"),
        ("torch.empty(config.max_seq_len, device='cuda')", "`config.max_seq_len`"),
        # A tensor named per token counts tokens; one named per expert has an entry per expert.
        ("torch.empty(config.tokens_per_rank, device='cuda')", "`config.tokens_per_rank`"),
    ],
)
def test_sizes_that_grow_with_the_batch(body, evidence):
    assert size_of(body) == ("grows", evidence)


@pytest.mark.parametrize(
    "body, evidence",
    [
        ("torch.empty(num_experts, dtype=torch.int32, device='cuda')", "(num_experts,)"),
        ("torch.empty((num_experts + 1,), dtype=torch.int32, device='cuda')", "(num_experts + 1,)"),
        ("torch.zeros((), device='cuda')", "()"),
        ("torch.zeros(1, device='cuda')", "(1,)"),
        ("torch.empty(2, dtype=torch.int64, device='cuda')", "(2,)"),
        ("hidden_states.new_zeros(())", "()"),
        ("torch.empty(config.n_routed_experts, config.num_experts_per_tok, device='cuda')", "(config.n_routed_experts, config.num_experts_per_tok)"),
        ("torch.empty(self.world_size, device='cuda')", "(self.world_size,)"),
        ("torch.empty(self.ep_size, self.tp_size, device='cuda')", "(self.ep_size, self.tp_size)"),
        ("torch.ones(self.chunk_size, self.chunk_size, dtype=torch.bool, device='cuda')", "(self.chunk_size, self.chunk_size)"),
        ("torch.empty(config.top_k, device='cuda')", "(config.top_k,)"),
        ("torch.empty(BLOCK_SIZE_M, device='cuda')", "(BLOCK_SIZE_M,)"),
        # A padding row of the model's width: fixed, and small.
        ("hidden_states.new_zeros(1, config.hidden_size)", "(1, config.hidden_size)"),
        # Names by their value: the leading dimension of a weight, a shape unpacked from one.
        ("local_E = w1.size(0)\ntorch.empty((local_E, 3), dtype=torch.int32, device='cuda')", "(local_E, 3)"),
        ("e, _, _ = w1.shape\ntorch.empty(e + 1, dtype=torch.int32, device='cuda')", "(e + 1,)"),
        # *_like of a loss (0-d), of a bias, of a tensor with one entry per expert.
        ("torch.ones_like(aux_loss)", "the size of `aux_loss`"),
        ("torch.zeros_like(self.e_score_correction_bias)", "the size of `self.e_score_correction_bias`"),
        ("torch.empty_like(num_recv_tokens_per_expert)", "the size of `num_recv_tokens_per_expert`"),
        ("counts = torch.zeros(num_experts, dtype=torch.int32, device='cuda')\ntorch.empty_like((counts + 127) // 128)", "the size of `(counts + 127) // 128`"),
    ],
)
def test_sizes_fixed_by_the_configuration(body, evidence):
    assert size_of(body, SIGNATURE + ", num_recv_tokens_per_expert") == ("fixed", evidence)


@pytest.mark.parametrize(
    "body, evidence",
    [
        # Fixed, but large enough that a reuse cache may pay.
        ("torch.empty(num_experts, config.hidden_size, device='cuda')", "(num_experts, config.hidden_size)"),
        ("torch.empty_like(w13_weight)", "the size of `w13_weight`"),
        ("torch.empty(4096, 4096, device='cuda')", "(4096, 4096)"),
        # A name's literal value counts as it is, whatever its words say.
        ("chunk_size = 4096\ntorch.ones(chunk_size, chunk_size, dtype=torch.bool, device='cuda')", "(chunk_size, chunk_size)"),
    ],
)
def test_fixed_sizes_that_may_be_large_are_kept(body, evidence):
    size, found = size_of(body)
    assert size == "large" and found.startswith(evidence)


@pytest.mark.parametrize(
    "body, evidence",
    [
        ("torch.zeros_like(topk_ids)", "`topk_ids.shape`"),
        ("torch.empty(n, 4, device='cuda')", "`n`"),
        ("torch.empty(hidden_states.shape[1], device='cuda')", "`hidden_states.shape[1]`"),
        # A name bound twice has no one value: it is judged by its words, which say nothing here.
        ("count = 4\ncount += M\ntorch.empty(count, device='cuda')", "`count`"),
        # `topk_weight` is the routing weight of each token, not a weight of the model.
        ("torch.ones_like(topk_weight)", "`topk_weight.shape`"),
        ("torch.empty(some_call(), device='cuda')", "`some_call()`"),
    ],
)
def test_unknown_sizes_may_grow(body, evidence):
    assert size_of(body, SIGNATURE + ", topk_weight") == ("unknown", evidence)
