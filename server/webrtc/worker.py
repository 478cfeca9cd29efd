"""The generation worker: two threads own the model and serve every live session.

    worker = GenerationWorker(runners, max_batch=4)
    worker.start()                      # from the event loop
    worker.add(session, listener)       # listener.on_frames(frames) / .on_generation_error() run on the loop
    worker.kick()                       # new audio arrived: look for ready clips now
    await worker.run(fn, *args)         # other model work (avatar preparation) on the worker thread
    worker.remove(session); worker.stop()

Each round gathers `Session.prepare_clip()` from the registered sessions whose next clip's audio is
in (round-robin, at most `max_batch`; a session whose following clips' audio is in too gets them in the same
step: one clip per session sharing the model, up to `StreamConfig.max_step_clips`, so each frame costs less
the more sessions there are), denoises them together with `denoise_steps` (one batched denoiser pass per
step length: dynamic batching across sessions) and commits each (`Session.commit_clip`: the motion frames
move on). A second thread decodes the committed clips (`Session.decode_clip`) and
hands the frames to the event loop with `loop.call_soon_threadsafe`: while clip k decodes, clip k+1
already denoises. Torch releases the GIL inside its kernels, so with one intra-op thread per call the
two stages use two cores without OpenMP threads spinning against the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

from livehead.engine.runtime.session import Session, VideoFrame, denoise_steps

log = logging.getLogger("livehead.worker")
IDLE_WAIT_S = 0.01  # longest sleep between scans when no clip is ready and nobody kicks
DECODE_QUEUE = 2  # denoised batches waiting for the decoder; the denoiser waits beyond that
MODEL_NICE = 10  # the model threads yield the CPU to the event loop (pacing, codecs) when cores are short


def _lower_priority() -> None:
    """Raise this thread's nice value (Linux schedules threads separately); a no-op where unsupported.

    When more sessions ask for clips than the cores can make, generation falls behind either way (clips
    are skipped, the picture holds); the event loop must not, or the sound and the frame ticks go late.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MODEL_NICE)
    except (AttributeError, OSError):
        pass


class Listener(Protocol):
    def on_frames(self, frames: list[VideoFrame]) -> None: ...  # called on the event loop
    def on_generation_error(self) -> None: ...  # called on the event loop
    def catch_up(self, now: float, step_clips: int) -> None: ...  # called on this thread before prepare_clip


class GenerationWorker:
    def __init__(self, runners, max_batch: int = 4):
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
        self.runners = runners
        self.max_batch = max_batch
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[Session, Listener] = {}
        self._calls: deque[tuple[Future, Callable, tuple]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._decoder: threading.Thread | None = None
        self._decode_q: queue.Queue = queue.Queue(maxsize=DECODE_QUEUE)
        self._rr = 0  # round-robin start, so sessions beyond max_batch are not starved
        # figures for /metrics
        self.batches = 0
        self.clips = 0
        self.errors = 0
        self.last_batch = 0
        self.last_batch_s = 0.0
        self.busy_s = 0.0  # denoising time
        self.decode_busy_s = 0.0
        self.batch_ema_s: float | None = None  # smoothed prepare → frames time: how long a clip takes now

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread; call from the event loop that receives the frames."""
        if self._thread is not None:
            return
        self.loop = asyncio.get_running_loop()
        self._stop.clear()
        self._decode_q = queue.Queue(maxsize=DECODE_QUEUE)
        self._thread = threading.Thread(target=self._run, name="livehead-generation", daemon=True)
        self._decoder = threading.Thread(target=self._run_decoder, name="livehead-decode", daemon=True)
        self._thread.start()
        self._decoder.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the batch in progress finish, cancel queued calls, join the thread."""
        self._stop.set()
        self._wake.set()
        for name in ("_thread", "_decoder"):
            thread = getattr(self, name)
            if thread is not None:
                thread.join(timeout)
                if thread.is_alive():
                    log.warning("%s thread did not stop within %.0f s", thread.name, timeout)
                setattr(self, name, None)
        with self._lock:
            calls, self._calls = list(self._calls), deque()
            self._sessions.clear()
        for fut, _, _ in calls:
            fut.cancel()

    @property
    def alive(self) -> bool:
        return all(t is not None and t.is_alive() for t in (self._thread, self._decoder))

    # ---- registration --------------------------------------------------------------------
    def add(self, session: Session, listener: Listener) -> None:
        with self._lock:
            self._sessions[session] = listener
        self._wake.set()

    def remove(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session, None)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def step_clips(self, sessions: int | None = None) -> int:
        """Clips per step each session waits for: 1 alone (the lowest latency), one more per further session sharing
        the model, up to `StreamConfig.max_step_clips` (one audio-encoder window and generator pass per step, so a
        frame costs less CPU the more sessions there are; each session's latency grows by the extra audio wait)."""
        sessions = len(self._sessions) if sessions is None else sessions
        return max(1, min(sessions, self.runners.cfg.stream.max_step_clips))

    def kick(self) -> None:
        self._wake.set()

    async def run(self, fn: Callable, *args):
        """Run fn(*args) on the worker thread between batches (the model has one owner); await the result."""
        if not self.alive:
            raise RuntimeError("the generation worker is not running")
        fut: Future = Future()
        with self._lock:
            self._calls.append((fut, fn, args))
        self._wake.set()
        return await asyncio.wrap_future(fut)

    # ---- the loop ------------------------------------------------------------------------
    def _gather(self) -> list:
        with self._lock:
            sessions = list(self._sessions.items())
        if not sessions:
            return []
        start = self._rr % len(sessions)
        self._rr += 1
        min_clips = self.step_clips(len(sessions))
        jobs = []
        for session, listener in sessions[start:] + sessions[:start]:
            listener.catch_up(time.monotonic(), min_clips)  # no clip of this session is in flight here
            job = session.prepare_clip(self.runners.cfg.stream.max_step_clips, min_clips)
            if job is not None:
                jobs.append(job)
                if len(jobs) >= self.max_batch:
                    break
        return jobs

    def _run_calls(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    return
                fut, fn, args = self._calls.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as err:  # handed to the awaiting coroutine
                fut.set_exception(err)

    def _post(self, callback: Callable, *args) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed while shutting down
            pass

    def _fail(self, jobs: list) -> None:
        self.errors += 1
        with self._lock:
            failed = [self._sessions.get(job.session) for job in jobs]
        for listener in failed:
            if listener is not None:
                self._post(listener.on_generation_error)

    def _run(self) -> None:
        """Denoising thread: gather ready clips, denoise them in one batch, commit, hand over to decode."""
        _lower_priority()
        while not self._stop.is_set():
            self._run_calls()
            jobs = self._gather()
            if not jobs:
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                continue
            t = time.perf_counter()
            try:
                latents = denoise_steps(self.runners, jobs)
                done = [(job, lat) for job, lat in zip(jobs, latents) if job.session.commit_clip(job, lat)]
            except Exception:
                log.exception("generation failed for a batch of %d clips; those sessions restart from idle", len(jobs))
                self._fail(jobs)  # the listeners clear their sessions: that also ends the clips in flight
                continue
            self.busy_s += time.perf_counter() - t
            while not self._stop.is_set():
                try:
                    self._decode_q.put((t, jobs, done), timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _run_decoder(self) -> None:
        """Decoding thread: decode committed clips in order and post their frames to the event loop."""
        _lower_priority()
        while not self._stop.is_set():
            try:
                t, jobs, done = self._decode_q.get(timeout=0.1)
            except queue.Empty:
                continue
            t_decode = time.perf_counter()
            try:
                results = [(job, job.session.decode_clip(job, latents)) for job, latents in done]
            except Exception:
                log.exception("decoding failed for a batch of %d clips; those sessions restart from idle", len(jobs))
                self._fail(jobs)
                continue
            end = time.perf_counter()
            dt = end - t
            self.decode_busy_s += end - t_decode
            self.batches += 1
            self.clips += len(jobs)
            self.last_batch, self.last_batch_s = len(jobs), dt
            self.batch_ema_s = dt if self.batch_ema_s is None else 0.8 * self.batch_ema_s + 0.2 * dt
            with self._lock:
                delivered = [(self._sessions.get(job.session), frames) for job, frames in results]
            for listener, frames in delivered:
                if listener is not None and frames:
                    self._post(listener.on_frames, frames)
