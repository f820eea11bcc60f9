"""How much memory a request needs and whether the machine has it, so generation, evaluation and
training refuse a request that cannot fit with one line up front instead of running out of memory
part way (a traceback, or the kernel killing the process).

Estimates come from the model itself: its decoding state (`init_state`), made whole and measured at two
lengths, gives the bytes each position costs (KV caches and whatever else a model keeps per position); the
activations autograd keeps for two short training windows give a training step's bytes per
position; its vocabulary gives the bytes of the logits. They count what grows with the request; a
model's own transient buffers are left out, so they are lower bounds, meant to catch requests far
beyond the machine rather than to predict peak use exactly.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import weakref
from pathlib import Path

import torch

from omnibyte.errors import OmnibyteError
from omnibyte.format import VOCAB_SIZE

PROBE_LENS = (64, 128)  # decoding-state lengths measured to find the bytes per position
LIST_BYTES = 16  # a generated id kept in Python lists: the row's sequence and its new ids
_probes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FULL = contextvars.ContextVar("omnibyte_full_states", default=False)


@contextlib.contextmanager
def full_states():
    """Decoding states made inside allocate every position they may hold up front. Outside, their
    caches start small and grow as positions are fed; measuring the most a state can take (what a
    request must fit) needs them whole."""
    token = _FULL.set(True)
    try:
        yield
    finally:
        _FULL.reset(token)


def states_full() -> bool:
    """Whether decoding states are being made whole (inside `full_states`)."""
    return _FULL.get()


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup (v2) memory limit, None when it has none."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    if not (limit.isdigit() and used.isdigit()):  # "max": no limit
        return None
    return max(0, int(limit) - int(used))


def available_memory(device: torch.device | str) -> int | None:
    """Bytes that can still be allocated on `device`: free GPU memory (plus what torch's caching
    allocator holds unused), or for the CPU MemAvailable from /proc/meminfo (and the cgroup's
    limit when lower). None where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    room = proc_bytes("/proc/meminfo", "MemAvailable")
    if room is None and hasattr(os, "sysconf"):
        try:
            room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            room = None
    cgroup = _cgroup_room()
    if cgroup is not None:
        room = cgroup if room is None else min(room, cgroup)
    return room


def check_fits(need: int, device: torch.device | str, what: str, hint: str) -> None:
    """One-line error when `need` bytes exceed what `device` has available."""
    room = available_memory(device)
    if room is not None and need > room:
        raise OmnibyteError(f"{what} needs about {gib(need)} of memory, and {torch.device(device).type} has "
                            f"{gib(room)} available: {hint}")


def tensors_in(obj):
    """The tensors reachable from `obj` (through lists, tuples, dicts, dataclasses and plain
    objects, such as a model's decoding state), each once; models inside it are not entered."""
    seen: set[int] = set()
    stack = [(obj, 0)]
    while stack:
        o, depth = stack.pop()
        if depth > 8 or id(o) in seen or isinstance(o, torch.nn.Module | type):
            continue
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            yield o
        elif isinstance(o, dict):
            stack.extend((v, depth + 1) for v in o.values())
        elif isinstance(o, list | tuple | set):
            stack.extend((v, depth + 1) for v in o)
        elif hasattr(o, "__dict__"):
            stack.extend((v, depth + 1) for v in vars(o).values())


def tensor_bytes(obj) -> int:
    """Bytes of the tensor storages reachable from `obj`; a storage shared by views counts once."""
    storages = {(t.device.type, t.device.index, t.untyped_storage().data_ptr()): t.untyped_storage().nbytes()
                for t in tensors_in(obj)}
    return sum(storages.values())


@dataclasses.dataclass
class StateCost:
    base: int  # bytes of a one-row decoding state that do not grow with its length
    per_position: int  # bytes each further position adds
    heads: int  # most attention heads of any KV cache: keys scored per query, per layer


def state_cost(model) -> StateCost:
    """Bytes of `model`'s one-row decoding state, measured at two lengths (cached per model)."""
    cost = _probes.get(model)
    if cost is None and not hasattr(model, "init_state"):  # a forward-only model: its logits are what is known
        cost = StateCost(0, 0, 1)
    if cost is None:
        a, b = PROBE_LENS
        with torch.no_grad(), full_states():
            small = model.init_state(1, a)
            large = model.init_state(1, b)
        size_a, size_b = tensor_bytes(small), tensor_bytes(large)
        per = max(0, size_b - size_a) // (b - a)
        heads = max((t.shape[1] for t in tensors_in(large) if t.dim() == 4 and t.shape[0] == 1), default=1)
        cost = StateCost(max(0, size_a - per * a), per, int(heads))
        _probes[model] = cost
    return cost


def vocab_size(model) -> int:
    return int(getattr(getattr(model, "cfg", None), "vocab_size", 0) or VOCAB_SIZE)


def decoding_bytes(model, rows: int, total_len: int, prefill: int) -> int:
    """Memory of decoding `rows` rows of up to `total_len` ids, the prompt fed `prefill` ids at a
    time: the decoding state, the ids kept in Python, one prefill chunk's attention scores over
    every key and its logits."""
    cost = state_cost(model)
    state = rows * (cost.base + cost.per_position * total_len)
    scores = 2 * rows * cost.heads * prefill * total_len * 4  # scores and probabilities, fp32
    logits = 2 * rows * prefill * vocab_size(model) * 4
    return state + rows * total_len * LIST_BYTES + scores + logits


def forward_bytes(model, rows: int, seq_len: int) -> int:
    """Memory of one forward pass over `rows` windows of `seq_len` ids without autograd: the
    per-position activations (as large as the decoding state's, twice over) and the logits with
    their log-softmax and the loss's float copy. Attention's own buffers are not counted."""
    cost = state_cost(model)
    positions = rows * seq_len
    return positions * (2 * cost.per_position + 3 * vocab_size(model) * 4) + rows * cost.base


def saved_bytes(model, run_forward) -> int:
    """Bytes of the activations autograd keeps for the backward pass while `run_forward()` runs
    (each storage once; the model's own weights are not counted). The random number generators
    are restored afterwards, so measuring leaves a run's dropout and sampling as they were."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run_forward()
    del out  # frees the graph and what it kept
    return total


def training_bytes(model, rows: int, seq_len: int, loss_of) -> int:
    """Memory of a training step on `rows` windows of `seq_len` ids: the weights, their gradients
    and AdamW's two moments, plus the activations kept for the backward pass and the logits'
    gradient. `loss_of(T)` computes the training loss of one window of T ids; the activations of
    two short windows measured with `saved_bytes` give the bytes per position (linear: attention
    that keeps T² scores costs more than this)."""
    a, b = PROBE_LENS
    sizes = [saved_bytes(model, lambda n=n: loss_of(n)) for n in (a, b)]
    per_position = max(0, sizes[1] - sizes[0]) / (b - a)
    base = max(0, sizes[0] - per_position * a)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grad_logits = rows * seq_len * vocab_size(model) * 4
    return int(4 * params + rows * (base + per_position * seq_len) + grad_logits)



def reset_peak_rss() -> bool:
    """Start a new peak of this process's resident memory (Linux: writing 5 to clear_refs resets
    VmHWM), so that `peak_rss` measures what comes after. False where the system cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss() -> int | None:
    """Bytes of this process's highest resident memory since it started or since `reset_peak_rss`
    (Linux VmHWM); None where the system does not say."""
    return proc_bytes("/proc/self/status", "VmHWM")


def proc_bytes(path: str, field: str) -> int | None:
    """A "FIELD: N kB" line of a Linux /proc file (meminfo, status) in bytes; None where the file
    or the field is missing or unreadable."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
