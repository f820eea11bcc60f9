"""BLT checkpoints in and out, checked against transformers' own `BltForCausalLM`: an imported
model computes the same logits (fp32, 1e-4) from the same patches as the port, greedy generation
with omnibyte's cache equals the port's uncached generation, an export loads back into the port
with the same logits, Meta's format imports the same way, and an imported model fine-tunes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from blt_checkpoints import TEXT, blt_ids, tiny_hf_blt, write_official
from helpers import write_text_dataset

from omnibyte.cli import main
from omnibyte.errors import OmnibyteError
from omnibyte.format import BOS, EOS
from omnibyte.generate import SamplingConfig, generate
from omnibyte.interop import export_checkpoint, import_checkpoint
from omnibyte.models import OmniModel, build_model
from omnibyte.nn.hash_ngram import BLT_IDS, blt_hash_stack
from omnibyte.patching import patch_lengths

pytest.importorskip("transformers")  # a test dependency (the dev extra)
ROWS = torch.tensor(BLT_IDS[:260])  # the port's logits in omnibyte's id order: logits[..., ROWS]
# shapes: the released BLT-1B's layout (k · encoder width = global width: no projection, the decoder
# reading the latent in every layer), widths that need the projection with grouped k/v heads, and an
# encoder with cross-attention in every layer (the port uses its last), a decoder reading once,
# k = 3, a patch cap and full local attention
SHAPES = {
    "1b-layout": dict(),
    "projection-gqa": dict(dl=24, dg=40, heads=4, kv_heads=2, dec_layers=3, entropy_window=8),
    "all-encoder-layers": dict(dl=24, dg=48, k=3, enc_layers=2, enc_all=True, dec_all=False, window=None,
                               max_patch_length=3, functions=2, heads=4),
}
ROWS_OF_TEXT = [[BOS, *TEXT], [BOS, *b"And God said, Let there be light: and there was light."]]


@pytest.fixture(scope="module", params=list(SHAPES))
def imported(request, tmp_path_factory):
    """(shape name, the port's model, its folder, the omnibyte model imported from it)."""
    tmp = tmp_path_factory.mktemp(request.param)
    hf = tiny_hf_blt(seed=len(request.param), **SHAPES[request.param])
    hf.save_pretrained(tmp / "hf")
    import_checkpoint("hf", tmp / "hf", tmp / "run")
    return request.param, hf, tmp, OmniModel.from_pretrained(tmp / "run")


def port_lengths(hf, ids: torch.Tensor) -> list[int]:
    """The patch lengths the port's own entropy patcher gives one row (its trailing empty patch dropped)."""
    _, lengths, _ = hf.model.patcher(blt_ids(ids), patch_size=4, threshold=hf.config.patching_threshold,
                                     max_patch_length=hf.config.max_patch_length)
    return [n for n in lengths[0].tolist() if n]


def test_same_patches_and_logits_as_transformers(imported):
    """With a patch cap (max_patch_length) the port caps a sequence's last patch without the next
    id's position, which Meta's code counts: at the last id it can miss a boundary there, and its
    logits at that id change once the next id comes. omnibyte follows Meta's code, so with a cap the
    last position is compared with the port given Meta's patches (test_batched_...)."""
    _, hf, _, m = imported
    last = -1 if hf.config.max_patch_length else None
    for row in ROWS_OF_TEXT:
        ids = torch.tensor([row])
        with torch.no_grad():
            starts = m.patcher(ids)
            ours, theirs = m(ids).logits, hf(blt_ids(ids)).logits[..., ROWS]
        assert patch_lengths(starts)[0] == port_lengths(hf, ids)
        assert 1 < len(port_lengths(hf, ids)) < len(row)  # patches of several bytes and several patches
        torch.testing.assert_close(ours[:, :last], theirs[:, :last], atol=1e-4, rtol=0)


def test_batched_rows_with_the_same_patches(imported):
    """Two rows at once, the port given omnibyte's patches (its own batched patcher pads rows oddly)."""
    _, hf, _, m = imported
    n = min(map(len, ROWS_OF_TEXT))
    ids = torch.tensor([r[:n] for r in ROWS_OF_TEXT])
    with torch.no_grad():
        lengths = [ls + [0] * (n - len(ls)) for ls in patch_lengths(m.patcher(ids, ahead=True))]
        theirs = hf(blt_ids(ids), patch_lengths=torch.tensor(lengths)).logits[..., ROWS]
        torch.testing.assert_close(m(ids).logits, theirs, atol=1e-4, rtol=0)


def test_export_loads_back_into_transformers(imported, tmp_path):
    from transformers import BltForCausalLM

    _, hf, _, m = imported
    export_checkpoint("hf", imported[2] / "run", tmp_path / "exported")
    back = BltForCausalLM.from_pretrained(tmp_path / "exported").eval()
    ids = torch.tensor([ROWS_OF_TEXT[0]])
    with torch.no_grad():
        torch.testing.assert_close(back(blt_ids(ids)).logits[..., ROWS], m(ids).logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(back(blt_ids(ids)).logits, hf(blt_ids(ids)).logits, atol=1e-4, rtol=0)
    assert port_lengths(back, ids) == port_lengths(hf, ids)


def test_official_format_imports_the_same_model(imported, tmp_path):
    _, hf, _, m = imported
    if hf.config.patcher_config.sliding_window != 512:
        pytest.skip("Meta's loader fixes its entropy model's window at 512")
    src = write_official(hf, tmp_path)
    if hf.config.encoder_config.cross_attn_all_layers:  # Meta's code and the port compute different functions
        with pytest.raises(OmnibyteError, match="cross_attn_all_layers_encoder"):
            import_checkpoint("blt", src, tmp_path / "run")
        return
    import_checkpoint("blt", src, tmp_path / "run")  # its entropy model beside it, as Meta's download has it
    official = OmniModel.from_pretrained(tmp_path / "run")
    assert official.cfg == m.cfg
    ids = torch.tensor([ROWS_OF_TEXT[1]])
    with torch.no_grad():
        torch.testing.assert_close(official(ids).logits, hf(blt_ids(ids)).logits[..., ROWS], atol=1e-4, rtol=0)


def test_greedy_generation_equals_the_ports_uncached_generation(imported):
    """200 bytes with omnibyte's cached decoding against the port's `generate(use_cache=False)`, its
    correct path; both restricted to what text generation may produce (bytes and EOS)."""
    name, hf, _, m = imported
    if name != "1b-layout":
        pytest.skip("one shape is enough for 200 uncached steps of the port")
    prompt = [BOS, *b"In the beginning"]
    ours = generate(m, [prompt], SamplingConfig(max_new=200, temperature=0))[0]
    out = hf.generate(blt_ids([prompt]), max_new_tokens=200, do_sample=False, use_cache=False,
                      suppress_tokens=[0, 1, 3], eos_token_id=2, pad_token_id=3)
    theirs = [BLT_IDS.index(t) for t in out[0, len(prompt):].tolist()]
    assert ours == theirs
    assert len(ours) == 200 and len(set(ours)) > 20


def test_fine_tuning_an_imported_model_lowers_its_loss(imported, tmp_path):
    """`omnibyte train --init RUN` trains from an imported run's weights (it has no trainer state),
    with precomputed entropies and sparse table updates, as any BLT."""
    import shutil

    name, _, tmp, _ = imported
    if name != "projection-gqa":
        pytest.skip("one shape is enough")
    data = write_text_dataset(tmp_path, n_docs=12, lines=4)
    run = tmp_path / "run"
    shutil.copytree(tmp / "run", run)
    tuned = tmp_path / "tuned"
    rc = main(["train", "--init", str(run), "--out", str(tuned), "--data", str(data), "--quiet", "--train.steps=12",
               "--train.batch_size=4", "--train.seq_len=48", "--train.warmup_steps=0", "--train.lr=3e-3",
               "--train.log_every=1", "--train.eval_every=0", "--train.eval_batches=2", "--train.threads=1"])
    assert rc == 0
    losses = [r["loss"] for r in map(json.loads, (tuned / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_cli_import_eval_generate_export(imported, tmp_path, capsys):
    name, _, tmp, _ = imported
    if name != "1b-layout":
        pytest.skip("one shape is enough")
    data = write_text_dataset(tmp_path, n_docs=6, lines=3)
    run = tmp_path / "run"
    assert main(["import", "hf", str(tmp / "hf"), "--out", str(run)]) == 0
    assert main(["eval", str(run), "--data", str(data), "--json", "--seq-len", "64", "--max-batches", "2"]) == 0
    assert main(["generate", str(run), "--prompt", "In the", "--max-bytes", "20", "--temperature", "0"]) == 0
    assert main(["export", "hf", str(run), "--out", str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert math.isfinite(json.loads(next(line for line in out.splitlines() if line.startswith("{")))["bpb"])
    assert (tmp_path / "hf" / "model.safetensors").is_file()


# --------------------------------------------------------------------------- refusals


def one_line_error(capsys, args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err, err
    return err


def test_bad_input_is_one_line_before_any_work(imported, tmp_path, capsys):
    name, _, tmp, _ = imported
    if name != "1b-layout":
        pytest.skip("one shape is enough")
    # not a BLT, a missing weights file, a setting the port's BLT has that omnibyte cannot run
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert "model_type 'llama'" in one_line_error(capsys, ["import", "hf", str(tmp_path / "llama"), "--out",
                                                           str(tmp_path / "r1")])
    cfg = json.loads((tmp / "hf" / "config.json").read_text())
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps(cfg))
    assert "model.safetensors" in one_line_error(capsys, ["import", "hf", str(tmp_path / "noweights"), "--out",
                                                          str(tmp_path / "r2")])
    cfg["decoder_config"]["hidden_act"] = "gelu"
    (tmp_path / "noweights" / "config.json").write_text(json.dumps(cfg))
    assert "silu" in one_line_error(capsys, ["import", "hf", str(tmp_path / "noweights"), "--out",
                                             str(tmp_path / "r3")])
    assert not any((tmp_path / r).exists() for r in ("r1", "r2", "r3"))
    # Meta's format without its entropy model; an output that already holds a run
    (tmp_path / "meta").mkdir()
    assert "entropy model" in one_line_error(capsys, ["import", "blt", str(tmp_path / "meta"), "--out",
                                                      str(tmp_path / "r4")])
    assert "already holds a run" in one_line_error(capsys, ["import", "hf", str(tmp / "hf"), "--out",
                                                            str(tmp / "run")])


def test_export_names_what_the_port_lacks(tmp_path, capsys):
    m = build_model("blt", {"encoder": {"dim": 16, "n_layers": 1, "n_heads": 2},
                            "decoder": {"dim": 16, "n_layers": 1, "n_heads": 2},
                            "latent": {"dim": 32, "n_layers": 1, "n_heads": 2},
                            "adapters": {"media_conv": {"channels": 4}}})
    m.save_pretrained(tmp_path / "m")
    err = one_line_error(capsys, ["export", "hf", str(tmp_path / "m"), "--out", str(tmp_path / "hf")])
    for feature in ("input adapters", "ngrams.hash 'omnibyte'", "static patching", "qk_norm", "vocab_size 263"):
        assert feature in err
    assert not (tmp_path / "hf").exists()


# --------------------------------------------------------------------------- pieces


def test_blt_hash_is_the_ports():
    from transformers.models.blt.modeling_blt import byte_group_hash_function

    ids = torch.randint(0, 259, (2, 40), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = BOS
    ids[1, 20] = EOS
    sizes, primes = (3, 5, 8), (1000000007, 5915587277, 1500450271)
    ours = blt_hash_stack(ids, sizes, functions=3)
    for f, prime in enumerate(primes):
        for j, n in enumerate(sizes):
            got = torch.remainder(ours[..., f * len(sizes) + j], 500002)
            assert torch.equal(got, byte_group_hash_function(blt_ids(ids), n, prime, 500002))


def test_import_refuses_an_unknown_format(tmp_path):
    with pytest.raises(OmnibyteError, match="unknown format"):
        import_checkpoint("gguf", tmp_path, tmp_path / "run")
