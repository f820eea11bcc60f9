"""The BLT benchmarks' results file (everything else comes from common.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, command_line, header, machine, median, timed  # noqa: E402,F401
from common import write_section as _write  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results_blt.md"


def write_section(key: str, lines: list[str], results: Path = RESULTS) -> None:
    _write(results, key, lines, "BLT benchmarks")


def full_rerun(model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding the slow way: the whole sequence through `forward` for every new byte
    (bytes and EOS allowed, as `omnibyte.generate`'s text mode), on the model's device."""
    import torch

    from omnibyte.format import EOS, N_BYTES

    allowed = torch.zeros(model.cfg.vocab_size, dtype=torch.bool, device=model.device)
    allowed[:N_BYTES] = True
    allowed[EOS] = True
    seq, out = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([seq], device=model.device)).logits[0, -1]
            out.append(int(logits.masked_fill(~allowed, float("-inf")).argmax()))
            seq.append(out[-1])
    return out
