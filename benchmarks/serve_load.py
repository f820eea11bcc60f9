"""Load test of `omnibyte serve` on loopback: streaming chat clients, 1, 4, 16 and 50 at once, then
1 again, each level for --seconds. Reports aggregate bytes/s per level (the bytes streamed between
the end of a warm-up and the level's end) and its ratio to one client (the mean of both 1-client
levels: on a shared machine the load drifts), failed and truncated responses (a truncated one lacks
its finish reason, its usage or `data: [DONE]`), the mean rows per decoding step, and the server's
memory (RSS) over each level. The section also lists the other processes busy on the machine.

Bounded: the server is a child process (`omnibyte serve`) listening on 127.0.0.1 only, every
request has a timeout, clients start no request after their level's end and the script stops the
server with SIGTERM when done (or interrupted).

    .venv/bin/python -m benchmarks.serve_load --model runs/demo              # ~5 minutes
    .venv/bin/python -m benchmarks.serve_load --model runs/demo --quick      # 8 s per level, no results file
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import REPO, header, results_file, results_option, write_section

PROMPTS = ["And God said", "In the beginning", "And it came to pass", "Blessed are the", "The LORD is my",
           "And the king said unto", "Now these are the generations of", "Hear, O Israel:"]


@dataclass
class Level:
    clients: int
    requests: int = 0
    failed: int = 0
    truncated: int = 0
    errors: list[str] = field(default_factory=list)
    window_bytes: int = 0  # bytes streamed inside the measured window
    completion_ids: int = 0  # usage.completion_tokens over finished requests
    window: float = 0.0
    rss: list[float] = field(default_factory=list)  # MiB, sampled through the level
    steps: int = 0
    rows: int = 0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one_request(http, url: str, body: dict, level: Level, window: tuple[float, float]) -> None:
    from omnibyte.serve.text import unescape

    level.requests += 1
    finish = usage = None
    done = False
    try:
        async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                level.failed += 1
                level.errors.append(f"{r.status_code}: {(await r.aread())[:200]!r}")
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices", []):
                    text = choice["delta"].get("content")
                    now = time.monotonic()
                    if isinstance(text, str) and window[0] <= now <= window[1]:
                        level.window_bytes += len(unescape(text))
                    finish = choice.get("finish_reason") or finish
    except Exception as e:  # a failure to record, not to stop the test for
        level.failed += 1
        level.errors.append(f"{type(e).__name__}: {e}")
        return
    if not (done and finish and usage):
        level.truncated += 1
        level.errors.append(f"truncated: done={done} finish={finish} usage={usage}")
        return
    level.completion_ids += usage["completion_tokens"]


async def run_level(url: str, model: str, level: Level, seconds: float, warmup: float, max_tokens: int,
                    pid: int) -> None:
    import httpx

    start = time.monotonic()
    window = (start + warmup, start + warmup + seconds)
    level.window = seconds
    before = json.loads(await asyncio.to_thread(_get, url + "/health"))

    async def client(k: int, http) -> None:
        i = 0
        while time.monotonic() < window[1]:
            body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[(k + i) % len(PROMPTS)]}],
                    "max_tokens": max_tokens, "temperature": 0.8, "top_p": 0.95, "seed": 1000 * k + i,
                    "stream": True, "stream_options": {"include_usage": True}}
            await one_request(http, url, body, level, window)
            i += 1

    async def sample_memory() -> None:
        while time.monotonic() < window[1]:
            level.rss.append(rss_mib(pid))
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=level.clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as http:
        await asyncio.gather(sample_memory(), *(client(k, http) for k in range(level.clients)))
    after = json.loads(await asyncio.to_thread(_get, url + "/health"))
    level.steps, level.rows = after["steps"] - before["steps"], after["rows"] - before["rows"]


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def busy_processes(seconds: float = 2.0, least: float = 10.0) -> str:
    """Other processes' CPU use over `seconds` (Linux /proc): what else shares the machine."""
    def times() -> dict[int, tuple[float, str]]:
        out = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), cmd)
        return out

    before = times()
    time.sleep(seconds)
    after = times()
    tick = os.sysconf("SC_CLK_TCK")
    rows = []
    for pid, (t, cmd) in after.items():
        if pid != os.getpid() and pid in before:
            share = 100 * (t - before[pid][0]) / tick / seconds
            if share >= least:
                rows.append((share, " ".join(cmd.split()[:4])[:70]))
    return "; ".join(f"{share:.0f}% `{cmd}`" for share, cmd in sorted(rows, reverse=True)) or "none"


def start_server(model: str, port: int, threads: int | None, max_batch: int, max_context: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "omnibyte", "serve", model, "--port", str(port), "--max-batch", str(max_batch),
           "--max-context", str(max_context), "--max-queue", "256", "--device", "cpu"]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if json.loads(_get(f"http://127.0.0.1:{port}/health")).get("status") == "ok":
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not come up within 120 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/demo", help="run or model folder to serve (default runs/demo)")
    ap.add_argument("--clients", default="1,4,16,50,1", help="concurrent clients per level, in order")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds per level (default 60)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before each level's window (default 5)")
    ap.add_argument("--max-tokens", type=int, default=128, help="bytes per answer (default 128)")
    ap.add_argument("--threads", type=int, help="the server's torch threads (default torch's)")
    ap.add_argument("--quick", action="store_true", help="8 s per level, 2 s warm-up; writes no results file")
    ap.add_argument("--note", action="append", default=[], help="a line for the results section (what else ran)")
    results_option(ap, "RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.warmup = 8.0, 2.0
    levels = [Level(int(c)) for c in args.clients.split(",")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    max_batch = max(lv.clients for lv in levels)
    busy = busy_processes()
    proc = start_server(args.model, port, args.threads, max_batch, max_context=1024)
    load = [os.getloadavg()[0]]
    try:
        name = json.loads(_get(url + "/health"))["model"]
        for lv in levels:
            asyncio.run(run_level(url, name, lv, args.seconds, args.warmup, args.max_tokens, proc.pid))
            print(f"{lv.clients:3d} clients: {lv.window_bytes / lv.window:8.1f} bytes/s, {lv.requests} requests, "
                  f"{lv.failed} failed, {lv.truncated} truncated, {lv.rows / max(lv.steps, 1):.1f} rows/step, "
                  f"RSS {lv.rss[0]:.0f} → {lv.rss[-1]:.0f} MiB (max {max(lv.rss):.0f})", flush=True)
            for e in lv.errors[:5]:
                print("   ", e)
            load.append(os.getloadavg()[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

    singles = [lv.window_bytes / lv.window for lv in levels if lv.clients == 1] or [levels[0].window_bytes
                                                                                 / levels[0].window]
    base = sum(singles) / len(singles)
    rows = ["| clients | requests | failed | truncated | bytes/s | vs 1 client | rows per step | server RSS, MiB: "
            "start → end (max) |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for lv in levels:
        rate = lv.window_bytes / lv.window
        rows.append(f"| {lv.clients} | {lv.requests} | {lv.failed} | {lv.truncated} | {rate:,.0f} | "
                    f"{rate / base:.2f}× | {lv.rows / max(lv.steps, 1):.1f} | "
                    f"{lv.rss[0]:,.0f} → {lv.rss[-1]:,.0f} ({max(lv.rss):,.0f}) |")
    print("\n".join(rows))
    out = results_file(args, "RESULTS.md")
    if out is not None:
        threads = f" --threads {args.threads}" if args.threads else ""
        notes = [f"model: `{args.model}` ({name}); streaming chat requests of {args.max_tokens} bytes, temperature "
                 f"0.8, top-p 0.95, a seed each; server `omnibyte serve --max-batch {max_batch} --max-context "
                 f"1024{threads}`; ratios against the mean of the 1-client levels",
                 f"each level: {args.warmup:g} s warm-up, then {args.seconds:g} s measured (bytes/s: bytes streamed "
                 f"inside that window); requests still open at its end finish and are checked",
                 f"1-minute load average before and after each level: {', '.join(f'{x:.1f}' for x in load)}",
                 f"other processes busy at the start (% of one core): {busy}", *args.note]
        write_section(out, "serve-load", header("Server load test: streaming clients on loopback", notes) + rows)
    return 0 if all(lv.failed == lv.truncated == 0 for lv in levels) else 1


if __name__ == "__main__":
    raise SystemExit(main())
