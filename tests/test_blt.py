"""BLT beyond the model contract (tests/test_model_contract.py): hash n-grams, windowed attention,
patchers that differ per row, the built patcher (entropy model, threshold, bytes per patch) and
its frozen entropy model, precomputed entropies, table parameter groups, empty local stacks,
checkpoints of the earlier layout, configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import text_ids

from omnibyte.errors import OmnibyteError
from omnibyte.models import OmniModel, build_model
from omnibyte.models.blt import BLT, BLTConfig
from omnibyte.models.registry import build_patcher
from omnibyte.nn import StackConfig, causal_mask
from omnibyte.nn.hash_ngram import MODULUS, NgramConfig, hash_ngram_ids
from omnibyte.nn.window_attention import window_attention
from omnibyte.patching import Patcher, PatcherConfig, compute_entropies

REPO = Path(__file__).resolve().parent.parent


def tiny_config(kind: str = "static", **kw) -> BLTConfig:
    kw = {"encoder": StackConfig(16, 1, 2, window=8), "decoder": StackConfig(16, 2, 2, window=8),
          "latent": StackConfig(32, 2, 2), "ngrams": NgramConfig(sizes=(3, 5, 8), buckets=97), **kw}
    return BLTConfig(patcher=PatcherConfig(kind=kind, patch_size=3), **kw)


def make(kind: str, entropy_dir: Path | None = None, seed: int = 0, **kw) -> BLT:
    torch.manual_seed(seed)
    cfg = tiny_config(kind, **kw)
    if kind == "entropy":
        cfg.patcher.entropy_model = str(entropy_dir)
    return build_model("blt", cfg).eval()


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
    with pytest.raises(OmnibyteError, match="ngrams.dropout"):
        build_model("blt", {"ngrams": {"dropout": 1.0}})


@pytest.mark.parametrize("t,w,block", [(37, 8, None), (64, 16, None), (5, 8, None), (17, 16, None),
                                       (37, 8, 3), (64, 16, 4), (50, 12, 5), (9, 8, 2), (300, 256, None)])
def test_window_attention_matches_dense_mask(t, w, block):
    """Exact for any block size, including blocks that do not divide the window or the sequence
    and windows split into several blocks (300, 256: the default makes two blocks of 128)."""
    q, k, v = (torch.randn(2, 3, t, 8) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t, t, "cpu", window=w))
    torch.testing.assert_close(window_attention(q, k, v, w, block), ref, atol=1e-5, rtol=1e-5)


def test_rows_patch_differently(entropy_dir):
    """Every patcher patches each row by its own content (the contract tests then check that
    decoding follows each row's own patches)."""
    ids = text_ids(3, 40)
    for kind in ("static", "space", "entropy"):
        starts = make(kind, entropy_dir).patcher(ids)
        assert not torch.equal(starts[0], starts[1]) and not torch.equal(starts[1], starts[2]), kind


# --------------------------------------------------------------------------- the built patcher


def test_builder_takes_threshold_and_patch_size_from_the_calibration(entropy_dir):
    m = make("entropy", entropy_dir)
    entry = json.loads((entropy_dir / "patching.json").read_text())["global"]
    assert m.cfg.patcher.threshold == entry["threshold"] and m.cfg.patcher.bytes_per_patch == 3.0
    assert m.cfg.patcher.entropy_model_config["arch"] == "transformer"
    assert m.patcher.cfg == m.cfg.patcher
    # a threshold in the config wins, and then the calibration's patch size is not taken
    cfg = tiny_config("entropy")
    cfg.patcher.entropy_model, cfg.patcher.threshold = str(entropy_dir), 4.0
    own = build_model("blt", cfg)
    assert own.cfg.patcher.threshold == 4.0 and own.cfg.patcher.bytes_per_patch == 0
    assert cfg.patcher.entropy_model_config == {}  # the builder never writes into the config it is given


def test_builder_errors_and_calibration_for_other_weights(entropy_dir, tmp_path):
    with pytest.raises(OmnibyteError, match="relative"):  # calibrated for the global mode only
        build_patcher(PatcherConfig("entropy", entropy_model=str(entropy_dir), relative=True))
    with pytest.raises(OmnibyteError, match="patcher.entropy_model"):
        build_patcher(PatcherConfig("entropy"))
    with pytest.raises(OmnibyteError, match="patcher.entropy_model: no such model"):
        build_patcher(PatcherConfig("entropy", entropy_model=str(tmp_path / "missing")))
    with pytest.raises(OmnibyteError, match="build_model"):
        BLT(tiny_config("entropy"))  # a BLT is given its patcher, it does not load one
    # weights changed since the calibration: the stored threshold no longer applies
    moved = tmp_path / "entropy"
    shutil.copytree(entropy_dir, moved)
    em = OmniModel.from_pretrained(moved)
    with torch.no_grad():
        em.head.weight.mul_(2)
    em.save_pretrained(moved)
    shutil.copy(entropy_dir / "patching.json", moved / "patching.json")
    with pytest.raises(OmnibyteError, match="threshold"):
        build_patcher(PatcherConfig("entropy", entropy_model=str(moved)))
    # an entropy model object given directly, with the threshold in the config
    p = build_patcher(PatcherConfig("entropy", threshold=2.5), entropy_model=em)
    assert isinstance(p, Patcher) and p.cfg.threshold == 2.5 and p.cfg.entropy_model_config == em.config_dict()


def test_entropy_model_is_frozen(entropy_dir):
    m = make("entropy", entropy_dir)
    m.train()
    em = m.patcher.entropy_model
    assert not em.training and m.training
    assert not any(p.requires_grad for p in em.parameters())
    ids = text_ids(2, 25)
    m(ids[:, :-1], ids[:, 1:]).loss.backward()
    assert all(p.grad is None for p in em.parameters())
    trained = {id(p) for g in m.param_groups(0.1) for p in g["params"]}
    assert not any(id(p) in trained for p in em.parameters())


def test_precomputed_entropies_match_the_models_own(entropy_dir):
    m = make("entropy", entropy_dir)
    ids = text_ids(2, 30)
    ent = compute_entropies(m.patcher.entropy_model, ids)
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


# --------------------------------------------------------------------------- training knobs, cost, config


def test_table_group_carries_the_ngram_settings():
    m = make("static", ngrams=NgramConfig(sizes=(3, 5), buckets=97, lr_scale=2.0, weight_decay=1.0, sparse=False))
    *rest, tables = m.param_groups(0.1)
    assert tables["lr_scale"] == 2.0 and tables["weight_decay"] == 1.0 and tables["sparse_tables"] == []
    assert [id(p) for p in tables["params"]] == [id(t.weight) for t in m.embed.ngrams]
    default = make("static").param_groups(0.1)[-1]
    assert default["weight_decay"] == 0.1 and default["lr_scale"] == 1.0 and len(default["sparse_tables"]) == 3


def test_flops_fall_with_patch_size():
    f4 = build_model("blt", {"patcher": {"kind": "static", "patch_size": 4}}).flops_per_byte(256)
    f8 = build_model("blt", {"patcher": {"kind": "static", "patch_size": 8}}).flops_per_byte(256)
    assert f8["train"] < f4["train"]
    paced = build_model("blt", {"patcher": {"kind": "space", "bytes_per_patch": 8.0}}).flops_per_byte(256)
    assert paced["train"] == pytest.approx(f8["train"])


def test_empty_local_stacks_train_and_decode():
    """encoder/decoder n_layers = 0: the hash n-grams and cross-attentions alone."""
    for enc, dec in ((0, 2), (1, 0), (0, 0)):
        m = make("space", encoder=StackConfig(16, enc, 2, window=8), decoder=StackConfig(16, dec, 2, window=8))
        assert len(m.encoder.layers) == enc and len(m.decoder.layers) == dec
        ids = text_ids(2, 30)
        full = m(ids).logits
        state = m.init_state(2, 32)
        pieces = [m.step(state, ids[:, :7])] + [m.step(state, ids[:, t:t + 1]) for t in range(7, 30)]
        torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-4)
        m.train()
        m(ids[:, :-1], ids[:, 1:]).loss.backward()
        assert m.embed.ngrams[0].weight.grad.abs().sum() > 0 and m.pool_init.weight.grad.abs().sum() > 0
    with pytest.raises(OmnibyteError, match="latent.n_layers"):
        build_model("blt", {"latent": {"n_layers": 0}})


def test_config_round_trip_and_bad_configs():
    from omnibyte.config import from_dict, to_dict

    cfg = tiny_config("space", cross_attn_k=3)
    assert from_dict(BLTConfig, to_dict(cfg)) == cfg
    with pytest.raises(OmnibyteError, match="heads"):
        build_model("blt", {"encoder": {"dim": 30, "n_heads": 4}, "decoder": {"dim": 30}})
    with pytest.raises(OmnibyteError, match="decoder.dim 48 must equal encoder.dim 32"):
        build_model("blt", {"decoder": {"dim": 48}})
    with pytest.raises(OmnibyteError, match="latent.window"):
        build_model("blt", {"latent": {"window": 8}})
    with pytest.raises(OmnibyteError, match="unknown config key 'model.dim_local'"):
        build_model("blt", {"dim_local": 64})
    with pytest.raises(OmnibyteError, match="ngrams.sizes"):
        build_model("blt", {"ngrams": {"sizes": [1, 3]}})


def test_configs_resolve():
    from omnibyte.train import load_run_config

    tiny = load_run_config(REPO / "configs" / "blt-tiny.toml")
    assert tiny.arch == "blt" and tiny.model.patcher.kind == "static"
    build_model("blt", tiny.model)  # builds without any entropy model
    small = load_run_config(REPO / "configs" / "blt-small.toml")
    assert small.model.patcher.kind == "entropy" and small.model.patcher.entropy_model
    mm = load_run_config(REPO / "configs" / "multimodal-tiny.toml")  # the demo: conv features, image encoder
    assert set(build_model("blt", mm.model).adapters) == {"media_conv", "image_encoder"}
    for name in ("multimodal-cpu.toml", "multimodal.toml"):  # the one model of every task also hears
        mm = load_run_config(REPO / "configs" / name)
        assert set(build_model("blt", mm.model).adapters) == {"media_conv", "image_encoder", "audio_encoder"}


# --------------------------------------------------------------------------- the earlier layout


def old_layout(path: Path) -> None:
    """Rewrite a saved BLT folder as the version before the architecture change saved it: flat
    dim_local/dim_global and n-gram fields, media features and the entropy model beside the
    stacks, the FLOPs patch size on the model."""
    from safetensors.torch import load_file, save_file

    cfg = json.loads((path / "config.json").read_text())
    m = cfg["model"]
    m["dim_local"], m["dim_global"] = m["encoder"].pop("dim"), m["latent"].pop("dim")
    del m["decoder"]["dim"], m["latent"]["window"]
    ng = m.pop("ngrams")
    m.update(ngram_sizes=ng["sizes"], hash_buckets=ng["buckets"], hash_base=ng["base"], ngram_dropout=ng["dropout"])
    adapters = m.pop("adapters")
    m.update(media_conv=(adapters["media_conv"] or {}).get("channels", 0), media_conv_kernel=5, media_pos=0,
             media_proj=0, image_encoder=(adapters["image_encoder"] or {}).get("width", 0), image_encoder_gain=0.3)
    m["bytes_per_patch"] = m["patcher"].pop("bytes_per_patch")
    m["entropy_model_config"] = m["patcher"].pop("entropy_model_config")
    (path / "config.json").write_text(json.dumps(cfg))
    state = load_file(str(path / "model.safetensors"))
    moves = {"adapters.": "", "patcher.entropy_model.": "entropy_model."}
    renamed = {}
    for k, v in state.items():
        for new, old in moves.items():
            if k.startswith(new):
                k = old + k[len(new):]
        renamed[k] = v
    save_file(renamed, str(path / "model.safetensors"))


def test_checkpoint_of_the_earlier_layout_loads_as_the_same_model(tmp_path, entropy_dir):
    ids = text_ids(2, 30)
    for kind, adapters in (("entropy", {}), ("static", {"media_conv": {"channels": 4, "kernel": 5},
                                                         "image_encoder": {"width": 4}})):
        m = build_model("blt", {"encoder": {"dim": 16, "n_heads": 2}, "decoder": {"dim": 16, "n_heads": 2},
                                "latent": {"dim": 32, "n_heads": 2}, "ngrams": {"buckets": 97},
                                "adapters": adapters,
                                "patcher": {"kind": kind, "entropy_model": str(entropy_dir)}})
        m.save_pretrained(tmp_path / kind)
        old_layout(tmp_path / kind)
        loaded = OmniModel.from_pretrained(tmp_path / kind)
        assert loaded.cfg == m.cfg, kind
        torch.testing.assert_close(loaded(ids).logits, m(ids).logits, atol=0, rtol=0)
    cfg = json.loads((tmp_path / "static" / "config.json").read_text())
    cfg["model"]["media_pos"] = 8
    (tmp_path / "static" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(OmnibyteError, match="media_pos, which omnibyte no longer has"):
        OmniModel.from_pretrained(tmp_path / "static")
