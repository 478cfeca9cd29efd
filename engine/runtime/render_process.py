"""The motion tier's renderer in a child process: photo warp + mouth refiner off the server's interpreter lock.

A live server's threads share one Python interpreter lock: the event loop (RTP, pacing), the generation
thread and the decode thread. The renderer is numpy and small torch convolutions, much of it holding that
lock, so with several sessions the three threads queue behind each other and two cores do the work of about
one. Here the rendering runs in its own process (its own lock); the decode thread only sends motion and
waits for frames.

    pool = RenderProcess(space, refiner, nice=10)  # spawns the child (a second or two: it imports torch)
    frames = pool.render(avatar, motion)        # MotionAvatar, motion float64 [F, M] → uint8 [F, H, W, 3]
    pool.close()

Each avatar crosses once (pickled) and stays in the child, keyed by `MotionAvatar.key`, the newest
`MAX_AVATARS` of them. Frames are those `MotionRunners.decode` renders in-process, bit for bit (the same
functions on the same inputs). One call at a time (a lock); a child that died is started again on the next
call, which then raises nothing but costs the restart.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections import OrderedDict

import numpy as np

MAX_AVATARS = 32  # avatars the child keeps (least recently used dropped first)
START_TIMEOUT_S = 120.0  # the child's imports and first message


def render_motion(space, refiner, avatar, motion: np.ndarray) -> np.ndarray:
    """motion float64 [F, M] (denormalised, expression already scaled) → uint8 [F, H, W, 3]: the avatar's photo
    moved to each motion, its mouth refined (what `MotionRunners.decode` draws)."""
    from livehead.engine.model.mouth_refiner import refine_frames

    moved = list(space.decode(motion, avatar.rest))
    frames = [avatar.renderer.render(m) for m in moved]
    return np.stack(refine_frames(refiner, frames, moved, avatar.mouth_crop, avatar.neutral))


def _child(conn, space, refiner, nice: int) -> None:
    """The child's loop: ("avatar", key, MotionAvatar) | ("render", key, motion) | ("forget", key) | None."""
    import os

    import torch

    torch.set_num_threads(1)
    if nice:
        try:
            os.nice(nice)
        except (AttributeError, OSError):
            pass
    avatars: dict = {}
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        kind, key, payload = message
        try:
            if kind == "avatar":
                avatars[key] = payload
                continue
            if kind == "forget":
                avatars.pop(key, None)
                continue
            conn.send(("frames", render_motion(space, refiner, avatars[key], payload)))
        except Exception as err:  # reported to the caller, the child goes on
            conn.send(("error", f"{type(err).__name__}: {err}"))


class RenderProcess:
    """A child process that renders motion-tier frames (see the module doc). Thread-safe."""

    def __init__(self, space, refiner, nice: int = 0):
        """nice: added to the child's nice value (a live server's model work yields to its event loop)."""
        self.space, self.refiner, self.nice = space, refiner, nice
        self._lock = threading.Lock()
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._process = None
        self._conn = None
        self.restarts = 0
        with self._lock:
            self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # no fork of a process with model threads running
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_child, args=(child, self.space, self.refiner, self.nice), name="livehead-render",
                              daemon=True)
        process.start()
        child.close()
        if not parent.poll(START_TIMEOUT_S):
            process.kill()
            process.join()
            parent.close()
            raise RuntimeError(f"the render process did not start within {START_TIMEOUT_S:.0f} s")
        parent.recv()
        self._process, self._conn = process, parent
        self._sent.clear()

    @property
    def pid(self) -> int | None:
        """The child's process id (None before it starts or after close)."""
        process = self._process
        return process.pid if process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def render(self, avatar, motion: np.ndarray) -> np.ndarray:
        """avatar: a MotionAvatar; motion float64 [F, M] → uint8 [F, H, W, 3]."""
        with self._lock:
            if not self.alive:
                self.restarts += 1
                self._discard()
                self._start()
            try:
                return self._render(avatar, np.ascontiguousarray(motion, np.float64))
            except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as err:
                self._discard()  # started again on the next call
                raise RuntimeError(f"the render process died: {err}") from err

    def _discard(self) -> None:
        """Let go of a dead (or dying) child: close its pipe and reap it, so a restart leaks nothing."""
        process, conn, self._process, self._conn = self._process, self._conn, None, None
        if conn is not None:
            conn.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join()

    def _render(self, avatar, motion: np.ndarray) -> np.ndarray:
        key = avatar.key
        if key in self._sent:
            self._sent.move_to_end(key)
        else:
            self._conn.send(("avatar", key, avatar))
            self._sent[key] = None
            while len(self._sent) > MAX_AVATARS:
                old, _ = self._sent.popitem(last=False)
                self._conn.send(("forget", old, None))
        self._conn.send(("render", key, motion))
        kind, payload = self._conn.recv()
        if kind == "error":
            raise RuntimeError(f"rendering failed in the render process: {payload}")
        return payload

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            process, conn, self._process, self._conn = self._process, self._conn, None, None
        if process is None:
            return
        try:
            conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(timeout)
        conn.close()
