"""How much of the mouth opening the `tiny` model's audio tokens carry, and at which frame offset.

    python benchmarks/audio_probe.py --data DIR --whisper whisper_tiny_en.safetensors \
        [--out benchmarks/results/audio_probe.json]

DIR holds `engine.synthetic_talker` clips (exact per-frame `mouth_open`). For every clip the script
computes the tokens a `Session` gives each frame (`session_audio_tokens`: rolling Whisper window,
running log-mel max, the preset's clip schedule: the very tokens training caches and the denoiser's
audio attention reads). A ridge regression from a frame's tokens (the encoder's last layer at each of
the frame's K positions, K·384 features) to the mouth opening `lag` frames later is fitted on the
clips of three quarters of the sentences and scored (Pearson r) on the clips of the other quarter.

What it tells: the correlation at lag 0 is what a linear read-out of the tokens already reaches, a
floor for the information the denoiser's audio attention has to work with; the lag where it peaks says
whether tokens and frames are aligned (a schedule off by k frames peaks at −k). It does not involve
the denoiser or its weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from livehead.engine.common.errors import InputError
from livehead.engine.eval.bench import machine_info, save_result
from livehead.engine.media.audio_video import load_audio
from livehead.engine.model.config import ModelConfig
from livehead.engine.synth.talker import read_params
from livehead.engine.training.data import gather_tokens, session_audio_tokens
from livehead.engine.training.train import build_model

ROOT = Path(__file__).resolve().parents[1]

LAGS = range(-8, 9)
RIDGE = 1000.0  # L2 penalty on standardised features


def clip_features(encoder, cfg: ModelConfig, doc_path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(features [T, K·C] float64, mouth opening [T], sentence) of one synthetic clip."""
    doc = read_params(doc_path)
    opening = np.asarray(doc["params"]["mouth_open"], dtype=np.float64)
    audio = load_audio(doc_path.with_suffix(".mp4"), sample_rate=cfg.audio.sample_rate)
    stack, index = session_audio_tokens(encoder, audio, cfg, len(opening))
    tokens = gather_tokens(stack, index)  # [T, K·L, C], token = L·k + layer
    t, kl, c = tokens.shape
    layers = cfg.audio.n_layer + 1
    last = tokens.view(t, kl // layers, layers, c)[:, :, -1].reshape(t, -1)
    return last.double().numpy(), opening, doc["text"]


def lagged(xs: list[np.ndarray], ys: list[np.ndarray], lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (tokens of frame i, opening of frame i + lag) within each clip."""
    px, py = [], []
    for x, y in zip(xs, ys):
        i = np.arange(max(0, -lag), min(len(y), len(y) - lag))
        px.append(x[i])
        py.append(y[i + lag])
    return np.concatenate(px), np.concatenate(py)


def ridge_r(fit: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], lam: float) -> float:
    (xa, ya), (xb, yb) = fit, test
    mu, sd = xa.mean(0), xa.std(0) + 1e-6
    xa, xb = (xa - mu) / sd, (xb - mu) / sd
    w = np.linalg.solve(xa.T @ xa + lam * np.eye(xa.shape[1]), xa.T @ (ya - ya.mean()))
    return float(np.corrcoef(xb @ w, yb)[0, 1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder of synthetic_talker clips (.mp4 + .json)")
    p.add_argument("--whisper", required=True, help="Whisper tiny weights (engine.whisper_ct2 output or model.bin)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audio_probe.json"))
    args = p.parse_args()
    try:
        cfg = ModelConfig.from_name(args.preset)
        docs = sorted(Path(args.data).glob("*.json"))
        if len(docs) < 8:
            raise InputError(f"need at least 8 synthetic clips in {args.data}, found {len(docs)}")
        encoder = build_model(cfg, whisper=args.whisper).audio_encoder.eval()
        clips = [clip_features(encoder, cfg, d) for d in tqdm(docs, desc="audio tokens", unit="clip")]
    except InputError as err:
        print(f"audio_probe: error: {err}", file=sys.stderr)
        return 2
    sentences = sorted({s for _, _, s in clips})
    held = set(sentences[3::4])
    if not held or len(held) == len(sentences):
        print("audio_probe: error: the clips need at least 2 different sentences", file=sys.stderr)
        return 2
    fit = [c for c in clips if c[2] not in held]
    test = [c for c in clips if c[2] in held]
    rows = []
    for lag in LAGS:
        r = ridge_r(lagged([c[0] for c in fit], [c[1] for c in fit], lag),
                    lagged([c[0] for c in test], [c[1] for c in test], lag), RIDGE)
        rows.append({"lag_frames": lag, "test_r": round(r, 4)})
        print(f"lag {lag:+d} frames: test r = {r:.3f}")
    best = max(rows, key=lambda row: row["test_r"])
    result = {
        "benchmark": "audio_probe",
        "device": machine_info(),
        "settings": {"preset": cfg.name, "features": "last encoder layer at each of the frame's positions",
                     "ridge": RIDGE, "fit_clips": len(fit), "test_clips": len(test),
                     "fit_sentences": len(sentences) - len(held), "test_sentences": len(held)},
        "lags": rows,
        "best_lag_frames": best["lag_frames"],
        "r_at_lag_0": next(row["test_r"] for row in rows if row["lag_frames"] == 0),
    }
    save_result(args.out, result)
    print(f"best lag {best['lag_frames']:+d} (r = {best['test_r']:.3f}); saved {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
