"""MEGABYTE beyond the model contract (tests/test_model_contract.py): internal padding to whole
patches, real 0x00 bytes against PAD, old checkpoints, strided inference, its FLOPs formula."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from omnibyte.errors import OmnibyteError
from omnibyte.format import EOS, N_BYTES, PAD, VOCAB_SIZE
from omnibyte.models import OmniModel, build_model
from omnibyte.models.megabyte import Megabyte, MegabyteConfig, strided_nll_sums
from omnibyte.nn import StackConfig, mean_keys, nll_sums


def tiny(patch_size=4, seed=0, **kw) -> Megabyte:
    torch.manual_seed(seed)
    cfg = dict(patch_size=patch_size, global_model=StackConfig(8 * patch_size, 2, 2),
               local_model=StackConfig(32, 2, 2))
    cfg.update(kw)
    return Megabyte(MegabyteConfig(**cfg)).eval()


PAPER = {"patch_proj": False, "carry_byte": False, "token_shift": False}  # the paper's layout


def rand_ids(b, t, seed=1):
    return torch.randint(0, N_BYTES, (b, t), generator=torch.Generator().manual_seed(seed))


def test_registry_and_config_errors():
    m = build_model("megabyte", {"patch_size": 2, "global_model": {"dim": 16, "n_heads": 2}})
    assert isinstance(m, Megabyte) and m.cfg.patch_size == 2 and m.cfg.global_model.n_layers == 2
    with pytest.raises(OmnibyteError, match="multiple of patch_size"):
        build_model("megabyte", {"patch_size": 3, "global_model": {"dim": 64}})
    with pytest.raises(OmnibyteError, match="local_model.dim"):
        build_model("megabyte", {"local_model": {"dim": 30, "n_heads": 4}})
    with pytest.raises(OmnibyteError, match="patch_proj"):
        build_model("megabyte", {"patch_proj": False, "adapters": {"media_conv": {}}})
    with pytest.raises(OmnibyteError, match="patch_size"):
        build_model("megabyte", {"patch_size": 0})
    with pytest.raises(OmnibyteError, match="vocab_size"):
        build_model("megabyte", {"vocab_size": 256})
    with pytest.raises(OmnibyteError, match="unknown config key"):
        build_model("megabyte", {"patch_sz": 4})


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


def test_checkpoint_saved_before_the_layout_flags_loads_as_the_paper_layout(tmp_path):
    """A config.json written before patch_proj / carry_byte / token_shift existed (with the flat
    size names of that time) describes a paper-layout model: it loads as one and gives the same
    logits; a config written today gets today's defaults."""
    import json

    m = tiny(4, **PAPER)
    m.save_pretrained(tmp_path / "old")
    cfg_file = tmp_path / "old" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    for key in PAPER:
        del cfg["model"][key]
    for stage in ("global", "local"):
        sizes = cfg["model"].pop(f"{stage}_model")
        cfg["model"].update({f"{stage}_dim": sizes["dim"], f"{stage}_layers": sizes["n_layers"],
                             f"{stage}_heads": sizes["n_heads"]})
    del cfg["model"]["adapters"]
    cfg_file.write_text(json.dumps(cfg))
    loaded = OmniModel.from_pretrained(tmp_path / "old")
    assert loaded.cfg == m.cfg
    ids = rand_ids(2, 10)
    torch.testing.assert_close(loaded(ids).logits, m(ids).logits, rtol=0, atol=0)
    assert build_model("megabyte", {"patch_size": 4, "global_model": {"dim": 32}}).cfg.carry_byte
    from omnibyte.train.config import load_run_config

    toml = load_run_config(Path(__file__).resolve().parent.parent / "configs" / "megabyte-tiny.toml").model
    assert toml.patch_proj and toml.carry_byte and toml.token_shift


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
    G = cfg.global_model
    extra = G.n_layers * 4 * G.dim * (mean_keys(1024) - mean_keys(256)) / cfg.patch_size
    assert f2["infer"] - f1["infer"] == pytest.approx(extra)
    # the head runs per byte: growing the vocabulary by 100 ids costs 2 · local_dim · 100 per byte
    bigger = tiny(4, vocab_size=VOCAB_SIZE + 100)
    assert bigger.flops_per_byte(1024)["infer"] - f1["infer"] == pytest.approx(2 * cfg.local_model.dim * 100)
