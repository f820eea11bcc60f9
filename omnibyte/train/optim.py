"""Optimizers: AdamW, plus row-wise AdamW with sparse gradients for the hash n-gram tables.

A BLT's hash n-gram tables hold most of its parameters (6 tables × 65,536 rows × 48: 19M), yet
one step of 16 × 256 bytes touches at most 4,096 rows of each. Dense AdamW reads and writes
every row's weight and both moments each step, a large share of a CPU step. With sparse
gradients the tables' update touches only the rows that were read:

- `RowAdamW`: AdamW on the rows a sparse gradient names, catching up on the steps each row sat
  out. Dense AdamW keeps moving a row after its gradient stops: its moments decay (m by β1, v by
  β2 each step) but the update m/√v shrinks only by β1/√β2 ≈ 0.92 per step, so one gradient
  moves a row about 12 times further than its own step. A purely lazy Adam (TensorFlow's
  LazyAdamOptimizer, torch.optim.SparseAdam) drops that tail, and a BLT learns measurably worse
  without it. Here, when a row is read again after k steps away, the
  k missed steps are applied first in closed form: weight decay (1 - lr·wd)^k, the geometric sum of
  the decaying updates, and moments × β1^k and β2^k. A hook on each table does this for the rows
  a forward is about to read (`watch`), so every value the model computes with is current, and
  applying the missed steps late changes nothing. `flush()` brings every row up to date before the
  weights are read whole (evaluation, checkpoints). The closed form takes the lr and bias
  corrections of the row's last gradient step (the lr schedule moves little over the ~20 steps
  that hold most of the tail) and leaves out ε. With a constant lr it matches dense AdamW to
  rounding (tests/test_optim.py).
- `CombinedOptimizer`: one object over several optimizers (dense AdamW + RowAdamW) for the
  trainer: param_groups for the lr schedule, step, zero_grad, state_dict.
- `clip_grad_norm`: the global norm over dense and sparse gradients (torch's `clip_grad_norm_`
  has no sparse kernel).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from omnibyte.errors import OmnibyteError


class RowAdamW(torch.optim.Optimizer):
    """AdamW for parameters with sparse (COO, row) gradients: rows named in a gradient are updated,
    after catching up on the steps they missed; `flush` catches every row up."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:
            n = p.shape[0]
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            state["last"] = torch.zeros(n, dtype=torch.long, device=p.device)  # step each row is brought up to
            state["row_step"] = torch.zeros(n, dtype=torch.long, device=p.device)  # each row's last gradient step
            state["row_lr"] = torch.zeros(n, dtype=p.dtype, device=p.device)  # and the lr it took
        return state

    def _catch_up(self, p: torch.Tensor, state: dict, rows: torch.Tensor, missed: torch.Tensor, group: dict) -> None:
        """Apply `missed` (per row) steps without gradient to `rows`: dense AdamW on a zero gradient,
        in closed form, at the lr and bias corrections of each row's last gradient step (where most
        of the tail falls; a row never read only decays, at the peak lr given to the optimizer).
        Constants fixed per row make two catch-ups equal one over the whole gap, so when `flush`
        runs (evaluation, checkpoints, a resumed run's stop) does not change training."""
        (b1, b2), wd = group["betas"], group["weight_decay"]
        k = missed.to(torch.float64)[:, None]
        t0 = state["row_step"].index_select(0, rows).to(torch.float64)[:, None]
        lr = torch.where(t0 > 0, state["row_lr"].index_select(0, rows).to(torch.float64)[:, None], self.defaults["lr"])
        m, v = state["exp_avg"].index_select(0, rows), state["exp_avg_sq"].index_select(0, rows)
        d = 1.0 - lr * wd  # weight decay per step
        q = (b1 / math.sqrt(b2)) / d  # ratio of consecutive updates, against the decay
        # Σ_{j=1..k} (β1/√β2)^j d^(k-j) = d^k Σ q^j
        tail = d**k * torch.where((q - 1).abs() > 1e-12, q * (1 - q**k) / (1 - q), k)
        scale = torch.where(t0 > 0, (1 - b2**t0.clamp_min(1)).sqrt() / (1 - b1**t0.clamp_min(1)), 0.0)
        step = torch.where(v > 0, m / v.sqrt().clamp_min(1e-30), torch.zeros_like(m))
        w = p.index_select(0, rows).mul_((d**k).to(p.dtype)).sub_(step * (lr * scale * tail).to(p.dtype))
        p.index_copy_(0, rows, w)
        state["exp_avg"].index_copy_(0, rows, m.mul_((b1**k).to(m.dtype)))
        state["exp_avg_sq"].index_copy_(0, rows, v.mul_((b2**k).to(v.dtype)))

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("RowAdamW takes no closure")
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("RowAdamW needs sparse gradients (nn.Embedding(sparse=True))")
                grad = p.grad.coalesce()
                rows, g = grad.indices()[0], grad.values()
                state = self._state(p)
                state["step"] += 1
                t = float(state["step"])
                missed = t - 1 - state["last"].index_select(0, rows)
                if bool((missed > 0).any()):
                    self._catch_up(p, state, rows, missed, group)
                m = state["exp_avg"].index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                denom = v.div_(1 - b2**t).sqrt_().add_(eps)
                w = p.index_select(0, rows).mul_(1 - lr * wd).addcdiv_(m, denom, value=-lr / (1 - b1**t))
                p.index_copy_(0, rows, w)
                state["last"].index_fill_(0, rows, int(t))
                state["row_step"].index_fill_(0, rows, int(t))
                state["row_lr"].index_fill_(0, rows, lr)

    def watch(self, table: nn.Embedding) -> None:
        """Catch up the rows `table` is about to read, before each forward: a row's value must be
        current when it is read, not only when it is next updated."""
        table.register_forward_pre_hook(lambda module, args: self.catch_up_rows(module.weight, args[0]))

    @torch.no_grad()
    def catch_up_rows(self, p: torch.Tensor, ids: torch.Tensor) -> None:
        state = self.state.get(p)
        if not state:
            return  # no step yet: nothing missed
        rows = torch.unique(ids)
        missed = int(state["step"]) - state["last"].index_select(0, rows)
        behind = missed > 0
        if bool(behind.any()):
            rows, missed = rows[behind], missed[behind]
            self._catch_up(p, state, rows, missed, self._group_of(p))
            state["last"].index_fill_(0, rows, int(state["step"]))

    def _group_of(self, p: torch.Tensor) -> dict:
        return next(g for g in self.param_groups if any(q is p for q in g["params"]))

    @torch.no_grad()
    def flush(self) -> None:
        """Catch every row up to the last step, so the whole table holds what dense AdamW would."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                t = float(state["step"])
                missed = t - state["last"]
                rows = torch.nonzero(missed > 0).flatten()
                if rows.numel():
                    self._catch_up(p, state, rows, missed[rows], group)
                    state["last"].fill_(int(t))


class CombinedOptimizer:
    """Several optimizers stepped as one; `param_groups` lists all their groups (the trainer sets
    the lr there), and the state dict keeps each one's state in order."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def flush(self) -> None:
        for opt in self.optimizers:
            if hasattr(opt, "flush"):
                opt.flush()

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("optimizers")
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise OmnibyteError("the checkpoint's optimizer state was saved with dense table updates: "
                                "resume with --model.ngrams.sparse false")
        for opt, s in zip(self.optimizers, saved):
            opt.load_state_dict(s)


def make_optimizer(model, cfg, device: torch.device, sparse: bool = True):
    """AdamW over the model's parameter groups (`OmniModel.param_groups`: each with its weight
    decay and optional `lr_scale`, which the trainer applies with its schedule). A group's
    `sparse_tables` get sparse gradients and RowAdamW with the group's settings when `sparse` is
    allowed (CPU, one process, no compile), combined with the AdamW of the rest."""
    dense, rows, tables = [], [], []
    for group in model.param_groups(cfg.weight_decay):
        group = dict(group)
        sparse_tables = group.pop("sparse_tables", None) or []
        for table in sparse_tables:
            table.sparse = sparse
        if not group["params"]:
            continue
        if sparse and sparse_tables:
            rows.append(group)
            tables += sparse_tables
        else:
            dense.append(group)
    adamw = torch.optim.AdamW(dense, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    if not rows:
        return adamw
    # never-read rows decay at the peak lr given here (see RowAdamW._catch_up): the tables' own
    lazy = RowAdamW(rows, lr=cfg.lr * rows[0].get("lr_scale", 1.0), betas=(cfg.beta1, cfg.beta2))
    for table in tables:
        lazy.watch(table)
    return CombinedOptimizer([adamw, lazy])


def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """Scale all gradients so their global L2 norm is at most `max_norm`; returns the norm before.
    Sparse gradients are coalesced (duplicate rows summed) first."""
    params = [p for p in params if p.grad is not None]
    sparse = [p for p in params if p.grad.is_sparse]
    if not sparse:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    dense = [p for p in params if not p.grad.is_sparse]
    for p in sparse:
        p.grad = p.grad.coalesce()
    device = params[0].grad.device
    sq = torch.zeros((), dtype=torch.float32, device=device)
    if dense:
        sq = sq + torch.stack(torch._foreach_norm([p.grad for p in dense])).float().square().sum()
    for p in sparse:
        sq = sq + p.grad.values().float().square().sum()
    total = sq.sqrt()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    if dense:
        torch._foreach_mul_([p.grad for p in dense], scale)
    for p in sparse:
        p.grad.values().mul_(scale)
    return total
