"""The contract every omnibyte model keeps, checked on every registered model and on each input
adapter under each model family: shapes and loss, causality, rows independent, cached decoding =
full forward at several chunkings, greedy generation = a full re-run per byte, batched generation
= each row alone, save/load round trip, overfitting one batch, the FLOPs formula against a
measured count, and parameter groups that hold every trainable weight once.

Adding a model means adding its tiny config to MODELS; adding an adapter, one line to ADAPTERS.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from helpers import text_ids

from omnibyte.eval.flops import measure_flops_per_byte
from omnibyte.format import AUDIO_MULAW8, BOS, EOI, N_BYTES, AudioSegment, Document, ImageSegment, TextSegment, encode
from omnibyte.generate import DecodeBatch, SamplingConfig, generate
from omnibyte.generate.reference import rerun_greedy
from omnibyte.memory import full_states, state_cost, tensor_bytes
from omnibyte.models import OmniModel, build_model
from omnibyte.models.registry import _MODULES
from omnibyte.patching import compute_entropies

BLT = {"encoder": {"dim": 16, "n_layers": 1, "n_heads": 2, "window": 8},
       "latent": {"dim": 32, "n_layers": 2, "n_heads": 2},
       "decoder": {"dim": 16, "n_layers": 2, "n_heads": 2, "window": 8},
       "ngrams": {"buckets": 97, "sizes": [3, 5, 8]}}
# name → (arch, tiny config); "ENTROPY" stands for the entropy model's run folder (a fixture)
MODELS = {
    "transformer": ("transformer", {"dim": 32, "n_layers": 2, "n_heads": 4}),
    "transformer-window-shift": ("transformer", {"dim": 32, "n_layers": 2, "n_heads": 4, "window": 5,
                                                 "token_shift": True}),
    "megabyte": ("megabyte", {"patch_size": 4, "global_model": {"dim": 32, "n_layers": 2, "n_heads": 2},
                              "local_model": {"dim": 16, "n_layers": 2, "n_heads": 2}}),
    "megabyte-paper": ("megabyte", {"patch_size": 3, "global_model": {"dim": 24, "n_layers": 1, "n_heads": 2},
                                    "local_model": {"dim": 16, "n_layers": 2, "n_heads": 2}, "patch_proj": False,
                                    "carry_byte": False, "token_shift": False}),
    "blt-static": ("blt", {**BLT, "patcher": {"kind": "static", "patch_size": 3}}),
    "blt-space": ("blt", {**BLT, "patcher": {"kind": "space", "max_patch_len": 6}}),
    "blt-entropy": ("blt", {**BLT, "patcher": {"kind": "entropy", "entropy_model": "ENTROPY"}}),
    # the released BLTs' layout (what `omnibyte import` builds): bytes read the patch they complete,
    # before every decoder layer, no final norm on encoder and latent, their hash and patch rules
    "blt-entropy-released": ("blt", {**BLT, "encoder": {**BLT["encoder"], "final_norm": False},
                                 "latent": {**BLT["latent"], "final_norm": False, "mlp_hidden": 48},
                                 "ngrams": {**BLT["ngrams"], "hash": "blt", "functions": 2}, "latent_proj": False,
                                 "decoder_reads": "complete", "read_every_layer": True, "cross_residual": 2,
                                 "qk_norm": False, "norm_eps": 1e-5, "rope_theta": 500000.0,
                                 "patcher": {"kind": "entropy", "entropy_model": "ENTROPY", "markers": False,
                                             "lone_first": True, "max_patch_len": 5}}),
}
ADAPTERS = {
    "media_conv": {"media_conv": {"channels": 4, "kernel": 3}},
    "image_encoder": {"image_encoder": {"width": 4}},
    "audio_encoder": {"audio_encoder": {"width": 4, "cells": 3}},
}
WITH_ADAPTERS = ("transformer", "megabyte", "blt-static", "blt-entropy")
SUBJECTS = list(MODELS) + [f"{m}+{a}" for a in ADAPTERS for m in WITH_ADAPTERS]


def test_every_registered_model_is_in_the_list():
    assert {arch for arch, _ in MODELS.values()} == set(_MODULES)


def make(name: str, entropy_dir, seed: int = 0) -> OmniModel:
    model_name, _, adapter = name.partition("+")
    arch, cfg = MODELS[model_name]
    cfg = dict(cfg)
    if "patcher" in cfg and cfg["patcher"].get("entropy_model") == "ENTROPY":
        cfg["patcher"] = {**cfg["patcher"], "entropy_model": str(entropy_dir)}
    if adapter:
        cfg["adapters"] = ADAPTERS[adapter]
    torch.manual_seed(seed)
    model = build_model(arch, cfg).eval()
    with torch.no_grad():  # adapters start near zero (a model with one starts as the model without): wake them
        for p in model.adapters.parameters():
            p.normal_(0, 0.3)
    return model


@pytest.fixture(autouse=True)
def growing_caches(monkeypatch):
    """Decoding states start with room for 2 positions, so every cached check here also grows
    them many times over (rows at different lengths, joining a running batch)."""
    monkeypatch.setattr("omnibyte.nn.cache.FIRST_CAPACITY", 2)


@pytest.fixture(params=SUBJECTS)
def subject(request, entropy_dir) -> tuple[str, OmniModel]:
    return request.param, make(request.param, entropy_dir)


def media_ids(seed: int = 0) -> torch.Tensor:
    """(2, T) rows of text, gray and RGB images and a µ-law clip in different orders, two documents
    in the second row: every payload kind, block boundary and document boundary the adapters see."""
    rng = np.random.default_rng(seed)

    def image(w, h, c):
        return ImageSegment(w, h, c, rng.integers(0, 256, w * h * c, dtype=np.uint8).tobytes())

    clip = AudioSegment(8000, 24, AUDIO_MULAW8, rng.integers(0, 256, 24, dtype=np.uint8).tobytes())
    a = encode(Document([TextSegment(b"ab"), image(4, 3, 1), TextSegment(b"q?"), clip, image(3, 2, 3),
                         TextSegment(b"ok then")]))
    b = encode(Document([image(3, 3, 3), TextSegment(b"x"), clip])) + encode(Document([
        TextSegment(b"hi"), image(2, 4, 1), TextSegment(b"the end of it all")]))
    t = min(len(a), len(b))
    return torch.tensor([a[:t], b[:t]])


def inputs(name: str) -> torch.Tensor:
    return media_ids() if "+" in name else text_ids(2, 40)


# --------------------------------------------------------------------------- forward


def test_shapes_loss_and_every_trained_weight_gets_a_gradient(subject):
    name, m = subject
    ids = inputs(name)
    out = m(ids[:, :-1], ids[:, 1:])
    assert out.logits.shape == (2, ids.shape[1] - 1, m.cfg.vocab_size)
    torch.testing.assert_close(out.loss, m.loss(out.logits, ids[:, 1:]))
    assert abs(out.loss.item() - np.log(m.cfg.vocab_size)) < 1.5
    m.train()
    m(ids[:, :-1], ids[:, 1:]).loss.backward()
    dead = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert dead == []


def test_no_information_from_the_future_and_rows_are_independent(subject):
    name, m = subject
    ids = inputs(name)
    base = m(ids).logits
    for t in (1, 6, 17, ids.shape[1] - 9):
        for new in (ord(" "), BOS, (int(ids[0, t]) + 1) % N_BYTES):
            changed = ids.clone()
            changed[0, t] = new
            logits = m(changed).logits
            torch.testing.assert_close(logits[0, :t], base[0, :t], atol=1e-5, rtol=0)
            torch.testing.assert_close(logits[1], base[1], atol=1e-5, rtol=0)  # the other row
    assert not torch.allclose(logits[0, t:], base[0, t:])  # the future does matter


def test_adapter_acts_where_it_should(entropy_dir):
    """Each adapter changes the logits, and only from where its input appears: media_conv from the
    first payload byte of a media block, the image encoder from the first finished image's EOI."""
    ids = media_ids()
    for adapter in ADAPTERS:
        for model in WITH_ADAPTERS:
            m = make(f"{model}+{adapter}", entropy_dir)
            with_it = m(ids).logits
            with torch.no_grad():
                for p in m.adapters.parameters():
                    p.zero_()
            without = m(ids).logits
            first = 9 if adapter == "media_conv" else int((ids[0] == EOI).nonzero()[0])
            torch.testing.assert_close(with_it[0, :first], without[0, :first], atol=1e-6, rtol=0)
            assert not torch.allclose(with_it[0, first:], without[0, first:], atol=1e-4), (model, adapter)


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("chunks", ["whole", "ones", "ragged"])
def test_cached_step_equals_full_forward(subject, chunks):
    name, m = subject
    ids = inputs(name)
    t = ids.shape[1]
    sizes = {"whole": [t], "ones": [1] * t, "ragged": [5, 1, 9, 2, 1, 13, 4, 1]}[chunks]
    sizes = sizes + [1] * (t - sum(sizes)) if sum(sizes) < t else sizes
    full = m(ids).logits
    state = m.init_state(2, t + 3)
    pieces, at = [], 0
    for c in sizes:
        pieces.append(m.step(state, ids[:, at:at + c]))
        at += c
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-4)


def test_rows_join_and_leave_at_their_own_positions(subject):
    """Rows of one decoding state fed at different times, in chunks of their own, alone or with
    others, consecutive or not, one row cleared and reused: each row's logits equal the full
    forward of its own sequence (what decoding it alone gives)."""
    name, m = subject
    if "+" in name:
        seqs = [media_ids(0)[0], media_ids(0)[1], media_ids(1)[0], media_ids(1)[1]]
    else:
        seqs = list(text_ids(2, 40)) + list(text_ids(2, 40, seed=1))
    seqs = [s[:40] for s in seqs]
    # (rows, ids per row): row 0 starts alone, row 2 joins later, row 1 later still; then row 0 is
    # cleared and starts another sequence. Rows of a call stand at different positions.
    schedule = [([0], 5), ([0], 1), ([2], 9), ([0, 2], 1), ([0, 2], 1), ([1], 3), ([0, 1, 2], 1), ([0, 2], 3),
                ([0, 1, 2], 1), ([1], 12), ([0, 1, 2], 2), ("clear 0", 0), ([0], 6), ([0, 1, 2], 1), ([0, 2], 1),
                ([0, 1, 2], 4)]
    state = m.init_state(3, 48)
    owner = {0: 0, 1: 1, 2: 2}  # row → the sequence it decodes
    fed = {r: 0 for r in owner}
    got: dict[int, list[torch.Tensor]] = {r: [] for r in owner}
    for rows, t in schedule:
        if rows == "clear 0":
            m.clear_rows(state, [0])
            owner[0], fed[0], got[0] = 3, 0, []
            continue
        ids = torch.stack([seqs[owner[r]][fed[r]:fed[r] + t] for r in rows])
        logits = m.step(state, ids, rows)
        assert logits.shape == (len(rows), t, m.cfg.vocab_size)
        for i, r in enumerate(rows):
            got[r].append(logits[i])
            fed[r] += t
    for r, pieces in got.items():
        seq = seqs[owner[r]][:fed[r]]
        torch.testing.assert_close(torch.cat(pieces), m(seq[None]).logits[0], atol=1e-5, rtol=1e-4,
                                   msg=lambda msg, r=r: f"row {r}: {msg}")


def prompts(name: str) -> list[list[int]]:
    if "+" in name:
        rows = media_ids()
        return [rows[0, :40].tolist(), rows[1, :23].tolist(), rows[0, :9].tolist()]
    return [[BOS, *b"in the beginning god"], [BOS, *b"and the earth"], [BOS, *b"a"]]


def sharpen(m: OmniModel) -> OmniModel:
    """10× logits, so what a random model writes depends on its context, not on the sampling stream."""
    with torch.no_grad():
        m.head.weight.mul_(10)
    return m


@pytest.mark.parametrize("name", list(MODELS))
def test_a_state_sized_for_a_long_context_holds_what_it_was_fed(name, entropy_dir):
    # its caches grow with the positions fed, not with the context it may reach; the memory
    # estimate (`state_cost`) still counts the whole state a request may fill
    m = make(name, entropy_dir)
    with torch.no_grad():
        with full_states():
            whole = tensor_bytes(m.init_state(1, 4096))
        state = m.init_state(1, 4096)
        m.step(state, text_ids(1, 40))
    assert tensor_bytes(state) < whole / 4
    assert state_cost(m).per_position * 4096 > whole / 2


def test_greedy_generation_equals_a_full_rerun(subject):
    name, m = subject
    m = sharpen(m)
    ps = prompts(name)
    got = generate(m, ps, SamplingConfig(max_new=14, temperature=0))
    assert got == [rerun_greedy(m, p, 14) for p in ps]
    assert len({tuple(g) for g in got}) > 1  # rows differ: a mix-up between them would show


def test_batched_generation_equals_each_row_alone(subject):
    name, m = subject
    m = sharpen(m)
    cfg = SamplingConfig(max_new=12, temperature=1.0, top_k=20, seed=3)
    ps = prompts(name)
    assert generate(m, ps, cfg) == [generate(m, [p], cfg)[0] for p in ps]


def test_rows_joining_a_running_batch_generate_what_they_generate_alone(subject):
    """A two-row DecodeBatch: rows join while others decode, one is dropped midway and its slot
    reused, each with its own sampling settings; every finished row equals its lone generation."""
    name, m = subject
    m = sharpen(m)
    ps = prompts(name) + [prompts(name)[0][:5]]
    cfgs = [SamplingConfig(max_new=10, temperature=1.0, top_k=20, seed=3), SamplingConfig(max_new=7, temperature=0),
            SamplingConfig(max_new=9, temperature=0.8, top_p=0.9, seed=5), SamplingConfig(max_new=6, temperature=0)]
    batch = DecodeBatch(m, capacity=2, max_len=64, prefill_chunk=8)
    got: dict[int, list[int]] = {}
    row_in: dict[int, int] = {}  # slot → the prompt decoding there

    def run(steps: int) -> None:
        for _ in range(steps):
            for slot, tok, finished in batch.step():
                got[row_in[slot]].append(tok)
                if finished:
                    del row_in[slot]

    def join(i: int) -> None:
        row_in[batch.add(ps[i], cfgs[i])] = i
        got[i] = []

    join(0)
    run(3)
    join(3)  # joins while row 0 decodes
    run(2)
    slot = next(s for s, i in row_in.items() if i == 3)
    batch.drop(slot)  # leaves midway: its slot is reused below
    del row_in[slot], got[3]
    join(1)
    run(40)  # until rows 0 and 1 finish
    join(2)
    join(3)
    run(40)
    assert not batch.rows
    for i in range(4):
        assert got[i] == generate(m, [ps[i]], cfgs[i])[0], i


# --------------------------------------------------------------------------- saving, learning, cost


def test_save_load_round_trip(subject, tmp_path, entropy_dir):
    name, m = subject
    ids = inputs(name)
    if "entropy" in name:  # the saved model carries its entropy model: its run folder may go
        moved = tmp_path / "entropy"
        shutil.copytree(entropy_dir, moved)
        m = make(name, moved)
    m.save_pretrained(tmp_path / "model")
    if "entropy" in name:
        shutil.rmtree(moved)
    loaded = OmniModel.from_pretrained(tmp_path / "model")
    assert type(loaded) is type(m) and loaded.cfg == m.cfg
    torch.testing.assert_close(loaded(ids).logits, m(ids).logits, atol=0, rtol=0)


def test_overfits_one_batch(subject):
    name, m = subject
    ids = inputs(name)[:, :48]
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(60):
        loss = m(ids[:, :-1], ids[:, 1:]).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first, (first, loss.item())


def test_flops_formula_matches_a_measured_count(subject):
    """Within 10%: the formulas leave out elementwise work (so does the counter), MEGABYTE pads to
    whole patches, and a BLT's latent cost rests on its expected patch length. With an adapter the
    input is one image block: the adapters' formulas count every byte as a pixel."""
    name, m = subject
    seq_len = 64
    if "+" in name:
        pix = np.random.default_rng(0).integers(0, 256, 28 * 28, dtype=np.uint8).tobytes()
        ids = torch.tensor([encode(Document([ImageSegment(28, 28, 1, pix)]))[:seq_len * 12 + 1]] * 2)
        seq_len = ids.shape[1] - 1
    else:
        ids = text_ids(2, seq_len + 1)
    if name.startswith(("blt-space", "blt-entropy")):  # the formula takes the mean patch length as given
        starts = m.patcher(ids[:, :-1])
        m.cfg.patcher.bytes_per_patch = ids[:, :-1].numel() / float(starts.sum())
    formula = m.flops_per_byte(seq_len)
    infer = measure_flops_per_byte(m, seq_len, ids=ids)["infer"]
    extras = {"entropies": compute_entropies(m.patcher.entropy_model, ids)} if "entropy" in name else None
    train = measure_flops_per_byte(m, seq_len, ids=ids, extras=extras)["train"]  # entropies precomputed
    assert infer.total == pytest.approx(formula["infer"], rel=0.10)
    assert train.total == pytest.approx(formula["train"], rel=0.10)
    assert infer.dense_total >= infer.total


def test_param_groups_hold_every_trained_weight_once(subject):
    _, m = subject
    groups = m.param_groups(0.1)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in m.parameters() if p.requires_grad}
    for g in groups:
        assert g["weight_decay"] in (0.0, 0.1) and all(t.weight.requires_grad for t in g.get("sparse_tables", []))
        if g["weight_decay"] == 0.0 and "sparse_tables" not in g:
            assert all(p.dim() < 2 for p in g["params"])
