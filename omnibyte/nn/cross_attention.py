"""Cross-attention between bytes and patches (BLT §3.2.2 and §3.3.1), without a dense mask.

Both directions in BLT attend inside a known group: a patch's queries read that patch's bytes
(encoder pooling), and a byte's query reads the K vectors of one patch (decoder). So instead of
a (patches × bytes) mask we gather by group index: pooling is a grouped softmax (scatter max /
scatter add over the patch index), decoding gathers K keys per byte. Memory and compute are
linear in the number of bytes, and there is no Python loop over bytes or patches.

No RoPE here: order inside a patch is already in the byte states (causal self-attention and
hash n-grams put it there).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from omnibyte.nn.layers import RMSNorm


def pool_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: torch.Tensor,
                   n_groups: int) -> torch.Tensor:
    """Queries of group g attend to the keys whose group is g.

    q: (B, G, K, H, D) — K queries per group; k, v: (B, T, H, D); group: (B, T) in [0, n_groups).
    Returns (B, G, K, H, D); a group without keys gets zeros.
    """
    b, t, h, d = k.shape
    kq = q.shape[2]
    idx = group[:, :, None, None].expand(b, t, kq, h)  # (B, T, K, H)
    qb = q.gather(1, idx[..., None].expand(b, t, kq, h, d))  # each key's group queries
    s = torch.einsum("btkhd,bthd->btkh", qb, k) * d**-0.5  # (B, T, K, H)
    # subtract the group max (no gradient needed: it cancels) so exp never overflows
    m = torch.full((b, n_groups, kq, h), float("-inf"), device=s.device, dtype=s.dtype)
    m = m.scatter_reduce(1, idx, s.detach(), "amax", include_self=True)
    e = torch.exp(s - m.gather(1, idx))
    denom = torch.zeros_like(m).scatter_add(1, idx, e)  # (B, G, K, H)
    num = torch.zeros(b, n_groups, kq, h, d, device=v.device, dtype=v.dtype)
    num = num.scatter_add(1, idx[..., None].expand(b, t, kq, h, d), e[..., None] * v[:, :, None])
    return num / denom.clamp_min(torch.finfo(denom.dtype).tiny)[..., None]


def gather_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Query t attends to the K keys of group idx[t].

    q: (B, T, H, D); k, v: (B, S, K, H, D); idx: (B, T) in [0, S). Returns (B, T, H, D).
    """
    b, t, h, d = q.shape
    kq = k.shape[2]
    sel = idx[:, :, None, None, None].expand(b, t, kq, h, d)
    kk, vv = k.gather(1, sel), v.gather(1, sel)  # (B, T, K, H, D)
    w = (torch.einsum("bthd,btkhd->btkh", q, kk) * d**-0.5).softmax(dim=2)
    return torch.einsum("btkh,btkhd->bthd", w, vv)


class CrossAttention(nn.Module):
    """Projections of a multi-head cross-attention (optional QK-norm); the attention pattern is
    chosen by the caller (`pool_attention` or `gather_attention`)."""

    def __init__(self, dim: int, n_heads: int, qk_norm: bool = True, norm_eps: float = 1e-6):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else nn.Identity()

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) → (..., H, D)."""
        return self.q_norm(rearrange(self.wq(x), "... (h d) -> ... h d", h=self.n_heads))

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., dim) → keys, values (..., H, D)."""
        k, v = rearrange(self.wkv(x), "... (two h d) -> two ... h d", two=2, h=self.n_heads)
        return self.k_norm(k), v

    def out(self, y: torch.Tensor) -> torch.Tensor:
        """(..., H, D) → (..., dim)."""
        return self.wo(rearrange(y, "... h d -> ... (h d)"))


class CrossBlock(nn.Module):
    """Pre-norm residual cross-attention: x + attn(norm(x), norm(src)). No MLP, as in BLT's
    cross-attention layers: the transformer layers around it have them.

    `residual` 2 gives 2·x + attn(...): the released BLTs add the input twice (their cross-attention
    layer returns x + attn, and its caller adds x again), and a model imported from them must too.

    Keys and values are made once per source vector (`kv`) and reused: per patch, not per byte.
    """

    def __init__(self, dim: int, n_heads: int, qk_norm: bool = True, norm_eps: float = 1e-6, residual: int = 1):
        super().__init__()
        self.residual = residual
        self.q_norm = RMSNorm(dim, norm_eps)
        self.kv_norm = RMSNorm(dim, norm_eps)
        self.attn = CrossAttention(dim, n_heads, qk_norm, norm_eps)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def kv(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attn.keys_values(self.kv_norm(src))

    def pool(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """x: (B, G, K, dim) group queries; k, v from `kv` of (B, T, dim); group (B, T) in [0, G)."""
        return self._skip(x) + self.attn.out(pool_attention(self.attn.queries(self.q_norm(x)), k, v, group, x.shape[1]))

    def read(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """x: (B, T, dim) queries; k, v from `kv` of (B, S, K, dim); idx (B, T) in [0, S)."""
        return self._skip(x) + self.attn.out(gather_attention(self.attn.queries(self.q_norm(x)), k, v, idx))

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.residual == 1 else self.residual * x
