"""What the machine offers a training run: whether bf16 autocast pays on this CPU (`auto_dtype`),
and the peak FLOP/s that model FLOPs utilisation is measured against (`cpu_peak`, `gpu_peak`,
`device_peak`).

MFU = (the model's training FLOPs per byte × bytes per second) / peak FLOP/s. The FLOPs are the
model's own formula (matrix products and attention, 3 × the forward pass), so work the model does
not need (recomputation, padding, elementwise ops) never counts as useful.

The CPU peak is cores × clock × FLOPs per cycle per core:

- cores: the physical cores (distinct `physical id`/`core id` pairs in /proc/cpuinfo; hyperthreads
  share their core's vector units), at most the threads the run uses;
- clock: the highest clock the cores are rated for, `cpuinfo_max_freq` in sysfs (what lscpu calls
  "CPU max MHz"), else the highest "cpu MHz" in /proc/cpuinfo (in a VM, usually the host's nominal
  clock). Wide vector and AMX code may run below it, so the peak is an upper bound;
- FLOPs per cycle, fp32: (vector width / 32 bits) lanes × 2 FMA units × 2 FLOPs per FMA — 64 with
  AVX-512, 32 with AVX/AVX2, 16 with SSE or Arm NEON. Two FMA units are assumed (server cores
  since Skylake-SP, and recent desktop cores); a part with one has half this peak;
- FLOPs per cycle, bf16: with AMX-BF16, 1,024 — Intel's published rate for one core's AMX tile
  unit (Intel Architecture Day 2021, Sapphire Rapids: 1,024 bf16 operations per cycle per core
  against 64 fp32 with AVX-512); else with AVX512_BF16, 128 (VDPBF16PS: 16 lanes × 2 products, a
  multiply and an add each, on 2 units); else the fp32 rate (bf16 is converted and computed in
  fp32).

A GPU's peak is its dense bf16 tensor-core rate from NVIDIA's data sheets (`GPU_BF16_PEAK`; the
sheets' headline figures assume 2:4 sparsity and are twice these). A run in fp32 on a GPU is
measured against the same bf16 peak: how far it is from what the device offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz

# dense bf16 tensor-core TFLOP/s by device-name fragment, the more specific first (data sheets:
# A100 (2021), H100 (2023: SXM 989, PCIe 756, NVL 835), H200 (2024), L4 (2023), L40S (2023))
GPU_BF16_PEAK = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
                 ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))

AMX_BF16_FLOPS_PER_CYCLE = 1024  # per core: Intel Architecture Day 2021 (Sapphire Rapids)


def read_cpuinfo() -> str:
    """/proc/cpuinfo's text, or "" where there is none (not Linux)."""
    try:
        return CPUINFO.read_text(errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The feature flags of the first processor in `cpuinfo` (default: this machine's): x86's
    `flags` line, Arm's `Features`."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_amx_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU has AMX tiles with bf16 (Intel Sapphire Rapids and later), where bf16
    matrix products run many times faster than fp32 ones."""
    return "amx_bf16" in (cpu_flags() if flags is None else flags)


def auto_dtype(device_type: str, flags: frozenset[str] | None = None) -> str:
    """What `train.dtype auto` trains in: "bf16" (autocast; weights stay fp32) on CUDA and on a
    CPU with AMX-BF16, "fp32" elsewhere (a CPU without AMX computes bf16 no faster, and less
    exactly)."""
    if device_type == "cuda":
        return "bf16"
    if device_type == "cpu" and has_amx_bf16(flags):
        return "bf16"
    return "fp32"


@dataclass(frozen=True)
class Peak:
    flops: float  # FLOP/s
    how: str  # its derivation in one line, e.g. "2 cores × 2.60 GHz × 64 fp32 FLOPs/cycle (AVX-512)"


def physical_cores(cpuinfo: str) -> int:
    """Distinct (physical id, core id) pairs; the processor count where those are not given."""
    cores, processors, phys = set(), 0, "0"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    return len(cores) or processors


def cpu_mhz(cpuinfo: str, max_freq_khz: str | None = None) -> float | None:
    """The clock for a peak: `max_freq_khz` (sysfs cpuinfo_max_freq) when given, else the highest
    "cpu MHz" of `cpuinfo`."""
    if max_freq_khz and max_freq_khz.strip().isdigit() and int(max_freq_khz) > 0:
        return int(max_freq_khz) / 1000
    mhz = []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                mhz.append(float(value))
            except ValueError:
                continue
    return max(mhz) if mhz else None


def flops_per_cycle(flags: frozenset[str], dtype: str) -> tuple[int, str] | None:
    """(FLOPs per cycle per core, the unit that does them) for `dtype` ("fp32" or "bf16"), or None
    for a CPU whose vector unit is not recognised."""
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"dtype must be fp32 or bf16, got {dtype!r}")
    if dtype == "bf16" and "amx_bf16" in flags:
        return AMX_BF16_FLOPS_PER_CYCLE, "AMX-BF16"
    if dtype == "bf16" and "avx512_bf16" in flags:
        return 128, "AVX512_BF16"
    if "avx512f" in flags:
        bits, unit = 512, "AVX-512"
    elif "avx2" in flags or "avx" in flags:
        bits, unit = 256, "AVX2" if "avx2" in flags else "AVX"
    elif "asimd" in flags:
        bits, unit = 128, "NEON"
    elif "sse" in flags or "sse2" in flags:
        bits, unit = 128, "SSE"
    else:
        return None
    return bits // 32 * 2 * 2, unit  # fp32 lanes × 2 FMA units × 2 FLOPs per FMA


def cpu_peak(dtype: str, threads: int | None = None, cpuinfo: str | None = None,
             max_freq_khz: str | None = None) -> Peak | None:
    """This CPU's peak FLOP/s in `dtype` over min(physical cores, `threads`) cores (the module
    docstring says how), or None when the clock or vector unit cannot be read. `cpuinfo` and
    `max_freq_khz` default to this machine's /proc/cpuinfo and sysfs."""
    if cpuinfo is None:
        cpuinfo = read_cpuinfo()
        try:
            max_freq_khz = MAX_FREQ.read_text()
        except OSError:
            max_freq_khz = None
    cores = physical_cores(cpuinfo)
    if threads is not None:
        cores = min(cores, threads)
    mhz = cpu_mhz(cpuinfo, max_freq_khz)
    rate = flops_per_cycle(cpu_flags(cpuinfo), dtype)
    if not cores or not mhz or rate is None:
        return None
    per_cycle, unit = rate
    return Peak(cores * mhz * 1e6 * per_cycle,
                f"{cores} core{'s' if cores > 1 else ''} × {mhz / 1000:.2f} GHz × {per_cycle:,} {dtype} "
                f"FLOPs/cycle ({unit})")


def gpu_peak(name: str) -> Peak | None:
    """The dense bf16 peak of the GPU called `name` (torch.cuda.get_device_name), or None for one
    not in `GPU_BF16_PEAK`."""
    for fragment, flops in GPU_BF16_PEAK:
        if fragment.lower() in name.lower():
            return Peak(flops, f"{fragment} dense bf16, NVIDIA data sheet")
    return None


def device_peak(device, dtype: str, threads: int | None = None, world_size: int = 1) -> Peak | None:
    """The peak a run on torch `device` in `dtype` is measured against: the CPU's over the cores
    its `threads` use, or `world_size` GPUs' (one per process); None when unknown."""
    if device.type == "cuda":
        import torch

        one = gpu_peak(torch.cuda.get_device_name(device))
        if one is None or world_size == 1:
            return one
        return Peak(one.flops * world_size, f"{world_size} × {one.how}")
    if device.type == "cpu":
        return cpu_peak(dtype, threads)
    return None


def mfu(flops_per_s: float, peak: Peak | None) -> float | None:
    """Model FLOPs utilisation: the model's useful FLOP/s as a fraction of `peak` (None without one)."""
    return flops_per_s / peak.flops if peak is not None and peak.flops > 0 else None
