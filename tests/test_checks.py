"""The finite-weights check read from a safetensors file through a buffer: it agrees with the check
of tensors in memory, counts across its chunks, names a truncated file, and leaves a loaded model's
memory-mapped weights unread."""

import sys

import pytest
import torch
from helpers import tiny_model
from safetensors.torch import save_file

from omnibyte import checks
from omnibyte.errors import OmnibyteError
from omnibyte.models import OmniModel


def state_with_bad_values() -> dict:
    torch.manual_seed(0)
    state = {"a.ids": torch.arange(10), "b.fp32": torch.randn(50, 3), "c.bf16": torch.randn(40).bfloat16(),
             "d.fp16": torch.randn(33).half(), "e.fp64": torch.randn(7).double()}
    state["c.bf16"][[0, 17, 39]] = torch.tensor([float("nan"), float("inf"), float("-inf")]).bfloat16()
    state["d.fp16"][5] = float("nan")
    return state


@pytest.mark.parametrize("chunk", [3, 1 << 22])
def test_file_check_agrees_with_the_tensor_check(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(checks, "_CHUNK", chunk)  # 3: every tensor spans many reads of the buffer
    state = state_with_bad_values()
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    expected = checks.first_non_finite(state)
    assert expected == "tensor c.bf16 holds 3 non-finite values (NaN or inf) of 40"
    assert checks.first_non_finite_file(path) == expected
    state["c.bf16"].zero_()
    save_file(state, str(path))
    assert checks.first_non_finite_file(path) == checks.first_non_finite(state) == (
        "tensor d.fp16 holds 1 non-finite values (NaN or inf) of 33")
    state["d.fp16"].zero_()
    save_file(state, str(path))
    assert checks.first_non_finite_file(path) is None
    checks.check_finite_file(path)


def test_file_check_names_a_truncated_tensor(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(100)}, str(path))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(OmnibyteError, match="tensor w is cut short"):
        checks.first_non_finite_file(path)


def mapped_resident_mib(path) -> float:
    """Resident MiB of this process's mappings of `path` (/proc/self/smaps)."""
    kib, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:
            inside = len(fields) > 5 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            kib += int(fields[1])
    return kib / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_loading_leaves_the_weights_unread_until_used(tmp_path):
    # a 200,000-row embedding (25 MB): rows a model never looks up are never read into memory
    model = tiny_model(vocab_size=200_000)
    model.save_pretrained(tmp_path / "m")
    weights = (tmp_path / "m" / "model.safetensors").resolve()
    loaded = OmniModel.from_pretrained(tmp_path / "m")
    size = weights.stat().st_size / 2**20
    assert mapped_resident_mib(weights) < 0.25 * size
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
