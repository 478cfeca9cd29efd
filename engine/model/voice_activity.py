"""Voice activity from the session's Whisper tokens, and the gate that lets the face rest when nobody speaks.

The motion generator regresses the mouth from the audio; on a voice it never heard it may keep the lips a little
apart through a long silence (the trailing second of a sentence). A tiny probe reads the same per-frame tokens the
generator reads and says whether the frame is voiced; its output, held and released over the last frames, scales
the expression part of the generated motion towards the rest (zero expression: the photo with closed lips), by
at most `depth` (0.5: half-way, chosen on the training clips, where real speakers keep their lips apart in 40 % of
silent frames, mostly just before they speak).

    probe = load_voice_probe()                      # None when the shipped file is missing
    p = probe.probability(tokens)                   # tokens [..., Ta, Ca] → [...] in [0, 1]
    scale = voice_gate(p, known=8, cfg=probe.cfg)   # p [B, W] → expression scale [B, W - known], new frames

The gate of frame f depends only on the probabilities of frames f - hold .. f (all inside the window when
hold ≤ known), never on state kept between windows: a session stays a deterministic function of its audio, for
any clip size. Attack is immediate (a voiced frame opens the gate at once; the tokens already look 100 ms ahead),
release follows `release`: full for a few frames (stops, short pauses inside words), then down to zero, so a
held vowel (singing) keeps the mouth open and a silence closes it within about a third of a second.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "assets" / "motion" / "voice_activity.safetensors"


@dataclass(frozen=True)
class VoiceGateConfig:
    """The probe's token layout (Whisper-tiny: positions × (n_layer + 1) hidden states × n_state channels; token
    index = position · layers + layer) and the gate's shape.

    release: gate weight of a voiced frame j frames ago, j = 0, 1, ... (the attack is immediate).
    floor / ceiling: probabilities mapped linearly to gate 0 / 1 before the hold.
    depth: how far silence pulls the expression towards the rest (1: all the way; scale = 1 - depth · (1 - gate)).
    """

    positions: int = 10
    layers: int = 5
    channels: int = 384
    release: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25)
    floor: float = 0.2
    ceiling: float = 0.6
    depth: float = 0.5  # the largest of 0.25, 0.5, 0.75, 1 that closes no more training silences than real speakers

    @property
    def hold(self) -> int:
        return len(self.release) - 1


class VoiceActivityProbe(nn.Module):
    """logit = Σ_{position, layer} mix[position, layer] · (project[layer] · standardised token) + bias: one linear
    read-out per Whisper layer, pooled over the frame's token positions with learned weights. The tokens are
    standardised per layer and channel (`mean`, `std`: measured on the training tokens). About 2 k parameters."""

    def __init__(self, cfg: VoiceGateConfig = VoiceGateConfig()):
        super().__init__()
        self.cfg = cfg
        self.project = nn.Parameter(torch.zeros(cfg.layers, cfg.channels))
        self.mix = nn.Parameter(torch.full((cfg.positions, cfg.layers), 1.0 / (cfg.positions * cfg.layers)))
        self.bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("mean", torch.zeros(cfg.layers, cfg.channels))
        self.register_buffer("std", torch.ones(cfg.layers, cfg.channels))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [..., positions · layers, channels] → voiced logits [...]."""
        c = self.cfg
        x = tokens.float().reshape(*tokens.shape[:-2], c.positions, c.layers, c.channels)
        per_token = ((x - self.mean) / self.std * self.project).sum(-1)  # [..., positions, layers]
        return (per_token * self.mix).sum((-2, -1)) + self.bias

    @torch.no_grad()
    def probability(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [..., Ta, Ca] → probability that the frame is voiced [...] (float32)."""
        return torch.sigmoid(self.forward(tokens))


def voice_gate(probability: torch.Tensor, known: int, cfg: VoiceGateConfig) -> torch.Tensor:
    """probability [B, W] of each window frame (the first `known` are the motion prefix) → expression scale
    [B, W - known] in [1 - depth, 1] for the new frames: 1 - depth · (1 - gate), gate = max over j ≤ hold of
    release[j] · level(frame f - j), level = the probability mapped from [floor, ceiling] to [0, 1]."""
    if known < cfg.hold:
        raise ValueError(f"the gate looks {cfg.hold} frames back but the window has only {known} known frames")
    level = ((probability.float() - cfg.floor) / (cfg.ceiling - cfg.floor)).clamp(0.0, 1.0)
    frames = level.shape[1]
    gate = torch.zeros(level.shape[0], frames - known)
    for j, weight in enumerate(cfg.release):
        gate = torch.maximum(gate, weight * level[:, known - j:frames - j])
    return 1.0 - cfg.depth * (1.0 - gate)


def save_voice_probe(probe: VoiceActivityProbe, path: str | Path, info: dict) -> None:
    """probe → path (safetensors, float32) + path.json (its config and `info`: how it was made)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in probe.state_dict().items()}, str(path))
    meta = {"config": asdict(probe.cfg), **info}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")


def load_voice_probe(path: str | Path | None = None) -> VoiceActivityProbe | None:
    """The probe saved at `path` (default: the shipped engine/assets/motion/voice_activity.safetensors, its config
    in the .json beside it), loaded strictly in eval mode; None when the file does not exist."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.exists():
        return None
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    config = dict(meta.get("config", {}))
    if "release" in config:
        config["release"] = tuple(config["release"])
    probe = VoiceActivityProbe(VoiceGateConfig(**config))
    probe.load_state_dict(load_file(str(path)), strict=True)
    return probe.eval()


__all__ = ["DEFAULT_PATH", "VoiceActivityProbe", "VoiceGateConfig", "load_voice_probe", "save_voice_probe",
           "voice_gate"]
