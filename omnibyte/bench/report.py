"""A sweep's results as a markdown table and a plot of validation bpb against FLOPs."""

from __future__ import annotations

from pathlib import Path

from omnibyte.bench.presets import MODELS


def fmt_si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _order(r: dict) -> tuple:
    return r["budget"], MODELS.index(r["model"]) if r["model"] in MODELS else 99, r.get("name", "")


def _variant(r: dict) -> str:
    v = r.get("variant") or {}
    parts = [f"size {v['size']}"] if "size" in v else []
    parts += [f"lr {r.get('lr', v.get('lr')):g}"] if "lr" in v else []
    parts += [f"vocab {v['vocab']}"] if "vocab" in v else []
    return ", ".join(parts) or "preset"


def markdown_table(summary: dict) -> str:
    results = summary["results"]
    has_task = any("task_accuracy" in r for r in results)
    has_test = any("test_bpb" in r for r in results)
    has_mfu = any("mfu" in r for r in results)
    kinds = sorted({k for r in results for k in r.get("noise", {})})
    head = ["model", "run", "params", "train FLOPs (own)", "train FLOPs (all in)", "inference FLOPs/byte", "steps",
            "wall time"]
    head.append("peak memory")  # blank where a run did not have its process to itself
    head += ["MFU"] if has_mfu else []
    head += ["val bpb"] + (["test bpb"] if has_test else [])
    if has_task:
        head.append("task accuracy")
    head += [f"{k} ×" for k in kinds]
    split_line = ("Validation (choosing) and test (reporting): the dataset's val and test splits."
                  if has_test else f"Validation: {summary['val'] or 'the dataset val split'} (no test split: "
                  f"{'--val replaces the splits' if summary['val'] else 'the dataset was prepared without one'}).")
    charged = summary.get("preset", {}).get("charge_entropy", True)
    lines = [f"# omnibyte bench on {summary['data']}", "",
             f"{split_line} Bits per byte = NLL bits / bytes of the scored text (the BPE model's tokens decode to "
             f"the same bytes). Train FLOPs (all in) add, for BLT-entropy, its entropy model's training and "
             f"forward pass over every training byte"
             + (" — charged to its budget: its steps are what is left" if charged
                else " — not charged to its budget (preset charge_entropy = false)") + ".", ""]
    if summary.get("frontier"):
        by_name = {r["name"]: r for r in results}
        lines += ["## Frontier: each family's best grid point per budget, chosen on val", "",
                  "| budget | model | chosen (of N) | params | train FLOPs (all in) | peak memory | val bpb | test bpb "
                  "| seeds |", "|---|---|---|---|---|---|---|---|---|"]
        for f in sorted(summary["frontier"], key=lambda f: _order(by_name[f["name"]])):
            r = by_name[f["name"]]
            if "test_mean" in f and len(f["test_by_seed"]) > 1:
                test = f"**{f['test_mean']:.4f}** ({f['test_min']:.4f}–{f['test_max']:.4f})"
                seeds = ", ".join(str(s) for s in f["test_by_seed"])
            else:
                test = f"**{r['test_bpb']:.4f}**" if "test_bpb" in r else "—"
                seeds = str(r.get("seed", ""))
            mem = f"{r['peak_rss_mib']:,} MiB" if "peak_rss_mib" in r else ""
            lines.append(f"| {r['budget']:.0e} | {r['model']} | {_variant(r)} (of {f['grid_points']}) | "
                         f"{fmt_si(r['params'])} | {r['train_flops_all']:.2e} | {mem} | {r['val_bpb']:.4f} | {test} | "
                         f"{seeds} |")
        lines += ["", "Test bpb: the mean over the seeds (min–max) where the chosen point was trained at several; "
                  "val bpb and the choice are the first seed's."]
        lines += ["", "## Every run", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(results, key=_order):
        row = [r["model"], r.get("name", ""), fmt_si(r["params"]), f"{r['train_flops']:.2e}",
               f"{r.get('train_flops_all', r['train_flops']):.2e}", fmt_si(r["infer_flops_per_byte"]), str(r["steps"]),
               f"{r['wall_s']:.0f} s"]
        row.append(f"{r['peak_rss_mib']:,} MiB" if "peak_rss_mib" in r else "")
        if has_mfu:
            row.append(f"{r['mfu']:.1%}" if "mfu" in r else "")
        row.append(f"{r['val_bpb']:.4f}")
        if has_test:
            row.append(f"{r['test_bpb']:.4f}" if "test_bpb" in r else "")
        if has_task:
            row.append(f"{r['task_accuracy']:.1%}" if "task_accuracy" in r else "")
        row += [f"{r['noise'][k]['ratio']:.3f}" if k in r.get("noise", {}) else "" for k in kinds]
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    if "bpe_bytes_per_token_by_vocab" in summary:
        per = ", ".join(f"{v} at {k} ids" for k, v in sorted(summary["bpe_bytes_per_token_by_vocab"].items(),
                                                             key=lambda kv: int(kv[0])))
        notes.append(f"BPE bytes per token on the train split: {per}; its FLOPs per byte are per-token FLOPs "
                     f"over that.")
    elif "bpe_bytes_per_token" in summary:
        notes.append(f"BPE: {summary['bpe_bytes_per_token']} bytes per token on the train split; its FLOPs "
                     f"per byte are per-token FLOPs over that.")
    if "space_bytes_per_patch" in summary:
        notes.append(f"BLT space patching: {summary['space_bytes_per_patch']} bytes per patch.")
    if "entropy" in summary:
        e = summary["entropy"]
        notes.append(f"BLT entropy patching: threshold {e['threshold']:.3f} nats → {e['bytes_per_patch']:.3f} bytes "
                     f"per patch; the entropy model: {fmt_si(e['params'])} params, {e['train_flops']:.2e} training "
                     f"FLOPs, {fmt_si(e['infer_flops_per_byte'])} inference FLOPs per byte (in the all-in column and "
                     f"in the BLT's inference FLOPs per byte).")
    notes.append("Peak memory: the training process's highest resident memory during the run (Linux VmHWM), "
                 "given where the run had its process to itself (with --jobs 2 or more each run trains in a "
                 "fresh process; with one job, only the first run of the process).")
    if has_mfu:
        notes.append("MFU: the median over the run's logged stretches of its model FLOPs per second over the peak of "
                     "the device and dtype it trained in (omnibyte/machine.py says how the peak is derived).")
    if kinds:
        notes.append("Noise columns: noisy bpb / clean bpb on the validation text perturbed at the given rate.")
    notes += summary.get("skipped", [])
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def plot_results(results: list[dict], path: str | Path) -> Path:
    """Test bpb (validation bpb where a run has no test score) against training FLOPs, entropy model
    included (left), and inference FLOPs per byte (right)."""
    # matplotlib only when a plot is drawn: it is slow to import
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = "test_bpb" if all("test_bpb" in r for r in results) else "val_bpb"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name in dict.fromkeys(r["model"] for r in results):
        rows = sorted((r for r in results if r["model"] == name), key=lambda r: r["train_flops_all"])
        left.plot([r["train_flops_all"] for r in rows], [r[y] for r in rows], "o-", label=name)
        right.plot([r["infer_flops_per_byte"] for r in rows], [r[y] for r in rows], "o", label=name)
    left.set_xlabel("training FLOPs (entropy model included)")
    right.set_xlabel("inference FLOPs per byte")
    left.set_ylabel("test bits per byte" if y == "test_bpb" else "validation bits per byte")
    for ax, key in ((left, "train_flops_all"), (right, "infer_flops_per_byte")):
        xs = [r[key] for r in results]
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)  # a decade-wide view even for one budget
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)
    fig.suptitle("omnibyte bench: lower is better")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
