"""Shared transformer layers: RMSNorm → RoPE → attention (SDPA, optional QK-norm) → SwiGLU →
pre-norm block → stack. Every model (byte transformer, MEGABYTE, BLT) builds from these.

Attention always goes through `F.scaled_dot_product_attention` with an explicit boolean mask
(True = may attend) or `is_causal`, so the same code trains on CPU and GPU.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from omnibyte.nn.cache import KVCache, LayerCache, Rows, eager_lru_cache
from omnibyte.nn.window_attention import window_attention


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in fp32 or wider (bf16/fp16 → fp32; fp64 stays); no op at all for fp32 (decoding pays per op)."""
    return x if x.dtype == torch.float32 else x.to(torch.promote_types(x.dtype, torch.float32))


def _rms_normalize(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / rms(x), 1 / rms(x)) in fp32 or wider: the CPU forward, with and without autograd."""
    x32 = _wide(x)
    rstd = torch.rsqrt(x32.square().mean(-1, keepdim=True).add_(eps))
    return x32 * rstd, rstd


class _RMSNormCPU(torch.autograd.Function):
    """RMSNorm with a hand-written backward, for CPU: `F.rms_norm` is a composite there, and
    autograd through its pieces records every elementwise step (RMSNorm runs twice per block, on q
    and k with QK-norm, and per byte when decoding). Computed in fp32 or wider."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        xhat, rstd = _rms_normalize(x, eps)
        ctx.save_for_backward(xhat, rstd, weight)
        return (xhat * weight.to(xhat.dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        xhat, rstd, weight = ctx.saved_tensors
        g = grad.to(xhat.dtype)
        gw = (g * xhat).reshape(-1, g.shape[-1]).sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
        gxhat = g * weight.to(xhat.dtype)
        # d/dx of x·rstd: rstd · (gxhat − xhat · mean(gxhat · xhat))
        dot = (gxhat * xhat).mean(-1, keepdim=True)
        gx = gxhat.sub_(xhat * dot).mul_(rstd).to(grad.dtype)
        return gx, gw, None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # weight inside the op (not one more pass over the activations); computed in fp32 under
        # autocast. On CPU written out, with our own backward: `F.rms_norm` is a composite there
        # that copies its input, and decoding runs ~30 norms per byte for a BLT, on one position
        # each, where that copy dominates. Elsewhere the fused op.
        if x.device.type == "cpu":
            if torch.is_grad_enabled():
                return _RMSNormCPU.apply(x, self.weight, self.eps)
            y = _rms_normalize(x, self.eps)[0].mul_(_wide(self.weight))
            return y if y.dtype == x.dtype else y.to(x.dtype)
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x2, x1], dim=-1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return _swap_halves(x).mul_(sin).addcmul_(x, cos)


class _Rope(torch.autograd.Function):
    """y = x·cos + swap(x)·sin_signed, where swap exchanges the two halves of the head dim and
    sin_signed = (−sin, sin). swap is its own transpose, so the backward is
    g·cos + swap(g·sin_signed). Written out because autograd through the half-width products
    (strided views broadcast against (T, D/2) angles) cost ~3× more on CPU."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _swap_halves(grad * sin).addcmul_(grad, cos), None, None


def rope_tables(pos: torch.Tensor, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin_signed) for `apply_rope`, each (T, D) or (B, 1, T, D), fp32. A stack makes them once per
    forward for all its layers (and for q and k): decoding pays for them once per step, not 2·layers.

    Computed in fp64 and rounded to fp32, so every machine gets the same tables: vectorised fp32
    cos and pow differ by an ulp between instruction sets and libraries, fp64 ones only far below
    fp32's rounding. `omnibyte.compress` relies on models computing alike on every machine."""
    ang = pos.to(torch.float64)[..., None] * _inv_freq(head_dim, theta, device)  # (T, D/2) or (B, T, D/2)
    if ang.dim() == 3:
        ang = ang[:, None]  # (B, 1, T, D/2): broadcast over heads
    cos, sin = ang.cos().float(), ang.sin().float()
    return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)


def arange_rope_tables(start: int, length: int, head_dim: int, theta: float,
                       device) -> tuple[torch.Tensor, torch.Tensor]:
    """`rope_tables` of the positions start..start+length-1, sliced from tables made once per
    power-of-two span (the same values: every entry is computed on its own), so a decoding step
    gets its tables in two slicing ops instead of nine."""
    span = _next_pow2(start + length)
    if span > _MAX_TABLE_SPAN or torch.compiler.is_compiling():  # compiled graphs make their own
        return rope_tables(torch.arange(start, start + length, device=device), head_dim, theta, device)
    cos, sin = _table_span(span, head_dim, theta, torch.device(device))
    return cos[start:start + length], sin[start:start + length]


_MAX_TABLE_SPAN = 1 << 16  # longer sequences make their tables each time (a kept table would be large)


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@functools.lru_cache(maxsize=32)
def _table_span(n: int, head_dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode(False):  # made while decoding, used again when training (saved for backward)
        return rope_tables(torch.arange(n, device=device), head_dim, theta, device)


def apply_rope(x: torch.Tensor, pos: torch.Tensor | None, theta: float = 10000.0,
               tables: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the head dim by angle pos · θ^(-2i/d).

    x: (B, H, T, D); pos: (T,) or (B, T) absolute positions, or `tables` from `rope_tables`.
    """
    cos, sin = tables if tables is not None else rope_tables(pos, x.shape[-1], theta, x.device)
    x32 = _wide(x)
    if not (torch.is_grad_enabled() and x.requires_grad):  # decoding: no autograd.Function overhead
        return _rotate(x32, cos, sin).type_as(x)
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        # plain ops: under torch.compile on CUDA the autograd.Function's backward can come out as
        # zeros (seen with torch 2.11), leaving q and k without gradient; compiled code fuses these anyway
        return (x32 * cos + _swap_halves(x32) * sin).type_as(x)
    return _Rope.apply(x32, cos, sin).type_as(x)


@eager_lru_cache(maxsize=64)
def _inv_freq(d: int, theta: float, device: torch.device) -> torch.Tensor:
    """θ^(-2i/d) for i < d/2 in fp64 (see `rope_tables`), made once per head size (decoding calls RoPE
    per byte per layer)."""
    return theta ** (-torch.arange(0, d, 2, device=device, dtype=torch.float64) / d)


def causal_mask(t_q: int, t_k: int, device, offset: int = 0, window: int = 0) -> torch.Tensor:
    """Bool (t_q, t_k): query i (at absolute position offset+i) may see key j iff j ≤ offset+i,
    and, with a sliding window, offset+i - j < window."""
    qi = torch.arange(t_q, device=device)[:, None] + offset
    kj = torch.arange(t_k, device=device)[None, :]
    m = kj <= qi
    if window > 0:
        m = m & (qi - kj < window)
    return m


class Attention(nn.Module):
    """Multi-head self-attention with RoPE, optional QK-norm (Chameleon: keeps modalities from
    drifting apart through logit growth) and an optional KV cache for incremental decoding."""

    def __init__(self, dim: int, n_heads: int, qk_norm: bool = True, rope_theta: float = 10000.0,
                 use_rope: bool = True, norm_eps: float = 1e-6):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.rope_theta, self.use_rope = rope_theta, use_rope

    def forward(self, x, pos, mask=None, cache: LayerCache | None = None, window: int = 0):
        qkv = rearrange(self.wqkv(x), "b t (three h d) -> three b h t d", three=3, h=self.n_heads)
        tables = None
        if self.use_rope:  # pos: positions, or the (cos, sin) tables a stack made once for all layers
            tables = pos if isinstance(pos, tuple) else rope_tables(pos, self.head_dim, self.rope_theta, x.device)
        if x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled():
            q, k = self._qk_inference(qkv[:2], tables).unbind(0)
        else:
            q, k = self.q_norm(qkv[0]), self.k_norm(qkv[1])
            if tables is not None:
                q, k = apply_rope(q, None, tables=tables), apply_rope(k, None, tables=tables)
        v = qkv[2]
        if cache is not None:
            k, v = cache.update(k, v)
            if window > 0:  # one new query (a stack passes a window with a cache only then): its window
                k, v, window = k[:, :, -window:], v[:, :, -window:], 0  # is the last `window` keys
        if mask is None and window > 0:
            y = window_attention(q, k, v, window)  # training path with a sliding window: O(T·window)
        elif mask is None:
            # Training path, or one query attending to its whole cache.
            causal = cache is None and q.shape[2] > 1
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(rearrange(y, "b h t d -> b t (h d)"))

    def _qk_inference(self, qk: torch.Tensor, tables) -> torch.Tensor:
        """QK-norm and RoPE of q and k as one (2, B, H, T, D) tensor: the same values as one at a
        time, in half the ops (fp32 on CPU without autograd, i.e. decoding, where ops per byte are
        the cost)."""
        if isinstance(self.q_norm, RMSNorm):
            w = torch.stack((self.q_norm.weight, self.k_norm.weight))[:, None, None, None]
            qk = _rms_normalize(qk, self.q_norm.eps)[0].mul_(w)
        if tables is not None:
            qk = _rotate(qk, *tables)
        return qk


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        # two matmuls on the halves of w13 (row blocks, so no copy) give contiguous a and b: the
        # gate and its backward on contiguous tensors are ~1.6× faster than on chunks of one output
        a, b = (F.linear(x, w) for w in self.w13.weight.chunk(2, dim=0))
        return self.w2(F.silu(a) * b)


def mlp_hidden(dim: int, ratio: float, multiple_of: int = 32) -> int:
    return multiple_of * math.ceil(int(dim * ratio) / multiple_of)


def token_shift(x: torch.Tensor, cache: LayerCache | None = None, key: str = "") -> torch.Tensor:
    """Replace the second half of each position's channels by the previous position's (zeros
    before the first), as in RWKV and MEGABYTE-pytorch: a one-step look-back that every
    sublayer gets for free, which small byte models learn much faster with.

    With a cache, the previous position of the first new one is the last position of the
    previous call, kept per row in the cache; a cleared row starts from zeros again."""
    keep, shift = x.chunk(2, dim=-1)
    prev = cache.last_shift(key, shift) if cache is not None else torch.zeros_like(shift[:, :1])
    out = torch.cat([keep, torch.cat([prev, shift[:, :-1]], dim=1)], dim=-1)
    if cache is not None:  # after the read above: the kept value is written in place
        cache.keep_shift(key, shift)
    return out


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)); with `shift`, each sublayer
    reads `token_shift(x)` instead of x (the residual stream itself is not shifted)."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float = 8 / 3, qk_norm: bool = True,
                 rope_theta: float = 10000.0, shift: bool = False, norm_eps: float = 1e-6, hidden: int = 0):
        super().__init__()
        if shift and dim % 2:
            raise ValueError(f"token shift splits the width in halves: dim {dim} must be even")
        self.shift = shift
        self.attn_norm = RMSNorm(dim, norm_eps)
        self.attn = Attention(dim, n_heads, qk_norm=qk_norm, rope_theta=rope_theta, norm_eps=norm_eps)
        self.mlp_norm = RMSNorm(dim, norm_eps)
        self.mlp = SwiGLU(dim, hidden or mlp_hidden(dim, mlp_ratio))

    def forward(self, x, pos, mask=None, cache=None, window: int = 0):
        h = token_shift(x, cache, "attn") if self.shift else x
        x = x + self.attn(self.attn_norm(h), pos, mask, cache, window)
        h = token_shift(x, cache, "mlp") if self.shift else x
        return x + self.mlp(self.mlp_norm(h))


@dataclass
class StackConfig:
    """Size of one `TransformerStack`; every model names its stacks' sizes this way."""

    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    window: int = 0  # sliding causal attention window in positions; 0 = full causal attention
    mlp_hidden: int = 0  # SwiGLU width; 0 = the model's mlp_ratio × dim, rounded up to a multiple of 32
    final_norm: bool = True  # an RMSNorm after the last layer (the released BLTs' encoder and latent have none)

    def check(self, name: str, min_layers: int = 1) -> None:
        """ValueError naming the stack (`name`) when its sizes do not make a stack."""
        if self.dim < 1 or self.n_heads < 1 or self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"{name}.dim {self.dim} must split into {name}.n_heads {self.n_heads} heads of even size")
        if self.n_layers < min_layers:
            raise ValueError(f"{name}.n_layers must be ≥ {min_layers}, got {self.n_layers}")
        if self.window < 0:
            raise ValueError(f"{name}.window must be ≥ 0 (0 = full causal attention), got {self.window}")
        if self.mlp_hidden < 0:
            raise ValueError(f"{name}.mlp_hidden must be ≥ 0 (0 = from mlp_ratio), got {self.mlp_hidden}")


def mean_keys(seq_len: int, window: int = 0) -> float:
    """Mean number of keys a causal query sees over positions 0..T-1 (window w caps it at w)."""
    t = seq_len
    if window <= 0 or window >= t:
        return (t + 1) / 2
    return (window * (window + 1) / 2 + (t - window) * window) / t


def stack_flops(stack: StackConfig, mlp_ratio: float, length: int) -> float:
    """Forward FLOPs per position of a stack over `length` positions (multiply-add = 2).

    Per layer: 2 · (attention and MLP weights) + causal attention, 2 · 2 · dim · (mean keys seen)
    for QKᵀ and AV. Norms and elementwise work are left out.
    """
    if stack.n_layers == 0:
        return 0.0
    d, h = stack.dim, stack.mlp_hidden or mlp_hidden(stack.dim, mlp_ratio)
    per_layer = 2 * (4 * d * d + 3 * d * h) + 4 * d * mean_keys(length, stack.window)
    return float(stack.n_layers * per_layer)


class TransformerStack(nn.Module):
    """n pre-norm blocks and a final norm over (B, T, dim) vectors; no embeddings or head, so the
    byte transformer, the MEGABYTE global/local models and BLT's three stacks all share it.

    `window` > 0 gives sliding-window causal attention (entropy model, BLT local encoder).
    `token_shift` mixes the previous position into each sublayer's input (see `token_shift`);
    it crosses document boundaries, so stacks that mask attention by document leave it off.
    `mlp_hidden` > 0 sets the SwiGLU width (else from `mlp_ratio`); `final_norm` False leaves the
    last layer's output unnormalised; `norm_eps` is every RMSNorm's epsilon.
    """

    def __init__(self, dim: int, n_layers: int, n_heads: int, mlp_ratio: float = 8 / 3,
                 qk_norm: bool = True, rope_theta: float = 10000.0, window: int = 0,
                 token_shift: bool = False, norm_eps: float = 1e-6, mlp_hidden: int = 0, final_norm: bool = True):
        super().__init__()
        self.dim, self.n_heads, self.window, self.rope_theta = dim, n_heads, window, rope_theta
        self.layers = nn.ModuleList(
            Block(dim, n_heads, mlp_ratio, qk_norm, rope_theta, token_shift, norm_eps, mlp_hidden)
            for _ in range(n_layers)
        )
        self.norm = RMSNorm(dim, norm_eps) if final_norm else nn.Identity()
        self.reset_parameters()

    @classmethod
    def from_config(cls, s: StackConfig, **model_wide) -> TransformerStack:
        """The stack `s` describes; `model_wide`: the model's own settings (mlp_ratio, qk_norm, ...)."""
        return cls(s.dim, s.n_layers, s.n_heads, window=s.window, mlp_hidden=s.mlp_hidden, final_norm=s.final_norm,
                   **model_wide)

    def reset_parameters(self):
        # GPT-2 style: residual projections scaled down with depth.
        for name, p in self.named_parameters():
            if p.dim() == 2:
                deep = name.endswith(("wo.weight", "w2.weight"))
                std = 0.02 / math.sqrt(2 * len(self.layers)) if deep else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, x, pos=None, mask=None, caches: KVCache | None = None, rows: Rows = None,
                advance: list[int] | None = None, before=None):
        """x: (B, T, dim). pos: (T,) or (B, T) absolute positions (default 0..T-1, or continuing each
        row's cache). mask: bool, broadcastable to (B, H, T, T_keys); default causal (+ window).
        before: `before(i, x) -> x` runs ahead of each layer i ≥ 1 (a BLT decoder that reads the
        latent model before every layer).

        With caches, `rows` names the cache rows x feeds (ascending; default all) and `advance` how
        many of the T positions each row keeps (default all): rows may stand at different
        positions, then each gets its own positions and mask."""
        if not self.layers:  # an empty stack (e.g. a BLT without local encoder layers): the norm only
            return self.norm(x)
        if caches is None or rows is None or rows[-1] - rows[0] + 1 == len(rows):
            return self._run(x, pos, mask, caches, rows, advance, before)
        # rows with gaps between them: the rows in the gaps are computed too, writing nothing, and
        # their outputs are dropped, so attention reads the caches in place instead of copying the
        # rows' caches out at every layer
        inner = torch.tensor([r - rows[0] for r in rows], device=x.device)
        span = rows[-1] - rows[0] + 1

        def widen(t, fill):
            return t if t is None else torch.full((span, *t.shape[1:]), fill, dtype=t.dtype,
                                                  device=t.device).index_copy(0, inner, t)

        pos = pos if pos is None or pos.dim() == 1 else widen(pos, 0)
        if before is not None:  # `before` knows the fed rows only; rows in a gap pass through it unchanged
            def before(i, h, fed=before):
                return h.index_copy(0, inner, fed(i, h[inner]))
        return self._run(widen(x, 0), pos, widen(mask, True), caches, rows, advance, before)[inner]

    def _run(self, x, pos, mask, caches, rows, advance, before=None):
        t = x.shape[1]
        head_dim = self.dim // self.n_heads
        starts = caches.lengths_of(rows) if caches is not None else [0]
        if any(s != starts[0] for s in starts):
            return self._ragged(x, pos, mask, caches, rows, advance, starts, before)
        offset = starts[0]
        # a sliding window without a dense mask: the banded kernel when training, the last `window`
        # cached keys when decoding one position (the cache keeps them all; a mask over them all
        # cost a mask build per step and attention over the whole past)
        window = self.window if mask is None and (caches is None or t == 1) else 0
        if mask is None and not window and (self.window > 0 or (caches is not None and t > 1)):
            mask = causal_mask(t, offset + t, x.device, offset=offset, window=self.window)
        if pos is None:
            rope = arange_rope_tables(offset, t, head_dim, self.rope_theta, x.device)
        else:
            rope = rope_tables(pos, head_dim, self.rope_theta, x.device)
        feed = caches.feed(t, rows, advance) if caches is not None else None
        for i, layer in enumerate(self.layers):
            if before is not None and i > 0:
                x = before(i, x)
            x = layer(x, rope, mask, feed.layer(i) if feed else None, window)
        if feed:
            feed.commit()
        return self.norm(x)

    def _ragged(self, x, pos, mask, caches, rows, advance, starts, before=None):
        """Rows at different positions: positions start..start+T-1 of each row, a causal (+ window)
        mask per row over the keys from the earliest any row's window reaches. Rows computed in a
        gap between `rows` stand at the last position (they see every key: no empty softmax)."""
        t = x.shape[1]
        end = max(starts) + t
        if x.shape[0] != len(starts):  # gaps: x holds every row from the first of `rows` to the last
            at = {r - rows[0]: s for r, s in zip(rows, starts)}
            span_starts = [at.get(i, end - t) for i in range(x.shape[0])]
        else:
            span_starts = starts
        qpos = torch.tensor(span_starts, device=x.device)[:, None] + torch.arange(t, device=x.device)  # (S, T)
        lo = max(0, min(starts) - self.window + 1) if self.window > 0 and mask is None else 0
        if mask is None:
            kpos = torch.arange(lo, end, device=x.device)
            mask = kpos <= qpos[..., None]  # (S, T, keys)
            if self.window > 0:
                mask = mask & (qpos[..., None] - kpos < self.window)
            mask = mask[:, None]
        rope = rope_tables(qpos if pos is None else pos, self.dim // self.n_heads, self.rope_theta, x.device)
        feed = caches.feed(t, rows, advance, first_key=lo)
        for i, layer in enumerate(self.layers):
            if before is not None and i > 0:
                x = before(i, x)
            x = layer(x, rope, mask, feed.layer(i), 0)
        feed.commit()
        return self.norm(x)

    def new_caches(self, batch_size: int, max_len: int, device, dtype) -> KVCache:
        return KVCache(len(self.layers), batch_size, self.n_heads, max_len, self.dim // self.n_heads, device, dtype)
