"""BLT: hash n-grams, causality for every patcher, cached decoding = full forward, batched = alone,
self-contained checkpoints (entropy model inside), FLOPs formula, overfitting one batch."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from omnibyte.errors import OmnibyteError
from omnibyte.format import BOS, EOS, N_BYTES
from omnibyte.generate import SamplingConfig, generate
from omnibyte.models import OmniModel, build_model
from omnibyte.models.blt import BLT, BLTConfig, LatentConfig, LocalConfig
from omnibyte.nn import causal_mask
from omnibyte.nn.hash_ngram import MODULUS, hash_ngram_ids
from omnibyte.nn.window_attention import window_attention
from omnibyte.patching import PatcherConfig, patch_starts

REPO = Path(__file__).resolve().parent.parent
KINDS = ("static", "space", "entropy")
WORDS = ("in", "the", "beginning", "god", "created", "heaven", "and", "earth", "a", "of")


def text_ids(n_rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """(n_rows, length) ids of words and spaces, a BOS at a different place in each row."""
    rng = random.Random(seed)
    rows = []
    for r in range(n_rows):
        text = " ".join(rng.choice(WORDS) for _ in range(length)).encode()[:length]
        row = list(text)
        row[(7 * r + 3) % length] = BOS
        rows.append(row)
    return torch.tensor(rows)


def tiny_config(kind: str = "static", **kw) -> BLTConfig:
    kw = {"encoder": LocalConfig(1, 2, window=8), "decoder": LocalConfig(2, 2, window=8), **kw}
    return BLTConfig(dim_local=16, dim_global=32, latent=LatentConfig(2, 2), hash_buckets=97,
                     ngram_sizes=(3, 5, 8), patcher=PatcherConfig(kind=kind, patch_size=3), **kw)


@pytest.fixture(scope="module")
def entropy_dir(tmp_path_factory) -> Path:
    """A tiny windowed byte transformer saved with a calibrated threshold (≈3 bytes per patch)."""
    from omnibyte.patching.calibrate import calibrate
    from omnibyte.patching.entropy import write_calibration

    torch.manual_seed(1)
    em = build_model("transformer", {"dim": 32, "n_layers": 2, "n_heads": 4, "window": 8}).eval()
    torch.nn.init.normal_(em.head.weight, std=0.3)  # spread the entropies well apart
    path = tmp_path_factory.mktemp("entropy") / "model"
    em.save_pretrained(path)
    write_calibration(path, "global", calibrate(em, text_ids(4, 64, seed=5), 3.0).to_entry())
    return path


def make(kind: str, entropy_dir: Path | None = None, seed: int = 0, **kw) -> BLT:
    torch.manual_seed(seed)
    cfg = tiny_config(kind, **kw)
    if kind == "entropy":
        cfg.patcher.entropy_model = str(entropy_dir)
    return BLT(cfg).eval()


@pytest.fixture(params=KINDS)
def model(request, entropy_dir) -> BLT:
    return make(request.param, entropy_dir)


# --------------------------------------------------------------------------- building blocks


def python_hash(ids: list[int], t: int, n: int, buckets: int, base: int) -> int:
    h = 0
    for j in range(n):
        x = ids[t - j] if t - j >= 0 else 256  # PAD before the start
        h = (h + (x + 1) * base**j) % MODULUS
    return h % buckets


@pytest.mark.parametrize("n,buckets", [(3, 97), (5, 4096), (8, 500_002)])
def test_hash_ngram_ids_match_python_reference(n, buckets):
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(0, 263, (3, 40), generator=g)
    got = hash_ngram_ids(ids, n, buckets, base=1_000_003)
    for r in range(3):
        row = ids[r].tolist()
        assert got[r].tolist() == [python_hash(row, t, n, buckets, 1_000_003) for t in range(40)]
    # the n-gram really is the n ids ending at t: same n-gram → same bucket, anywhere
    rep = torch.tensor([[5, 6, 7, 8, 9] * 4])
    h = hash_ngram_ids(rep, 3, 1 << 20)
    assert h[0, 4 + 5] == h[0, 4] and h[0, 4] != h[0, 5]


def test_ngram_dropout_drops_lookups_in_training_only():
    from omnibyte.nn.hash_ngram import HashNgramEmbedding

    torch.manual_seed(0)
    full = HashNgramEmbedding(263, 8, (3, 5), 97)
    drop = HashNgramEmbedding(263, 8, (3, 5), 97, dropout=0.5)
    drop.load_state_dict(full.state_dict())
    ids = torch.randint(0, 256, (2, 400))
    full.eval(), drop.eval()
    torch.testing.assert_close(drop(ids), full(ids))  # evaluation reads every table
    drop.train()
    x = drop(ids) / drop.scale - drop.bytes(ids)  # the n-gram part at each position
    parts = [t(hash_ngram_ids(ids, n, 97)) for n, t in zip((3, 5), drop.ngrams)]
    # each position holds each table's row ×2 (kept, scaled by 1/(1 - p)) or nothing
    kept = [(x - 2 * parts[0] - 2 * parts[1]).abs().amax(-1) < 1e-6, (x - 2 * parts[0]).abs().amax(-1) < 1e-6,
            (x - 2 * parts[1]).abs().amax(-1) < 1e-6, x.abs().amax(-1) < 1e-6]
    counts = [int(k.sum()) for k in kept]
    assert sum(counts) == ids.numel() and all(c > 100 for c in counts), counts  # ≈ 200 each
    with pytest.raises(OmnibyteError, match="ngram_dropout"):
        build_model("blt", {"ngram_dropout": 1.0})


@pytest.mark.parametrize("t,w,block", [(37, 8, None), (64, 16, None), (5, 8, None), (17, 16, None),
                                       (37, 8, 3), (64, 16, 4), (50, 12, 5), (9, 8, 2), (300, 256, None)])
def test_window_attention_matches_dense_mask(t, w, block):
    """Exact for any block size, including blocks that do not divide the window or the sequence
    and windows split into several blocks (300, 256: the default makes two blocks of 128)."""
    q, k, v = (torch.randn(2, 3, t, 8) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t, t, "cpu", window=w))
    torch.testing.assert_close(window_attention(q, k, v, w, block), ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- the model


def test_forward_shapes_loss_and_every_weight_learns():
    m = make("static").train()
    ids = text_ids(2, 33)
    out = m(ids[:, :-1], ids[:, 1:])
    assert out.logits.shape == (2, 32, m.cfg.vocab_size)
    assert torch.isfinite(out.loss) and abs(out.loss.item() - torch.log(torch.tensor(263.0)).item()) < 0.5
    out.loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_no_information_from_the_future(model):
    ids = text_ids(3, 40)
    base = model(ids).logits
    for t in (1, 6, 17, 31):
        for new in (ord(" "), BOS, (int(ids[0, t]) + 1) % N_BYTES):
            changed = ids.clone()
            changed[:, t] = new
            logits = model(changed).logits
            torch.testing.assert_close(logits[:, :t], base[:, :t], atol=1e-5, rtol=0)
    assert not torch.allclose(model(changed).logits[:, t:], base[:, t:])  # the future does matter


def test_rows_patch_differently_and_step_matches_forward(model):
    ids = text_ids(3, 40)
    entropies = None
    if model.cfg.patcher.kind == "entropy":
        from omnibyte.patching.entropy import compute_entropies

        entropies = compute_entropies(model.entropy_model, ids)
    starts = patch_starts(ids, model.cfg.patcher, entropies)
    assert not torch.equal(starts[0], starts[1]) and not torch.equal(starts[1], starts[2])
    full = model(ids).logits
    for chunks in ([5] + [1] * 35, [1] * 40, [11, 1, 20, 8]):
        state = model.init_state(3, 48)
        pieces, t = [], 0
        for c in chunks:
            pieces.append(model.step(state, ids[:, t:t + c]))
            t += c
        torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-4)


def greedy_full_rerun(model, prompt: list[int], n: int) -> list[int]:
    seq, out = list(prompt), []
    allowed = torch.zeros(model.cfg.vocab_size, dtype=torch.bool)
    allowed[:N_BYTES] = True
    allowed[EOS] = True
    for _ in range(n):
        logits = model(torch.tensor([seq])).logits[0, -1].masked_fill(~allowed, float("-inf"))
        tok = int(logits.argmax())
        out.append(tok)
        seq.append(tok)
        if tok == EOS:
            break
    return out


PROMPTS = [[BOS, *b"in the beginning god"], [BOS, *b"and the earth"], [BOS, *b"a"]]


def test_greedy_generate_equals_full_rerun(model):
    got = generate(model, PROMPTS, SamplingConfig(max_new=14, temperature=0))
    for prompt, new in zip(PROMPTS, got):
        assert new == greedy_full_rerun(model, prompt, 14)


def test_batched_generation_equals_alone(model):
    cfg = SamplingConfig(max_new=12, temperature=1.0, top_k=20, seed=3)
    batched = generate(model, PROMPTS, cfg)
    assert [generate(model, [p], cfg)[0] for p in PROMPTS] == batched


# --------------------------------------------------------------------------- checkpoints, entropy model


def test_save_load_same_logits(tmp_path):
    m = make("space")
    ids = text_ids(2, 30)
    m.save_pretrained(tmp_path / "blt")
    loaded = OmniModel.from_pretrained(tmp_path / "blt")
    assert isinstance(loaded, BLT) and loaded.cfg == m.cfg
    torch.testing.assert_close(loaded(ids).logits, m(ids).logits, atol=0, rtol=0)


def test_entropy_checkpoint_is_self_contained(tmp_path, entropy_dir):
    src = tmp_path / "entropy-run"
    shutil.copytree(entropy_dir, src)
    m = make("entropy", src)
    from omnibyte.patching.entropy import stored_threshold

    assert m.cfg.patcher.threshold == stored_threshold(src) and m.cfg.bytes_per_patch == 3.0
    assert m.cfg.entropy_model_config["arch"] == "transformer"
    ids = text_ids(2, 30)
    m.save_pretrained(tmp_path / "blt")
    shutil.rmtree(src)  # the entropy model's own directory is gone
    loaded = OmniModel.from_pretrained(tmp_path / "blt")
    torch.testing.assert_close(loaded(ids).logits, m(ids).logits, atol=0, rtol=0)
    assert not any(p.requires_grad for p in loaded.entropy_model.parameters())


def test_entropy_model_is_frozen(entropy_dir):
    m = make("entropy", entropy_dir)
    m.train()
    assert not m.entropy_model.training and m.training
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert all(id(p) not in trainable for p in m.entropy_model.parameters())
    ids = text_ids(2, 25)
    m(ids[:, :-1], ids[:, 1:]).loss.backward()
    assert all(p.grad is None for p in m.entropy_model.parameters())


def test_entropy_model_passed_directly_and_missing_threshold(entropy_dir):
    em = OmniModel.from_pretrained(entropy_dir)
    cfg = tiny_config("entropy")
    with pytest.raises(OmnibyteError, match="threshold"):
        BLT(cfg, entropy_model=em)
    cfg.patcher.threshold = 4.0
    m = BLT(cfg, entropy_model=em)
    assert m.cfg.entropy_model_config == em.config_dict()
    with pytest.raises(OmnibyteError, match="entropy"):
        BLT(tiny_config("entropy"))  # names no entropy model at all


def test_precomputed_entropies_match_the_models_own(entropy_dir):
    from omnibyte.patching.entropy import compute_entropies

    m = make("entropy", entropy_dir)
    ids = text_ids(2, 30)
    ent = compute_entropies(m.entropy_model, ids)
    torch.testing.assert_close(m(ids, entropies=ent).logits, m(ids).logits)
    other = m(ids, entropies=torch.zeros_like(ent)).logits  # nothing above threshold: other patches
    assert not torch.allclose(other, m(ids).logits)
    with pytest.raises(OmnibyteError, match="entropies"):
        m(ids, entropies=ent[:, :-1])


def test_prepare_data_asks_for_entropies_only_when_needed(tmp_path, entropy_dir):
    from helpers import write_text_dataset

    from omnibyte.data import BatchLoader, ShardDataset

    ds = ShardDataset(write_text_dataset(tmp_path, n_docs=6, lines=3))
    assert make("static").prepare_data(ds) == {}
    m = make("entropy", entropy_dir)
    extras = m.prepare_data(ds)
    assert list(extras) == ["entropies"] and ds.has_aux("train", extras["entropies"])
    batch = BatchLoader(ds, "train", 2, 24, seed=0, aux=tuple(extras.values())).get_batch(0)
    kwargs = {k: batch[v][:, :-1] for k, v in extras.items()}
    out = m(batch["ids"][:, :-1], batch["ids"][:, 1:], **kwargs)
    assert torch.isfinite(out.loss)


# --------------------------------------------------------------------------- cost, config, learning


def test_flops_formula_matches_measured_and_falls_with_patch_size():
    from omnibyte.eval.flops import measure_flops_per_byte

    m = make("static")
    measured = measure_flops_per_byte(m, 48)
    f = m.flops_per_byte(48)
    for k in ("infer", "train"):
        assert f[k] == pytest.approx(measured[k].total, rel=0.02)
    big = make("static")
    big.cfg.patcher.patch_size = 8
    assert big.flops_per_byte(48)["train"] < f["train"]


def test_config_round_trip_and_bad_configs():
    from omnibyte.config import from_dict, to_dict

    cfg = tiny_config("space", cross_attn_k=3)
    assert from_dict(BLTConfig, to_dict(cfg)) == cfg
    with pytest.raises(OmnibyteError, match="heads"):
        build_model("blt", {"dim_local": 30, "encoder": {"n_heads": 4}})
    with pytest.raises(OmnibyteError, match="unknown config key 'model.latent.dim'"):
        build_model("blt", {"latent": {"dim": 64}})
    with pytest.raises(OmnibyteError, match="ngram"):
        build_model("blt", {"ngram_sizes": [1, 3]})


def test_configs_resolve():
    from omnibyte.train import load_run_config

    tiny = load_run_config(REPO / "configs" / "blt-tiny.toml")
    assert tiny.arch == "blt" and tiny.model.patcher.kind == "static"
    BLT(tiny.model)  # builds without any entropy model
    small = load_run_config(REPO / "configs" / "blt-small.toml")
    assert small.model.patcher.kind == "entropy" and small.model.patcher.entropy_model
    for name in ("multimodal-tiny.toml", "multimodal.toml"):  # the demo's BLTs: conv features, image encoder
        mm = load_run_config(REPO / "configs" / name)
        blt = BLT(mm.model)
        assert blt.media_conv is not None and blt.image_encoder is not None


def test_overfits_one_batch():
    m = make("static").train()
    ids = torch.tensor([[BOS, *b"the cat sat on the mat and the dog ran to the door"[:47]]] * 2)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(80):
        loss = m(ids[:, :-1], ids[:, 1:]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3


def test_empty_local_stacks_train_decode_and_count(entropy_dir):
    """encoder/decoder n_layers = 0: the hash n-grams and cross-attentions alone; cached decoding
    still equals a full forward, and the FLOPs formula still matches a count."""
    from omnibyte.eval.flops import measure_flops_per_byte

    for enc, dec in ((0, 2), (1, 0), (0, 0)):
        m = make("space", encoder=LocalConfig(enc, 2, window=8), decoder=LocalConfig(dec, 2, window=8))
        assert len(m.encoder.layers) == enc and len(m.decoder.layers) == dec
        ids = text_ids(2, 30)
        full = m(ids).logits
        state = m.init_state(2, 32)
        pieces = [m.step(state, ids[:, :7])] + [m.step(state, ids[:, t:t + 1]) for t in range(7, 30)]
        torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-4)
        static = make("static", encoder=LocalConfig(enc, 2, window=8), decoder=LocalConfig(dec, 2, window=8))
        assert static.flops_per_byte(30)["train"] == pytest.approx(
            measure_flops_per_byte(static, 30)["train"].total, rel=0.02)
        m.train()
        m(ids[:, :-1], ids[:, 1:]).loss.backward()
        assert m.embed.ngrams[0].weight.grad.abs().sum() > 0 and m.pool_init.weight.grad.abs().sum() > 0
    with pytest.raises(OmnibyteError, match="latent.n_layers"):
        build_model("blt", {"latent": {"n_layers": 0}})


def media_rows(n_rows: int = 2, length: int = 90) -> torch.Tensor:
    """Windows of documents holding text, a 6×4 gray image and a 20-sample clip; rows start at
    different places (the second inside the first image)."""
    from omnibyte.format import AUDIO_MULAW8, AudioSegment, Document, ImageSegment, TextSegment, encode

    g = torch.Generator().manual_seed(4)
    doc = []
    for _ in range(3):
        pix, smp = (bytes(torch.randint(0, 256, (n,), generator=g).tolist()) for n in (24, 20))
        doc += encode(Document([TextSegment(b"the cat "), ImageSegment(6, 4, 1, pix),
                                AudioSegment(8000, 20, AUDIO_MULAW8, smp), TextSegment(b" sat")]))
    return torch.tensor([doc[13 * r:13 * r + length] for r in range(n_rows)])


@pytest.mark.parametrize("kind", ["static", "entropy"])
def test_media_patches_and_projection(kind, entropy_dir):
    """Row/frame patches with media_proj: the projection learns, nothing leaks from the future,
    cached decoding equals the full forward, and it costs 2·dim_global FLOPs per byte."""
    m = make(kind, entropy_dir, media_proj=12)
    m.cfg.patcher.image_rows, m.cfg.patcher.audio_frame = 1, 8
    ids = media_rows()
    assert patch_starts(ids, PatcherConfig("static", patch_size=3, image_rows=1, audio_frame=8)).sum() < \
        patch_starts(ids, PatcherConfig("static", patch_size=3)).sum()
    m.train()
    m(ids[:, :-1], ids[:, 1:]).loss.backward()
    assert m.media_proj.weight.grad.abs().sum() > 0
    m.eval()
    base = m(ids).logits
    for t in (3, 20, 27, 40, 61):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 7) % N_BYTES
        torch.testing.assert_close(m(changed).logits[:, :t], base[:, :t], atol=1e-5, rtol=0)
    # the projection matters: zeroing it changes the logits after the first image's rows
    with torch.no_grad():
        saved = m.media_proj.weight.clone()
        m.media_proj.weight.zero_()
        assert not torch.allclose(m(ids).logits, base)
        m.media_proj.weight.copy_(saved)
    state = m.init_state(2, 96)
    pieces = [m.step(state, ids[:, :9])] + [m.step(state, ids[:, t:t + 1]) for t in range(9, 90)]
    torch.testing.assert_close(torch.cat(pieces, 1), base, atol=1e-5, rtol=1e-4)
    plain = make(kind, entropy_dir)
    assert m.flops_per_byte(90)["train"] == pytest.approx(plain.flops_per_byte(90)["train"] + 3 * 2 * 32)
    with pytest.raises(ValueError, match="media_proj"):
        BLTConfig(media_proj=-1)


@pytest.mark.parametrize("kind,pos", [("static", 0), ("entropy", 0), ("static", 3)])
def test_media_conv_features(kind, pos, entropy_dir):
    """media_conv (and its position features): the convolution learns, nothing leaks from the
    future, cached decoding equals the full forward (the features of new bytes read the block so
    far), and it is counted in FLOPs."""
    m = make(kind, entropy_dir, media_conv=4, media_conv_kernel=3, media_pos=pos)
    ids = media_rows()
    m.train()
    m(ids[:, :-1], ids[:, 1:]).loss.backward()
    assert m.media_conv.out.weight.grad.abs().sum() > 0  # (zero at first, so only it has a gradient)
    with torch.no_grad():
        torch.nn.init.normal_(m.media_conv.out.weight)
    m.eval()
    base = m(ids).logits
    plain = make(kind, entropy_dir)
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("media_conv.")})
    assert not torch.allclose(plain(ids).logits, base)  # the features change the logits
    for t in (3, 20, 27, 40, 61):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 7) % N_BYTES
        torch.testing.assert_close(m(changed).logits[:, :t], base[:, :t], atol=1e-5, rtol=0)
    # chunks of every size: a prompt holding whole images and clips, then one id at a time
    for first in (9, 40, 61):
        state = m.init_state(2, 96)
        pieces = [m.step(state, ids[:, :first])] + [m.step(state, ids[:, t:t + 1]) for t in range(first, 80)]
        pieces.append(m.step(state, ids[:, 80:]))
        torch.testing.assert_close(torch.cat(pieces, 1), base, atol=1e-5, rtol=1e-4)
    assert m.flops_per_byte(90)["train"] > plain.flops_per_byte(90)["train"]
    for bad in ({"media_conv": -1}, {"media_conv_kernel": 4}, {"media_pos": 2}, {"media_pos": -1, "media_conv": 4}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BLTConfig(**bad)


@pytest.mark.parametrize("kind", ["static", "entropy"])
def test_image_encoder_summaries(kind, entropy_dir):
    """image_encoder: the CNN learns, its summary reaches only the bytes from a complete image's EOI
    on, cached decoding equals the full forward (whether the EOI comes inside a prompt chunk or as
    one id), and it is counted in FLOPs."""
    from omnibyte.format import EOI

    m = make(kind, entropy_dir, image_encoder=4)
    ids = media_rows()
    m.train()
    m(ids[:, :-1], ids[:, 1:]).loss.backward()
    assert m.image_encoder.out.weight.grad.abs().sum() > 0
    assert m.image_encoder.body[0].weight.grad.abs().sum() > 0  # the CNN's first layer learns too
    m.eval()
    base = m(ids).logits
    plain = make(kind, entropy_dir)
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("image_encoder.")})
    without = plain(ids).logits
    # row 0 holds one whole image; row 1 starts inside its image (no header in view: not summarised)
    eoi = int((ids[0] == EOI).nonzero()[0])
    torch.testing.assert_close(base[0, :eoi], without[0, :eoi], atol=1e-5, rtol=0)
    assert not torch.allclose(base[0, eoi], without[0, eoi])  # from the EOI on (its logits: the next id)
    assert (ids[1] == EOI).any()
    torch.testing.assert_close(base[1], without[1], atol=1e-5, rtol=0)
    for t in (3, 20, 27, 40, 61):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 7) % N_BYTES
        torch.testing.assert_close(m(changed).logits[:, :t], base[:, :t], atol=1e-5, rtol=0)
    for first in (9, 40, 49, 61):
        state = m.init_state(2, 96)
        pieces = [m.step(state, ids[:, :first])] + [m.step(state, ids[:, t:t + 1]) for t in range(first, 80)]
        pieces.append(m.step(state, ids[:, 80:]))
        torch.testing.assert_close(torch.cat(pieces, 1), base, atol=1e-5, rtol=1e-4)
    assert m.flops_per_byte(90)["train"] > plain.flops_per_byte(90)["train"]
    for bad in ({"image_encoder": -1}, {"image_encoder": 4, "image_encoder_gain": 0.0}):
        with pytest.raises(ValueError, match="image_encoder"):
            BLTConfig(**bad)
