"""The streaming session: chunking invariance, frame timing, barge-in, motion frames, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.config import ModelConfig, StreamConfig
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.runtime.session import AudioRing, Session, denoise_jobs, prepare_avatar
from livehead.engine.weights.loading import load_model

SR = 16000


class CountingRunners(TorchRunners):
    """The real torch backend, counting how often each component runs."""

    def __init__(self, model):
        super().__init__(model)
        self.calls = {"reference_kv": 0, "denoise": 0, "decode": 0}

    def reference_kv(self, ref_latents):
        self.calls["reference_kv"] += 1
        return super().reference_kv(ref_latents)

    def denoise(self, *args):
        self.calls["denoise"] += 1
        return super().denoise(*args)

    def decode(self, latents, reference=None):
        self.calls["decode"] += 1
        return super().decode(latents, reference)


# The session logic does not depend on the step count: one step keeps these tests fast on 2 cores.
FAST_TINY = ModelConfig.from_name("tiny").with_steps(1)


@pytest.fixture(scope="module")
def runners():
    return CountingRunners(load_model(FAST_TINY))


@pytest.fixture(scope="module")
def avatar(runners):
    size = runners.cfg.stream.image_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.float32)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return prepare_avatar(runners, image, mask)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonics with pauses: deterministic, speech-shaped test audio."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None)
    tone = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((140, 280, 420, 900)))
    return (0.3 * env * tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def run(session: Session, pcm: np.ndarray, piece: int | None, rate: int = SR):
    frames = []
    step = piece or len(pcm)
    for start in range(0, len(pcm), step):
        session.push_audio(pcm[start:start + step], rate)
        frames.extend(session.frames())
    session.flush()
    frames.extend(session.frames())
    return frames


def test_twenty_ms_pieces_equal_one_push(runners, avatar):
    pcm = speech_like(1.5)
    whole = run(Session(runners, avatar, seed=3), pcm, None)
    pieces = run(Session(runners, avatar, seed=3), pcm, SR // 50)
    assert len(whole) == len(pieces) == int(np.ceil(1.5 * 25))
    for a, b in zip(whole, pieces):
        assert a.index == b.index and a.pts == b.pts
        np.testing.assert_array_equal(a.image, b.image)


def test_frame_count_timestamps_and_shape(runners, avatar):
    pcm = speech_like(1.23)
    frames = run(Session(runners, avatar), pcm, 4000)
    assert len(frames) == int(np.ceil(1.23 * 25))
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.pts for f in frames] == pytest.approx([i / 25 for i in range(len(frames))])
    size = runners.cfg.stream.image_size
    assert all(f.image.shape == (size, size, 3) and f.image.dtype == np.uint8 for f in frames)
    assert np.std(frames[0].image.astype(float)) > 0  # the pipeline produced an image, not a constant


def test_frames_arrive_while_audio_streams(runners, avatar):
    """A clip is produced as soon as its audio (plus look-ahead) is in: no need to flush."""
    s = Session(runners, avatar)
    clip = runners.cfg.stream.clip_frames
    s.push_audio(speech_like(0.2), SR)
    assert list(s.frames()) == []
    s.push_audio(speech_like(1.0, seed=1), SR)
    got = list(s.frames())
    assert len(got) >= clip and len(got) % clip == 0


def test_seed_changes_output_and_is_deterministic(runners, avatar):
    pcm = speech_like(0.5)
    a = run(Session(runners, avatar, seed=1), pcm, None)
    b = run(Session(runners, avatar, seed=1), pcm, None)
    c = run(Session(runners, avatar, seed=2), pcm, None)
    np.testing.assert_array_equal(a[0].image, b[0].image)
    assert not np.array_equal(a[0].image, c[0].image)


def test_reference_computed_once_per_avatar(runners, avatar):
    before = runners.calls["reference_kv"]
    run(Session(runners, avatar), speech_like(0.6), 320)
    run(Session(runners, avatar), speech_like(0.6), None)
    assert runners.calls["reference_kv"] == before


def test_motion_frames_roll(runners, avatar):
    """Clip k+1's known prefix is clip k's last latents."""
    s = Session(runners, avatar)
    n = runners.cfg.stream.motion_frames
    reference_prefix = s.motion.clone()
    s.push_audio(speech_like(1.0), SR)
    s.run_clip()
    first = s.motion.clone()
    assert first.shape[2] == n and not torch.equal(first, reference_prefix)
    s.run_clip()
    assert not torch.equal(s.motion, first)


def test_clear_drops_pending_audio_and_frames(runners, avatar):
    s = Session(runners, avatar)
    clip = runners.cfg.stream.clip_frames
    s.push_audio(speech_like(2.0), SR)
    s.run_clip()  # one clip generated and queued, lots of audio still pending
    assert len(s.pending) == clip and s.clip_ready()
    denoise_calls = runners.calls["denoise"]
    s.clear()
    assert len(s.pending) == 0
    assert not s.clip_ready()  # queued audio is gone: nothing left to generate
    assert list(s.frames()) == []
    assert runners.calls["denoise"] == denoise_calls
    # the timeline continues after the barge-in
    s.push_audio(speech_like(1.0), SR)
    later = list(s.frames())
    assert later and later[0].index == clip


def test_resampled_and_stereo_input(runners, avatar):
    rate = 44100
    t = np.arange(int(0.8 * rate)) / rate
    stereo = np.stack([0.2 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    frames = run(Session(runners, avatar), stereo, 441 * 2, rate=rate)
    assert len(frames) == int(np.ceil(0.8 * 25))


@pytest.mark.parametrize("bad,message", [
    (np.array([0.0, np.nan], np.float32), "NaN"),
    (np.array([0.0, np.inf], np.float32), "NaN or infinite"),
    (np.zeros((2, 2, 2), np.float32), "shape"),
    (np.zeros(10, np.int16), "float"),
])
def test_bad_audio_is_refused(runners, avatar, bad, message):
    s = Session(runners, avatar)
    with pytest.raises(InputError, match=message):
        s.push_audio(bad, SR)
    assert s.ring.end == 0  # nothing was appended


def test_bad_rate_and_push_after_flush(runners, avatar):
    s = Session(runners, avatar)
    with pytest.raises(InputError, match="sample rate"):
        s.push_audio(np.zeros(10, np.float32), 0)
    s.push_audio(np.zeros(1600, np.float32), SR)
    s.flush()
    with pytest.raises(InputError, match="ended"):
        s.push_audio(np.zeros(10, np.float32), SR)


def test_audio_ring_reads_silence_outside_and_forgets():
    ring = AudioRing(keep=4)
    ring.append(np.arange(10, dtype=np.float32))
    assert ring.read(-2, 3).tolist() == [0, 0, 0, 1, 2]
    assert ring.read(8, 12).tolist() == [8, 9, 0, 0]
    ring.forget_before(8)
    assert ring.start == 4 and ring.read(4, 6).tolist() == [4, 5]
    ring.truncate(6)
    assert ring.end == 6


def test_batched_sessions_match_single_runs(runners, avatar):
    """Two sessions (different avatars and audio) denoised in one batch = each run alone."""
    size = runners.cfg.stream.image_size
    other = prepare_avatar(runners, np.full((size, size, 3), 120, np.uint8), np.ones((size, size), np.float32))
    a, b = Session(runners, avatar, seed=1), Session(runners, other, seed=2)
    a.push_audio(speech_like(1.0, seed=1), SR)
    b.push_audio(speech_like(1.0, seed=2), SR)
    jobs = [a.prepare_clip(), b.prepare_clip()]
    assert a.prepare_clip() is None  # one clip in flight per session
    batched = denoise_jobs(runners, jobs)
    singles = torch.cat([denoise_jobs(runners, [j]) for j in jobs])
    torch.testing.assert_close(batched, singles, atol=1e-4, rtol=1e-4)
    frames = a.finish_clip(jobs[0], batched[0:1])
    assert len(frames) == runners.cfg.stream.clip_frames and a.next_clip == 1


def test_clear_drops_a_clip_in_flight(runners, avatar):
    s = Session(runners, avatar)
    s.push_audio(speech_like(1.0), SR)
    job = s.prepare_clip()
    latents = denoise_jobs(runners, [job])
    s.clear()  # barge-in while the clip was being denoised
    assert s.finish_clip(job, latents) == []
    assert len(s.pending) == 0 and s.next_clip == 0


def test_frame_queue_stays_bounded(runners, avatar):
    from dataclasses import replace

    small = CountingRunners(runners.model)
    small.cfg = replace(FAST_TINY, stream=replace(FAST_TINY.stream, max_pending_frames=25))
    s = Session(small, avatar)
    s.push_audio(speech_like(2.0), SR)
    limit = small.cfg.stream.max_pending_frames
    clip = small.cfg.stream.clip_frames
    for _ in range(limit // clip + 2):
        s.run_clip()
    assert len(s.pending) == limit and s.dropped_frames > 0


def test_pipelined_commit_then_decode_matches_finish_clip(runners, avatar):
    """Committing clip k lets clip k+1 be prepared and denoised before clip k is decoded (the server's
    two-stage worker); the frames equal those of the plain prepare → finish order."""
    audio = speech_like(2.0, seed=3)
    plain = Session(runners, avatar, seed=4)
    plain.push_audio(audio, SR)
    expected = [f.image for _ in range(2) for f in plain.run_clip()]

    s = Session(runners, avatar, seed=4)
    s.push_audio(audio, SR)
    job0 = s.prepare_clip()
    lat0 = denoise_jobs(runners, [job0])
    assert s.prepare_clip() is None  # not committed yet: still in flight
    assert s.commit_clip(job0, lat0) and s.next_clip == 1 and len(s.pending) == 0
    job1 = s.prepare_clip()  # prepared while clip 0 still waits for its decode
    lat1 = denoise_jobs(runners, [job1])
    assert s.commit_clip(job1, lat1)
    got = s.decode_clip(job0, lat0) + s.decode_clip(job1, lat1)
    assert [f.index for f in got] == list(range(2 * runners.cfg.stream.clip_frames))
    np.testing.assert_array_equal(np.stack([f.image for f in got]), np.stack(expected))


def test_clear_between_commit_and_decode_drops_the_frames(runners, avatar):
    s = Session(runners, avatar)
    s.push_audio(speech_like(1.0), SR)
    job = s.prepare_clip()
    latents = denoise_jobs(runners, [job])
    assert s.commit_clip(job, latents)
    s.clear()
    assert s.decode_clip(job, latents) == [] and len(s.pending) == 0


def test_skip_to_jumps_ahead_only_when_idle(runners, avatar):
    s = Session(runners, avatar)
    s.push_audio(speech_like(3.0), SR)
    assert s.skip_to(0) == 0 and s.next_clip == 0  # never backwards or in place
    job = s.prepare_clip()
    assert s.skip_to(3) == 0 and s.next_clip == 0  # a clip is in flight
    s.clear()  # also drops the audio: push more
    s.push_audio(speech_like(3.0), SR)
    assert s.skip_to(3) == 3 and s.next_clip == 3
    frames = s.run_clip()
    assert frames[0].index == 3 * runners.cfg.stream.clip_frames
    s.flush()
    assert s.skip_to(9) == 0  # the stream has ended: its tail is generated in full
    del job


@pytest.mark.parametrize("cap", [None, 200])
def test_one_step_sees_its_motion_frames_only_with_a_prefix_cap(runners, avatar, cap):
    """At one step (t = 999, zero terminal SNR) a prefix re-noised to t is pure noise: the next clip cannot
    depend on the motion frames. With `prefix_timestep_cap` it is re-noised to min(t, cap) and does."""
    from dataclasses import replace

    capped = CountingRunners(runners.model)
    capped.cfg = replace(FAST_TINY, stream=replace(FAST_TINY.stream, prefix_timestep_cap=cap))
    assert capped.cfg.sampler.steps == 1
    outputs = []
    for shift in (0.0, 1.0):
        s = Session(capped, avatar, seed=5)
        s.push_audio(speech_like(2.0, seed=5), SR)
        job = s.prepare_clip()
        latents = denoise_jobs(capped, [job])
        s.commit_clip(job, latents + shift)  # other motion frames for clip 1
        outputs.append(denoise_jobs(capped, [s.prepare_clip()]))
    if cap is None:
        torch.testing.assert_close(outputs[0], outputs[1])
    else:
        assert (outputs[0] - outputs[1]).abs().max() > 1e-3


def test_prefix_timestep_rule():
    assert StreamConfig().prefix_timestep(999) == 999
    capped = StreamConfig(prefix_timestep_cap=200)
    assert capped.prefix_timestep(999) == 200 and capped.prefix_timestep(150) == 150
    assert capped.prefix_timestep(torch.tensor([999, 150, 200])).tolist() == [200, 150, 200]
    assert ModelConfig.from_name("tiny").stream.prefix_timestep_cap == 200
    assert ModelConfig.from_name("echomimic-v1-acc").stream.prefix_timestep_cap is None  # EchoMimic's rule
