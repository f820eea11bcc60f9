"""The shared layers whose forward or backward is written by hand for speed (RMSNorm on CPU, RoPE,
the SwiGLU split) against plain-autograd references, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from omnibyte.nn import RMSNorm, SwiGLU, apply_rope
from omnibyte.nn.layers import _inv_freq, _RMSNormCPU


def rope_reference(x, pos, theta):
    """RoPE written the textbook way: rotate (x_i, x_{i+d/2}) by pos · θ^(-2i/d)."""
    ang = pos.to(x.dtype)[..., None] * _inv_freq(x.shape[-1], theta, x.device).to(x.dtype)
    if ang.dim() == 3:
        ang = ang[:, None]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * ang.cos() - x2 * ang.sin(), x1 * ang.sin() + x2 * ang.cos()], dim=-1)


def grads(fn, *inputs):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).sin())
    return out.detach(), [t.grad for t in leaves]


def test_rmsnorm_cpu_backward_matches_autograd():
    torch.manual_seed(0)
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16))
    x = torch.randn(3, 5, 16) * 3
    out, (gx,) = grads(norm, x)
    ref_w = norm.weight.detach().clone().requires_grad_()
    ref_x = x.clone().requires_grad_()
    ref = F.rms_norm(ref_x, (16,), ref_w, norm.eps)
    ref.backward(torch.arange(ref.numel(), dtype=ref.dtype).reshape(ref.shape).sin())
    torch.testing.assert_close(out, ref.detach())
    torch.testing.assert_close(gx, ref_x.grad)
    torch.testing.assert_close(norm.weight.grad, ref_w.grad)
    with torch.no_grad():  # inference skips the autograd.Function: same values
        torch.testing.assert_close(norm(x), out)
        half = norm(x.bfloat16())
        assert half.dtype == torch.bfloat16
        torch.testing.assert_close(half, F.rms_norm(x.bfloat16().float(), (16,), norm.weight, norm.eps).bfloat16())


def test_rmsnorm_cpu_gradcheck_float64():
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    w = torch.linspace(0.5, 2, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: _RMSNormCPU.apply(x, w, 1e-6), (x, w))


@pytest.mark.parametrize("compiling", [False, True])
@pytest.mark.parametrize("batched_pos", [False, True])
def test_rope_matches_reference_values_and_grads(batched_pos, compiling, monkeypatch):
    """Both training paths: the autograd.Function (CPU, eager) and the plain ops taken on other
    devices and under torch.compile (where the Function lost q/k gradients on CUDA)."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 7, 8)
    pos = torch.tensor([[3, 4, 5, 6, 7, 8, 9], [0, 1, 2, 10, 11, 12, 40]]) if batched_pos else torch.arange(5, 12)
    out, (g,) = grads(lambda t: apply_rope(t, pos, 100.0), x)
    ref, (g_ref,) = grads(lambda t: rope_reference(t, pos, 100.0), x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(g, g_ref)
    with torch.no_grad():  # the decoding path skips the autograd.Function
        torch.testing.assert_close(apply_rope(x, pos, 100.0), ref)


def test_rope_gradcheck_and_relative_positions():
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, torch.arange(4), 10.0), (x,))
    # q·k after rotation depends only on the distance between positions
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    dots = [(apply_rope(q, torch.tensor([a + s]), 1e4) * apply_rope(k, torch.tensor([s]), 1e4)).sum() for a, s in
            [(3, 0), (3, 17)]]
    torch.testing.assert_close(dots[0], dots[1])


def test_swiglu_matches_one_matmul_then_chunk():
    torch.manual_seed(2)
    mlp = SwiGLU(8, 12)
    x = torch.randn(2, 3, 8)
    out, (gx,) = grads(mlp, x)
    g13 = mlp.w13.weight.grad.clone()

    def reference(t):
        a, b = mlp.w13(t).chunk(2, dim=-1)
        return mlp.w2(F.silu(a) * b)

    mlp.zero_grad()
    ref, (gx_ref,) = grads(reference, x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, gx_ref)
    torch.testing.assert_close(g13, mlp.w13.weight.grad)


@pytest.mark.parametrize("qk_norm", [True, False])
def test_attention_inference_path_matches_training_path(qk_norm):
    """Without autograd on CPU, q and k are normed and rotated as one tensor: same values."""
    from omnibyte.nn import Attention

    torch.manual_seed(3)
    attn = Attention(32, 4, qk_norm=qk_norm)
    if qk_norm:
        with torch.no_grad():
            attn.q_norm.weight.copy_(torch.rand(8) + 0.5)
            attn.k_norm.weight.copy_(torch.rand(8) + 0.5)
    x, pos = torch.randn(2, 9, 32), torch.arange(3, 12)
    trained = attn(x, pos)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, pos), trained.detach())


def test_arange_rope_tables_equal_fresh_tables_and_survive_inference_mode():
    from omnibyte.nn.layers import arange_rope_tables, rope_tables

    for start, length in [(0, 1), (5, 1), (7, 10), (0, 33), (100, 3)]:
        kept = arange_rope_tables(start, length, 8, 1e4, "cpu")
        fresh = rope_tables(torch.arange(start, start + length), 8, 1e4, "cpu")
        for a, b in zip(kept, fresh):
            assert torch.equal(a, b)
    with torch.inference_mode():  # a decoding step makes the table for a new span first ...
        arange_rope_tables(0, 300, 4, 1e4, "cpu")
    x = torch.randn(1, 1, 300, 4, requires_grad=True)  # ... and training then saves it for backward
    apply_rope(x, None, tables=arange_rope_tables(0, 300, 4, 1e4, "cpu")).sum().backward()
    assert x.grad is not None
