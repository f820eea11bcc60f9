"""Training a sweep's runs side by side: one worker process per run, as many at a time as asked
and as fit in the memory the system still has."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from omnibyte.bench.presets import Entry
from omnibyte.errors import OmnibyteError
from omnibyte.memory import proc_bytes


def run_memory(params: int) -> int:
    """Rough bytes one training process needs: fp32 weights and AdamW's two moments (12 bytes per
    parameter; sparse table updates keep the same moments) plus half a GiB for activations, data and
    the interpreter."""
    return 12 * params + 2**29


def available_memory() -> int | None:
    """Bytes of memory the system can still give (MemAvailable of /proc/meminfo); None where unknown."""
    return proc_bytes("/proc/meminfo", "MemAvailable")


def fit_jobs(jobs: int, per_run: int, available: int | None) -> int:
    """How many of `jobs` parallel runs of `per_run` bytes each fit in `available` (at least one:
    a single run that does not fit is left to fail or swap as it would alone)."""
    if available is None or per_run <= 0:
        return jobs
    return max(1, min(jobs, available // per_run))


def train_parallel(bench_cls: type, args: dict, todo: list[Entry], params: list[int], jobs: int,
                   log: Callable[[str], None]) -> None:
    """Run `bench_cls(**args).run_one(entry)` for each entry of `todo` in worker
    processes, `jobs` at a time, or fewer where that many of the largest run (`params`: parameters
    of the runs' models) would not fit in the available memory. The caller then runs `todo` again in
    its own process and finds the runs finished."""
    need = max((run_memory(p) for p in params), default=0)
    free = available_memory()
    n = fit_jobs(jobs, need, free)
    if n < jobs:
        log(f"{n} run(s) at a time instead of {jobs}: the largest needs about "
            f"{need / 2**30:.1f} GiB and {free / 2**30:.1f} GiB of memory is available")
    log(f"training {len(todo)} runs, {n} at a time (one process each) ...")
    # a fresh process per run: its peak memory is its own, not what an earlier run left in the heap
    with ProcessPoolExecutor(n, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = [pool.submit(_run_one_job, bench_cls, args, entry) for entry in todo]
        for fut in futures:
            try:
                fut.result()  # any other error in a worker is raised here, as it would be in the caller
            except OmnibyteError:
                pass  # the caller's sequential pass meets the same error and reports it


def _run_one_job(bench_cls: type, args: dict, entry: Entry) -> None:
    """One run in a worker process of `train_parallel` (a top-level function: spawn pickles it)."""
    bench_cls(**args, log=lambda s: print(f"[{entry.name}] {s.strip()}", flush=True)).run_one(entry)
