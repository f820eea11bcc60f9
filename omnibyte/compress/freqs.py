"""Model logits → integer symbol weights that every machine computes alike.

Logits of the same model differ in their last bits between a full forward and cached decoding,
between batch compositions, thread counts and machines. An arithmetic decoder must rebuild the
encoder's probabilities exactly, so they are made from integers only:

1. The 256 byte logits (fp64, see `omnibyte.compress.coder`) are quantised to q = ⌊logit · 16⌋.
2. d = q_max − q is capped at CUT (18 nats); a byte's weight is EXP[d] ≈ 2^30 · e^(−d/16), an
   integer table made with Python's `decimal`, whose exp is correctly rounded on every machine.
3. The weights go to the entropy coder as they are (constriction turns them into its fixed-point
   model by deterministic integer and IEEE arithmetic).

Step 1 is the only place where last-bit noise can change an integer: a logit within GUARD of a
quantisation boundary ("ambiguous") may round either way on another machine. The encoder lists
every ambiguous logit that can matter, with the side it rounded to (an *escape*); the decoder
takes those from the list and computes all others itself. So the decoder rebuilds every weight
exactly whenever its logits are within GUARD (2^-30 nats) of the encoder's. fp64 logits of the
same model differ by about 1e-14 between batch compositions, thread counts and cached decoding,
and an ambiguous logit is rare (2^-25 of them), so escapes cost almost nothing. A larger
difference is caught, not decoded wrongly: an escape the decoder cannot reach raises here, and
the stored checksums catch the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np

from omnibyte.errors import OmnibyteError

FRAC_BITS = 4  # logits quantised to 1/16 nat: the rounding costs ~2e-4 bits per byte
SCALE = float(1 << FRAC_BITS)
CUT = 18 << FRAC_BITS  # 18 nats below the top logit and further: the floor weight
WEIGHT_BITS = 30
GUARD = 2.0 ** -30  # nats; an exact binary fraction, so the guard test below is exact arithmetic
_GAMMA = GUARD * SCALE  # the guard in quantisation steps


def _exp_table() -> np.ndarray:
    with localcontext() as ctx:
        ctx.prec = 40
        one = Decimal(1 << WEIGHT_BITS)
        return np.array([int((one * (Decimal(-d) / int(SCALE)).exp()).to_integral_value(ROUND_HALF_EVEN))
                         for d in range(CUT + 1)], dtype=np.int64)


EXP = _exp_table()  # EXP[0] = 2^30 … EXP[CUT] = 16


class ProbabilityMismatch(OmnibyteError):
    """The decoder's logits are not within GUARD of the encoder's: this machine (or model) computes
    the probabilities differently."""


@dataclass
class Quantised:
    """Quantised logits of R positions: q (R, 256) int64 and where each lies within its step."""
    q: np.ndarray
    frac: np.ndarray  # (R, 256) in [0, 1): position of logit·16 above q

    def ambiguous(self) -> np.ndarray:
        """(R, 256) bool: within the guard of a boundary and able to change a weight (a logit
        more than CUT + 2 steps below the top gets the floor weight whichever way it rounds)."""
        near = (self.frac < _GAMMA) | (self.frac > 1.0 - _GAMMA)
        return near & (self.q.max(axis=1, keepdims=True) - self.q <= CUT + 2)

    def weights(self) -> np.ndarray:
        """(R, 256) float64 integer-valued weights EXP[min(q_max − q, CUT)]."""
        d = np.minimum(self.q.max(axis=1, keepdims=True) - self.q, CUT)
        return EXP[d].astype(np.float64)


def quantise(logits: np.ndarray) -> Quantised:
    """Byte logits (R, 256) float64 → Quantised. ·16 and ⌊⌋ are exact in IEEE arithmetic."""
    if not np.isfinite(logits).all():
        raise OmnibyteError("the model produced non-finite logits")
    y = logits * SCALE
    q = np.floor(y)
    return Quantised(q.astype(np.int64), y - q)


def escapes(quant: Quantised) -> list[tuple[int, int, int]]:
    """The encoder's escapes: (row, byte, side) of every ambiguous logit; side 1 = it rounded up
    to the boundary above it (just past it), 0 = it lies just below the next boundary."""
    rows, cols = np.nonzero(quant.ambiguous())
    return [(int(r), int(c), int(quant.frac[r, c] < _GAMMA)) for r, c in zip(rows, cols)]


def apply_escape(quant: Quantised, logits: np.ndarray, row: int, byte: int, side: int) -> None:
    """The decoder's side: set q[row, byte] to the encoder's value, from the boundary nearest this
    machine's logit (the encoder's lay within the guard of it)."""
    y = float(logits[row, byte]) * SCALE
    b = np.floor(y + 0.5)
    if abs(y - b) >= 2 * _GAMMA:
        raise ProbabilityMismatch(f"the model's probabilities differ from the compressing machine's by more "
                                  f"than the guard ({GUARD:.1e} nats)")
    quant.q[row, byte] = int(b) - 1 + side
