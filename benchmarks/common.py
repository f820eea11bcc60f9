"""What every benchmark script shares: the machine line and exact command of a results section,
writing that section, timing sides against each other, one training step to time, peer workers in
their own process, omnibyte training runs from a config dict, and small data for --quick runs.

Scripts run as modules from the repository root (`.venv/bin/python -m benchmarks.blt_speed`).
Only the standard library is imported at the top of this file: a peer worker, running in the peer
environment where omnibyte's dependencies may be missing, imports it too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEER_PYTHON = HERE / ".venv-peers" / "bin" / "python"  # the peer implementations' own environment
OUT = HERE / "out"  # scratch outputs of the scripts (git-ignored)


# --------------------------------------------------------------------------- results sections


def require_peer_env(packages: str) -> Path:
    """The peer environment's python, or exit naming the commands that create it (torch pinned
    in the same pip command as the peer `packages`)."""
    if not PEER_PYTHON.exists():
        sys.exit("error: no peer environment; create it with\n  python3 -m venv benchmarks/.venv-peers\n"
                 f"  benchmarks/.venv-peers/bin/pip install torch==2.13.0 {packages}")
    return PEER_PYTHON


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    import torch

    return (f"{platform.platform()}; {cpu_name()}; {os.cpu_count()} cores; {torch.get_num_threads()} torch threads; "
            f"Python {platform.python_version()}; torch {torch.__version__}")


def command_line() -> str:
    """The command that ran this process, in the form that runs as written from the repository root:
    `.venv/bin/python -m benchmarks.NAME ARGS` (the interpreter relative to the repository when it
    lives there)."""
    python = Path(sys.executable)
    python = python.relative_to(REPO) if python.is_relative_to(REPO) else Path(python.name)
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = ["-m", spec.name] if spec is not None else [sys.argv[0]]
    return shlex.join([str(python), *program, *sys.argv[1:]])


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages: on a shared machine a speed figure means little
    without them."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def header(title: str, notes: Iterable[str] = ()) -> list[str]:
    """The start of a results section: its title, the command, date, machine and the load average
    when the run began (`load_line` gives the one when it ended), then `notes` as more bullet
    lines."""
    return [f"## {title}", "", f"- command: `{command_line()}`",
            f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
            f"- machine: {machine()}", f"- load average (1 / 5 / 15 min) at the start: {load_average()}",
            *(f"- {n}" for n in notes), ""]


def load_line() -> str:
    """A results line with the load average now (at the end of a run)."""
    return f"Load average (1 / 5 / 15 min) at the end: {load_average()}."


def write_section(results: Path, key: str, lines: list[str], title: str = "Benchmark results") -> None:
    """Put `lines` into `results` between markers for `key`, replacing an older copy of that section
    or else appending it; a new file starts with `# title`. Written to a temporary file that then
    replaces `results`, so an interrupted write leaves the old file whole."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = "\n".join([start, *lines, end])
    text = results.read_text() if results.exists() else f"# {title}\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    tmp = results.with_name(results.name + ".tmp")
    try:
        tmp.write_text(text.rstrip("\n") + "\n")
        os.replace(tmp, results)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote the '{key}' section of {results}")


def results_option(ap: argparse.ArgumentParser, name: str) -> None:
    """--results: the file a run writes its section into (`results_file` resolves it)."""
    ap.add_argument("--results", type=Path,
                    help=f"write the section into this file (default: benchmarks/{name} for a full run; "
                         "a --quick run writes only where this is given)")


def results_file(args: argparse.Namespace, name: str) -> Path | None:
    """Where this run's section goes: --results, else benchmarks/`name` unless the run is --quick
    (tiny-run figures never land in the recorded files)."""
    if args.results is not None:
        return args.results
    return None if getattr(args, "quick", False) else HERE / name


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Measured:
    """What a side returns when it times itself, e.g. a worker process whose start-up is not part
    of the measurement: `seconds` is the sample, `value` the side's result."""
    seconds: float
    value: Any = None


@dataclass(frozen=True)
class Timing:
    """One side's samples (seconds per call, round by round) and what each call returned."""
    samples: tuple[float, ...]
    values: tuple[Any, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


REPEATS = 7  # timed rounds of a speed comparison unless a run asks for fewer (issue 25: at least 7)


def compare(sides: dict[str, Callable[[], Any]], repeats: int = REPEATS, warmup: int = 1,
            clock: Callable[[], float] = time.perf_counter, log: bool = False) -> dict[str, Timing]:
    """Time every side `repeats` times, interleaved: after `warmup` untimed calls of each side, each
    round calls every side once, the order rotated by one place per round (with two sides: A B,
    B A, A B, …), so whatever else the machine does falls on all sides alike. A side returning
    `Measured` supplies its own seconds; else the call is timed with `clock`. `log` prints a line
    per timed call (progress of a long comparison)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"compare needs repeats ≥ 1 and warmup ≥ 0, got {repeats} and {warmup}")
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    values: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = clock()
            out = sides[name]()
            dt = clock() - t0
            if isinstance(out, Measured):
                dt, out = out.seconds, out.value
            samples[name].append(dt)
            values[name].append(out)
            if log:
                print(f"  round {r + 1}/{repeats}, {name}: {dt:.3g} s", flush=True)
    return {n: Timing(tuple(samples[n]), tuple(values[n])) for n in names}


def how_timed(repeats: int) -> str:
    """The words every speed table uses for what its figures are."""
    return f"median (min–max) of {repeats} interleaved repeats"


def round_orders(names: Sequence[str], repeats: int) -> list[str]:
    """The order `compare` ran `names` in, round by round, as text ('a, b', 'b, a', …)."""
    names = list(names)
    return [", ".join(names[r % len(names):] + names[:r % len(names)]) for r in range(repeats)]


def per_round_table(t: dict[str, Timing], base: str, unit: str = "s", scale: float = 1.0,
                    fmt: str = "{:.3f}") -> list[str]:
    """The raw samples behind a comparison: one row per round with its order, every side's sample
    (× `scale`, in `unit`) and each other side's speed-up over `base` in that round."""
    names = list(t)
    others = [n for n in names if n != base]
    n = len(t[base].samples)
    lines = ["| round | order | " + " | ".join(f"{x} ({unit})" for x in names) + " | "
             + " | ".join(f"{x} / {base} speed" for x in others) + " |",
             "| ---: | --- | " + " | ".join("---:" for _ in names + others) + " |"]
    for r, order in enumerate(round_orders(names, n)):
        cells = [fmt.format(t[x].samples[r] * scale) for x in names]
        ratios = [f"{t[base].samples[r] / t[x].samples[r]:.2f}×" for x in others]
        lines.append(f"| {r + 1} | {order} | " + " | ".join(cells + ratios) + " |")
    return lines


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (e.g. a training step: forward and backward) as
    `torch.utils.flop_counter` counts them: matrix products, with scaled-dot-product attention
    forced onto its math path, whose products the counter sees (the CPU's fused kernel is not
    counted at all). Attention therefore counts the full query × key product of what the code
    computes: a dense masked window counts every masked score, a banded one only its band."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def spread(xs: Sequence[float], fmt: str = "{:.3g}") -> str:
    """'median (min–max)'."""
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def fmt_time(t: Timing, fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    """The median time and its range, each × `scale` (1e3: milliseconds)."""
    return spread([s * scale for s in t.samples], fmt)


def fmt_rate(t: Timing, work: float, fmt: str = "{:,.0f}") -> str:
    """`work` per second (bytes/s, …): the median rate and its range over the samples."""
    return spread([work / s for s in t.samples], fmt)


def speedup(t: Timing, base: Timing) -> tuple[float, float, float]:
    """How many times faster `t` is than `base`: the ratio of medians, then the lowest and highest
    of the per-round ratios (within a round the two sides ran back to back)."""
    paired = [b / s for s, b in zip(t.samples, base.samples, strict=True)]
    return base.median / t.median, min(paired), max(paired)


def fmt_speedup(t: Timing, base: Timing, fmt: str = "{:.2f}") -> str:
    """'1.64× (1.58–1.71×)': `speedup` as text."""
    mid, lo, hi = speedup(t, base)
    return f"{fmt.format(mid)}× ({fmt.format(lo)}–{fmt.format(hi)}×)"


def train_step(model, batches, *, loss: Callable | None = None, extra: dict | None = None, opt=None,
               lr: float = 1e-4, clip: float = 0.0, clip_fn: Callable | None = None,
               autocast: Callable | None = None) -> Callable[[], dict]:
    """A bare training step to time, as a closure: each call takes the next of `batches` (one
    (B, T+1) id tensor, or a sequence of them, cycled), runs the loss forward (under `autocast()`
    if given), backward, clips the gradients' global norm to `clip` (if > 0, with `clip_fn`,
    default torch's), steps the optimizer and zeroes the gradients. `loss(ids)` defaults to an
    omnibyte model's next-byte loss with `extra` keyword arguments; `opt` to AdamW(lr) over the
    trainable parameters. A call returns the loss and the seconds of its three parts."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr) if opt is None else opt
    if loss is None:
        def loss(ids):
            return model(ids[:, :-1], ids[:, 1:], **(extra or {})).loss
    clip_fn = clip_fn or torch.nn.utils.clip_grad_norm_
    if isinstance(batches, torch.Tensor) and batches.dim() == 2:
        batches = [batches]
    position = itertools.count()

    def step() -> dict:
        ids = batches[next(position) % len(batches)]
        t0 = time.perf_counter()
        with autocast() if autocast else contextlib.nullcontext():
            value = loss(ids)
        t1 = time.perf_counter()
        value.backward()
        if clip > 0:
            clip_fn(params, clip)
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {"loss": value.detach(), "forward": t1 - t0, "backward": t2 - t1, "update": time.perf_counter() - t2}

    return step


def run_worker(python: Path | str, module: str, args: list[str], threads: int, timeout: float,
               cwd: Path = REPO) -> dict:
    """Run `python -m module ARGS` in `cwd` (the repository root, or another checkout whose code
    the worker then imports) with `threads` OpenMP threads — a peer's side in its own environment,
    or a side that needs a process of its own — and return the JSON object of its last output
    line; exit with its error output if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([str(python), "-m", module, *args], cwd=cwd, env=env, timeout=timeout,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: the worker `{module} {' '.join(args[:2])}` failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    """This process's peak resident set so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- omnibyte models and runs


def bytes_only():
    """A decoding constraint (`omnibyte.generate.constraints`) that allows the 256 byte values only,
    for `generate` and `omnibyte.generate.reference.rerun_greedy` alike: greedy decoding then makes
    exactly the number of bytes asked for, where an untrained model would often pick EOS after a few
    dozen and end a timed generation early."""
    import torch

    from omnibyte.format import N_BYTES
    from omnibyte.generate.constraints import Constraint

    class BytesOnly(Constraint):
        def allowed(self, vocab_size: int) -> torch.Tensor:
            return torch.arange(vocab_size) < N_BYTES

    return BytesOnly()


def metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def train_run(raw: dict, run_dir: Path, base: Path | None = None, quiet: bool = True) -> dict:
    """Train a fresh run of the run config `raw` ([model], [data] and [train] tables as a dict, over
    the TOML file `base` if given) into `run_dir` with omnibyte's Trainer. An earlier run there is
    removed first: the trainer appends to its metrics file, and a rate or loss curve read from it
    would mix the two runs. Returns steps, wall time, bytes and FLOPs trained on, parameters and
    the final val bpb (None without a val split)."""
    from omnibyte.train import Trainer, load_run_config

    shutil.rmtree(run_dir, ignore_errors=True)
    trainer = Trainer(load_run_config(base, raw), run_dir, quiet=quiet)
    t0 = time.perf_counter()
    last = trainer.fit()
    return {"steps": trainer.step, "wall_s": time.perf_counter() - t0, "bytes": trainer.step * trainer.bytes_per_step,
            "bytes_per_step": trainer.bytes_per_step, "flops": trainer.step * trainer.bytes_per_step
            * trainer.flops_per_byte, "params": trainer.model.num_params(), "val_bpb": last.get("val_bpb")}


def step_seconds(run_dir: Path, bytes_per_step: int, skip: int = 0) -> list[float]:
    """Seconds per training step of a run logged every step (`train.log_every` 1), from its
    metrics, leaving out the first `skip` steps."""
    return [bytes_per_step / r["bytes_per_s"] for r in metrics(run_dir) if "loss" in r and r["step"] > skip]


def steps_for_minutes(raw: dict, scratch: Path, minutes: float, base: Path | None = None,
                      probe_steps: int = 8) -> tuple[int, float]:
    """(steps that fill `minutes` of training with the run config `raw`, bytes/s) from a short probe
    run in `scratch`: the median of its per-step rates after the first two (its wall time also
    holds start-up, evaluation and saving, and made runs stop at about 70% of the minutes asked)."""
    from omnibyte.config import merge

    probe = merge(raw, {"train": {"steps": probe_steps, "warmup_steps": 1, "log_every": 1, "eval_every": 0,
                                  "eval_batches": 1, "save_every": 0}})
    run = train_run(probe, scratch, base)
    rate = statistics.median(run["bytes_per_step"] / s for s in step_seconds(scratch, run["bytes_per_step"], skip=2))
    return max(10, int(minutes * 60 * rate / run["bytes_per_step"])), rate


def quick_corpus(folder: Path, n_bytes: int = 60_000) -> Path:
    """A small dataset for --quick: the first chapters of the default corpus (KJV), made once."""
    from omnibyte.data import is_dataset, write_dataset
    from omnibyte.data.corpus import KJV_SOURCE, kjv_documents

    out = folder / "kjv-quick"
    if not is_dataset(out):
        docs, total = [], 0
        for doc in kjv_documents():
            docs.append(doc)
            total += len(doc.segments[0].data)
            if total >= n_bytes:
                break
        write_dataset(docs, out, sources=[f"{KJV_SOURCE} (first {total:,} bytes)"], val_fraction=0.1)
    return out


def table_lines(results_md: Path) -> list[str]:
    """An `omnibyte bench` results.md without its title and the blank lines after it (the section has
    its own title)."""
    lines = results_md.read_text().splitlines()
    lines = lines[1:] if lines and lines[0].startswith("# ") else lines
    while lines and not lines[0].strip():
        lines.pop(0)
    return lines
