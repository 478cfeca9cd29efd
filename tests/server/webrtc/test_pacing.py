"""Unit tests of the live server's pacing functions (server/pacing.py): pure, no network, no model."""

from __future__ import annotations

import pytest

from livehead.server.webrtc import pacing


def test_video_schedule_and_pts_have_no_gaps():
    t0, latency, fps = 100.0, 0.9, 25
    assert pacing.video_due(t0, latency, 0, fps) == pytest.approx(100.9)
    assert pacing.video_due(t0, latency, 25, fps) == pytest.approx(101.9)
    pts = [pacing.video_pts(k, fps) for k in range(100)]
    assert pts[1] == 3600 and all(b - a == 3600 for a, b in zip(pts, pts[1:]))  # 90 kHz clock, 40 ms steps
    assert pacing.video_pts(7, 30) == 21000


def test_audio_schedule_and_pts_follow_the_same_clock():
    t0, latency = 5.0, 1.2
    assert pacing.audio_due(t0, latency, 0) == pytest.approx(6.2)
    assert pacing.audio_due(t0, latency, 50) == pytest.approx(7.2)
    assert [pacing.audio_pts(m) for m in range(3)] == [0, 960, 1920]
    # two audio frames per video frame at 25 fps: frame k and audio frame 2k leave together
    for k in range(0, 200, 7):
        assert pacing.audio_due(t0, latency, 2 * k) == pytest.approx(pacing.video_due(t0, latency, k, 25))


@pytest.mark.parametrize("queued, k, take", [
    ([], 5, 0),                 # nothing generated: repeat the last frame
    ([6, 7, 8], 5, 0),          # generated ahead of time: wait
    ([5, 6, 7], 5, 1),          # on time: show 5
    ([2, 3, 4, 5, 6], 5, 4),    # late: show 5, drop 2-4
    ([0, 1, 2], 9, 3),          # all late: show the newest (2), never an older one
])
def test_frames_to_take_shows_the_newest_due_frame(queued, k, take):
    assert pacing.frames_to_take(queued, k) == take


def test_a_frame_too_late_is_not_shown():
    assert pacing.show_popped(10, 10, max_stale=2)
    assert pacing.show_popped(8, 10, max_stale=2)
    assert not pacing.show_popped(7, 10, max_stale=2)


def test_content_delay_and_offset_sign():
    t0, latency = 10.0, 1.0
    assert pacing.content_delay(11.4, t0, latency, 0.4) == pytest.approx(0.0)
    # a repeated frame (index 8 shown at tick 10) trails by two frame periods
    assert pacing.content_delay(pacing.video_due(t0, latency, 10, 25), t0, latency, 8 / 25) == pytest.approx(0.08)


def test_silence_padding_keeps_the_timeline_on_the_wall_clock():
    rate = 48_000
    assert pacing.silence_to_pad(0, 0.05, rate, pad_after=0.06) == 0  # a late mic chunk is not padded over
    n = pacing.silence_to_pad(0, 1.0, rate, pad_after=0.06)  # no mic for 1 s: fill the gap
    assert n == rate and n % 960 == 0
    assert pacing.silence_to_pad(rate, 1.0, rate, 0.06) == 0
    n = pacing.silence_to_pad(10_000, 1.0, rate, pad_after=0.0)  # after a barge-in: level at once, whole 20 ms
    assert n % 960 == 0 and 0 <= rate - (10_000 + n) < 960


def test_keep_input_compacts_pauses_and_bounds_the_lead():
    assert pacing.keep_input(1.00, 1.0, quiet=False, compact_after=0.05, max_ahead=0.5)
    assert pacing.keep_input(1.10, 1.0, quiet=False, compact_after=0.05, max_ahead=0.5)  # speech is kept
    assert not pacing.keep_input(1.10, 1.0, quiet=True, compact_after=0.05, max_ahead=0.5)  # a pause shrinks
    assert pacing.keep_input(1.02, 1.0, quiet=True, compact_after=0.05, max_ahead=0.5)
    assert not pacing.keep_input(1.60, 1.0, quiet=False, compact_after=0.05, max_ahead=0.5)  # faster than real time


def test_choose_latency_adds_the_terms_and_rejects_nonsense():
    assert pacing.choose_latency(0.48, 0.4, 0.15) == pytest.approx(1.03)
    with pytest.raises(ValueError):
        pacing.choose_latency(0.48, float("nan"), 0.1)
    with pytest.raises(ValueError):
        pacing.choose_latency(0.48, 0.3, -0.1)


def test_catch_up_skips_clips_that_would_be_mostly_stale():
    t0, latency, fps, f, wait = 0.0, 1.0, 25, 10, 0.48
    # keeping up: clip 3 (frames 30-39 due from 2.2 s) started at 1.7 s with 0.3 s compute is on time
    assert pacing.catch_up_clip(3, 3, f, fps, t0, latency, now=1.7, compute_s=0.3, audio_wait_s=wait) == 3
    # fallen behind at 3.0 s: clips 3-4 would be mostly stale; clip 5 (due from 3.0 + mid 3.2) too;
    # clip 6 (mid frame due at 3.6 s) is worth waiting for, its audio in or not
    assert pacing.catch_up_clip(3, 9, f, fps, t0, latency, now=3.0, compute_s=0.3, audio_wait_s=wait) == 6
    assert pacing.catch_up_clip(3, 4, f, fps, t0, latency, now=3.0, compute_s=0.3, audio_wait_s=wait) == 6
    # a machine too slow even for clips started on their audio (0.6 s > 1.0 − 0.48): never wait for audio
    assert pacing.catch_up_clip(3, 4, f, fps, t0, latency, now=3.0, compute_s=0.6, audio_wait_s=wait) == 4
    assert pacing.catch_up_clip(3, 2, f, fps, t0, latency, now=3.0, compute_s=0.6, audio_wait_s=wait) == 3
    # steps of 4 clips wait for all four: jump to the newest whole step whose audio is in (clips 1-4), not to
    # clip 4 alone (its step would wait for clips 5-7, by then the jump goes further: the session would starve)
    assert pacing.catch_up_clip(0, 4, f, fps, t0, latency, now=3.0, compute_s=0.6, audio_wait_s=wait) == 4
    assert pacing.catch_up_clip(0, 4, f, fps, t0, latency, now=3.0, compute_s=0.6, audio_wait_s=wait,
                                step_clips=4) == 1
    assert pacing.catch_up_clip(3, 4, f, fps, t0, latency, now=3.0, compute_s=0.6, audio_wait_s=wait,
                                step_clips=4) == 3  # never behind next_clip


def test_source_wall_time_uses_the_capture_convention():
    chunks = [(0, 960, 10.02), (960, 960, 10.04), (1920, 1920, 10.10)]
    assert pacing.source_wall_time(chunks, 0, 48_000) == pytest.approx(10.0)
    assert pacing.source_wall_time(chunks, 960, 48_000) == pytest.approx(10.02)
    assert pacing.source_wall_time(chunks, 1920 + 960, 48_000) == pytest.approx(10.08)
    assert pacing.source_wall_time(chunks, 3840, 48_000) is None
    assert pacing.source_wall_time(chunks, -1, 48_000) is None


def test_tick_frame_follows_the_latency_shift():
    assert pacing.tick_frame(10, 25, 0.0) == 10
    assert pacing.tick_frame(10, 25, 0.04) == 9  # 40 ms more latency: one frame older
    assert pacing.tick_frame(10, 25, 0.02) == 9  # half a frame: the older one (floor)
    assert pacing.tick_frame(10, 25, -0.04) == 11
    assert pacing.tick_frame(0, 25, 0.1) < 0  # before the first frame: idle


def test_latency_step_grows_at_once_and_shrinks_only_after_settling():
    step = 0.02
    # late chunks: grow by enough to bring the second-worst slack back to low + step
    grow = pacing.latency_step([0.05, -0.03, -0.01, 0.02], 1.0, 0.3, 0.2, 2.0, step)
    assert grow > 0 and abs(grow / step - round(grow / step)) < 1e-9
    assert -0.01 + grow >= 0.005 + step - 1e-9
    # one hiccup alone does not raise the latency for good
    assert pacing.latency_step([0.05, -0.03, 0.04, 0.06], 1.0, 0.3, 0.2, 2.0, step) == 0.0
    # comfortable slack for long enough: one step down
    assert pacing.latency_step([0.12, 0.1, 0.2], 3.0, 0.4, 0.2, 2.0, step) == -step
    # ... but not before the window settled, nor below the floor
    assert pacing.latency_step([0.12, 0.1, 0.2], 1.0, 0.4, 0.2, 2.0, step) == 0.0
    assert pacing.latency_step([0.12, 0.1, 0.2], 3.0, 0.21, 0.2, 2.0, step) == 0.0
    # in between: keep it; never beyond the ceiling
    assert pacing.latency_step([0.04, 0.05], 3.0, 0.4, 0.2, 2.0, step) == 0.0
    assert pacing.latency_step([-1.0], 1.0, 1.95, 0.2, 2.0, step) == pytest.approx(0.05)
    assert pacing.latency_step([], 3.0, 0.4, 0.2, 2.0, step) == 0.0


def test_capacity_fits_the_share_and_stays_within_limits():
    assert pacing.capacity(0.3, 0.2, 1.0, 8) == 4  # 0.3 + 3 × 0.2 = 0.9 ≤ 1.0 < 1.1
    assert pacing.capacity(1.5, 0.5, 1.0, 8) == 1  # one session always fits
    assert pacing.capacity(0.1, 0.01, 1.0, 4) == 4  # never beyond max_sessions
    assert pacing.capacity(0.3, 0.0, 1.0, 6) == 6


def test_latency_holds_when_the_machine_makes_less_than_real_time():
    late = [-0.2, -0.1, -0.3, -0.15]
    assert pacing.latency_step(late, 3.0, 0.3, 0.2, 2.0, 0.02, keeping_up=False) == 0.0  # overloaded: skip, hold
    assert pacing.latency_step(late, 3.0, 0.3, 0.2, 2.0, 0.02, keeping_up=True) > 0  # slower but keeping up: grow


def test_measured_capacity_takes_the_batch_s_marginal_cost():
    # alone 40 ms a chunk, a batch of 4 in 100 ms: each further session 20 ms a chunk, at 12.5 chunks/s
    per, cap = pacing.measured_capacity(0.04, 0.10, 4, 2, 25, 1.0, 8)
    assert per == pytest.approx(0.25)
    assert cap == 1 + int((1.0 - 0.5) // 0.25)  # 0.5 s/s alone, 0.25 each more: 3
    assert pacing.measured_capacity(0.04, 0.04, 1, 2, 25, 1.0, 8)[0] == pytest.approx(0.5)


def test_step_costs_interpolate_between_measured_steps():
    costs = {2: (0.04, 0.10), 4: (0.06, 0.16)}
    assert pacing.step_costs(costs, 2) == (0.04, 0.10)
    assert pacing.step_costs(costs, 3) == pytest.approx((0.05, 0.13))
    assert pacing.step_costs(costs, 1) == (0.04, 0.10)  # beyond the measured steps: the nearest
    assert pacing.step_costs(costs, 6) == (0.06, 0.16)
    assert pacing.step_costs({3: (0.05, 0.1)}, 2) == (0.05, 0.1)


def test_capacity_at_steps_counts_the_longer_steps_of_more_sessions():
    # 2-clip steps (4 frames, 6.25 steps/s): a step costs 0.04 s alone, 0.10 for 4 sessions → 0.25 s/s + 0.125 per
    # further session; 4-clip steps (8 frames, 3.125 steps/s): 0.06 alone, 0.12 for 4 → 0.1875 + 0.0625 per session
    costs = {2: (0.04, 0.10), 4: (0.06, 0.12)}
    fixed = lambda n: 2
    grow = lambda n: min(n, 4)
    assert pacing.capacity_at_steps(costs, fixed, 4, 2, 25, 0.8, 8)[1] == 5  # 0.25 + 4 × 0.125 = 0.75
    per, cap = pacing.capacity_at_steps(costs, grow, 4, 2, 25, 0.8, 8)
    assert cap == 8  # 0.1875 + 7 × 0.0625 = 0.625
    assert per == pytest.approx(0.0625)
    assert pacing.capacity_at_steps(costs, grow, 4, 2, 25, 0.8, 3)[1] == 3  # never beyond max_sessions
    # every count up to the capacity must fit: 2 sessions' short steps (0.5 + 0.25) exceed 0.7 though 4 would fit
    assert pacing.capacity_at_steps({2: (0.08, 0.20), 4: (0.06, 0.12)}, grow, 4, 2, 25, 0.7, 8)[1] == 1
    # each session's video encoding counts too: 2 ms a frame at 25 fps adds 0.05 s/s a session
    per, cap = pacing.capacity_at_steps(costs, grow, 4, 2, 25, 0.8, 8, video_s=0.002)
    assert per == pytest.approx(0.0625 + 0.05)
    assert cap == 6  # 4+ sessions: 0.2375 + 5 × 0.1125 = 0.8
    # and each session's event-loop work: more calls with less model work each are not free
    per, cap = pacing.capacity_at_steps(costs, grow, 4, 2, 25, 0.8, 8, video_s=0.002, transport=0.05)
    assert per == pytest.approx(0.0625 + 0.05 + 0.05)
    assert cap == 4  # 4 sessions: 0.2875 + 3 × 0.1625 = 0.775; 5: 0.9375
    loads = pacing.session_loads(costs, grow, 4, 2, 25, 5, video_s=0.002, transport=0.05)
    # 1 session: 1-clip steps (the 2-clip figure, 12.5 steps/s) 0.5 + 0.1 of its own; 2: 0.25 + 0.1 + 0.225 ...
    assert [round(load, 4) for load, _ in loads] == [0.6, 0.575, 0.675, 0.775, 0.9375]
