"""The decoding engine of a server: one model, one thread, one `DecodeBatch`.

Requests (`Job`s) wait in a bounded queue until a row of the batch is free, then join it between
two decoding steps; every step gives each running request one new id, all in one model call. A
request leaves its row when it finishes, when its stop sequence appears, or at once when its
client goes away (`cancel`). Each job sends its events back to the event loop that made it
(`Job.take`): ("text", piece), ("progress", ids so far) for media, and finally ("done", finish
reason) or ("error", message).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import torch

from omnibyte.errors import OmnibyteError
from omnibyte.format import EOS, N_BYTES
from omnibyte.generate import DecodeBatch, SamplingConfig
from omnibyte.generate.constraints import Constraint
from omnibyte.memory import check_fits, decoding_bytes
from omnibyte.models import OmniModel
from omnibyte.serve.settings import ServeSettings
from omnibyte.serve.text import TextStream

log = logging.getLogger("omnibyte.serve")

PROGRESS_EVERY = 64  # ids between progress events of a media output
# Events reach the event loop in one wake-up every DELIVER_EVERY seconds per running row (5 ms
# with one row, 80 ms with 16), at most every DELIVER_MAX: each wake-up lets the server's thread
# take the GIL, and with many rows fewer, larger chunks keep the decoding thread going. A finished
# job's events go at once.
DELIVER_EVERY, DELIVER_MAX = 0.005, 0.1


class Unavailable(Exception):
    """The engine takes no request now (loading, shutting down, or its queue is full): a 503."""


class Job:
    """One request: its prompt and sampling settings, and what it sends back to its event loop.

    `prefix` holds output ids that are already part of the prompt (an opened image or audio block:
    its marker and header). `media` is None for text, else "image" or "audio"."""

    def __init__(self, prompt: Sequence[int], cfg: SamplingConfig, constraint: Constraint,
                 loop: asyncio.AbstractEventLoop, stop: Sequence[bytes] = (), prefix: Sequence[int] = (),
                 media: str | None = None):
        self.prompt, self.cfg, self.constraint = list(prompt), cfg, constraint
        self.prefix, self.media = list(prefix), media
        self.text = TextStream(stop)
        self.new: list[int] = []
        self.finish_reason: str | None = None
        self.cancelled = False
        self._events: deque[tuple[str, object]] = deque()  # arrived, on the event loop
        self._ready = asyncio.Event()
        self._outbox: list[tuple[str, object]] = []  # sent, on the engine thread, not yet delivered
        self.loop = loop

    @property
    def output(self) -> list[int]:
        """Every output id: the prefix, then what was generated."""
        return self.prefix + self.new

    def send(self, kind: str, value=None) -> None:
        """Queue an event; `deliver` hands the queued events of many jobs to their loops at once."""
        self._outbox.append((kind, value))

    def _arrive(self, events: list[tuple[str, object]]) -> None:
        self._events.extend(events)
        self._ready.set()

    async def take(self) -> list[tuple[str, object]]:
        """The events that arrived since the last call (waits for one)."""
        await self._ready.wait()
        self._ready.clear()
        events = list(self._events)
        self._events.clear()
        return events

    # --- called on the engine thread ----------------------------------------------------------
    def accept(self, tok: int, last: bool) -> bool:
        """Take one generated id (`last`: the batch ended the row); True when the job is over."""
        self.new.append(tok)
        if self.media is None and tok < N_BYTES:
            piece = self.text.push(bytes([tok]))
            if piece:
                self.send("text", piece)
            if self.text.stopped:
                self.finish("stop")
                return True
        elif self.media is not None and len(self.new) % PROGRESS_EVERY == 0:
            self.send("progress", len(self.output))
        if last:
            self.finish("stop" if tok == EOS else "length")
        return last

    def finish(self, reason: str) -> None:
        rest = self.text.finish()
        if rest:
            self.send("text", rest)
        self.finish_reason = reason
        self.send("done", reason)

    def fail(self, message: str) -> None:
        self.finish_reason = "error"
        self.send("error", message)


def deliver(jobs) -> None:
    """Hand every job's queued events to its event loop: one wake-up per loop per decoding step,
    not one per event (each wake-up lets the server's thread take the GIL)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, list]]] = {}
    for job in jobs:
        if job._outbox:
            by_loop.setdefault(job.loop, []).append((job, job._outbox))
            job._outbox = []
    for loop, items in by_loop.items():
        loop.call_soon_threadsafe(_arrive_all, items)


def _arrive_all(items: list[tuple[Job, list]]) -> None:
    for job, events in items:
        job._arrive(events)


class Engine:
    """Loads the model and decodes on its own thread; `submit` and `cancel` are called from the
    server's event loop."""

    def __init__(self, load: Callable[[], OmniModel], settings: ServeSettings):
        self.load, self.settings = load, settings
        self.model: OmniModel | None = None
        self.error: str | None = None  # why the model failed to load
        self.on_load_failed: Callable[[], None] | None = None  # called on the engine thread when it does
        self.ready = False
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._running: dict[int, Job] = {}  # batch row → its job
        self._closing = False
        self.stats = {"steps": 0, "rows": 0}  # decoding steps, and rows they served (the mean batch: rows / steps)
        self._thread = threading.Thread(target=self._run, name="omnibyte-decode", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closing:
                raise Unavailable("the server is shutting down")
            if not self.ready:
                raise Unavailable(f"the model failed to load: {self.error}" if self.error else "the model is loading")
            if len(self._pending) >= self.settings.max_queue:
                raise Unavailable(f"all {self.settings.max_batch} rows are busy and {len(self._pending)} requests "
                                  f"wait: try again shortly")
            self._pending.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """The client is gone: the job leaves its row before the next step."""
        with self._cond:
            job.cancelled = True
            self._cond.notify()

    def close(self, wait: float | None = None) -> None:
        """Take no more requests; end the open ones after the text they have (finish reason
        "length"), then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if wait is not None and self._thread.is_alive():
            self._thread.join(wait)

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return len(self._running)

    # --- the decoding thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.model = self.load()
            self._check_fits()
        except Exception as e:  # reported by /health and every request, instead of a dead thread
            self.error = str(e) if isinstance(e, OmnibyteError) else f"{type(e).__name__}: {e}"
            log.error("cannot load the model: %s", self.error)
            if self.on_load_failed is not None:
                self.on_load_failed()
            return
        with torch.inference_mode():
            batch = self._new_batch()
            self.ready = True
            running = self._running
            unsent: set[Job] = set()  # jobs with events not yet delivered
            sent_at = time.monotonic()
            while True:
                with self._cond:
                    for row, job in list(running.items()):
                        if job.cancelled:
                            batch.drop(row)
                            del running[row]
                    self._pending = deque(j for j in self._pending if not j.cancelled)
                    if self._closing:
                        ending = [*running.values(), *self._pending]
                        for job in ending:
                            job.finish("length")
                        deliver({*unsent, *ending})
                        self._pending.clear()
                        return
                    while self._pending and batch.free:
                        job = self._pending.popleft()
                        try:
                            running[batch.add(job.prompt, job.cfg, job.constraint)] = job
                        except OmnibyteError as e:  # requests are checked before they queue; still
                            job.fail(str(e))
                            deliver([job])
                    if not running:
                        deliver(unsent)
                        unsent.clear()
                        self._cond.wait()
                        continue
                self.stats["steps"] += 1
                self.stats["rows"] += len(running)
                try:
                    events = batch.step()
                except Exception as e:  # a failing step ends its requests, not the server
                    log.exception("decoding step failed")
                    for job in running.values():
                        job.fail(f"decoding failed: {type(e).__name__}: {e}")
                    deliver({*unsent, *running.values()})
                    unsent.clear()
                    running.clear()
                    batch = self._new_batch()
                    continue
                ended = False
                for row, tok, last in events:
                    job = running[row]
                    unsent.add(job)
                    if job.accept(tok, last):
                        if not last:
                            batch.drop(row)
                        del running[row]
                        ended = True
                now = time.monotonic()
                if ended or now - sent_at >= min(DELIVER_MAX, DELIVER_EVERY * len(running)):
                    deliver(unsent)
                    unsent.clear()
                    sent_at = now

    def _check_fits(self) -> None:
        """Every row's decoding state may fill to max_context (it grows as the row does): refuse
        settings whose full state cannot fit with one line at start, instead of running out of
        memory later under load."""
        s = self.settings
        check_fits(decoding_bytes(self.model, s.max_batch, s.max_context, min(s.prefill_chunk, s.max_context)),
                   self.model.device, f"serving {s.max_batch} rows of {s.max_context:,} ids",
                   "lower max_batch (--max-batch) or max_context (--max-context)")

    def _new_batch(self) -> DecodeBatch:
        s = self.settings
        return DecodeBatch(self.model, s.max_batch, s.max_context, s.prefill_chunk)
