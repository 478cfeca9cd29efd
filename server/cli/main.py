"""The `livehead` command.

    livehead animate [--image PHOTO] [--audio AUDIO] [--out OUT.mp4] [--preset tiny] [--weights DIR]
                     [--steps N] [--seed S] [--device auto|cpu|cuda] [--schedule stream|offline]
                     [--no-crop] [--quiet]
    livehead reenact --image PHOTO [--image PHOTO2 ...] --video DRIVING [--out OUT.mp4] [--neutral-frame N]
                     [--relative | --absolute] [--smoothing 0..1] [--size PX] [--quiet]
    livehead parity --fixtures DIR [--json OUT]
    livehead weights manifest --preset NAME
    livehead weights download echomimic-v1-acc|echomimic-v1 [--dir DIR] [--quiet]
    livehead weights convert DIR [--preset echomimic-v1-acc] [--out DIR2] [--dtype fp16|bf16|fp32] [--quiet]
    livehead eval --data DIR [--preset tiny] [--weights DIR] [--out RESULT.json] [--reference PHOTO]
                  [--ground-truth [--shift N] | --vae-roundtrip] [--identity-stride K] [--limit N] [--seed S]
                  [--steps N] [--device auto] [--series] [--quiet]
    livehead live [--mic | --audio FILE] [--camera INDEX|VIDEO] [--camera-smoothing 0..1] [--image PHOTO]
                  [--out OUT.mp4] [--seconds S] [--no-window] [--json OUT]   (at least one input)
    livehead train vae|stage1|stage2|distill --data DIR [--data DIR2 --mix 1,1] --out RUN [--init WEIGHTS]
                   [--whisper FILE] [--steps N] [--batch B] [--lr LR] [--ema D] [--resume] [--device auto] [--quiet]
    livehead serve [--host 127.0.0.1] [--port 8080] [--preset tiny] [--weights DIR] [--device auto]
                   [--backend torch|onnxruntime|tensorrt] [--max-sessions N] [--token T] [--ice-server URL]...
                   [--latency S]

Bad input ends with a one-line `livehead: error: ...` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from livehead.engine.common.errors import InputError
from livehead.server.cli import (
    animate,
    bench,
    evaluate,
    export,
    live,
    livekit_worker,
    parity,
    reenact,
    serve,
    train,
    weights,
)

EXIT_BAD_INPUT = 2
COMMANDS = {"animate": animate, "reenact": reenact, "parity": parity, "export": export, "bench": bench,
            "eval": evaluate, "weights": weights, "live": live, "serve": serve, "train": train,
            "livekit-worker": livekit_worker}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livehead", description="Real-time talking-head engine (EMO family).")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except InputError as err:
        print(f"livehead: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("livehead: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
