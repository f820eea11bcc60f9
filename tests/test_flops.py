"""The FLOPs counter every model's formula is checked against (tests/test_model_contract.py), and
the trainer's FLOPs budget in real FLOPs. Tolerance 10%, as in the contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_overrides, write_text_dataset

from omnibyte.eval.flops import count_flops
from omnibyte.train import Trainer, load_run_config

TOL = 0.10


def test_counts_linear_layers_exactly():
    lin = torch.nn.Linear(8, 5, bias=False)
    c = count_flops(lambda: lin(torch.randn(3, 7, 8)))
    assert c.matmul == 2 * 3 * 7 * 8 * 5 and c.attention == 0


def test_causal_attention_counts_allowed_pairs_only():
    b, h, t, d = 2, 3, 10, 4
    q = torch.randn(b, h, t, d)
    full = count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    causal = count_flops(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    masked = count_flops(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=mask))
    assert full.attention == full.attention_dense == 4 * d * b * h * t * t
    assert causal.attention == masked.attention == 4 * d * b * h * t * (t + 1) // 2
    assert causal.attention_dense == full.attention
    # a float mask: -inf entries are not attended
    additive = torch.zeros(t, t).masked_fill(~mask, float("-inf"))
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=additive)).attention \
        == causal.attention
    # backward: twice the forward's attention work
    qg = q.clone().requires_grad_(True)
    both = count_flops(lambda: F.scaled_dot_product_attention(qg, qg, qg, is_causal=True).sum().backward())
    assert both.attention == 3 * causal.attention




def test_trainer_budget_is_in_real_flops(tmp_path):
    """The trainer's FLOPs accounting (budget → steps) matches what its training steps really cost."""
    data = write_text_dataset(tmp_path, n_docs=8, lines=4)
    cfg = load_run_config(None, tiny_overrides(data, steps=100))
    per_step = Trainer(cfg, tmp_path / "probe", quiet=True)
    accounted = per_step.flops_per_byte * per_step.bytes_per_step
    measured = count_flops(lambda: per_step.micro_steps(0)).total
    assert measured == pytest.approx(accounted, rel=TOL)
    budget = 3.5 * measured
    cfg = load_run_config(None, tiny_overrides(data, steps=100, flops=budget))
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    assert trainer.total_steps == 3
    spent = count_flops(lambda: trainer.fit()).total  # includes the end-of-run validation forward
    assert 2.5 * measured < spent <= budget
