"""A LiveKit avatar worker in a few lines (the same as `livehead livekit-worker`).

    pip install 'livehead[livekit]'
    LIVEKIT_URL=ws://HOST:7880 LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... python examples/livekit_worker.py

Start one per GPU (or per CPU budget); each registers with the server and takes up to --max-sessions rooms.
Your agent dispatches it by name ("livehead-avatar") and sends its TTS audio with livekit-agents'
`DataStreamAudioOutput` to the avatar's participant; see docs/integrations.md and examples/livekit_e2e.py.
"""

from __future__ import annotations

import argparse
import os

from livehead.server.agents.livekit import run_worker

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-sessions", type=int, default=1)
    args = p.parse_args()
    run_worker(os.environ.get("LIVEKIT_URL", ""), os.environ.get("LIVEKIT_API_KEY", ""),
               os.environ.get("LIVEKIT_API_SECRET", ""), max_sessions=args.max_sessions)
