"""The CUDA paths that CPU-only CI cannot reach, checked in one short run, plus GPU figures.

Checks (each prints PASS or FAIL; the exit status is 1 if any failed):
  1. every model (byte transformer, MEGABYTE, BLT with static, space and entropy patches):
     CUDA fp32 logits and gradients equal the CPU's (TF32 off); bf16 autocast loss within 2% of
     fp32; `torch.compile` forward + backward equals eager; cached greedy decoding on CUDA equals
     the full forward re-run per byte; a batch of two prompts gives each row what it gets alone.
  2. the command line on CUDA: train (bf16 autocast; then with torch.compile), torchrun with
     NCCL, eval, text generation and a generated image block.
Figures (written as a markdown section to --results), each a median (min–max) over repeated
calls timed by `benchmarks.common.compare`:
  3. training throughput in bf16: byte transformer vs BLT (~4.5 bytes per patch) vs MEGABYTE
     (patches of 8) with the same global width and depth, eager and compiled. The models run one
     after another, not interleaved: each model's peak memory is then its own, and the GPU is
     not shared with other work;
  4. BLT greedy generation on the GPU: cached vs the full forward re-run per byte, interleaved.

    python -m benchmarks.gpu_check --data .gpu/kjv --results /tmp/results_gpu.md
    python -m benchmarks.gpu_check --quick --skip cli   # tiny sizes; runs on a CPU too
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks.common import REPO, bytes_only, compare, fmt_rate, fmt_speedup, header, train_step, write_section
from omnibyte.format import BOS, N_BYTES
from omnibyte.generate import SamplingConfig, generate
from omnibyte.generate.reference import rerun_greedy
from omnibyte.models import build_model
from omnibyte.patching import PatcherConfig, mean_patch_len, patch_starts
from omnibyte.patching.calibrate import calibrate_threshold

FAILED: list[str] = []
TEXT = (b"In the beginning God created the heaven and the earth. And the earth was without form, and void; "
        b"and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. ")


def report(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def guarded(name: str, fn) -> None:
    """Run one check; an exception is a FAIL with its last line, not the end of the run."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check runs
        traceback.print_exc()
        report(name, False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def text_batch(b: int, t: int, device) -> torch.Tensor:
    """(b, t + 1) ids: the text from a different offset per row, a BOS partway through row 1."""
    rows = []
    for r in range(b):
        row = [BOS, *((TEXT * (t // len(TEXT) + 2))[13 * r:13 * r + t])]
        if r == 1:
            row[t // 2] = BOS
        rows.append(row)
    return torch.tensor(rows, device=device)


def tiny_entropy_lm():
    torch.manual_seed(1)
    em = build_model("transformer", {"dim": 32, "n_layers": 2, "n_heads": 4, "window": 16}).eval()
    torch.nn.init.normal_(em.head.weight, std=0.3)  # spread the entropies apart
    return em


def small_models() -> dict[str, callable]:
    """Builders of the checked models at dim 64, each with a fixed init."""
    def blt(kind):
        def make():
            em = None
            patcher = {"kind": kind, "patch_size": 4}
            if kind == "entropy":
                em = tiny_entropy_lm()
                patcher = {"kind": "entropy", "threshold": calibrate_threshold(em, text_batch(2, 256, "cpu"), 4.0)}
            torch.manual_seed(0)
            return build_model("blt", {"encoder": {"dim": 32, "n_layers": 1, "n_heads": 2, "window": 16},
                                       "latent": {"dim": 64, "n_layers": 2, "n_heads": 4},
                                       "decoder": {"dim": 32, "n_layers": 2, "n_heads": 2, "window": 16},
                                       "ngrams": {"buckets": 257}, "patcher": patcher}, entropy_model=em)
        return make

    def seeded(arch, cfg):
        def make():
            torch.manual_seed(0)
            return build_model(arch, cfg)
        return make

    return {"transformer": seeded("transformer", {"dim": 64, "n_layers": 2, "n_heads": 4}),
            "megabyte": seeded("megabyte", {"patch_size": 4, "global_model": {"dim": 64, "n_layers": 2},
                                            "local_model": {"dim": 32, "n_layers": 2}}),
            "blt-static": blt("static"), "blt-space": blt("space"), "blt-entropy": blt("entropy")}


def rel(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-12) -> float:
    """max |a - b| over max |b| (at least `floor`)."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(floor))


def worst_grad(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[float, str]:
    """The largest per-parameter relative gradient error, with each parameter's scale floored at
    1e-4 of the largest gradient anywhere: a parameter whose true gradient is (numerically) zero
    would otherwise score its rounding noise as a 100% error."""
    floor = 1e-4 * max(float(g.abs().max()) for g in ref.values())
    return max((rel(got[k], ref[k], floor), k) for k in ref)


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}


def check_model(name: str, make, dev: torch.device, compile_: bool) -> None:
    """The five checks of one model (compile only where `compile_`)."""
    ids = text_batch(2, 256, "cpu")
    x, y = ids[:, :-1], ids[:, 1:]
    cpu = make().train()
    gpu = copy.deepcopy(cpu).to(dev)

    def numerics():
        out_c = cpu(x, y)
        out_c.loss.backward()
        out_g = gpu(x.to(dev), y.to(dev))
        out_g.loss.backward()
        gc, gg = grads(cpu), grads(gpu)
        dl = rel(out_g.logits.cpu(), out_c.logits)
        dg, worst = worst_grad(gg, gc)
        report(f"{name}: {dev.type} fp32 = cpu", dl < 1e-4 and dg < 1e-3 and gc.keys() == gg.keys(),
               f"logits rel {dl:.1e}, worst grad rel {dg:.1e} ({worst}), {len(gg)} grads")
    guarded(f"{name}: {dev.type} fp32 = cpu", numerics)

    def bf16():
        with torch.no_grad():
            ref = float(gpu(x.to(dev), y.to(dev)).loss)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                low = float(gpu(x.to(dev), y.to(dev)).loss)
        report(f"{name}: bf16 autocast loss", abs(low - ref) / ref < 0.02, f"{low:.4f} vs fp32 {ref:.4f}")
    guarded(f"{name}: bf16 autocast loss", bf16)

    if compile_:
        def compiled():
            gpu.zero_grad(set_to_none=True)
            eager = gpu(x.to(dev), y.to(dev))
            eager.loss.backward()
            ge = grads(gpu)
            gpu.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            comp = torch.compile(gpu)(x.to(dev), y.to(dev))
            comp.loss.backward()
            gcomp = grads(gpu)
            dl = abs(float(comp.loss) - float(eager.loss)) / float(eager.loss)
            dg, worst = worst_grad(gcomp, ge)
            report(f"{name}: torch.compile = eager", dl < 1e-4 and dg < 1e-2,
                   f"loss rel {dl:.1e}, worst grad rel {dg:.1e} ({worst}; norms {gcomp[worst].norm():.3g} compiled, "
                   f"{ge[worst].norm():.3g} eager), compiled in {time.perf_counter() - t0:.0f}s")
        guarded(f"{name}: torch.compile = eager", compiled)

    def decoding():
        model = gpu.eval()
        prompt = [BOS, *TEXT[:20]]
        cfg = SamplingConfig(max_new=48, temperature=0)

        def greedy(prompts):  # 48 new bytes per row: no EOS, which an untrained model picks early
            return generate(model, prompts, cfg, constraints=[bytes_only() for _ in prompts])

        cached = greedy([prompt])[0]
        full = rerun_greedy(model, prompt, 48, bytes_only())
        same = next((i for i, (a, b) in enumerate(zip(cached, full)) if a != b), len(full))
        report(f"{name}: cached decoding = full re-run on {dev.type}", cached == full, f"{same}/{len(full)} bytes")
        other = [BOS, *TEXT[30:41]]
        both = greedy([prompt, other])
        alone = [cached, greedy([other])[0]]
        report(f"{name}: batched = alone on {dev.type}", both == alone)
    guarded(f"{name}: cached decoding", decoding)


# --------------------------------------------------------------------------- the command line


def cli(data: Path, work: Path, dev: torch.device, steps: int) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    py = [sys.executable, "-m", "omnibyte.cli"]
    quick = ["--train.eval_every", "0", "--train.save_every", "0", "--train.log_every", "50"]

    def run(name: str, args: list[str], check=None, timeout=300) -> str:
        t0 = time.perf_counter()
        try:
            p = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            report(name, False, f"timed out after {timeout}s")
            return ""
        out = p.stdout + p.stderr
        ok = p.returncode == 0 and (check is None or check(out))
        tail = " | ".join(out.strip().splitlines()[-3:])[-400:]
        report(name, ok, f"rc {p.returncode}, {time.perf_counter() - t0:.0f}s: {tail}")
        return out

    d = dev.type
    base = [*py, "train", "configs/blt-tiny.toml", "--data", str(data), "--train.device", d, "--quiet"]
    run(f"cli: train BLT on {d} (dtype auto)", [*base, "--out", str(work / "blt"), "--train.steps", str(steps), *quick])
    run(f"cli: eval on {d}", [*py, "eval", str(work / "blt"), "--max-batches", "20", "--json"],
        check=lambda o: re.search(r'"bpb":\s*([0-9.]+)', o) is not None and float(re.search(
            r'"bpb":\s*([0-9.]+)', o).group(1)) < 3.0)
    run(f"cli: generate text on {d}", [*py, "generate", str(work / "blt"), "--prompt", "In the beginning",
                                       "--max-bytes", "120", "--seed", "0"])
    png = work / "gen.png"
    run(f"cli: generate an image block on {d}", [*py, "generate", str(work / "blt"), "--prompt", "a picture",
                                                 "--image-size", "8x8", "--out", str(png), "--seed", "0"],
        check=lambda o: png.exists() and png.stat().st_size > 0)
    short = str(max(steps // 5, 10))
    run("cli: train BLT with torch.compile", [*base, "--out", str(work / "blt-compiled"), "--train.steps", short,
                                          "--train.compile", "true", *quick])
    run("cli: train the byte transformer with torch.compile",
        [*py, "train", "configs/tiny.toml", "--data", str(data), "--train.device", d, "--quiet", "--out",
         str(work / "tiny-compiled"), "--train.steps", short, "--train.compile", "true", *quick])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "-m", "omnibyte.cli"]
    run(f"cli: torchrun, {'NCCL' if d == 'cuda' else 'gloo'}, 1 process",
        [*torchrun, *base[3:], "--out", str(work / "blt-ddp"), "--train.steps", short, *quick])


# --------------------------------------------------------------------------- figures


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def synced(fn, dev):
    """`fn` followed by a device synchronisation, so a wall-clock timing covers its kernels."""
    def call():
        out = fn()
        sync(dev)
        return out
    return call


def throughput(p: dict, dev: torch.device, deadline: float, modes=("eager", "compiled")) -> list[str]:
    b, t, dg, nl, nh = p["batch"], p["seq_len"], p["dim"], p["layers"], p["heads"]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, N_BYTES, (b, t + 1), generator=g).to(dev)
    scores = torch.rand(b, t, generator=g).to(dev)
    patcher = {"kind": "entropy", "threshold": 1 - 1 / p["bpp"], "bytes_per_patch": p["bpp"]}
    starts = patch_starts(ids[:, :-1], PatcherConfig(**patcher), scores)  # a patch starts with probability 1/bpp
    em = build_model("transformer", {"dim": 64, "n_layers": 2, "n_heads": 4, "window": 64}).eval()
    builders = {
        "byte transformer": lambda: build_model("transformer", {"dim": dg, "n_layers": nl, "n_heads": nh}),
        f"BLT, local width {p['local']}": lambda: build_model("blt", {
            "encoder": {"dim": p["local"], "n_layers": 1, "n_heads": p["local_heads"], "window": p["window"]},
            "latent": {"dim": dg, "n_layers": nl, "n_heads": nh},
            "decoder": {"dim": p["local"], "n_layers": p["dec_layers"], "n_heads": p["local_heads"],
                        "window": p["window"]},
            "patcher": patcher}, entropy_model=em),
        "MEGABYTE, P 8": lambda: build_model("megabyte", {
            "patch_size": 8, "global_model": {"dim": dg, "n_layers": nl, "n_heads": nh},
            "local_model": {"dim": p["local"], "n_layers": p["dec_layers"], "n_heads": p["local_heads"]}}),
    }
    lines = [f"Training throughput on the GPU: batch {b} × {t} random bytes, bf16 autocast, forward + backward + "
             f"fused AdamW, median (min–max) of {p['steps']} steps after warm-up. Global width {dg} × {nl} layers for "
             f"all three; BLT patches of mean {mean_patch_len(starts):.2f} bytes (variable length from precomputed "
             f"scores, as in entropy-patched training), local width {p['local']}, encoder 1 / decoder "
             f"{p['dec_layers']} layers, window {p['window']}; MEGABYTE local {p['local']} × {p['dec_layers']}.", "",
             "| model | mode | params | train FLOPs/byte | bytes/s | vs byte transformer (same mode) | peak memory |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for mode in modes:
        base = None
        for name, make in builders.items():
            if mode == "compiled" and time.time() > deadline:
                lines.append(f"| {name} | {mode} | – | – | skipped: out of time | – | – |")
                continue
            try:
                torch.manual_seed(0)
                model = make().to(dev).train()
                opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4,
                                        fused=dev.type == "cuda")
                fwd = torch.compile(model) if mode == "compiled" else model
                extra = {"entropies": scores} if name.startswith("BLT") else {}

                autocast = functools.partial(torch.autocast, dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
                step = train_step(model, ids, opt=opt, autocast=autocast,
                                  loss=lambda ids, fwd=fwd, extra=extra: fwd(ids[:, :-1], ids[:, 1:], **extra).loss)
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                sync(dev)
                timing = compare({name: synced(step, dev)}, repeats=p["steps"], warmup=p["warmup"])[name]
                base = base or timing if name == "byte transformer" else base
                mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if dev.type == "cuda" else "–"
                n = sum(q.numel() for q in model.parameters() if q.requires_grad)
                fl = model.flops_per_byte(t)["train"]
                ratio = f"{base.median / timing.median:.2f}×" if base else "–"
                lines.append(f"| {name} | {mode} | {n / 1e6:.1f}M | {fl / 1e6:.0f}M | {fmt_rate(timing, b * t)} | "
                             f"{ratio} | {mem} |")
                print(f"  {name} {mode}: {b * t / timing.median:,.0f} bytes/s ({timing.median * 1e3:.0f} ms/step)",
                      flush=True)
                del model, opt, fwd, step
            except Exception as e:  # noqa: BLE001 - a figure that fails is reported in its row
                traceback.print_exc()
                lines.append(f"| {name} | {mode} | – | – | failed: {type(e).__name__} | – | – |")
                FAILED.append(f"throughput {name} {mode}")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return lines


def generation(p: dict, dev: torch.device) -> list[str]:
    n = p["gen_bytes"]
    torch.manual_seed(0)
    model = build_model("blt", {"encoder": {"dim": 64, "n_layers": 1, "n_heads": 2, "window": 128},
                                "latent": {"dim": 256, "n_layers": 4, "n_heads": 4},
                                "decoder": {"dim": 64, "n_layers": 2, "n_heads": 2, "window": 128},
                                "patcher": {"kind": "static", "patch_size": 4}}).to(dev).eval()
    prompt = [BOS, *TEXT[:55]]
    cfg = SamplingConfig(max_new=n, temperature=0)
    generate(model, [prompt], SamplingConfig(max_new=8, temperature=0))  # warm-up
    rerun_greedy(model, prompt, 8)
    sync(dev)
    t = compare({"cached": synced(lambda: generate(model, [prompt], cfg, constraints=[bytes_only()])[0], dev),
                 "full re-run": synced(lambda: rerun_greedy(model, prompt, n, bytes_only()), dev)},
                repeats=p["gen_repeats"], warmup=0)
    cached, full = t["cached"].values[-1], t["full re-run"].values[-1]
    same = next((i for i, (a, b) in enumerate(zip(cached, full)) if a != b), n)
    return [f"Greedy generation of {n} bytes (bytes only, no EOS) on the GPU (fp32, batch 1) by the BLT of "
            "`blt_speed.py` (latent 256 × 4, local 64, static patches of 4): cached `omnibyte.generate` vs the full "
            f"forward re-run per byte (`omnibyte.generate.reference.rerun_greedy`); median (min–max) of "
            f"{p['gen_repeats']} interleaved rounds.", "",
            "| cached bytes/s | full re-run bytes/s | speed-up | same bytes |", "| ---: | ---: | ---: | ---: |",
            f"| {fmt_rate(t['cached'], n)} | {fmt_rate(t['full re-run'], n, '{:,.1f}')} | "
            f"{fmt_speedup(t['cached'], t['full re-run'], '{:.1f}')} | {same} / {n} |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (runs on a CPU too)")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "kjv", help="prepared dataset for the CLI checks")
    ap.add_argument("--results", type=Path, help="markdown file to write the figures' section to")
    ap.add_argument("--budget", type=float, default=600,
                    help="seconds from the start after which compiled figures are skipped (default 600)")
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out: models, compile, cli, figures")
    ap.add_argument("--cli-steps", type=int, default=300, help="training steps of the CLI check (default 300)")
    args = ap.parse_args()
    start = time.time()
    skip = set(filter(None, args.skip.split(",")))
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    elif not args.quick:
        sys.exit("error: no CUDA device (use --quick to try the script on a CPU)")

    if "models" not in skip:
        for name, make in small_models().items():
            # compile once, on the model whose patch count changes with the data (the other models'
            # compiled training is checked through the CLI)
            check_model(name, make, dev, compile_="compile" not in skip and name == "blt-entropy")
    if "cli" not in skip:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            cli(args.data.resolve(), Path(work), dev, args.cli_steps)
    if "figures" not in skip:
        torch.backends.cuda.matmul.allow_tf32 = True
        p = (dict(batch=2, seq_len=256, dim=64, layers=2, heads=4, local=32, local_heads=2, dec_layers=2, window=32,
                  bpp=4.5, steps=2, warmup=1, gen_bytes=16, gen_repeats=2) if args.quick else
             dict(batch=8, seq_len=8192, dim=768, layers=12, heads=12, local=256, local_heads=4, dec_layers=2,
                  window=512, bpp=4.5, steps=5, warmup=3, gen_bytes=300, gen_repeats=3))
        table = throughput(p, dev, start + args.budget, modes=("eager",))
        gen = generation(p, dev)
        modes = () if "compile" in skip else ("compiled",)
        table += throughput(p, dev, start + args.budget, modes=modes)[4:]  # rows only
        lines = header("GPU: training throughput and generation") + table + ["", *gen]
        print("\n".join(lines), flush=True)
        if args.results:
            write_section(args.results, "gpu-quick" if args.quick else "gpu", lines, "GPU benchmarks")
    print(f"{len(FAILED)} failed: {', '.join(FAILED) or 'none'}; {time.time() - start:.0f}s", flush=True)
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
