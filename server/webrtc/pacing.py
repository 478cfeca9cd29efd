"""A/V pacing of a live session: small pure functions, all times in seconds on one monotonic clock.

One clock per session: `t0` = the arrival of the first input audio (or the connection, when the peer
sends none). The session's timeline τ (seconds of audio pushed into the Session, mic audio plus padded
silence) runs with the wall clock, and content at timeline τ leaves the server at `t0 + latency + τ`:

    video frame k  (pts k·90000/fps, time base 1/90000)  is due at  t0 + latency + k/fps
    audio frame m  (960 samples at 48 kHz, pts 960·m)    is due at  t0 + latency + m·0.02

so lips and sound stay together by construction: both tracks read the same timeline with the same
delay. `latency` = the audio the first clip waits for + the compute of one clip + a margin.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

MODEL_SHARE = 0.8  # CPU seconds per second admitted sessions' generation may use (`capacity`); the rest of the
# machine stays with the event loop, the codecs and the network. On 2 cores, 3 sessions at 256 px whose model work
# measured 0.89 s/s alone fell behind in the live benchmark (latency grew to 0.8-0.9 s): threads and the render
# process also cost switching and waiting for the interpreter lock, and each call's RTP and codecs grow with the
# count; 2 sessions at 0.6 s/s kept 24.5 fresh frames/s each. (The LiveKit worker's capacity; `livehead serve`
# uses SESSION_SHARE.)
SESSION_SHARE = 1.25  # CPU seconds per second a WebRTC server's admitted sessions may use in all: generation,
# rendering, video encoding (`capacity_at_steps` with `video_s`; the step costs timed on speech) and each session's
# event-loop work (SESSION_TRANSPORT); the rest stays with the network and whatever else runs. Measured on 2 cores
# (benchmarks/webrtc_latency.py, the clients in their own process on the same cores), loads with the transport
# from several server starts: 4 sessions at 256 px at 1.11-1.17 s/s kept 24.4-24.8 fresh frames/s and 3 at 512 px
# at 1.13-1.17 kept 24.7-24.9; 5 at 256 px at 1.38-1.46 fell behind (18-22), 4 at 512 px at 1.43 too (14-16)
SESSION_TRANSPORT = 0.07  # CPU s/s each live session costs the server's event loop (RTP and SRTP, Opus, pacing,
# the data channel): its thread ran at 27 % of a core with 4 sessions at 256 px. Without this term, 5 sessions
# at 256 px (more calls, less model work each) looked as light as 4 that kept up and were admitted to fall behind
VIDEO_CLOCK = 90_000  # RTP video clock: pts unit = 1/90000 s
AUDIO_RATE = 48_000  # outgoing audio sample rate (Opus)
AUDIO_FRAME = 960  # samples per outgoing audio frame: 20 ms at 48 kHz


def video_due(t0: float, latency: float, k: int, fps: int) -> float:
    """Wall time at which video frame k (timeline k/fps) is sent."""
    return t0 + latency + k / fps


def video_pts(k: int, fps: int) -> int:
    """pts of video tick k in 1/90000 s; consecutive ticks never leave a gap."""
    return k * VIDEO_CLOCK // fps


def audio_due(t0: float, latency: float, m: int) -> float:
    """Wall time at which outgoing audio frame m (timeline samples [960·m, 960·m + 960)) is sent."""
    return t0 + latency + m * AUDIO_FRAME / AUDIO_RATE


def audio_pts(m: int) -> int:
    """pts of outgoing audio frame m in 1/48000 s (= its first timeline sample)."""
    return m * AUDIO_FRAME


def frames_to_take(queued: Sequence[int], k: int) -> int:
    """How many frames to pop from the front of the (ascending) queue of frame indices at tick k.

    The newest popped frame (index ≤ k) is shown; older popped ones were late and are skipped; frames
    with index > k stay queued. 0 means underrun: repeat the frame shown last.
    """
    return bisect_right(queued, k)


def show_popped(newest: int, k: int, max_stale: int) -> bool:
    """Whether the newest popped frame is shown at tick k: only if at most `max_stale` ticks late.

    A frame that comes later than that (the machine fell behind) would move the lips out of step with
    the sound: the picture holds the last frame instead (sync over motion).
    """
    return k - newest <= max_stale


def content_delay(t_sent: float, t0: float, latency: float, timeline_s: float) -> float:
    """How late content at timeline `timeline_s` left, vs its due time `t0 + latency + timeline_s`.

    For video, timeline_s = shown frame index / fps, so a repeated (stale) frame counts as late.
    A/V offset = content_delay(video) − content_delay(audio): > 0 means the picture trails the sound.
    """
    return t_sent - (t0 + latency + timeline_s)


def catch_up_clip(next_clip: int, newest_ready: int, clip_frames: int, fps: int, t0: float, latency: float,
                  now: float, compute_s: float, audio_wait_s: float, step_clips: int = 1) -> int:
    """The clip to generate next: `next_clip`, or a later one when generation has fallen behind.

    Clip c shows frames c·F … c·F+F−1 from t0 + latency + c·F/fps on. A clip started now is ready at
    now + compute_s; if by then more than half of its frames are past due, it is skipped. The result
    may be a clip whose audio is not in yet (audio for clip c is in at t0 + audio_wait_s + c·F/fps):
    waiting for it beats making stale frames, as long as a clip started when its audio arrives is on
    time (compute_s ≤ latency − audio_wait_s). On a machine slower than that, never wait: take the
    newest step whose audio is in (the `step_clips` clips up to `newest_ready`: a session whose steps take
    several clips waits for all of them, so jumping to the newest clip alone would make it wait again
    every time, and starve), so every clip made is as fresh as it can be.
    Skipped frames: the last frame stays up; the audio plays on; picture and sound stay in sync.
    """
    ready_at = now + compute_s
    c = next_clip
    while video_due(t0, latency, c * clip_frames + clip_frames // 2, fps) < ready_at:
        c += 1
    if c > newest_ready - step_clips + 1 and compute_s > latency - audio_wait_s:
        c = newest_ready - step_clips + 1
    return max(c, next_clip)


def silence_to_pad(timeline_samples: int, elapsed: float, rate: int, pad_after: float) -> int:
    """Samples of silence to append so the timeline keeps up with the wall clock.

    timeline_samples: audio pushed so far at `rate`; elapsed: now − t0. While mic audio flows the
    timeline is ≈ elapsed and nothing is padded; once it lags by more than `pad_after` seconds (no
    mic track, a muted or stalled mic) the gap is filled up to `elapsed` in whole 20 ms pieces, so the
    avatar keeps moving (idle, mouth closed) and the timeline stays equal to the wall clock.
    """
    want = int(elapsed * rate)
    if want - timeline_samples <= pad_after * rate:
        return 0
    piece = rate // 50
    return (want - timeline_samples) // piece * piece


def keep_input(timeline_s: float, elapsed: float, quiet: bool, compact_after: float, max_ahead: float) -> bool:
    """Whether an incoming mic chunk joins the timeline.

    The timeline runs ahead of the wall clock when mic audio arrives after silence was padded for it
    (jitter, a stalled loop) or when a peer sends faster than real time. Ahead by more than
    `compact_after` s, quiet chunks are dropped (pauses shrink back to real time without losing speech);
    ahead by more than `max_ahead` s, every chunk is dropped (bounded buffers, bounded latency).
    """
    ahead = timeline_s - elapsed
    if ahead > max_ahead:
        return False
    return not (quiet and ahead > compact_after)


def choose_latency(first_clip_audio_s: float, compute_s: float, margin_s: float) -> float:
    """Anchor latency: the first clip's audio span + one clip's compute + a margin, in seconds.

    Every clip c waits for audio up to (its last frame + look-ahead); for F new frames per clip that
    is first_clip_audio_s + c·F/fps, and its frames are due from latency + c·F/fps on: the same
    budget for every clip. The margin covers the 20 ms capture frame, silence padding and jitter.
    """
    if min(first_clip_audio_s, compute_s, margin_s) < 0 or not math.isfinite(compute_s):
        raise ValueError(f"latency terms must be finite and ≥ 0, got {first_clip_audio_s}, {compute_s}, {margin_s}")
    return first_clip_audio_s + compute_s + margin_s


def source_wall_time(chunks: Sequence[tuple[int, int, float]], sample: int, rate: int) -> float | None:
    """Wall time at which timeline `sample` reached the server, or None if it is no longer known.

    chunks: ascending (first_sample, n_samples, arrival) of the audio appended to the timeline. A
    chunk's last sample arrived at `arrival` (capture convention: a 20 ms frame is sent when complete),
    so sample s of a chunk arrived at arrival − (first + n − s)/rate.
    """
    starts = [c[0] for c in chunks]
    i = bisect_right(starts, sample) - 1
    if i < 0:
        return None
    first, n, arrival = chunks[i]
    if sample >= first + n:
        return None
    return arrival - (first + n - sample) / rate


def timeline_time(chunks: Sequence[tuple[int, int, float]], now: float, rate: int) -> float | None:
    """The timeline time (s) of what reaches the server at `now`: the newest appended chunk's end, which
    arrived at its `arrival`, plus the time since (the timeline runs with the wall clock); None before any chunk.

    chunks: ascending (first_sample, n_samples, arrival) of the audio appended to the timeline."""
    if not chunks:
        return None
    first, n, arrival = chunks[-1]
    return max(0.0, (first + n) / rate + now - arrival)


def tick_frame(k: int, fps: int, shift_s: float) -> int:
    """The generated frame index a video tick k shows when the latency is `shift_s` above the tick clock's:
    the frame of timeline time k/fps − shift_s (floor; negative before the first frame)."""
    return math.floor(k - shift_s * fps + 1e-9)


def latency_step(slacks: Sequence[float], span_s: float, latency: float, min_latency: float, max_latency: float,
                 step: float, low: float = 0.005, high: float = 0.05, settle_s: float = 2.0,
                 keeping_up: bool = True) -> float:
    """How much to change a session's latency (s; 0 = keep it), from the slack of its recent chunks.

    slacks: due time − ready time of the first frame of each chunk over the last `span_s` seconds. The
    second-worst slack counts (one hiccup — a garbage collection, a codec key frame — costs one repeated
    frame, not a permanently higher latency). Below `low` generation is slower than the budget: grow at once,
    by enough to bring it back to `low + step`. When it stayed above `high` for at least `settle_s` seconds,
    shrink by one step. Never outside [min_latency, max_latency]. keeping_up=False (the session made fewer
    frames than real time over the window: the machine is overloaded and chunks are being skipped): more
    latency would only add delay without making frames fresher, so it holds.
    """
    if not slacks or not keeping_up:
        return 0.0
    ordered = sorted(slacks)
    worst = ordered[1] if len(ordered) > 2 else ordered[0]
    if worst < low:
        grow = math.ceil((low + step - worst) / step) * step
        return max(0.0, min(grow, max_latency - latency))
    if span_s >= settle_s and worst > high and latency - step >= min_latency - 1e-9:
        return -step
    return 0.0


def capacity(alone_load: float, load_per_session: float, share: float, max_sessions: int) -> int:
    """Sessions a server admits: the most whose generation fits `share` CPU seconds per second.

    alone_load: CPU s/s of one session alone (one clip's compute × clips per second); load_per_session: what
    each further session adds when its clips are batched with the others'. At least 1 (a server always
    takes one call), at most max_sessions.
    """
    if load_per_session <= 0 or alone_load <= 0:
        return max_sessions
    extra = int(max(share - alone_load, 0.0) // load_per_session + 1e-9)
    return max(1, min(max_sessions, 1 + extra))


def step_costs(costs: dict[int, tuple[float, float]], clips: int) -> tuple[float, float]:
    """(one session's step alone, a batch of sessions' steps) in seconds at steps of `clips` clips, from those
    measured at some step lengths `costs` {clips: (alone_s, batch_s)}: linear between them, the nearest beyond."""
    ks = sorted(costs)
    lo = max((k for k in ks if k <= clips), default=ks[0])
    hi = min((k for k in ks if k >= clips), default=ks[-1])
    w = (clips - lo) / (hi - lo) if hi != lo else 0.0
    return tuple((1 - w) * a + w * b for a, b in zip(costs[lo], costs[hi]))


def session_loads(costs: dict[int, tuple[float, float]], step_clips, batch: int, clip_frames: int, fps: int,
                  max_sessions: int, video_s: float = 0.0, transport: float = 0.0) -> list[tuple[float, float]]:
    """Per count n = 1 … max_sessions of sessions sharing the model, taking steps of `step_clips(n)` clips
    (`GenerationWorker.step_clips`) costed by `step_costs`: (their CPU s/s in all, what each session beyond the
    first adds), as `measured_capacity` counts them, plus for each session video_s (one frame's colour conversion
    and encoding) × fps and `transport` (CPU s/s of its event-loop work, SESSION_TRANSPORT)."""
    loads = []
    for n in range(1, max_sessions + 1):
        k = step_clips(n)
        alone_s, batch_s = step_costs(costs, k)
        rounds_per_s = fps / (k * clip_frames)
        own = video_s * fps + transport  # what every session costs besides the model
        per = measured_capacity(alone_s, batch_s, batch, k * clip_frames, fps, 1.0, 1)[0] + own
        loads.append((alone_s * rounds_per_s + own + (n - 1) * per, per))
    return loads


def capacity_at_steps(costs: dict[int, tuple[float, float]], step_clips, batch: int, clip_frames: int, fps: int,
                      share: float, max_sessions: int, video_s: float = 0.0,
                      transport: float = 0.0) -> tuple[float, int]:
    """Like `measured_capacity` when steps grow with the sessions sharing the model (`session_loads`): the most
    sessions n (at least 1) such that every count up to n fits `share` CPU s/s; also returned: what each further
    session costs (CPU s/s) at the first count that no longer fits (at max_sessions when all fit)."""
    fitted, per = 1, 0.0
    loads = session_loads(costs, step_clips, batch, clip_frames, fps, max_sessions, video_s, transport)
    for n, (load, per_n) in enumerate(loads, 1):
        per = per_n
        if n > 1 and load > share + 1e-9:
            break
        fitted = n
    return per, fitted


def measured_capacity(alone_s: float, batch_s: float, batch: int, clip_frames: int, fps: int, share: float,
                      max_sessions: int) -> tuple[float, int]:
    """(CPU s/s each further session costs, sessions admitted) from one chunk's compute alone (`alone_s`) and a
    batch of `batch` sessions' chunks (`batch_s`), at fps / clip_frames chunks per second (see `capacity`)."""
    rounds_per_s = fps / clip_frames
    marginal = (batch_s - alone_s) / (batch - 1) if batch > 1 else alone_s
    load_per_session = max(marginal, alone_s / max(batch, 1)) * rounds_per_s
    return load_per_session, capacity(alone_s * rounds_per_s, load_per_session, share, max_sessions)
