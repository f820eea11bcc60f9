"""`omnibyte bench`: train a sweep of models on one dataset at equal training-FLOPs budgets and
compare their validation bits per byte (and optionally task accuracy and noise robustness).

Models of the sweep:

    transformer   byte transformer
    bpe           the same transformer over BPE tokens (tokenizer learned on the train split;
                  context of about the same number of bytes; bpb over the bytes of the text)
    megabyte      MEGABYTE, fixed patches
    blt-static    BLT, fixed patches
    blt-space     BLT, a patch after space-like bytes
    blt-entropy   BLT, entropy patching: a small entropy model is trained first (its cost is
                  reported apart) and its threshold calibrated to space patching's mean patch
                  length, so the two dynamic patchings cost the same FLOPs per byte and differ
                  only in where the boundaries fall

For a budget B each run takes steps = ⌊B / (training FLOPs per id · ids per step)⌋ with the
model's own `flops_per_byte` formula (per token for the BPE model), and the cosine schedule is
laid over exactly those steps. Everything lands in `--out`: one run directory per (model,
budget) (a finished one is reused when the bench runs again, so adding `--noise` or a budget
costs only what is new), results.json, results.md (the table) and bpb_vs_flops.png.

presets.py: the models, the presets (configs/bench/*.toml or any preset file) and budget → steps;
sweep.py: `Bench`, the sweep itself; schedule.py: runs side by side in worker processes, as many as
fit in memory; report.py: the table and the plot.
"""

from omnibyte.bench.presets import (
    ARCH,
    MODELS,
    BenchPreset,
    Entry,
    arch_available,
    budget_steps,
    frontier_entries,
    load_preset,
    parse_budgets,
    parse_models,
    preset_names,
    run_name,
)
from omnibyte.bench.report import fmt_si, markdown_table, plot_results
from omnibyte.bench.schedule import available_memory, fit_jobs, run_memory
from omnibyte.bench.sweep import Bench, run_bench

__all__ = [
    "ARCH", "MODELS", "Bench", "BenchPreset", "Entry", "arch_available", "available_memory", "budget_steps",
    "fit_jobs", "fmt_si", "frontier_entries", "load_preset", "markdown_table", "parse_budgets", "parse_models",
    "plot_results", "preset_names", "run_bench", "run_memory", "run_name",
]
