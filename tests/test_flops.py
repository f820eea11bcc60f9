"""Measured FLOPs against each model's `flops_per_byte` formula, and the trainer's FLOPs budget.

Tolerance 10%: the formulas count matrix products and attention over the allowed (query, key)
pairs and leave out elementwise work — so does the counter — but MEGABYTE pads each sequence
to a whole number of patches (T+1 ids rounded up to P: 68/64 at T = 64) and BLT's latent cost
depends on the true patch count, which the formula takes as `bytes_per_patch`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_overrides, write_text_dataset

from omnibyte.eval.bench import arch_available
from omnibyte.eval.flops import count_flops, measure_flops_per_byte, text_like_ids
from omnibyte.models.registry import build_model
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


CONFIGS = [
    ("transformer", {"dim": 32, "n_layers": 2, "n_heads": 4}),
    ("transformer", {"dim": 32, "n_layers": 2, "n_heads": 4, "window": 16}),
    ("transformer", {"dim": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 1000}),  # a BPE-sized head
    ("megabyte", {"patch_size": 4, "global_dim": 32, "global_layers": 1, "global_heads": 2, "local_dim": 16,
                  "local_layers": 1, "local_heads": 2}),
    ("blt", {"dim_local": 16, "dim_global": 32, "hash_buckets": 64, "patcher": {"kind": "static", "patch_size": 4}}),
    ("blt", {"dim_local": 16, "dim_global": 32, "hash_buckets": 64, "patcher": {"kind": "space"}}),
]


@pytest.mark.parametrize("arch,cfg", CONFIGS, ids=lambda x: x if isinstance(x, str) else "-".join(
    f"{k}={v}" for k, v in x.items() if k in ("window", "vocab_size", "patcher")))
def test_formula_matches_measured_flops(arch, cfg):
    if not arch_available(arch):
        pytest.skip(f"model {arch} is not available")
    torch.manual_seed(0)
    seq_len = 64
    ids = text_like_ids(2, seq_len + 1)
    if cfg.get("patcher", {}).get("kind") == "space":
        # the formula takes the mean patch length as given: give it the one of these ids
        from omnibyte.patching import PatcherConfig, mean_patch_len, patch_starts

        cfg = {**cfg, "bytes_per_patch": float(mean_patch_len(patch_starts(ids[:, :-1], PatcherConfig("space"))))}
    model = build_model(arch, cfg)
    measured = measure_flops_per_byte(model, seq_len, ids=ids)
    formula = model.flops_per_byte(seq_len)
    for kind in ("infer", "train"):
        assert measured[kind].total == pytest.approx(formula[kind], rel=TOL), kind
    # the dense count (FlopCounterMode's view of attention) is never below the causal one
    assert measured["infer"].dense_total >= measured["infer"].total
    # backward costs about twice the forward, as the formulas assume (training = 3 × forward)
    assert measured["train"].total == pytest.approx(3 * measured["infer"].total, rel=0.02)


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
