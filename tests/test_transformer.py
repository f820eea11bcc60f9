"""The byte transformer beyond the model contract (tests/test_model_contract.py): a token vocabulary,
its sliding window's receptive field, the decoding loop's sampling and masks, saving, and the loss /
bits-per-byte sums every model is trained and scored with."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model

from omnibyte.errors import OmnibyteError
from omnibyte.format import BOI, BOS, EOS, N_BYTES, PAD, VOCAB_SIZE
from omnibyte.generate import Constraint, SamplingConfig, filter_logits, generate
from omnibyte.models import OmniModel, build_model
from omnibyte.models.transformer import Transformer, TransformerConfig
from omnibyte.nn import lm_loss, mean_keys, nll_sums, stack_flops

ATOL = 1e-5


def rand_ids(b: int, t: int, seed: int = 1, high: int = N_BYTES) -> torch.Tensor:
    return torch.randint(0, high, (b, t), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- shapes


def test_token_vocab_size():
    m = tiny_model(vocab_size=50)
    assert m(rand_ids(2, 5, high=50)).logits.shape == (2, 5, 50)


# ----------------------------------------------------------------------------- causality


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("window", [0, 4])
def test_causality(window, shift):
    """Changing id t changes no logit before t (and, with a window, none beyond the receptive
    field t + n_layers · (window - 1), plus one position per token-shifted sublayer), but does
    change the logit at t."""
    m = tiny_model(window=window, token_shift=shift)
    n_layers = m.cfg.n_layers
    ids = rand_ids(2, 24)
    with torch.no_grad():
        base = m(ids).logits
        for t in (0, 5, 11, 23):
            changed = ids.clone()
            changed[:, t] = (changed[:, t] + 1 + torch.arange(2)) % N_BYTES
            logits = m(changed).logits
            assert torch.allclose(logits[:, :t], base[:, :t], atol=ATOL), t
            assert not torch.allclose(logits[:, t], base[:, t], atol=1e-3), t
            if window:
                reach = t + n_layers * (window - 1 + (2 if shift else 0))
                assert torch.allclose(logits[:, reach + 1:], base[:, reach + 1:], atol=ATOL), t
                if reach < ids.shape[1]:
                    # the edge of the field is reached through one narrow path: tiny, but there
                    assert (logits[:, reach] - base[:, reach]).abs().max() > 1e-8, t


def test_window_wider_than_sequence_is_full_attention():
    full, wide = tiny_model(window=0), tiny_model(window=64)
    ids = rand_ids(2, 20)
    with torch.no_grad():
        assert torch.allclose(full(ids).logits, wide(ids).logits, atol=ATOL)


# ----------------------------------------------------------------------------- KV cache


def test_cache_overflow_is_an_error():
    m = tiny_model()
    state = m.init_state(1, 4)
    with torch.no_grad():
        m.step(state, rand_ids(1, 4))
        with pytest.raises(RuntimeError, match="cache full"):
            m.step(state, rand_ids(1, 1))


# ----------------------------------------------------------------------------- generation


def test_generate_masks_specials():
    # A head that much prefers PAD and BOS, then BOI: the default rule never emits PAD or BOS, and
    # the TextOnly constraint (the default) keeps to bytes and EOS.
    m = tiny_model(seed=4)
    bonus = torch.zeros(VOCAB_SIZE)
    bonus[[PAD, BOS]], bonus[BOI] = 200.0, 100.0
    m.head.register_forward_hook(lambda mod, inp, out: out + bonus)
    for temperature in (0.0, 1.0):
        cfg = SamplingConfig(max_new=30, temperature=temperature, seed=0)
        got = generate(m, [[BOS, 65]], cfg)[0]
        assert len(got) > 1 and all(t < N_BYTES or t == EOS for t in got)
        assert generate(m, [[BOS, 65]], cfg, constraints=[Constraint()])[0][0] == BOI


PROMPTS = [[BOS, *b"a"], [BOS, *b"the red door"], [BOS], [BOS, *b"dog ran"]]


def sharp_model(seed: int = 5, **cfg):
    """A random model with 10x logits, so what it samples depends on the context, not only on the
    random stream: rows with different prompts then generate different bytes."""
    m = tiny_model(seed=seed, **cfg)
    with torch.no_grad():
        m.head.weight.mul_(10)
    return m


@pytest.mark.parametrize("sampling", [
    SamplingConfig(max_new=16, temperature=0),
    SamplingConfig(max_new=16, temperature=1.0, seed=7),
    SamplingConfig(max_new=16, temperature=0.8, top_k=20, top_p=0.9, seed=123),
])
def test_batched_generate_equals_each_alone(sampling):
    m = sharp_model()
    batched = generate(m, PROMPTS, sampling)
    alone = [generate(m, [p], sampling)[0] for p in PROMPTS]
    assert batched == alone
    assert len({tuple(r) for r in batched}) == len(PROMPTS)  # rows differ: a mix-up would show
    assert all(len(r) == 16 or r[-1] == EOS for r in batched)


def test_seeded_sampling_is_reproducible_and_seed_matters():
    m = tiny_model(seed=5)
    cfg = SamplingConfig(max_new=32, temperature=1.0, seed=1, stop_at_eos=False)
    a, b = generate(m, [[BOS]], cfg)[0], generate(m, [[BOS]], cfg)[0]
    other = generate(m, [[BOS]], SamplingConfig(max_new=32, temperature=1.0, seed=2, stop_at_eos=False))[0]
    assert a == b and a != other and len(a) == 32


def test_generate_streams_every_token():
    m = tiny_model(seed=6)
    seen = []
    out = generate(m, PROMPTS[:2], SamplingConfig(max_new=10, temperature=1.0, seed=0),
                   on_token=lambda r, t: seen.append((r, t)))
    for r in range(2):
        assert [t for rr, t in seen if rr == r] == out[r]


def test_generate_bad_inputs():
    m = tiny_model()
    with pytest.raises(OmnibyteError, match="prompt"):
        generate(m, [[BOS], []])
    with pytest.raises(OmnibyteError, match="top-p"):
        SamplingConfig(top_p=0)
    with pytest.raises(OmnibyteError, match="temperature"):
        SamplingConfig(temperature=-1)
    assert generate(m, [[BOS]], SamplingConfig(max_new=0)) == [[]]


# ----------------------------------------------------------------------------- save / load


def test_save_pretrained_writes_one_folder_whole(tmp_path):
    m = tiny_model(seed=8, window=6, z_loss=1e-4)
    m.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    loaded = OmniModel.from_pretrained(tmp_path / "model")
    assert isinstance(loaded, Transformer) and loaded.cfg == m.cfg and not loaded.training
    # saving again over it replaces it whole and leaves no temporary folders behind
    m.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(OmnibyteError, match="no such model"):
        OmniModel.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OmnibyteError, match="holds no model"):
        OmniModel.from_pretrained(tmp_path / "empty")
    tiny_model().save_pretrained(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    cfg.write_text(cfg.read_text().replace('"dim": 32', '"dim": 64'))
    with pytest.raises(OmnibyteError, match="do not match") as e:
        OmniModel.from_pretrained(tmp_path / "m")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- training


def test_lm_loss_ignores_pad_but_scores_zero_bytes():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, VOCAB_SIZE)
    targets = torch.tensor([[0, 0, 65, PAD, EOS], [PAD, PAD, 0, 7, PAD]])
    keep = targets != PAD
    want = F.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(lm_loss(logits, targets), want)
    # logits at PAD targets do not matter; logits at 0x00 targets do
    noisy = logits.clone()
    noisy[~keep] += 10 * torch.randn_like(noisy[~keep])
    assert torch.allclose(lm_loss(noisy, targets), want)
    shifted = logits.clone()
    shifted[0, 0, 0] += 3.0
    assert lm_loss(shifted, targets) < want
    # z-loss adds z · mean((log Z)^2) over the scored positions
    z = torch.logsumexp(logits[keep], -1).pow(2).mean()
    assert torch.allclose(lm_loss(logits, targets, z_loss=1e-2), want + 1e-2 * z)


def test_model_loss_is_lm_loss():
    m = tiny_model()
    ids, targets = rand_ids(2, 9), rand_ids(2, 9, seed=4)
    targets[0, :3] = PAD
    out = m(ids, targets)
    assert torch.allclose(out.loss, lm_loss(out.logits, targets))


def test_nll_sums_uniform_logits():
    targets = torch.tensor([[65, 0, EOS, PAD, PAD], [BOS, 255, 259, 66, PAD]])
    bits, n_bytes = nll_sums(torch.zeros(2, 5, VOCAB_SIZE), targets)
    assert n_bytes == 4  # 65, 0, 255, 66: specials are not bytes
    assert bits == pytest.approx(7 * math.log2(VOCAB_SIZE), rel=1e-6)  # every non-PAD target pays


def test_nll_sums_confident_model():
    logits = torch.full((1, 3, VOCAB_SIZE), -1e4)
    targets = torch.tensor([[5, 6, EOS]])
    logits[0, torch.arange(3), targets[0]] = 0.0
    bits, n_bytes = nll_sums(logits, targets)
    assert bits == pytest.approx(0.0, abs=1e-6) and n_bytes == 2
    logits[0, 1, 7] = 0.0  # position 1 now splits its mass between two ids: 1 bit
    bits, _ = nll_sums(logits, targets)
    assert bits == pytest.approx(1.0, rel=1e-5)


# ----------------------------------------------------------------------------- sampling filters


def test_filter_logits_top_k():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0, 2.5])
    got = filter_logits(logits, top_k=2)
    assert torch.isinf(got).tolist() == [True, False, True, True, False]
    assert torch.equal(filter_logits(logits, top_k=0), logits)
    assert torch.equal(filter_logits(logits, top_k=10), logits)


def test_filter_logits_top_p():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()
    kept = lambda p: (~torch.isinf(filter_logits(logits, top_p=p))).tolist()  # noqa: E731
    assert kept(0.45) == [False, True, False, False]
    assert kept(0.6) == [False, True, False, True]
    assert kept(0.9) == [False, True, True, True]
    assert kept(0.01) == [False, True, False, False]  # the most likely id always stays
    assert kept(1.0) == [True, True, True, True]
    # both: top-k first, then the nucleus of what remains (renormalised: 0.5/0.95 + 0.3/0.95 > 0.82)
    assert kept(0.82) == [False, True, True, True]
    both = filter_logits(logits, top_k=3, top_p=0.82)
    assert (~torch.isinf(both)).tolist() == [False, True, False, True]
    assert torch.equal(both[~torch.isinf(both)], logits[[1, 3]])


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("fields, words", [
    ({"dim": 30, "n_heads": 4}, "heads"),
    ({"dim": 12, "n_heads": 4}, "even"),
    ({"n_layers": 0}, "n_layers"),
    ({"window": -1}, "window"),
])
def test_config_validation(fields, words):
    with pytest.raises(ValueError, match=words):
        TransformerConfig(**fields)
    with pytest.raises(OmnibyteError, match=words) as e:
        build_model("transformer", fields)
    assert "\n" not in str(e.value)


def test_config_unknown_key_and_type():
    with pytest.raises(OmnibyteError, match="unknown config key 'model.dimm'"):
        build_model("transformer", {"dimm": 32})
    with pytest.raises(OmnibyteError, match="'model.dim' must be an integer"):
        build_model("transformer", {"dim": "big"})
    with pytest.raises(OmnibyteError, match="unknown model arch 'nope'"):
        build_model("nope", {})


def test_flops_per_byte():
    cfg = TransformerConfig(dim=32, n_layers=2, n_heads=4)
    f = Transformer(cfg).flops_per_byte(64)
    assert f["train"] == pytest.approx(3 * f["infer"])
    # attention grows with the context; a window caps it
    assert stack_flops(cfg.stack, cfg.mlp_ratio, 256) > stack_flops(cfg.stack, cfg.mlp_ratio, 64)
    assert f["infer"] == stack_flops(cfg.stack, cfg.mlp_ratio, 64) + 2 * 32 * VOCAB_SIZE
    assert mean_keys(8) == 4.5 and mean_keys(8, window=2) == pytest.approx((1 + 2 * 7) / 8)
    assert mean_keys(8, window=8) == mean_keys(8)
