"""A sweep's results as a markdown table and a plot of validation bpb against FLOPs."""

from __future__ import annotations

from pathlib import Path

from omnibyte.bench.presets import MODELS


def fmt_si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def markdown_table(summary: dict) -> str:
    results = summary["results"]
    has_task = any("task_accuracy" in r for r in results)
    kinds = sorted({k for r in results for k in r.get("noise", {})})
    head = ["model", "params", "train FLOPs", "inference FLOPs/byte", "steps", "wall time", "val bpb"]
    if has_task:
        head.append("task accuracy")
    head += [f"{k} ×" for k in kinds]
    lines = [f"# omnibyte bench on {summary['data']}", "",
             f"Validation: {summary['val'] or 'the dataset val split'}. Bits per byte = NLL bits / bytes of "
             f"the scored text (the BPE model's tokens decode to the same bytes).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(results, key=lambda r: (r["budget"], MODELS.index(r["model"]) if r["model"] in MODELS else 99)):
        row = [r["model"], fmt_si(r["params"]), f"{r['train_flops']:.2e}", fmt_si(r["infer_flops_per_byte"]),
               str(r["steps"]), f"{r['wall_s']:.0f} s", f"{r['val_bpb']:.4f}"]
        if has_task:
            row.append(f"{r['task_accuracy']:.1%}" if "task_accuracy" in r else "")
        row += [f"{r['noise'][k]['ratio']:.3f}" if k in r.get("noise", {}) else "" for k in kinds]
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    if "bpe_bytes_per_token" in summary:
        notes.append(f"BPE: {summary['bpe_bytes_per_token']} bytes per token on the train split; its FLOPs "
                     f"per byte are per-token FLOPs over that.")
    if "space_bytes_per_patch" in summary:
        notes.append(f"BLT space patching: {summary['space_bytes_per_patch']} bytes per patch.")
    if "entropy" in summary:
        e = summary["entropy"]
        notes.append(f"BLT entropy patching: threshold {e['threshold']:.3f} nats → {e['bytes_per_patch']:.3f} bytes "
                     f"per patch; the entropy model ({fmt_si(e['params'])} params, {e['train_flops']:.2e} training "
                     f"FLOPs, not counted above) is in the inference FLOPs per byte.")
    if kinds:
        notes.append("Noise columns: noisy bpb / clean bpb on the validation text perturbed at the given rate.")
    notes += summary.get("skipped", [])
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def plot_results(results: list[dict], path: str | Path) -> Path:
    """Validation bpb against training FLOPs (left) and inference FLOPs per byte (right)."""
    # matplotlib only when a plot is drawn: it is slow to import
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name in dict.fromkeys(r["model"] for r in results):
        rows = sorted((r for r in results if r["model"] == name), key=lambda r: r["train_flops"])
        left.plot([r["train_flops"] for r in rows], [r["val_bpb"] for r in rows], "o-", label=name)
        right.plot([r["infer_flops_per_byte"] for r in rows], [r["val_bpb"] for r in rows], "o", label=name)
    left.set_xlabel("training FLOPs")
    right.set_xlabel("inference FLOPs per byte")
    left.set_ylabel("validation bits per byte")
    for ax, key in ((left, "train_flops"), (right, "infer_flops_per_byte")):
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
