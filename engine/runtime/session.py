"""A live session for one avatar: audio in, video frames with presentation times out.

    avatar = prepare_avatar(runners, portrait)            # once per portrait, shared by sessions
    session = Session(runners, avatar, seed=0)
    session.push_audio(pcm_chunk, sample_rate)            # any size, any rate, any time
    for frame in session.frames():                        # clips whose audio is in
        show(frame.image, frame.pts)
    session.flush()                                        # end of speech: finish the tail
    session.clear()                                        # barge-in: drop pending audio and frames
    session.drive_with(CameraTimeline(voice=True))         # motion tier: a camera moves head and eyes

Data flow per clip k (`F` = clip_frames new frames, `n` = motion_frames known frames):
audio ring → per-frame audio tokens (rolling Whisper window, running log-mel max) → window of
n + F latents whose first n are the previous clip's last latents (the motion frames; the
reference latent for the first clip), re-noised to every step's level → `steps` denoiser passes →
VAE decode of the F new latents → frames k·F … k·F+F−1 at pts = index / fps.

Everything is a deterministic function of the audio stream and the seed: the same audio pushed in
20 ms pieces or in one piece gives the same frames. A live server under load makes several clips in one
step (`prepare_clip(max_clips)`: one encoder window and generator pass); the frames then also depend on how
the steps fell (each clip keeps its own noise).

Live driving (motion tier): with a `CameraTimeline` attached, each frame's generated motion is combined
with the camera motion stamped at the frame's time (pts) before it is rendered (`engine.motion.driver`:
with a voice the camera moves head and eyes, without one everything); frame k shows the camera at k / fps.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import AudioResampleStream
from livehead.engine.media.face import blank_mouth
from livehead.engine.model.audio_encoder import StreamingAudioFeatures
from livehead.engine.model.sampler import DDIMSampler
from livehead.engine.runtime.runners import Runners, guided_denoise


@dataclass
class Avatar:
    """Per-portrait constants, computed once and shared by every session that uses the portrait.

    image [S, S, 3] uint8 (the crop), ref_latents [1, 4, s, s], face [1, C0, s, s],
    reference_kv: 32 tensors [1, Lr_l, C_l], decoder_reference [1, 3, S, S] in [-1, 1] (the crop with
    its mouth blanked) or None when the preset's decoder takes no reference.
    Motion tier: image [H, W, 3] (the whole photo), ref_latents = the neutral motion [1, D, 1, 1], face = the
    neutral-shape code [1, S, 1, 1], reference_kv = (), decoder_reference = the photo's `MotionAvatar` rig.
    """

    image: np.ndarray
    ref_latents: torch.Tensor
    face: torch.Tensor
    reference_kv: tuple[torch.Tensor, ...]
    decoder_reference: object | None = None


def prepare_avatar(runners: Runners, image: np.ndarray, mask: np.ndarray) -> Avatar:
    """image [S, S, 3] uint8 RGB and mask [S, S] in [0, 1] at the preset's size → cached Avatar.

    The motion tier takes the whole photo instead (`portrait_for`: [H, W, 3], long side at the preset's size);
    its Avatar carries the photo's rig (landmarks, warp, mouth layer) as the decoder's reference."""
    if runners.cfg.motion is not None:
        rig = runners.photo_avatar(image)
        ref_latents = runners.encode_image(to_pixels(image[None]))
        return Avatar(image=image, ref_latents=ref_latents, face=rig.shape, reference_kv=(), decoder_reference=rig)
    size = runners.cfg.stream.image_size
    if image.shape != (size, size, 3) or mask.shape != (size, size):
        raise InputError(f"avatar image must be {size}x{size} RGB with a {size}x{size} mask, got {image.shape}")
    ref_latents = runners.encode_image(to_pixels(image[None]))
    face = runners.face_features(torch.from_numpy(mask.astype(np.float32))[None, None])
    return Avatar(image=image, ref_latents=ref_latents, face=face, reference_kv=runners.reference_kv(ref_latents),
                  decoder_reference=decoder_reference(runners.cfg, image, mask))


def decoder_reference(cfg, image: np.ndarray, mask: np.ndarray) -> torch.Tensor | None:
    """What the preset's VAE decoder takes besides the latents: image [S, S, 3] uint8 with the mouth box
    of mask [S, S] blanked, as pixels [1, 3, S, S] (`engine.face.blank_mouth`); None for an SD decoder."""
    if not cfg.vae.reference_decoder:
        return None

    return to_pixels(blank_mouth(image, mask)[None])


@dataclass
class VideoFrame:
    """One output frame: index in the session's timeline, pts in seconds, image [S, S, 3] uint8,
    and the clean latent it was decoded from [4, s, s]."""

    index: int
    pts: float
    image: np.ndarray
    latent: torch.Tensor | None = None


@dataclass
class ClipJob:
    """One clip's denoising inputs. tokens [1, n+F, Ta, Ca], noise [1, 4, F, s, s],
    prefix_noise and motion [1, 4, n, s, s]; `epoch` ties it to the session state it was taken from.
    tokens, noise and prefix_noise are None for a camera-only session's clip (nothing is generated)."""

    session: Session
    clip: int
    epoch: int
    tokens: torch.Tensor | None
    noise: torch.Tensor | None
    prefix_noise: torch.Tensor | None
    motion: torch.Tensor
    clips: int = 1  # clips generated in this step (`StreamConfig.max_step_clips`): F = clips · clip_frames

    @property
    def frames(self) -> int:
        """New frames this job makes."""
        return self.clips * self.session.cfg.stream.clip_frames


def denoise_jobs(runners: Runners, jobs: list[ClipJob]) -> torch.Tensor:
    """Denoise the clips of several sessions together: one batched denoiser pass per step.

    Every job's window = its n motion latents (re-noised to the step's level with fixed noise) + its
    F new latents. The sessions may use different avatars (their reference K/V and face features are
    stacked on the batch axis). Every job makes the same F (`denoise_steps` groups jobs of any lengths).
    Returns clean latents of the new frames [B, 4, F, s, s] (CPU, fp32).
    """
    cfg = runners.cfg
    n = cfg.stream.motion_frames
    if len({j.frames for j in jobs}) > 1:
        raise ValueError(f"denoise_jobs batches jobs of one length, got {sorted({j.frames for j in jobs})} frames")
    held = [j.tokens is None for j in jobs]  # camera-only sessions: nothing to generate (`Session.camera_only`)
    if any(held):
        out = torch.cat([j.motion[:, :, -1:].expand(-1, -1, j.frames, -1, -1).float() for j in jobs])
        model_jobs = [j for j, h in zip(jobs, held) if not h]
        if model_jobs:
            rows = [i for i, h in enumerate(held) if not h]
            out[rows] = denoise_jobs(runners, model_jobs)
        return out
    sampler = jobs[0].session.sampler
    tokens = torch.cat([j.tokens for j in jobs])
    face = torch.cat([j.session.avatar.face for j in jobs])
    kv = tuple(torch.cat(parts) for parts in zip(*(j.session.avatar.reference_kv for j in jobs)))
    motion = torch.cat([j.motion for j in jobs])
    prefix_noise = torch.cat([j.prefix_noise for j in jobs])
    x = torch.cat([j.noise for j in jobs])
    for t in sampler.timesteps:
        level = cfg.stream.prefix_timestep(int(t))
        window = torch.cat([sampler.add_noise(motion, prefix_noise, level), x], dim=2)
        v = guided_denoise(runners, window, int(t), tokens, face, kv, cfg.sampler.guidance_scale)
        x = sampler.step(v[:, :, n:], int(t), x)
    return x


def denoise_steps(runners: Runners, jobs: list[ClipJob]) -> list[torch.Tensor]:
    """`denoise_jobs` for jobs of any lengths: one batch per length → each job's latents [1, 4, F_j, s, s], in
    the jobs' order."""
    out: list[torch.Tensor | None] = [None] * len(jobs)
    for frames in sorted({j.frames for j in jobs}):
        rows = [i for i, j in enumerate(jobs) if j.frames == frames]
        latents = denoise_jobs(runners, [jobs[i] for i in rows])
        for r, i in enumerate(rows):
            out[i] = latents[r:r + 1]
    return out


class AudioRing:
    """16 kHz mono samples addressed by absolute index; keeps only a bounded left context.

    Samples before 0 and after the end (once the stream has ended) read as silence.
    """

    def __init__(self, keep: int):
        self.keep = keep
        self.start = 0  # absolute index of buf[0]
        self.buf = np.zeros(0, dtype=np.float32)

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def append(self, pcm: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, pcm.astype(np.float32, copy=False)])

    def read(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b) as float32; zeros outside what was pushed."""
        out = np.zeros(b - a, dtype=np.float32)
        lo, hi = max(a, self.start), min(b, self.end)
        if hi > lo:
            out[lo - a:hi - a] = self.buf[lo - self.start:hi - self.start]
        return out

    def forget_before(self, index: int) -> None:
        """Drop samples older than `index − keep` (the audio window's left context)."""
        cut = min(index - self.keep, self.end) - self.start
        if cut > 0:
            self.buf = self.buf[cut:]
            self.start += cut

    def truncate(self, index: int) -> None:
        """Drop every sample at or after `index` (barge-in)."""
        if index < self.end:
            self.buf = self.buf[: max(index - self.start, 0)]


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """images [N, S, S, 3] uint8 → pixels [N, 3, S, S] float32 in [-1, 1], the VAE's input (to_uint8's inverse)."""
    return torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """frames [N, 3, S, S] in [0, 1] → images [N, S, S, 3] uint8."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _clip_seed(seed: int, clip: int) -> int:
    return (seed * 1_000_003 + clip * 7919) % (2**63)


class Session:
    """Streaming generator for one avatar; not thread-safe (one producer, one consumer loop)."""

    def __init__(self, runners: Runners, avatar: Avatar, seed: int = 0, noise: torch.Tensor | None = None):
        """noise: optional per-frame initial noise [1, 4, N, s, s] (clamped) replacing the per-clip seeded
        draws for frames < N, e.g. the offline sampler's, to measure streaming against offline."""
        self.runners = runners
        self.noise = noise
        self.cfg = runners.cfg
        self.avatar = avatar
        self.seed = seed
        self.sampler = DDIMSampler(self.cfg.sampler)
        self.features = StreamingAudioFeatures(runners.audio_stack, self.cfg.audio)
        self.sample_rate = self.cfg.audio.sample_rate
        window = int(self.cfg.audio.window_seconds * self.sample_rate)
        self.ring = AudioRing(keep=window + self.sample_rate)
        self._resamplers: dict[int, AudioResampleStream] = {}
        self.pending: deque[VideoFrame] = deque()
        self.next_clip = 0
        self.total_frames: int | None = None  # known once the stream has ended (flush)
        self.motion = self._reference_motion()
        self.lock = threading.RLock()  # push/clear from the I/O side, clips from a worker thread
        self.epoch = 0  # bumped by clear(): in-flight clips of an older epoch are dropped
        self.in_flight = False
        self.dropped_frames = 0
        self.camera = None  # a CameraTimeline (motion tier): see drive_with
        filter_for = getattr(runners, "output_filter", None)  # motion tier: smoothing before rendering
        self.output_filter = filter_for() if filter_for is not None else None

    # ---- input ---------------------------------------------------------------------------
    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Append audio: float mono [T] or [channels, T] at any rate. Bad input raises InputError."""
        pcm = np.asarray(pcm)
        if pcm.ndim not in (1, 2) or (pcm.size == 0 and pcm.ndim != 1):
            raise InputError(f"audio must be [samples] or [channels, samples], got shape {pcm.shape}")
        if not np.issubdtype(pcm.dtype, np.floating):
            raise InputError(f"audio must be float samples in [-1, 1], got {pcm.dtype}")
        if not np.isfinite(pcm).all():
            raise InputError("audio contains NaN or infinite samples")
        if not isinstance(sample_rate, (int, np.integer)) or not 4000 <= sample_rate <= 384000:
            raise InputError(f"sample rate must be an integer between 4000 and 384000 Hz, got {sample_rate}")
        if self.total_frames is not None:
            raise InputError("this session's stream has ended (flush was called); start a new session")
        if pcm.ndim == 2:
            pcm = pcm.mean(axis=0) if sample_rate == self.sample_rate else pcm
        if sample_rate != self.sample_rate:
            stream = self._resamplers.setdefault(int(sample_rate), AudioResampleStream(int(sample_rate)))
            pcm = stream.push(pcm.astype(np.float32))
        with self.lock:
            self.ring.append(np.clip(pcm, -1.0, 1.0).astype(np.float32))

    def drive_with(self, camera) -> None:
        """Attach a `engine.motion.driver.CameraTimeline` (None detaches): frames rendered from now on follow
        its motion at their pts. Only the motion tier renders from motion; other presets raise InputError."""
        if camera is not None and self.cfg.motion is None:
            raise InputError(f"camera driving needs a motion-tier preset (e.g. motion); {self.cfg.name!r} "
                             "renders pixels directly")
        self.camera = camera

    @property
    def camera_only(self) -> bool:
        """A camera without a voice drives this session: its clips skip audio features and the generator (the
        frames show the camera's motion whole) and hold the last motion frames as their prefix."""
        return self.camera is not None and not self.camera.voice

    def flush(self) -> None:
        """End of stream: the tail is generated with silence as look-ahead; frame count = ⌈duration·fps⌉."""
        with self.lock:
            for stream in self._resamplers.values():
                self.ring.append(stream.flush())
            self._resamplers.clear()
            fps = self.cfg.stream.fps
            self.total_frames = -(-self.ring.end * fps // self.sample_rate)

    def clear(self) -> None:
        """Barge-in: drop audio not yet turned into frames, every queued frame and any clip in flight.

        The timeline continues at the next clip boundary; the avatar goes back to idle (silence).
        """
        with self.lock:
            self.epoch += 1
            self.in_flight = False
            self.pending.clear()
            boundary = self._frame_sample(self.next_clip * self.cfg.stream.clip_frames)
            self.ring.truncate(boundary)
            if self.ring.end < boundary:
                self.ring.append(np.zeros(boundary - self.ring.end, dtype=np.float32))
            for rate in list(self._resamplers):
                self._resamplers[rate] = AudioResampleStream(rate)

    # ---- scheduling ----------------------------------------------------------------------
    def _frame_sample(self, frame: int) -> int:
        return frame * self.sample_rate // self.cfg.stream.fps

    def _clip_range(self, clip: int, clips: int = 1) -> tuple[int, int]:
        """Frames [first, first + n + clips·F) of the window of `clips` clips from `clip` on, motion prefix
        included."""
        s = self.cfg.stream
        return clip * s.clip_frames - s.motion_frames, s.motion_frames + clips * s.clip_frames

    def clip_ready(self, clip: int | None = None) -> bool:
        """True when the clip's (default: the next clip's) audio (with look-ahead) is in, or the ended stream has
        frames there."""
        clip = self.next_clip if clip is None else clip
        if self.total_frames is not None:
            return clip * self.cfg.stream.clip_frames < self.total_frames
        return self.audio_needed(clip) <= self.ring.end

    def ready_clips(self, limit: int) -> int:
        """How many consecutive clips from the next one have their audio in, at most `limit` (0: none)."""
        count = 0
        while count < limit and self.clip_ready(self.next_clip + count):
            count += 1
        return count

    def audio_span(self, clip: int, clips: int = 1) -> tuple[int, int, int]:
        """Samples (start, end, needed) of the encoder window of `clips` clips from `clip` on: [start, end) is what
        the encoder reads, `needed` ≤ end the look-ahead limit (`StreamConfig.lookahead_s`): samples from it on
        read as silence, so the step is ready once `needed` samples are in (its last clip's need)."""
        s = self.cfg.stream
        first, count = self.clip_audio_frames(clip, clips)
        start, end = self.features.required_span(first, count, s.fps)
        return start, end, s.audio_needed(first + count - 1, self.sample_rate, end)

    def audio_needed(self, clip: int) -> int:
        """The sample count the stream must reach before `clip` can be generated."""
        return self.audio_span(clip)[2]

    def clip_audio_frames(self, clip: int, clips: int = 1) -> tuple[int, int]:
        """Frames whose audio tokens are computed for the step: the window minus frames before 0."""
        first, count = self._clip_range(clip, clips)
        return max(first, 0), count - max(-first, 0)

    def run_clip(self) -> list[VideoFrame]:
        """Generate the next clip now (blocking); returns its frames and queues them. [] if not ready."""
        job = self.prepare_clip()
        if job is None:
            return []
        return self.finish_clip(job, denoise_jobs(self.runners, [job]))

    def prepare_clip(self, max_clips: int = 1, min_clips: int = 1) -> ClipJob | None:
        """Take the next step's inputs (audio tokens, noise, motion prefix), or None if fewer than `min_clips` clips
        are ready (once the stream has ended, whatever is left). The step holds every consecutive clip whose audio is
        in, at most `max_clips` (one window, one generator pass; the live worker passes
        `StreamConfig.max_step_clips`); its noise is the clips' own, so the frames depend only on how the steps
        fell, not on when audio arrived within them.

        The expensive denoising happens outside the session (`denoise_jobs`, batched across sessions);
        `finish_clip` decodes and queues the result.
        """
        with self.lock:
            if self.in_flight or not self.clip_ready():
                return None
            s, k = self.cfg.stream, self.next_clip
            m = self.ready_clips(max(1, max_clips, min_clips))  # ≥ 1: the next clip is ready
            if m < min_clips and self.total_frames is None:
                return None
            m = min(m, max(1, max_clips))
            first, count = self.clip_audio_frames(k, m)
            a, b, needed = self.audio_span(k, m)
            if self.camera_only:  # the camera gives every channel: no audio features, no generator pass
                self.ring.forget_before(a)
                self.in_flight = True
                return ClipJob(session=self, clip=k, epoch=self.epoch, tokens=None, noise=None, prefix_noise=None,
                               motion=self.motion, clips=m)
            audio = self.ring.read(a, b)
            audio[max(needed - a, 0):] = 0.0  # past the look-ahead: silence, whatever has arrived
            self.ring.forget_before(a)
            self.in_flight = True
            epoch = self.epoch
        # outside the lock: the audio encoder takes milliseconds, and push_audio (the event loop) must not wait
        # for it; the features' running max is touched only here, by the one thread that prepares this
        # session's clips (in_flight keeps a second prepare out)
        try:
            tokens = self.features.tokens_for_frames(audio, a, first, count, s.fps)
        except BaseException:
            with self.lock:  # a failing encoder must not leave the session stuck in flight
                if self.epoch == epoch:
                    self.in_flight = False
            raise
        window = s.motion_frames + m * s.clip_frames
        if count < window:  # first clip: the reference prefix gets frame 0's audio (clamped)
            tokens = torch.cat([tokens[:1].expand(window - count, -1, -1), tokens])
        noise, prefix_noise = self._clip_noise(k)
        if m > 1:
            noise = torch.cat([noise] + [self._clip_noise(k + j)[0] for j in range(1, m)], dim=2)
        return ClipJob(session=self, clip=k, epoch=epoch, tokens=tokens[None].float().cpu(), noise=noise,
                       prefix_noise=prefix_noise, motion=self.motion, clips=m)

    def finish_clip(self, job: ClipJob, latents: torch.Tensor) -> list[VideoFrame]:
        """latents [1, 4, F, s, s] of `job` → decoded frames, queued. A clip overtaken by clear() is dropped."""
        if not self.commit_clip(job, latents):
            return []
        return self.decode_clip(job, latents)

    def commit_clip(self, job: ClipJob, latents: torch.Tensor) -> bool:
        """First half of `finish_clip`: the clip's last latents become the motion frames, the next clip
        may be prepared. Cheap; lets a worker denoise clip k+1 while clip k decodes. False if cleared."""
        s = self.cfg.stream
        with self.lock:
            self.in_flight = False
            if job.epoch != self.epoch:
                return False
            if s.motion_frames:  # the buffer rolls: the newest n frames (a clip may be shorter than n)
                self.motion = torch.cat([self.motion, latents.to(self.motion.dtype)], dim=2)[:, :, -s.motion_frames:]
            self.next_clip = job.clip + job.clips
            return True

    def decode_clip(self, job: ClipJob, latents: torch.Tensor) -> list[VideoFrame]:
        """Second half of `finish_clip`: decode latents [1, 4, F, s, s] and queue the frames (bounded).

        Returns [] when clear() came in meanwhile (the frames are dropped)."""
        s = self.cfg.stream
        with self.lock:
            if job.epoch != self.epoch:
                return []
        latents = latents[0].permute(1, 0, 2, 3)  # [F, C, s, s]
        if self.output_filter is not None:
            latents = self.output_filter(latents)
        camera = self.camera
        if camera is not None:
            first = job.clip * s.clip_frames
            driving = camera.at((first + np.arange(len(latents))) / s.fps)
            if driving is not None:
                latents = self.runners.drive(latents, driving, camera.voice, self.avatar.decoder_reference)
        decode_images = getattr(self.runners, "decode_images", None)  # the motion tier draws uint8 images directly
        images = decode_images(latents, self.avatar.decoder_reference) if decode_images is not None else \
            to_uint8(self.runners.decode(latents, self.avatar.decoder_reference))
        out = []
        for j, image in enumerate(images):
            index = job.clip * s.clip_frames + j
            if self.total_frames is not None and index >= self.total_frames:
                break
            out.append(VideoFrame(index=index, pts=index / s.fps, image=image, latent=latents[j]))
        with self.lock:
            if job.epoch != self.epoch:  # cleared while decoding
                return []
            if len(self.pending) + len(out) > s.max_pending_frames:
                # the consumer stalled: keep the newest frames, the queue stays bounded
                for _ in range(len(self.pending) + len(out) - s.max_pending_frames):
                    if self.pending:
                        self.pending.popleft()
                        self.dropped_frames += 1
            self.pending.extend(out)
        return out

    def skip_to(self, clip: int) -> int:
        """Jump ahead to `clip` (generation fell behind real time): the clips in between are never made.

        Their audio is dropped with the next `prepare_clip`; the motion frames stay those of the last
        clip made. Only while no clip is in flight and before flush. Returns how many clips were skipped.
        """
        with self.lock:
            if self.in_flight or self.total_frames is not None or clip <= self.next_clip:
                return 0
            skipped, self.next_clip = clip - self.next_clip, clip
            return skipped

    def _clip_noise(self, clip: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial noise of the F new frames [1, 4, F, s, s] and the prefix re-noising noise [1, 4, n, s, s]
        (both anchored on the reference latent when the weights were trained so: `DDIMSampler.anchor`)."""
        s = self.cfg.stream
        size, channels = self.cfg.latent_size, self.cfg.latent_channels
        gen = torch.Generator().manual_seed(_clip_seed(self.seed, clip))
        x = self.sampler.initial_noise((1, channels, s.clip_frames, size, size), gen)
        first = clip * s.clip_frames
        if self.noise is not None and first < self.noise.shape[2]:
            given = self.noise[:, :, first:first + s.clip_frames]
            x[:, :, :given.shape[2]] = given
        prefix = torch.randn((1, channels, s.motion_frames, size, size), generator=gen)
        ref = self.avatar.ref_latents.cpu().float()
        return self.sampler.anchor(x, ref), self.sampler.anchor(prefix, ref)

    def _reference_motion(self) -> torch.Tensor:
        n = self.cfg.stream.motion_frames
        return self.avatar.ref_latents.cpu()[:, :, None].expand(-1, -1, n, -1, -1).contiguous()

    # ---- output --------------------------------------------------------------------------
    def frames(self) -> Iterator[VideoFrame]:
        """Yield queued frames, generating every clip whose audio is in (blocking compute)."""
        while True:
            while True:
                with self.lock:
                    if not self.pending:
                        break
                    frame = self.pending.popleft()
                yield frame
            if not self.run_clip() and not self.pending:
                return
