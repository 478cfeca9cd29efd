"""Offline render: a portrait and an audio file through the same streaming `Session` → mp4.

The file's audio is pushed into the session exactly like a live stream (in 20 ms pieces by
default), then flushed; frames are written as they come, with the original audio muxed in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import Mp4Writer, load_audio, load_image
from livehead.engine.model.audio_encoder import encode_file_features, frame_audio_tokens, frame_token_index
from livehead.engine.model.sampler import DDIMSampler
from livehead.engine.runtime.offline import OfflineTrace, denoiser_calls, sample_offline
from livehead.engine.runtime.portrait import portrait_for
from livehead.engine.runtime.runners import Runners
from livehead.engine.runtime.session import Avatar, Session, prepare_avatar, to_uint8

PUSH_SECONDS = 0.02  # offline = a live stream fed as fast as possible, in 20 ms pieces


@dataclass
class RenderReport:
    frames: int
    audio_seconds: float
    wall_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    face_detected: bool = True

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else float("inf")


SCHEDULES = ("stream", "offline")


def render_file(runners: Runners, image_path: str | Path, audio_path: str | Path, out_path: str | Path,
                seed: int = 0, crop: bool = True, progress: bool = True, schedule: str = "stream") -> RenderReport:
    """Render `audio_path` spoken by the face in `image_path` to `out_path` (H.264 + AAC mp4).

    schedule "stream": the causal live path (Session fed in 20 ms pieces); "offline": EchoMimic's
    reference schedule (whole-file Whisper features, all windows denoised jointly every step).
    """
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    cfg = runners.cfg
    if schedule == "offline" and cfg.motion is not None:
        raise InputError("--schedule offline is EchoMimic's reference sampler of the pixel presets; the motion "
                         "preset streams (the default schedule)")
    sr = cfg.audio.sample_rate
    t0 = time.perf_counter()
    image = load_image(image_path)
    pcm = load_audio(audio_path, sample_rate=sr)
    crop_result = portrait_for(cfg, image, crop=crop)
    t1 = time.perf_counter()
    avatar = prepare_avatar(runners, crop_result.image, crop_result.mask)
    t2 = time.perf_counter()
    expected = -(-len(pcm) * cfg.stream.fps // sr)
    try:
        if schedule == "offline":
            written = _generate_offline(runners, avatar, pcm, out_path, expected, seed, progress)
        else:
            written = _generate(Session(runners, avatar, seed=seed), pcm, sr, out_path, expected, progress)
    except BaseException:
        if not Path(out_path).is_dir():  # --out naming a directory: Mp4Writer's InputError says so
            Path(out_path).unlink(missing_ok=True)  # never leave a truncated video behind
        raise
    t3 = time.perf_counter()
    return RenderReport(
        frames=written,
        audio_seconds=len(pcm) / sr,
        wall_seconds=t3 - t0,
        stage_seconds={"load_and_crop": t1 - t0, "avatar": t2 - t1, "generate_and_encode": t3 - t2},
        face_detected=bool(getattr(crop_result, "detected", True)),
    )


def _generate(session: Session, pcm: np.ndarray, sr: int, out_path, expected: int, progress: bool) -> int:
    """Push the file in 20 ms pieces, write every frame as it comes; returns the frame count."""
    from tqdm import tqdm

    cfg = session.cfg
    height, width = session.avatar.image.shape[:2]
    step = int(PUSH_SECONDS * sr)
    with Mp4Writer(out_path, fps=cfg.stream.fps, width=width, height=height, audio=pcm, sample_rate=sr) as writer, \
            tqdm(total=expected, unit="frame", desc="animate", disable=not progress) as bar:

        written = 0

        def drain() -> None:
            nonlocal written
            for frame in session.frames():
                writer.write(frame.image)
                written += 1
                bar.update(1)

        for start in range(0, len(pcm), step):
            session.push_audio(pcm[start:start + step], sr)
            drain()
        session.flush()
        drain()
    return written


def offline_audio_tokens(runners: Runners, pcm: np.ndarray, n_frames: int) -> torch.Tensor:
    """EchoMimic's whole-file audio tokens, one entry per video frame: [n_frames, Ta, Ca]."""
    cfg = runners.cfg
    stack = encode_file_features(pcm, cfg.audio, runners.audio_stack)
    return frame_audio_tokens(stack, frame_token_index(n_frames, cfg.stream.fps, stack.shape[0], cfg.audio))


def offline_latents(runners: Runners, avatar: Avatar, pcm: np.ndarray, n_frames: int, seed: int,
                    progress=None, trace: OfflineTrace | None = None) -> torch.Tensor:
    """EchoMimic's offline schedule on a whole clip → latents [1, 4, n_frames, s, s]."""
    cfg = runners.cfg
    size = cfg.latent_size
    return sample_offline(runners, avatar.face, avatar.reference_kv, offline_audio_tokens(runners, pcm, n_frames),
                          DDIMSampler(cfg.sampler), cfg.stream.window_frames, cfg.stream.motion_frames,
                          (size, size), seed=seed, guidance=cfg.sampler.guidance_scale, trace=trace,
                          progress=progress, ref_latents=avatar.ref_latents)


def _generate_offline(runners: Runners, avatar: Avatar, pcm: np.ndarray, out_path, n_frames: int, seed: int,
                      progress: bool) -> int:
    from tqdm import tqdm

    cfg = runners.cfg
    s = cfg.stream
    calls = denoiser_calls(n_frames, s.window_frames, s.motion_frames, cfg.sampler.steps)
    with tqdm(total=calls, unit="pass", desc="denoise (offline)", disable=not progress) as bar:
        latents = offline_latents(runners, avatar, pcm, n_frames, seed, progress=bar)
    with Mp4Writer(out_path, fps=s.fps, width=s.image_size, height=s.image_size, audio=pcm,
                   sample_rate=cfg.audio.sample_rate) as writer:
        for start in tqdm(range(0, n_frames, s.clip_frames), desc="decode", disable=not progress):
            frames = runners.decode(latents[0, :, start:start + s.clip_frames].permute(1, 0, 2, 3),
                                    avatar.decoder_reference)
            for image in to_uint8(frames):
                writer.write(image)
    return n_frames
