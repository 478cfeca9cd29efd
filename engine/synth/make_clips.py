"""The synthetic talker's command: clips of portraits speaking Piper sentences or a recording, with
their exact ground truth (training data and the lip-sync evaluation's reference).

    python -m livehead.engine.synth.make_clips --portrait engine/assets/portrait.png --out DIR --clips 8
    python -m livehead.engine.synth.make_clips --portrait me.png --audio clip.mpg --align clip.align --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from livehead.engine.common.constants import SAMPLE_RATE
from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import load_audio, load_image
from livehead.engine.synth.morph import morph_portraits
from livehead.engine.synth.speech_alignment import AlignedSpeech, read_grid_align, synthesize_speech, words_to_phones
from livehead.engine.synth.talker import SyntheticTalker, TalkerStyle, write_clip

SENTENCES = (
    "Hello, I am a live avatar. I move my lips when you talk to me.",
    "Please bring the blue map over here, and open the window.",
    "We met at the old bakery, five minutes past nine.",
    "Who wants some warm soup? Bob made a huge pot of it.",
    "The weather is lovely today; let us walk by the river.",
    "My friend Amy sells fresh apples and sweet melons.",
    "Could you move the big box away from the door, please?",
    "I think that idea might work, but we should test it first.",
    "Oh, look at the moon! It is so bright tonight.",
    "Five brave pilots flew over the quiet valley at dawn.",
)



def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m livehead.engine.synth.make_clips",
                                description="Render synthetic talking-portrait clips with exact ground truth.")
    p.add_argument("--portrait", action="append", required=True,
                   help="portrait photo (repeat for several; clips cycle through them)")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--clips", type=int, default=1, help="number of clips")
    p.add_argument("--text", action="append", default=None,
                   help="sentence to speak (repeat for several; default: a built-in list)")
    p.add_argument("--audio", default=None, help="speak this recording instead (needs --align)")
    p.add_argument("--align", default=None, help="GRID-style word alignment of --audio (start end word, 1/25000 s)")
    p.add_argument("--size", type=int, default=128, help="output side in pixels (tiny preset: 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="keep the photo as it is (no style randomisation)")
    p.add_argument("--morph", type=float, default=0.0,
                   help="share of clips whose face is a new one: a morph of the clip's portrait with another "
                        "--portrait, weight uniform in [0.3, 0.7] (engine.synth.morph; needs two portraits)")
    p.add_argument("--quiet", action="store_true")
    return p



def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.clips < 1:
            raise InputError(f"--clips must be at least 1, got {args.clips}")
        if not 0.0 <= args.morph <= 1.0:
            raise InputError(f"--morph must be a share in [0, 1], got {args.morph}")
        if args.morph > 0 and len(args.portrait) < 2:
            raise InputError("--morph blends two portraits: pass --portrait at least twice")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if (args.audio is None) != (args.align is None):
            raise InputError("--audio and --align go together (a recording and its word alignment)")
        portraits = [load_image(p) for p in args.portrait]
        texts = args.text or list(SENTENCES)
        rng = np.random.default_rng(args.seed)
        recorded = None
        if args.audio:
            words = read_grid_align(args.align)
            recorded = AlignedSpeech(load_audio(args.audio), SAMPLE_RATE, words_to_phones(words), words=words,
                                     text=" ".join(w.word for w in words if w.word not in ("sil", "sp")))
        for i in tqdm(range(args.clips), desc="clips", unit="clip", disable=args.quiet):
            style = TalkerStyle() if args.no_augment else TalkerStyle.sample(rng)
            if recorded is not None:
                speech = recorded
            else:
                scale = 1.0 if args.no_augment else float(rng.uniform(0.9, 1.15))
                speech = synthesize_speech(texts[i % len(texts)], length_scale=scale)
            text = speech.text
            k = i % len(portraits)
            portrait, meta = portraits[k], {"portrait": Path(args.portrait[k]).name, "seed": args.seed, "index": i}
            if args.morph > 0 and rng.random() < args.morph:  # no draws at all without --morph: old seeds hold
                other = (k + 1 + int(rng.integers(len(portraits) - 1))) % len(portraits)
                alpha = float(rng.uniform(0.3, 0.7))
                portrait = morph_portraits(portrait, portraits[other], alpha, size=3 * args.size)
                meta["morph"] = {"with": Path(args.portrait[other]).name, "alpha": round(alpha, 4)}
            talker = SyntheticTalker(portrait, size=args.size, style=style)
            clip = talker.render(speech, seed=args.seed * 100003 + i, progress=False)
            clip.meta = meta
            paths = write_clip(clip, out / f"synth_{i:04d}")
            if args.quiet:
                continue
            tqdm.write(f"wrote {paths['video']} ({len(clip.frames)} frames, {text!r})")
    except InputError as err:
        print(f"synthetic_talker: error: {err}", file=sys.stderr)
        return 2
    return 0



if __name__ == "__main__":
    sys.exit(main())
