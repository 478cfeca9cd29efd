"""Lip sync of the motion tier against the streaming chunk size and the audio look-ahead.

    python benchmarks/lookahead_sync.py --data GRID_DIR [--out benchmarks/results/lookahead_sync.json]

A live session waits, before it generates a chunk of `clip_frames` new frames, for the audio up to
`lookahead_s` past the start of the chunk's last frame (`StreamConfig`); later samples read as silence.
Smaller chunks and a shorter look-ahead cut the delay, and may cost lip sync. For every (chunk, look-ahead)
pair each GRID clip's first frame speaks the clip's own audio through `Session` (pushed in 20 ms pieces as
live), the generated motion is decoded onto the photo's rest landmarks (no rendering: lip sync is a property
of the motion), and its mouth opening is correlated with the real speaker's (Pearson, the real one measured on
the video); silent frames closed are counted as in `livehead eval`. The training clips and the held-out speakers
(`GRID_HELD_OUT`) are reported separately.

Selection rule (written before this ran): chunk size and look-ahead are chosen on the training clips only:
the shortest look-ahead whose mean mouth correlation is within 0.02 of the full look-ahead's at the same chunk
size; the held-out figures are reported, not used.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from livehead.engine.eval.bench import machine_info, save_result
from livehead.engine.eval.evaluate import (
    MOUTH_CLOSED,
    SILENCE_MARGIN,
    audio_envelope,
    energy_silence,
    find_clips,
    prepare_clip,
    shrink,
)
from livehead.engine.media import landmarks as L
from livehead.engine.model.config import ModelConfig
from livehead.engine.motion import mesh
from livehead.engine.motion.space import GRID_HELD_OUT
from livehead.engine.runtime.portrait import portrait_for
from livehead.engine.runtime.runners import torch_runners
from livehead.engine.runtime.session import Session, denoise_jobs, prepare_avatar
from livehead.engine.weights.loading import load_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ((2, 0.04), (2, 0.06), (2, 0.08), (2, 0.10), (2, None), (5, None))  # (chunk, look-ahead); None: the
# whole token span (120 ms). (5, None) is the schedule the generator was trained with. Chunks of 1 frame are not
# swept: a generator call and a Whisper window per frame cost more than 40 ms on 2 cores (see docs/streaming.md).
SIZE = 256


def stream_mouth(runners, avatar, pcm: np.ndarray, rate: int) -> np.ndarray:
    """The session's generated motion for `pcm` (pushed in 20 ms pieces, as live) decoded onto the avatar's
    rest shape → mouth opening per frame [N] (IOD units). No rendering: lip sync is a property of the motion."""
    session = Session(runners, avatar)
    latents = []

    def drain():
        while (job := session.prepare_clip()) is not None:
            out = denoise_jobs(runners, [job])
            session.commit_clip(job, out)
            latents.append(out[0, :, :, 0, 0].T)  # [F, D]

    piece = rate // 50
    for start in range(0, len(pcm), piece):
        session.push_audio(pcm[start:start + piece], rate)
        drain()
    session.flush()
    drain()
    n = session.total_frames
    motion = runners.denormalise(torch.cat(latents)[:n]).numpy().astype(np.float64)
    motion[:, :runners.space.k] *= runners.expression
    rig = avatar.decoder_reference
    return np.asarray(mesh.mouth_opening(runners.space.decode(motion, rig.rest)))


def run(data: str, configs=CONFIGS) -> dict:
    base = ModelConfig.from_name("motion")
    model = load_model(base)
    clips = [prepare_clip(c, SIZE) for c in find_clips(data)]
    truth = {c.source.name: np.asarray(L.series(L.video_landmarks(c.full_frames), L.mouth_opening)) for c in clips}
    rows = []
    for chunk, lookahead in configs:
        cfg = dataclasses.replace(base, stream=dataclasses.replace(
            base.stream, clip_frames=chunk, lookahead_s=lookahead, image_size=SIZE))
        model.cfg = cfg
        runners = torch_runners(model)
        for clip in clips:
            t = time.perf_counter()
            picture = portrait_for(cfg, clip.full_frames[0])
            avatar = prepare_avatar(runners, picture.image, picture.mask)
            gen = stream_mouth(runners, avatar, clip.pcm, cfg.audio.sample_rate)
            gt = truth[clip.source.name]
            n = min(len(gen), len(gt))
            ok = np.isfinite(gt[:n])
            silent = clip.silent if clip.silent is not None else \
                energy_silence(audio_envelope(clip.pcm, cfg.audio.sample_rate, len(gt)))
            silent = shrink(np.asarray(silent[:n], bool), SILENCE_MARGIN)
            corr = float(np.corrcoef(gen[:n][ok], gt[:n][ok])[0, 1])
            row = {"clip": clip.source.name, "held_out": clip.source.name in GRID_HELD_OUT, "clip_frames": chunk,
                   "lookahead_s": lookahead, "mouth_corr_gt": round(corr, 4)}
            if silent.any():
                row["silent_closed"] = round(float(np.mean(gen[:n][silent] < MOUTH_CLOSED)), 4)
                row["gt_silent_closed"] = round(float(np.mean(gt[:n][silent & ok] < MOUTH_CLOSED)), 4)
            row["seconds"] = round(time.perf_counter() - t, 1)
            rows.append(row)
            print(row, flush=True)
    return {"rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["clip_frames"], r["lookahead_s"] if r["lookahead_s"] is not None else 1.0) for r in rows})
    for chunk, la in keys:
        la = None if la == 1.0 else la
        for held in (False, True):
            sel = [r for r in rows if r["clip_frames"] == chunk and r["lookahead_s"] == la and r["held_out"] == held]
            corr = [r["mouth_corr_gt"] for r in sel if r["mouth_corr_gt"] is not None]
            if sel:
                out.append({"clip_frames": chunk, "lookahead_s": la, "clips": "held_out" if held else "training",
                            "mouth_corr_gt": round(float(np.mean(corr)), 4) if corr else None})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of GRID clips (.mpg, + .align where present)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lookahead_sync.json"))
    args = p.parse_args()
    t = time.perf_counter()
    result = run(args.data)
    result.update(machine=machine_info(), seconds=round(time.perf_counter() - t, 1))
    save_result(args.out, result)
    for row in result["summary"]:
        print(row)


if __name__ == "__main__":
    main()
