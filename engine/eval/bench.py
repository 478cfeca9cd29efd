"""Throughput of the streaming session on any backend: the figure `livehead bench` and the
benchmarks report. Measured, not estimated: warm-up first, then the median of timed runs."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from livehead.engine.runtime.runners import Runners
from livehead.engine.runtime.session import Session
from livehead.kernels.bench_io import cpu_name

if TYPE_CHECKING:  # the session pulls in PyAV; GPU benchmarks import machine_info without it
    from livehead.engine.runtime.session import Avatar

PUSH_SECONDS = 0.02


def stream_once(runners: Runners, avatar: Avatar, pcm: np.ndarray, sample_rate: int, seed: int = 0) -> int:
    """Feed `pcm` in 20 ms pushes through a fresh session, consuming frames as they come; returns the count."""
    session = Session(runners, avatar, seed=seed)
    step = int(PUSH_SECONDS * sample_rate)
    n = 0
    for start in range(0, len(pcm), step):
        session.push_audio(pcm[start:start + step], sample_rate)
        n += sum(1 for _ in session.frames())
    session.flush()
    return n + sum(1 for _ in session.frames())


def session_fps(runners: Runners, avatar: Avatar, pcm: np.ndarray, sample_rate: int, runs: int = 5) -> dict:
    """Median frames per second over `runs` timed runs (after one warm-up run)."""
    frames = stream_once(runners, avatar, pcm, sample_rate)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        stream_once(runners, avatar, pcm, sample_rate)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return {"fps": frames / median, "frames": frames, "runs_s": [round(t, 4) for t in times],
            "median_s": round(median, 4)}


class _Timed:
    """A runner whose `audio_stack`, `denoise` and `decode` / `decode_images` calls are timed (everything else
    passes through). The motion tier's sessions draw through `decode_images` (uint8 frames, no float round trip)."""

    PARTS: ClassVar[dict[str, str]] = {"audio_stack": "audio_features", "denoise": "generator",
                                       "decode": "render_or_decode", "decode_images": "render_or_decode"}

    def __init__(self, runners: Runners):
        self._runners = runners
        self.seconds = dict.fromkeys(self.PARTS.values(), 0.0)

    def __getattr__(self, name):
        value = getattr(self._runners, name)
        if name not in self.PARTS:
            return value

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self.seconds[self.PARTS[name]] += time.perf_counter() - t
        return timed


def component_ms(runners: Runners, avatar: Avatar, pcm: np.ndarray, sample_rate: int) -> dict:
    """Milliseconds per output frame of each stage (audio features, generator or denoiser, renderer or VAE
    decoder, and the session's own work) over one streaming run after a warm-up run."""
    stream_once(runners, avatar, pcm, sample_rate)
    timed = _Timed(runners)
    t = time.perf_counter()
    frames = stream_once(timed, avatar, pcm, sample_rate)
    total = time.perf_counter() - t
    out = {part: round(1000 * s / frames, 3) for part, s in timed.seconds.items()}
    out["session_other"] = round(1000 * (total - sum(timed.seconds.values())) / frames, 3)
    out["total"] = round(1000 * total / frames, 3)
    return out


def chunk_seconds(runners: Runners, avatar: Avatar, batch: int, rounds: int, clips: int = 1) -> list[float]:
    """Seconds per round of `batch` sessions' steps of `clips` clips each (prepare → one batched denoise → decode),
    on the bundled speech (each session from another point of it): what a live server's sessions cost while
    they talk (on silence the motion tier's mouth hardly moves, and the mouth layer and refiner hardly run). The
    first round also warms the model up."""
    from livehead.engine.media.bundled import looped_speech, speech_samples
    from livehead.engine.runtime.session import denoise_jobs

    sessions = [Session(runners, avatar, seed=i) for i in range(batch)]
    s = runners.cfg.stream
    need = sessions[0].features.required_span((rounds + 1) * clips * s.clip_frames, 1, s.fps)[1]
    rate = sessions[0].sample_rate
    for i, session in enumerate(sessions):
        session.push_audio(looped_speech(rate, i * speech_samples(rate) // max(batch, 1), need), rate)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        jobs = [session.prepare_clip(clips, clips) for session in sessions]
        latents = denoise_jobs(runners, jobs)
        for i, job in enumerate(jobs):
            job.session.finish_clip(job, latents[i:i + 1])
        times.append(time.perf_counter() - t)
    return times


def nan_to_none(obj):
    """A JSON-ready value with every NaN or infinite float (nested in dicts and lists) replaced by None, so the
    JSON stays strict (a live session that showed no frame leaves NaN figures)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(v) for v in obj]
    return obj


def parse_run(spec: str) -> tuple[int, int | None]:
    """A live benchmark's run 'N@SIZE': '4@256' → (4 sessions, 256 px); '2' → (2, None: the preset's size)."""
    n, _, size = spec.partition("@")
    return int(n), int(size) if size else None


def save_result(path: str | Path, result: dict) -> Path:
    """Write a benchmark's result as indented JSON (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def machine_info() -> dict:
    import torch

    info = {"cpu": cpu_name(), "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info
