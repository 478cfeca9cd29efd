"""The motion tier behind the `Runners` interface: the same `Session`, server and benchmarks run it unchanged.

    runners = TorchMotionRunners(load_model(ModelConfig.from_name("motion")))
    avatar = prepare_avatar(runners, photo.image, photo.mask)   # the photo's rig: landmarks, warp, mouth layer
    session = Session(runners, avatar)                           # push_audio / flush / clear / frames as ever

What each `Runners` call means here ("latents" are normalised motion vectors [.., D, .., 1, 1]):

    audio_stack      Whisper-tiny, as for the pixel models
    encode_image     → the neutral motion (the avatar at rest), the first clip's motion prefix
    face_features    → the avatar's neutral-shape code [1, S, 1, 1] (`MotionAvatar.shape`)
    reference_kv     → () (the generator has no reference bank)
    denoise          → the generator's v, its expression gated towards the rest by voice activity (below),
                       plus blinks and idle head motion drawn from the window's noise
    decode           → the avatar's photo moved to each frame's motion, its mouth refined by the learned
                       mouth refiner (`engine.model.mouth_refiner`): frames [N, 3, H, W] in [0, 1]

Generated motion is relative to the avatar's rest shape (`engine.motion.shape.rest_landmarks`): the photo
with its lips closed, as the generator's training motion was measured from each clip's silent, closed-lip
frame. A photo with parted lips (a smile showing teeth) therefore closes its mouth in silence; a photo with
closed lips is its own rest, so a zero motion gives the photo back.

In silence the face rests: a voice-activity probe (`engine.model.voice_activity`) reads the window's audio tokens,
and its gate (immediate attack, held then released over the last frames, computed from the window alone, so no
state is kept between windows) scales the new frames' expression towards zero, half-way at its shipped depth
(`VoiceGateConfig.depth`). Without it the generator may keep
an unheard voice's lips apart through a long silence.

`expression` scales the face's expression and `head_motion` the idle head motion (user controls).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np
import torch

from livehead.engine.model.avatar_model import MotionModel
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.motion_sampling import add_blinks, add_idle_pose
from livehead.engine.model.mouth_refiner import (
    MouthRefiner,
    MouthRefinerConfig,
    load_mouth_refiner,
    neutral_mouth_crop,
)
from livehead.engine.model.voice_activity import VoiceActivityProbe, load_voice_probe, voice_gate
from livehead.engine.motion.driver import MotionSmoother, combine_camera
from livehead.engine.motion.renderer import PhotoRenderer
from livehead.engine.motion.shape import rest_landmarks, shape_code
from livehead.engine.motion.space import MotionSpace, default_motion_space
from livehead.engine.motion.tracker import detect
from livehead.engine.runtime.render_process import RenderProcess, render_motion


@dataclass
class MotionAvatar:
    """Per-photo constants of the motion tier: its renderer (neutral landmarks, warp, mouth layer), its rest
    shape and its neutral-shape code [1, S, 1, 1]. It is the `decoder_reference` of the photo's `Avatar`."""

    renderer: PhotoRenderer
    shape: torch.Tensor
    mouth_crop: np.ndarray  # uint8 [S, S, 3] the photo's own mouth, what the mouth refiner reads
    rest: np.ndarray  # float64 [478, 2] the photo's face with closed lips: generated motion is decoded onto it
    neutral_expression: np.ndarray  # float64 [K] the photo's own face relative to its rest (0: lips closed)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # names the rig in a render process

    @property
    def neutral(self) -> np.ndarray:
        return self.renderer.neutral


class MotionRunners:
    """The motion tier's `Runners` around a generator backend: subclasses give `audio_stack` and `generator_v`
    (eager torch: `TorchMotionRunners`; ONNX Runtime: `livehead.export.ort_runners.OrtMotionRunners`).
    voice_probe: "shipped" (the probe in engine/assets/motion, if present), a probe, or None (no gate)."""

    def __init__(self, cfg: ModelConfig, motion_mean: torch.Tensor, motion_std: torch.Tensor,
                 space: MotionSpace | None = None, expression: float = 1.0, head_motion: float = 1.0,
                 refiner: MouthRefiner | str | None = "shipped",
                 voice_probe: VoiceActivityProbe | str | None = "shipped"):
        self.cfg = cfg
        self.space = space or default_motion_space()
        self.refiner = load_mouth_refiner() if isinstance(refiner, str) else refiner
        self.voice_probe = load_voice_probe() if isinstance(voice_probe, str) else voice_probe
        self.motion_mean = motion_mean.detach().float().cpu()
        self.motion_std = motion_std.detach().float().cpu()
        self.expression = float(expression)
        self.head_motion = float(head_motion)
        self.render_process: RenderProcess | None = None  # see start_render_process
        if self.space.dim != cfg.motion.motion_dim:
            raise ValueError(f"motion space has {self.space.dim} channels, the generator {cfg.motion.motion_dim}")

    def generator_v(self, sample: torch.Tensor, timestep: torch.Tensor, audio: torch.Tensor,
                    face: torch.Tensor) -> torch.Tensor:
        """The generator's v [B, D, W, 1, 1] (CPU, float32) for the window; see `MotionGenerator.forward`."""
        raise NotImplementedError

    def normalise(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.motion_mean) / self.motion_std

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.motion_std + self.motion_mean

    # ---- per photo ---------------------------------------------------------------------------------
    def photo_avatar(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> MotionAvatar:
        """image uint8 [H, W, 3] (already at the output size) → its rig. landmarks [478, 2] if known."""
        neutral = detect(image) if landmarks is None else landmarks
        renderer = PhotoRenderer(image, neutral, max_side=max(image.shape[:2]))
        rest = rest_landmarks(self.space, renderer.neutral)
        shape = torch.as_tensor(shape_code(self.space, rest, self.cfg.motion.shape_dim), dtype=torch.float32)
        crop = neutral_mouth_crop(renderer.image, renderer.neutral, MouthRefinerConfig.size)
        own = self.space.encode(renderer.neutral[None], neutral=rest)[0, :self.space.k]
        return MotionAvatar(renderer=renderer, shape=shape.reshape(1, -1, 1, 1), mouth_crop=crop, rest=rest,
                            neutral_expression=own)

    # ---- Runners -----------------------------------------------------------------------------------
    def neutral_latent(self) -> torch.Tensor:
        """The neutral motion as latents [1, D, 1, 1]."""
        neutral = torch.as_tensor(self.space.neutral_motion(1)[0], dtype=torch.float32)
        return self.normalise(neutral).reshape(1, -1, 1, 1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.neutral_latent()

    def face_features(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, self.cfg.motion.shape_dim, 1, 1)

    def reference_kv(self, ref_latents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ()

    def denoise(self, sample, timestep, audio, face, kv) -> torch.Tensor:
        """sample [B, D, W, 1, 1], timestep [B], audio [B, W, Ta, Ca], face [B, S, 1, 1] → v [B, D, W, 1, 1]."""
        v = self.generator_v(sample, timestep, audio, face)
        if int(timestep.max()) != self.cfg.sampler.num_train_timesteps - 1:
            return v  # only the first (pure-noise) step draws blinks and idle motion
        n, k = self.cfg.stream.motion_frames, self.space.k
        x0 = -v[..., 0, 0].transpose(1, 2)  # [B, W, D]: at ᾱ = 0 the sampler's x0 is -v
        window = sample[..., 0, 0].transpose(1, 2).float().cpu()
        gate = self.voice_gate(audio, n)
        out = []
        for b in range(x0.shape[0]):
            predicted = self.denormalise(x0[b])
            motion = torch.cat([self.denormalise(window[b, :n]), predicted[n:]])
            if gate is not None:
                motion[n:, :k] = motion[n:, :k] * gate[b, :, None]
            motion = add_blinks(motion, window[b, :, k], n, self.cfg.stream.fps, k)
            motion = add_idle_pose(motion, predicted, window[b, :, -4:], n, self.head_motion)
            out.append(self.normalise(motion))
        return -torch.stack(out).transpose(1, 2)[..., None, None]

    def voice_gate(self, audio: torch.Tensor, known: int) -> torch.Tensor | None:
        """audio tokens [B, W, Ta, Ca] → the new frames' expression scale [B, W - known] in [1 - depth, 1], or None
        without a probe (or with a motion prefix too short for the gate's release)."""
        probe = self.voice_probe
        if probe is None or known < probe.cfg.hold:
            return None
        return voice_gate(probe.probability(audio.float().cpu()), known, probe.cfg)

    def drive(self, latents: torch.Tensor, camera: np.ndarray, voice: bool, reference: MotionAvatar) -> torch.Tensor:
        """Generated latents [N, D, 1, 1] and camera motion [N, M] (relative to the driver's neutral face) →
        the latents to decode (`engine.motion.driver.combine_camera`). Without a voice the camera's expression
        is moved onto the photo's own face: decoding happens on the rest shape, so the photo-to-rest offset
        (`MotionAvatar.neutral_expression`, 0 for a photo with closed lips) is added."""
        generated = self.denormalise(latents[:, :, 0, 0].float().cpu()).numpy().astype(np.float64)
        camera = np.asarray(camera, np.float64).copy()
        if not voice:
            camera[:, :self.space.k] += reference.neutral_expression
        motion = combine_camera(generated, camera, self.space.k, voice)
        return self.normalise(torch.as_tensor(motion, dtype=torch.float32))[:, :, None, None]

    def output_filter(self) -> OutputSmoother | None:
        """A session's causal smoothing of the generated expression (`StreamConfig.output_smoothing`), or None."""
        smoothing = self.cfg.stream.output_smoothing
        return OutputSmoother(self, smoothing) if smoothing > 0 else None

    def decode(self, latents: torch.Tensor, reference: MotionAvatar | None = None) -> torch.Tensor:
        """latents [N, D, 1, 1] → frames [N, 3, H, W] in [0, 1]: the avatar's photo moved to each motion."""
        return torch.from_numpy(self.decode_images(latents, reference)).permute(0, 3, 1, 2).float() / 255.0

    def decode_images(self, latents: torch.Tensor, reference: MotionAvatar | None = None) -> np.ndarray:
        """`decode` as the images themselves, uint8 [N, H, W, 3] (what a live session sends: no float round trip)."""
        if reference is None:
            raise ValueError("the motion tier decodes onto an avatar's photo: pass its MotionAvatar")
        motion = self.denormalise(latents[:, :, 0, 0].float().cpu()).numpy().astype(np.float64)
        motion[:, :self.space.k] *= self.expression
        pool = self.render_process
        return pool.render(reference, motion) if pool is not None else \
            render_motion(self.space, self.refiner, reference, motion)

    def start_render_process(self, nice: int = 0) -> None:
        """Render in a child process from now on (`engine.runtime.render_process`: the photo warp and mouth refiner
        off this interpreter's lock, for a live server with several sessions; `nice` lowers its CPU priority).
        Same frames."""
        if self.render_process is None:
            self.render_process = RenderProcess(self.space, self.refiner, nice)

    def stop_render_process(self) -> None:
        pool, self.render_process = self.render_process, None
        if pool is not None:
            pool.close()


class OutputSmoother:
    """One session's causal One Euro filter over the generated expression channels, frame by frame in the order
    they are rendered: latents [F, D, 1, 1] → latents [F, D, 1, 1] (eyelids and pose pass unchanged: blinks
    stay crisp, the idle head motion is smooth already)."""

    def __init__(self, runners: MotionRunners, smoothing: float):
        self.runners, self.k = runners, runners.space.k
        self.smoother = MotionSmoother(smoothing, runners.cfg.stream.fps)

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        motion = self.runners.denormalise(latents[:, :, 0, 0].float().cpu()).numpy().astype(np.float64)
        for row in motion:
            row[:self.k] = self.smoother(row[:self.k])
        return self.runners.normalise(torch.as_tensor(motion, dtype=torch.float32))[:, :, None, None]


class TorchMotionRunners(MotionRunners):
    """Eager PyTorch runner of a `MotionModel` (generator + Whisper-tiny) plus the photo renderer."""

    def __init__(self, model: MotionModel, space: MotionSpace | None = None, expression: float = 1.0,
                 head_motion: float = 1.0, refiner: MouthRefiner | str | None = "shipped",
                 voice_probe: VoiceActivityProbe | str | None = "shipped"):
        gen = model.generator
        super().__init__(model.cfg, gen.motion_mean, gen.motion_std, space, expression, head_motion, refiner,
                         voice_probe)
        self.model = model
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype

    @torch.inference_mode()
    def audio_stack(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model.audio_encoder(mel.to(self.device, self.dtype)).float()

    @torch.inference_mode()
    def generator_v(self, sample, timestep, audio, face) -> torch.Tensor:
        dev, dt = self.device, self.dtype
        v = self.model.generator(sample.to(dev, dt), timestep.to(dev), audio.to(dev, dt), face.to(dev, dt),
                                 known_frames=self.cfg.stream.motion_frames)
        return v.float().cpu()
