import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from omnibyte.errors import OmnibyteError
from omnibyte.format import EOS, N_BYTES, PAD, VOCAB_SIZE
from omnibyte.generate import SamplingConfig, generate
from omnibyte.models import OmniModel, build_model
from omnibyte.models.megabyte import Megabyte, MegabyteConfig, strided_nll_sums
from omnibyte.models.transformer import mean_keys
from omnibyte.nn import nll_sums


def tiny(patch_size=4, seed=0, **kw) -> Megabyte:
    torch.manual_seed(seed)
    cfg = dict(patch_size=patch_size, global_dim=8 * patch_size, global_heads=2, global_layers=2,
               local_dim=32, local_heads=2, local_layers=2)
    cfg.update(kw)
    return Megabyte(MegabyteConfig(**cfg)).eval()


PAPER = {"patch_proj": False, "carry_byte": False, "token_shift": False}  # the paper's layout
LAYOUTS = pytest.mark.parametrize("layout", [{}, PAPER, {"token_shift": False}, {"carry_byte": False}],
                                  ids=["default", "paper", "no-shift", "no-carry"])


def rand_ids(b, t, seed=1):
    return torch.randint(0, N_BYTES, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("P,T", [(4, 1), (4, 3), (4, 8), (3, 10), (1, 5), (8, 17)])
def test_shapes_and_loss(P, T):
    m = tiny(P)
    ids = rand_ids(2, T + 1)
    out = m(ids[:, :-1], ids[:, 1:])
    assert out.logits.shape == (2, T, VOCAB_SIZE)
    assert out.loss.ndim == 0 and math.isfinite(out.loss.item())
    assert m(ids[:, :-1]).loss is None


def test_registry_and_config_errors():
    m = build_model("megabyte", {"patch_size": 2, "global_dim": 16, "global_heads": 2})
    assert isinstance(m, Megabyte) and m.cfg.patch_size == 2
    with pytest.raises(OmnibyteError, match="multiple of patch_size"):
        build_model("megabyte", {"patch_size": 3, "global_dim": 64})
    with pytest.raises(OmnibyteError, match="local_dim"):
        build_model("megabyte", {"local_dim": 30, "local_heads": 4})
    with pytest.raises(OmnibyteError, match="patch_size"):
        build_model("megabyte", {"patch_size": 0})
    with pytest.raises(OmnibyteError, match="vocab_size"):
        build_model("megabyte", {"vocab_size": 256})
    with pytest.raises(OmnibyteError, match="unknown config key"):
        build_model("megabyte", {"patch_sz": 4})


@LAYOUTS
@pytest.mark.parametrize("P,T", [(4, 11), (3, 10), (1, 6), (5, 12)])
def test_causal(P, T, layout):
    m = tiny(P, **layout)
    ids = rand_ids(1, T)
    base = m(ids).logits
    for t in range(T):
        changed = ids.clone()
        changed[0, t] = (changed[0, t] + 1) % N_BYTES
        out = m(changed).logits
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)
        assert not torch.allclose(out[:, t], base[:, t]), f"logit {t} ignores its own input byte"
    # the first byte reaches the last position (through the global model when P < T)
    changed = ids.clone()
    changed[0, 0] = (changed[0, 0] + 7) % N_BYTES
    assert not torch.allclose(m(changed).logits[:, -1], base[:, -1])


@pytest.mark.parametrize("P", [3, 4])
def test_prefix_invariance_with_internal_padding(P):
    m = tiny(P)
    ids = rand_ids(2, 4 * P + 3)
    full = m(ids).logits
    for T in (1, P - 1, P, P + 1, 2 * P + 2):
        torch.testing.assert_close(m(ids[:, :T]).logits, full[:, :T], rtol=1e-5, atol=1e-5)


def test_zero_bytes_are_scored_and_pad_is_ignored():
    m = tiny(4)
    ids = rand_ids(2, 13)
    targets = rand_ids(2, 13, seed=2)
    targets[:, ::3] = 0  # real 0x00 bytes
    logits = m(ids).logits
    loss = m(ids, targets).loss
    ce = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), targets.reshape(-1))
    torch.testing.assert_close(loss, ce)  # every target, zeros included, counts
    masked = targets.clone()
    masked[:, ::3] = PAD
    loss_pad = m(ids, masked).loss
    keep = masked.reshape(-1) != PAD
    torch.testing.assert_close(loss_pad, F.cross_entropy(logits.reshape(-1, VOCAB_SIZE)[keep],
                                                         masked.reshape(-1)[keep]))
    assert not torch.allclose(loss, loss_pad)
    _, count = nll_sums(logits, targets)
    _, count_pad = nll_sums(logits, masked)
    assert count == targets.numel() and count_pad == int(keep.sum())


def test_zero_input_bytes_differ_from_padding():
    # a 0x00 byte in the input is data: it must not be treated like PAD
    m = tiny(4)
    ids = rand_ids(1, 9)
    zero, pad = ids.clone(), ids.clone()
    zero[0, 5], pad[0, 5] = 0, PAD
    assert not torch.allclose(m(zero).logits[:, 5:], m(pad).logits[:, 5:])


@LAYOUTS
@pytest.mark.parametrize("P,T", [(4, 14), (3, 11), (1, 6), (8, 20)])
def test_incremental_matches_forward(P, T, layout):
    m = tiny(P, **layout)
    ids = rand_ids(2, T)
    with torch.no_grad():
        full = m(ids).logits
        state = m.init_state(2, T)
        one = torch.cat([m.step(state, ids[:, i:i + 1]) for i in range(T)], dim=1)
        torch.testing.assert_close(one, full, rtol=1e-5, atol=1e-5)
        # prefill, then chunks of odd sizes (crossing 0, 1 and several patch boundaries), then singles
        cuts = sorted({c for c in (0, P + 1, P + 2, 3 * P + 1, T - 2, T - 1, T) if 0 <= c <= T})
        state = m.init_state(2, T)
        parts = [m.step(state, ids[:, a:b]) for a, b in zip(cuts, cuts[1:])]
        torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)
        assert state.n == T and state.buf.shape == (2, T % P)


def greedy_rerun(model, prompt, max_new):
    seq = list(prompt)
    allowed = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
    allowed[:N_BYTES] = True
    allowed[EOS] = True  # TextOnly, the default constraint
    for _ in range(max_new):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, -1]
        seq.append(int(logits.masked_fill(~allowed, float("-inf")).argmax()))
    return seq[len(prompt):]


def test_greedy_generate_matches_full_rerun():
    m = tiny(4)
    # a sharper model than init so greedy choices are not ties
    for p in m.parameters():
        p.data.mul_(8) if p.dim() == 2 else None
    prompt = [257] + list(b"In the beg")
    cfg = SamplingConfig(max_new=15, temperature=0, stop_at_eos=False)
    assert generate(m, [prompt], cfg)[0] == greedy_rerun(m, prompt, 15)


def test_batched_generate_equals_alone():
    m = tiny(3)
    prompts = [[257] + list(b"abc"), [257] + list(b"hello wor"), [257]]
    cfg = SamplingConfig(max_new=10, temperature=1.0, seed=3, stop_at_eos=False)
    batched = generate(m, prompts, cfg)
    for p, row in zip(prompts, batched):
        assert generate(m, [p], cfg)[0] == row


def test_save_load_roundtrip(tmp_path):
    m = tiny(4, mlp_ratio=2.0, qk_norm=False)
    m.save_pretrained(tmp_path / "mb")
    loaded = OmniModel.from_pretrained(tmp_path / "mb")
    assert isinstance(loaded, Megabyte) and loaded.cfg == m.cfg
    ids = rand_ids(2, 10)
    torch.testing.assert_close(loaded(ids).logits, m(ids).logits, rtol=0, atol=0)


def test_checkpoint_saved_before_the_layout_flags_loads_as_the_paper_layout(tmp_path):
    """A config.json written before patch_proj / carry_byte / token_shift existed describes a
    paper-layout model: it loads as one (not with today's defaults) and gives the same logits."""
    import json

    m = tiny(4, **PAPER)
    m.save_pretrained(tmp_path / "old")
    cfg_file = tmp_path / "old" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    for key in PAPER:
        del cfg["model"][key]
    cfg_file.write_text(json.dumps(cfg))
    loaded = OmniModel.from_pretrained(tmp_path / "old")
    assert loaded.cfg == m.cfg
    ids = rand_ids(2, 10)
    torch.testing.assert_close(loaded(ids).logits, m(ids).logits, rtol=0, atol=0)
    # a config written today, by hand or as TOML, gets today's defaults
    assert build_model("megabyte", {"patch_size": 4, "global_dim": 32}).cfg.carry_byte
    from omnibyte.train.config import load_run_config

    toml = load_run_config(Path(__file__).resolve().parent.parent / "configs" / "megabyte-tiny.toml").model
    assert toml.patch_proj and toml.carry_byte and toml.token_shift


def test_overfits_one_batch():
    torch.manual_seed(0)
    m = tiny(4).train()
    text = list(b"In the beginning God created the heaven and the earth. And the earth was")
    ids = torch.tensor([text[:49], text[20:69]])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(50):
        loss = m(ids[:, :-1], ids[:, 1:]).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.35 * first, (first, loss.item())


@pytest.mark.parametrize("P", [4, 5])
def test_strided_nll_sums(P):
    h = P // 2
    m = tiny(P)
    ids = rand_ids(2, 23)
    ids[0, 7] = PAD  # a PAD target costs nothing and is not a byte
    ids[1, 9] = EOS  # a special target is paid for but not counted as a byte
    plain_bits, plain_n = nll_sums(m(ids[:, :-1]).logits, ids[:, 1:])
    with torch.no_grad():
        lp_a = m(ids[:, :-1]).logits.log_softmax(-1)
        lp_b = m(ids[:, h:-1]).logits.log_softmax(-1)
    for half in ("first", "second"):
        bits, n = strided_nll_sums(m, ids, half)
        assert n == plain_n == 2 * 22 - 2 and math.isfinite(bits)
        # independent reading of the rule, one target at a time
        want = 0.0
        for b in range(2):
            for j in range(1, ids.shape[1]):  # ids[j] is the target at MEGABYTE position j
                if ids[b, j] == PAD:
                    continue
                slot_a, slot_b = j % P, (j - h) % P
                wanted = slot_b < slot_a if half == "first" else slot_b > slot_a
                lp = lp_b[b, j - h - 1] if wanted and j > h else lp_a[b, j - 1]
                want -= lp[ids[b, j]].item()
        assert bits == pytest.approx(want / math.log(2), rel=1e-5)
        assert bits != pytest.approx(plain_bits, rel=1e-6)
        assert m.strided_nll_sums(ids, half) == (bits, n)
    with pytest.raises(OmnibyteError, match="half"):
        strided_nll_sums(m, ids, "middle")


def test_strided_with_patch_size_one_is_plain_scoring():
    m = tiny(1)
    ids = rand_ids(2, 15)
    s_bits, s_n = strided_nll_sums(m, ids)
    p_bits, p_n = nll_sums(m(ids[:, :-1]).logits, ids[:, 1:])
    assert s_n == p_n and s_bits == pytest.approx(p_bits, rel=1e-5)


def test_flops_per_byte():
    m = tiny(4)
    cfg = m.cfg
    f1, f2 = m.flops_per_byte(1024), m.flops_per_byte(4096)
    assert f1["train"] == pytest.approx(3 * f1["infer"])
    # only the global attention depends on length, and it is shared by the P bytes of a patch
    extra = cfg.global_layers * 4 * cfg.global_dim * (mean_keys(1024) - mean_keys(256)) / cfg.patch_size
    assert f2["infer"] - f1["infer"] == pytest.approx(extra)
    # the head runs per byte: growing the vocabulary by 100 ids costs 2 · local_dim · 100 per byte
    bigger = tiny(4, vocab_size=VOCAB_SIZE + 100)
    assert bigger.flops_per_byte(1024)["infer"] - f1["infer"] == pytest.approx(2 * cfg.local_dim * 100)
