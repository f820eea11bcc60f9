"""Lazy row updates of the hash n-gram tables: RowAdamW = AdamW where every row is read, unread
rows untouched, the global clip over sparse and dense gradients, and the trainer with sparse
tables (learns, resumes exactly, refuses a checkpoint of the other kind); the tables' own learning
rate and weight decay, from the model's parameter groups."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import tiny_overrides, write_text_dataset
from torch import nn

from omnibyte.errors import OmnibyteError
from omnibyte.models import OmniModel
from omnibyte.train import Trainer, load_run_config
from omnibyte.train.optim import CombinedOptimizer, RowAdamW, clip_grad_norm

BLT = {"arch": "blt", "ngrams": {"buckets": 97, "sizes": [3, 5]},
       "encoder": {"dim": 16, "n_layers": 1, "n_heads": 2, "window": 16}, "latent": {"dim": 32, "n_layers": 1,
                                                                                     "n_heads": 2},
       "decoder": {"dim": 16, "n_layers": 1, "n_heads": 2, "window": 16}}


def twin_tables(rows: int = 6, dim: int = 4) -> tuple[nn.Embedding, nn.Embedding]:
    torch.manual_seed(0)
    sparse = nn.Embedding(rows, dim, sparse=True)
    dense = copy.deepcopy(sparse)
    dense.sparse = False
    return sparse, dense


def step_both(sparse, dense, opt_s, opt_d, ids, target):
    for emb, opt in ((sparse, opt_s), (dense, opt_d)):
        opt.zero_grad()
        (emb(ids) * target).sum().backward()
        opt.step()


def test_row_adamw_equals_adamw_when_every_row_is_read():
    sparse, dense = twin_tables()
    kw = dict(lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
    opt_s, opt_d = RowAdamW(sparse.parameters(), **kw), torch.optim.AdamW(dense.parameters(), **kw)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        ids = torch.cat([torch.arange(6), torch.randint(0, 6, (7,), generator=g)])  # all rows, some twice
        step_both(sparse, dense, opt_s, opt_d, ids, torch.randn(13, 4, generator=g))
    torch.testing.assert_close(sparse.weight, dense.weight, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(sparse.weight, twin_tables()[0].weight)  # it did move


def test_row_adamw_leaves_unread_rows_alone():
    sparse, _ = twin_tables()
    before = sparse.weight.detach().clone()
    opt = RowAdamW(sparse.parameters(), lr=0.05, weight_decay=0.1)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        opt.zero_grad()
        (sparse(torch.tensor([0, 2, 2])) * torch.randn(3, 4, generator=g)).sum().backward()
        opt.step()
    w, state = sparse.weight.detach(), opt.state[sparse.weight]
    assert torch.equal(w[[1, 3, 4, 5]], before[[1, 3, 4, 5]])
    assert not torch.equal(w[[0, 2]], before[[0, 2]])
    assert state["exp_avg"][[1, 3, 4, 5]].abs().sum() == 0 and state["exp_avg"][[0, 2]].abs().sum() > 0
    # flush: every row catches up; a row never read has only decayed, by (1 - lr·wd) per step
    opt.flush()
    torch.testing.assert_close(sparse.weight[[1, 3, 4, 5]], before[[1, 3, 4, 5]] * (1 - 0.05 * 0.1) ** 3)
    dense = nn.Embedding(3, 2)
    dense(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        RowAdamW(dense.parameters()).step()


def test_row_adamw_catches_up_on_missed_steps_like_adamw():
    """Rows read now and then: each read first applies the steps the row missed (its moments kept
    moving it under dense AdamW); after `flush` the table equals dense AdamW's (constant lr, bias
    corrections settled by a warm-up in which every row is read)."""
    sparse, dense = twin_tables(rows=8)
    kw = dict(lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)
    opt_s, opt_d = RowAdamW(sparse.parameters(), **kw), torch.optim.AdamW(dense.parameters(), **kw)
    opt_s.watch(sparse)  # rows are caught up before they are read
    g = torch.Generator().manual_seed(3)
    for step in range(260):
        ids = torch.arange(8) if step < 200 else torch.randint(0, 8, (2,), generator=g)
        target = torch.randn(len(ids), 4, generator=g)
        for emb, opt in ((sparse, opt_s), (dense, opt_d)):  # a loss whose gradient depends on the rows' values
            opt.zero_grad()
            (emb(ids) - target).square().sum().backward()
            opt.step()
    behind = (opt_s.state[sparse.weight]["last"] < 260).sum()
    assert behind > 0 and not torch.allclose(sparse.weight, dense.weight, atol=1e-4)  # rows left behind
    opt_s.flush()
    torch.testing.assert_close(sparse.weight, dense.weight, atol=2e-5, rtol=1e-4)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(opt_s.state[sparse.weight][key], opt_d.state[dense.weight][key],
                                   atol=1e-7, rtol=1e-4)


def test_clip_grad_norm_over_sparse_and_dense_gradients():
    sparse, dense = twin_tables()
    lin_s = nn.Linear(4, 3)
    lin_d = copy.deepcopy(lin_s)
    ids = torch.tensor([1, 1, 4, 5])
    lin_s(sparse(ids)).square().sum().backward()
    lin_d(dense(ids)).square().sum().backward()
    params_s, params_d = [sparse.weight, *lin_s.parameters()], [dense.weight, *lin_d.parameters()]
    norm_s = clip_grad_norm(params_s, 0.01)
    norm_d = torch.nn.utils.clip_grad_norm_(params_d, 0.01)
    assert float(norm_s) == pytest.approx(float(norm_d), rel=1e-5) and float(norm_d) > 0.01
    for a, b in zip(params_s, params_d):
        ga = a.grad.to_dense() if a.grad.is_sparse else a.grad
        torch.testing.assert_close(ga, b.grad, atol=1e-7, rtol=1e-5)


def blt_overrides(data, ngrams: dict | None = None, **train) -> dict:
    """The tiny BLT on `data` with quick train settings; `ngrams` adds to its table settings."""
    over = tiny_overrides(data, **train)
    over["model"] = json.loads(json.dumps(BLT))
    over["model"]["ngrams"].update(ngrams or {})
    return over


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_text_dataset(tmp_path_factory.mktemp("data"))


def test_trainer_updates_blt_tables_sparsely_and_resumes_exactly(data, tmp_path):
    over = blt_overrides(data, steps=6)
    straight = Trainer(load_run_config(None, over), tmp_path / "a", quiet=True)
    assert isinstance(straight.optimizer, CombinedOptimizer)
    assert all(t.sparse for t in straight.model.embed.ngrams) and not straight.model.embed.bytes.sparse
    straight.fit()
    broken = Trainer(load_run_config(None, over), tmp_path / "b", quiet=True)
    broken.fit(stop_after=3)
    Trainer(load_run_config(None, over), tmp_path / "b", resume=True, quiet=True).fit()
    wa = OmniModel.from_pretrained(tmp_path / "a").state_dict()
    wb = OmniModel.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    # compile takes dense gradients: the tables stay dense and one AdamW updates everything
    compiled = Trainer(load_run_config(None, blt_overrides(data, steps=6, compile=True)), tmp_path / "k", quiet=True)
    assert isinstance(compiled.optimizer, torch.optim.AdamW) and not any(t.sparse for t in compiled.model.embed.ngrams)
    # a run trained with dense updates cannot resume with sparse ones (and the error says how)
    dense = blt_overrides(data, {"sparse": False}, steps=6)
    d = Trainer(load_run_config(None, dense), tmp_path / "c", quiet=True)
    assert isinstance(d.optimizer, torch.optim.AdamW) and not any(t.sparse for t in d.model.embed.ngrams)
    d.fit(stop_after=2)
    tampered = tmp_path / "c" / "checkpoint" / "config.json"  # as if saved with sparse updates on
    cfg = json.loads(tampered.read_text())
    cfg["model"]["ngrams"]["sparse"] = True
    tampered.write_text(json.dumps(cfg))
    with pytest.raises(OmnibyteError, match="ngrams.sparse false"):
        Trainer(load_run_config(None, over), tmp_path / "c", resume=True, quiet=True)
    # and the other way round: a sparse run resumed where sparse updates are not available
    with pytest.raises(OmnibyteError, match="sparse table updates"):
        Trainer(load_run_config(None, blt_overrides(data, steps=6, compile=True)), tmp_path / "b", resume=True,
                quiet=True)


def test_sparse_and_dense_tables_learn_alike(data, tmp_path):
    """Lazy updates change the optimiser's trajectory, not what it learns: both settings lower the
    loss from the same start by a similar amount."""
    def run(name, sparse):
        t = Trainer(load_run_config(None, blt_overrides(data, {"sparse": sparse}, steps=30)),
                    tmp_path / name, quiet=True)
        t.fit()
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    s, d = run("s", True), run("d", False)
    assert s[0] == pytest.approx(d[0], rel=1e-3)  # the same first step
    assert s[-1] < 0.8 * s[0] and d[-1] < 0.8 * d[0]
    assert s[-1] == pytest.approx(d[-1], rel=0.1)


@pytest.mark.parametrize("sparse", [True, False])
def test_table_lr_scale_scales_only_the_tables_first_step(data, tmp_path, sparse):
    """Adam's first step moves each weight by about lr: with ngrams.lr_scale 4 the n-gram tables
    move 4 times as far and every other weight as far as before."""
    def moved(scale):
        t = Trainer(load_run_config(None, blt_overrides(data, {"sparse": sparse, "lr_scale": scale}, steps=1)),
                    tmp_path / f"{sparse}-{scale}", quiet=True)
        before = {k: v.clone() for k, v in t.model.state_dict().items()}
        t.fit()
        return {k: float((v - before[k]).abs().max()) for k, v in t.model.state_dict().items()}

    one, four = moved(1.0), moved(4.0)
    for k in one:
        if ".ngrams." in k:
            assert four[k] == pytest.approx(4 * one[k], rel=0.02) and one[k] > 0
        elif one[k] > 0:
            assert four[k] == pytest.approx(one[k], rel=0.05), k


@pytest.mark.parametrize("sparse", [True, False])
def test_table_weight_decay_applies_to_the_tables_only(sparse):
    """With zero gradients AdamW only decays: w ← w·(1 - lr·wd). The tables decay by
    ngrams.weight_decay, the other 2-D weights by weight_decay, vectors not at all."""
    from omnibyte.models.registry import build_model
    from omnibyte.nn.hash_ngram import NgramConfig
    from omnibyte.train.config import TrainConfig
    from omnibyte.train.optim import make_optimizer

    torch.manual_seed(0)
    model = build_model("blt", {**{k: v for k, v in BLT.items() if k != "arch"},
                                "ngrams": {**BLT["ngrams"], "weight_decay": 2.0}})
    cfg = TrainConfig(lr=0.1, weight_decay=0.5)
    opt = make_optimizer(model, cfg, torch.device("cpu"), sparse=sparse)
    assert all(t.sparse == sparse for t in model.embed.ngrams)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = torch.tensor([[0, 3, 5]])
    for n, p in model.named_parameters():
        if ".ngrams." in n and sparse:  # a sparse gradient that reads rows 0, 3 and 5
            p.grad = torch.sparse_coo_tensor(rows, torch.zeros(3, p.shape[1]), p.shape, check_invariants=True)
        else:
            p.grad = torch.zeros_like(p)
    opt.step()
    if sparse:
        opt.flush()
    for n, p in model.named_parameters():
        factor = 1 - 0.1 * (2.0 if ".ngrams." in n else 0.5 if p.dim() >= 2 else 0.0)
        torch.testing.assert_close(p.detach(), before[n] * factor, msg=n)
    with pytest.raises(ValueError, match="ngrams.weight_decay"):
        NgramConfig(weight_decay=-1.0)
