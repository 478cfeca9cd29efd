"""Model and runtime configuration: one dataclass tree with named presets.

    cfg = ModelConfig.from_name("tiny")            # embedded default, CPU real-time
    cfg = ModelConfig.from_name("echomimic-v1-acc")  # public EchoMimic v1 weights, 6 steps, no CFG

Full-size presets follow the SD1.5 UNet config used by EchoMimic v1 and its `inference_v2.yaml`
(see the EchoMimic spec in the shared reference). Module names everywhere follow diffusers /
AnimateDiff so the public checkpoints load without a renaming table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from livehead.engine.common.constants import FPS, NUM_TRAIN_TIMESTEPS, SAMPLE_RATE
from livehead.engine.common.errors import InputError


@dataclass(frozen=True)
class UNetConfig:
    """SD1.5-layout UNet, shared by the ReferenceNet (2-D) and the denoiser (inflated to video).

    Down blocks: 3 with spatial transformers then 1 plain; up blocks: 1 plain then 3 with
    transformers; a mid block with one transformer. `attention_heads` is the number of heads
    (SD's legacy `attention_head_dim: 8` means 8 heads of size C/8).
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    attention_heads: int = 8
    norm_num_groups: int = 32
    norm_eps: float = 1e-5  # resnet GroupNorms
    transformer_norm_eps: float = 1e-6  # GroupNorm in front of each spatial transformer
    layer_norm_eps: float = 1e-5  # every LayerNorm
    audio_dim: int = 384  # key/value width of the audio cross-attention (Whisper width)
    audio_scale: float = 3.0  # EchoMimic's audio_feature_ratio: attn2 output multiplier
    motion_heads: int = 8
    motion_norm_groups: int = 32  # hard-coded 32 in AnimateDiff's motion modules
    motion_max_len: int = 32  # sinusoidal PE length of the temporal attention
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]


@dataclass(frozen=True)
class VAEConfig:
    """AutoencoderKL in the SD layout (`stabilityai/sd-vae-ft-mse`)."""

    in_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215  # hard-coded in EchoMimic's pipeline for encode (x) and decode (/)
    # The decoder also sees the avatar's photo (mouth blanked) and copies its detail (`engine.vae`): a
    # livehead extension, off for the SD layout; the tiny preset's 8-channel decoder cannot draw unseen faces.
    reference_decoder: bool = False

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class AudioConfig:
    """Whisper encoder and the per-video-frame audio token windows.

    The encoder returns the stack of `n_layer + 1` hidden states (input of block 0 and every block
    output, before `ln_post`) at 50 Hz. Frame i takes positions c-`tokens_before` .. c+`tokens_after`
    with c = int(i * 50 / fps): (tokens_before + tokens_after + 1) * (n_layer + 1) tokens.
    """

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 400
    hop_length: int = 160  # 100 mel frames per second
    n_mels: int = 80
    n_ctx: int = 1500  # encoder positions (30 s of mel after the stride-2 conv)
    n_state: int = 384
    n_head: int = 6
    n_layer: int = 4
    tokens_before: int = 4
    tokens_after: int = 5
    window_seconds: float = 30.0  # audio span the streaming encoder sees per clip (left context + clip + look-ahead)
    pad_to_ctx: bool = True  # zero-pad each window to n_ctx positions like Whisper (exact but slower)

    @property
    def positions_per_second(self) -> int:
        return self.sample_rate // self.hop_length // 2

    @property
    def tokens_per_frame(self) -> int:
        return (self.tokens_before + self.tokens_after + 1) * (self.n_layer + 1)


@dataclass(frozen=True)
class FaceLocatorConfig:
    """Strided-conv encoder of the face-region mask; output width = the UNet's first block width."""

    conditioning_channels: int = 1
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)


@dataclass(frozen=True)
class SamplerConfig:
    """diffusers DDIMScheduler as EchoMimic configures it (linear betas, v-pred, zero-SNR, trailing)."""

    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    beta_start: float = 0.00085
    beta_end: float = 0.012
    steps: int = 6
    guidance_scale: float = 1.0  # > 1: classifier-free guidance, uncond = no audio, no face, no reference
    init_noise_clamp: float = 1.5
    # Share m of the reference latent in the diffusion noise: noise = √m·ref + √(1−m)·ε (0: plain ε).
    # A property of trained weights (their livehead.json records it; `engine.model.trained_sampling`).
    reference_mix: float = 0.0


@dataclass(frozen=True)
class StreamConfig:
    """Window scheduling of a live session.

    Each clip denoises `motion_frames + clip_frames` latents: the first `motion_frames` are the last
    generated frames of the previous clip (a known prefix, re-noised to every step's level), the
    rest are new. The first clip uses the reference latent as its prefix.

    `prefix_timestep_cap`: None re-noises the prefix to the step's own timestep (EchoMimic). With zero
    terminal SNR the first step (t = 999) then sees pure noise there, so a one-step model would never
    see its motion frames; with a cap the prefix is re-noised to min(t, cap) instead (training and
    distillation use the same rule, `prefix_timestep`). A cap of -1 passes the prefix clean (ᾱ = 1): the motion
    tier's generator reads its motion frames exactly.
    """

    image_size: int = 512
    fps: int = FPS
    clip_frames: int = 9
    motion_frames: int = 3
    max_pending_frames: int = 250  # bound of the session's frame queue (10 s at 25 fps)
    prefix_timestep_cap: int | None = None
    # Audio look-ahead: seconds of audio past the start of a clip's last new frame that the clip waits for;
    # later samples of the encoder's window read as silence. None: the audio config's whole token span
    # ((tokens_after + 1) x 20 ms, 120 ms for Whisper's 4 + 1 + 5 positions).
    lookahead_s: float | None = None
    # Motion tier: causal One Euro smoothing of the generated expression before it is rendered (0 = none, 1 =
    # strongest; `engine.motion.driver.MotionSmoother`). The generator's own motion frames stay unsmoothed.
    output_smoothing: float = 0.0
    # Live steps under load: a session whose next clips' audio is all in may have up to this many clips
    # generated in one step (one audio-encoder window and one generator pass for all of them). Alone on a fast
    # machine one clip is ready at a time, so steps stay `clip_frames` long (lowest latency); when generation
    # falls behind, or sessions share the CPU, steps grow and a frame costs less (a live server gives n sessions
    # sharing the model steps of min(n, max_step_clips) clips). 1: fixed windows (pixel presets).
    max_step_clips: int = 1

    def prefix_timestep(self, t):
        """Noise level of the motion prefix while denoising at timestep t (an int or a tensor of them)."""
        cap = self.prefix_timestep_cap
        if cap is None:
            return t
        return t.clamp(max=cap) if hasattr(t, "clamp") else min(t, cap)

    @property
    def window_frames(self) -> int:
        return self.motion_frames + self.clip_frames

    def audio_needed(self, last_frame: int, sample_rate: int, window_end: int) -> int:
        """Samples a chunk whose last new frame is `last_frame` waits for: `lookahead_s` past that frame's start,
        at most the encoder window's end `window_end` (all of it when lookahead_s is None)."""
        if self.lookahead_s is None:
            return window_end
        return min(window_end, last_frame * sample_rate // self.fps + round(self.lookahead_s * sample_rate))

    def __post_init__(self):
        if self.clip_frames < 1 or self.motion_frames < 0 or self.fps < 1:
            raise ValueError(f"stream needs clip_frames >= 1, motion_frames >= 0, fps >= 1, got {self}")
        if self.lookahead_s is not None and not 0.0 <= self.lookahead_s <= 1.0:
            raise ValueError(f"lookahead_s must be between 0 and 1 s (or None), got {self.lookahead_s}")
        if self.max_step_clips < 1:
            raise ValueError(f"max_step_clips must be at least 1, got {self.max_step_clips}")
        if not 0.0 <= self.output_smoothing <= 1.0:
            raise ValueError(f"output_smoothing must be between 0 and 1, got {self.output_smoothing}")


@dataclass(frozen=True)
class MotionGeneratorConfig:
    """The embedded tier's motion generator (`engine.model.motion_generator`) and its motion space.

    motion_dim = expression components + 2 eyelids + 4 pose values (`engine.motion.space`); the
    renderer draws the photo at its own aspect ratio with its long side at `StreamConfig.image_size`.
    """

    motion_dim: int = 20
    shape_dim: int = 14  # the avatar's neutral shape: its offsets from the canonical face, on the PCA basis
    audio_dim: int = 384  # Whisper-tiny hidden size
    audio_tokens: int = 50  # per frame: (tokens_before + tokens_after + 1) x (n_layer + 1)
    width: int = 192
    layers: int = 4
    heads: int = 4
    max_frames: int = 64  # longest window (learned frame positions)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    face_locator: FaceLocatorConfig = field(default_factory=FaceLocatorConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    weights_variant: str = ""  # "" or "_acc": suffix of the EchoMimic denoiser / motion-module files
    seeded_weights: bool = False  # True: without weights the modules are built from a fixed seed
    # Trained weights shipped inside the `engine` package (a folder relative to it); used when no
    # --weights is given and the folder holds a livehead.json. "" = none shipped.
    bundled_weights: str = ""
    # The embedded motion tier: a motion generator + a renderer that moves the photo (None: a pixel model).
    motion: MotionGeneratorConfig | None = None

    @property
    def latent_size(self) -> int:
        """Side of the latents the sampler works on: image / VAE stride, or 1 for motion vectors."""
        return 1 if self.motion is not None else self.stream.image_size // self.vae.downscale

    @property
    def latent_channels(self) -> int:
        """Channels of the sampler's latents: the VAE's 4, or the motion vector's size."""
        return self.motion.motion_dim if self.motion is not None else 4

    @staticmethod
    def from_name(name: str) -> ModelConfig:
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        return PRESETS[name]

    def with_steps(self, steps: int) -> ModelConfig:
        if steps < 1 or steps > self.sampler.num_train_timesteps:
            raise InputError(f"--steps must be between 1 and {self.sampler.num_train_timesteps}, got {steps}")
        return replace(self, sampler=replace(self.sampler, steps=steps))


_ECHOMIMIC_V1 = ModelConfig(
    name="echomimic-v1",
    sampler=SamplerConfig(steps=30, guidance_scale=2.5),
    stream=StreamConfig(image_size=512, fps=25, clip_frames=9, motion_frames=3),
)

PRESETS: dict[str, ModelConfig] = {
    # Embedded default: same architecture at CPU real-time size (128x128 output, 16x16 latents).
    # One sampling step: the shipped tiny model is a one-step distilled student (the teacher samples
    # more), and one step is what keeps a live session at 25 fps on two CPU cores beside the server's
    # codecs (two steps: 14 generated fps in `benchmarks/webrtc_latency.py`). `--steps N` overrides.
    "tiny": ModelConfig(
        name="tiny",
        unet=UNetConfig(block_out_channels=(32, 64, 64, 64), norm_num_groups=8, attention_heads=2, motion_heads=2),
        vae=VAEConfig(block_out_channels=(8, 16, 32, 32), layers_per_block=1, norm_num_groups=4,
                      reference_decoder=True),
        audio=AudioConfig(window_seconds=2.0, pad_to_ctx=False),
        face_locator=FaceLocatorConfig(block_out_channels=(4, 8, 16, 32)),
        sampler=SamplerConfig(steps=1, guidance_scale=1.0),
        # one step at t = 999: the motion prefix enters mostly clean (ᾱ(200) ≈ 0.66), not as pure noise
        stream=StreamConfig(image_size=128, fps=25, clip_frames=10, motion_frames=2, prefix_timestep_cap=200),
        seeded_weights=True,
        bundled_weights="assets/tiny",
    ),
    # Embedded default: motion space. A generator predicts the motion of the face (expression, eyelids, head
    # pose) from the voice, and a renderer moves the user's own photo (its long side at image_size), so the face
    # stays theirs. Live steps of 2 new frames (80 ms) after 8 known ones, each waiting for 40 ms of audio past
    # its last frame: chosen on the training clips (benchmarks/lookahead_sync.py: mouth correlation 0.944 against
    # 0.959 with the whole 120 ms; chunks of 1 frame cost more than their 40 ms on 2 cores). The generator was
    # trained on windows of 8 + 5.
    "motion": ModelConfig(
        name="motion",
        audio=AudioConfig(window_seconds=2.0, pad_to_ctx=False),
        sampler=SamplerConfig(steps=1, guidance_scale=1.0),
        # output_smoothing 0.15: the strongest whose training-clip mouth correlation stays within 0.02 of none
        # (benchmarks/output_smoothing.py; jitter 0.0075 → 0.0068 against the real 0.0071)
        stream=StreamConfig(image_size=512, fps=25, clip_frames=2, motion_frames=8, prefix_timestep_cap=-1,
                            # max_step_clips 4: 3 sessions at 256 px kept 24 fresh frames/s on 2 cores with 3-clip
                            # steps, 18-19 with 2 (benchmarks/webrtc_latency.py --admit-all)
                            lookahead_s=0.04, output_smoothing=0.15, max_step_clips=4),
        seeded_weights=True,
        bundled_weights="assets/motion",
        motion=MotionGeneratorConfig(),
    ),
    "echomimic-v1": _ECHOMIMIC_V1,
    "echomimic-v1-acc": replace(
        _ECHOMIMIC_V1,
        name="echomimic-v1-acc",
        sampler=SamplerConfig(steps=6, guidance_scale=1.0),
        weights_variant="_acc",
    ),
}
