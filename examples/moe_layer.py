"""A small Mixture-of-Experts layer, written the way inference engines write theirs.

It is the bundled example that `allocaudit scan examples/` audits: weights allocated once
in ``__init__``, a top-k router, a ``get_workspace`` helper that hands scratch buffers to
the forward pass, and a forward that allocates its workspaces on every call. Run it with
``python examples/moe_layer.py`` (on a GPU if there is one, else on the CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def round_up(x: int, multiple: int) -> int:
    return (x + multiple - 1) // multiple * multiple


class TopKRouter(nn.Module):
    def __init__(self, hidden: int, num_experts: int, top_k: int, device=None) -> None:
        super().__init__()
        self.top_k = top_k
        self.weight = nn.Parameter(torch.empty(num_experts, hidden, device=device))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = F.linear(hidden_states, self.weight)
        weights, ids = torch.topk(torch.softmax(logits, dim=-1, dtype=torch.float32), self.top_k, dim=-1)
        return weights / weights.sum(dim=-1, keepdim=True), ids


class MoELayer(nn.Module):
    """Experts with a gated MLP each (w13: gate and up projections, w2: down projection)."""

    def __init__(self, hidden: int = 256, intermediate: int = 128, num_experts: int = 8, top_k: int = 2, device=None) -> None:
        super().__init__()
        self.hidden, self.intermediate, self.num_experts = hidden, intermediate, num_experts
        self.router = TopKRouter(hidden, num_experts, top_k, device=device)
        self.w13 = nn.Parameter(torch.empty(num_experts, 2 * intermediate, hidden, device=device))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, intermediate, device=device))
        nn.init.normal_(self.w13, std=0.02)
        nn.init.normal_(self.w2, std=0.02)
        self._expert_offsets = None

    def get_workspace(self, m_max: int, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        """Scratch buffers for one forward: token-major inputs and the gated activations."""
        workspace_0 = torch.empty((self.num_experts, m_max, max(self.hidden, self.intermediate)), dtype=dtype, device=device)
        workspace_1 = torch.empty((self.num_experts, m_max, 2 * self.intermediate), dtype=dtype, device=device)
        workspace_sf = torch.zeros(self.num_experts, m_max, dtype=torch.int32, device=device)
        return {"workspace_0": workspace_0, "workspace_1": workspace_1, "workspace_sf": workspace_sf}

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        num_tokens = hidden_states.shape[0]
        topk_weights, topk_ids = self.router(hidden_states)
        m_max = round_up(num_tokens, 128)
        ws = self.get_workspace(m_max, hidden_states.dtype, hidden_states.device)

        if self._expert_offsets is None:  # allocated once, on first use
            self._expert_offsets = torch.zeros(self.num_experts + 1, dtype=torch.int64, device=hidden_states.device)

        # Per-expert token counts, rebuilt on every call.
        tokens_per_expert = torch.zeros(self.num_experts, dtype=torch.int32, device=hidden_states.device)
        tokens_per_expert.scatter_add_(0, topk_ids.flatten().int(), torch.ones_like(topk_ids.flatten(), dtype=torch.int32))
        torch.cumsum(tokens_per_expert, 0, out=self._expert_offsets[1:])

        output = torch.zeros_like(hidden_states)
        for e in range(self.num_experts):
            token_idx, slot = torch.nonzero(topk_ids == e, as_tuple=True)
            n = token_idx.numel()
            if n == 0:
                continue
            x = ws["workspace_0"][e, :n, : self.hidden]
            x.copy_(hidden_states[token_idx])
            gate_up = ws["workspace_1"][e, :n]
            torch.matmul(x, self.w13[e].t(), out=gate_up)
            act = torch.empty(n, self.intermediate, dtype=hidden_states.dtype, device=hidden_states.device)
            torch.mul(F.silu(gate_up[:, : self.intermediate]), gate_up[:, self.intermediate :], out=act)
            down = act @ self.w2[e].t()
            output.index_add_(0, token_idx, down * topk_weights[token_idx, slot, None].to(down.dtype))
        return output


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    layer = MoELayer(device=device)
    with torch.no_grad():
        for num_tokens in (64, 256, 17):
            out = layer(torch.randn(num_tokens, layer.hidden, device=device))
            print(f"{num_tokens:4d} tokens -> output {tuple(out.shape)} on {out.device}, |out| = {out.norm():.4f}")


if __name__ == "__main__":
    main()
