"""`livehead livekit-worker`: an avatar worker for LiveKit Agents (extra `livekit`); docs/integrations.md."""

from __future__ import annotations

import argparse
import os

from livehead.engine.common.errors import InputError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("livekit-worker", help="join LiveKit rooms as an avatar worker (extra `livekit`)")
    p.add_argument("--url", default=os.environ.get("LIVEKIT_URL"), help="LiveKit server, ws(s)://HOST (LIVEKIT_URL)")
    p.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY"), help="API key (LIVEKIT_API_KEY)")
    p.add_argument("--api-secret", default=os.environ.get("LIVEKIT_API_SECRET"), help="API secret (LIVEKIT_API_SECRET)")
    p.add_argument("--image", help="portrait photo (default: the bundled one)")
    p.add_argument("--preset", default="motion")
    p.add_argument("--max-sessions", type=int, default=None, help="sessions this worker takes (default: the capacity "
                   "measured at start, as `livehead serve` measures it); its load = active / this")
    p.add_argument("--agent-name", default="livehead-avatar", help="the name agents dispatch the avatar by")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    return p


def run(args: argparse.Namespace) -> int:
    if not args.url:
        raise InputError("--url (or LIVEKIT_URL) is required: the LiveKit server to register with")
    try:
        from livehead.server.agents.livekit import run_worker
    except ImportError as err:
        raise InputError(str(err)) from err
    image = None
    if args.image:
        from livehead.engine.media.audio_video import load_image

        image = load_image(args.image)
    run_worker(args.url, args.api_key or "", args.api_secret or "", preset=args.preset, image=image,
               max_sessions=args.max_sessions, agent_name=args.agent_name, threads=args.threads)
    return 0
