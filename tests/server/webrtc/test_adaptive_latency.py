"""Adaptive latency of a live session (server/webrtc/tracks.py `LiveMedia`): it grows when chunks come late,
shrinks back when they come early, and moves only on quiet audio, picture and sound together."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the server tests need the 'server' extra: pip install 'livehead[server]'")

from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.portrait import bundled_demo
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.runtime.session import Session, VideoFrame, prepare_avatar
from livehead.engine.weights.loading import load_model
from livehead.server.webrtc.pacing import AUDIO_FRAME, AUDIO_RATE
from livehead.server.webrtc.tracks import LiveMedia

FPS = 25


@pytest.fixture(scope="module")
def session_factory():
    cfg = ModelConfig.from_name("tiny").with_steps(1)
    runners = TorchRunners(load_model(cfg))
    picture, _ = bundled_demo(cfg)
    avatar = prepare_avatar(runners, picture.image, picture.mask)
    return lambda: Session(runners, avatar)


def _media(session, latency=0.3, floor=0.2) -> LiveMedia:
    media = LiveMedia(session, np.zeros((8, 8, 3), np.uint8), latency, min_latency=floor)
    media.anchor(100.0)
    return media


def _tone(seconds: float, amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    t48 = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    t16 = np.arange(int(seconds * 16000)) / 16000
    return ((amplitude * np.sin(2 * np.pi * 220 * t16)).astype(np.float32),
            (amplitude * np.sin(2 * np.pi * 220 * t48)).astype(np.float32))


def _frames(index: int, n: int = 2) -> list[VideoFrame]:
    return [VideoFrame(index=index + j, pts=(index + j) / FPS, image=np.zeros((8, 8, 3), np.uint8))
            for j in range(n)]


def test_late_chunks_grow_the_latency_on_quiet_audio_only(session_factory):
    media = _media(session_factory())
    loud16, loud48 = _tone(1.0, 0.3)
    quiet16, quiet48 = _tone(1.0, 0.0)
    media._append(loud16, loud48, 101.0, None)
    media._append(quiet16, quiet48, 102.0, None)
    # frame 10 is due at t0 + 0.3 + 0.4 = 100.7; it is ready at 100.75: 50 ms late
    media.on_frames(_frames(10), now=100.75)
    grow = media.target_shift48 - media.shift48
    assert grow > 0 and grow % AUDIO_FRAME == 0
    assert media.target_shift48 / AUDIO_RATE >= 0.05 + 0.015  # the late chunk would now be on time, with room
    # while the outgoing audio is loud the latency holds (no jump in speech)
    for m in range(40):
        pcm = media.audio_for_frame(m, 100.3 + m * 0.02)
        assert np.sqrt(np.mean(pcm ** 2)) > 0.1
    assert media.shift48 == 0
    # on quiet audio it steps 20 ms at a time, a silent frame each, until the target is reached
    steps = 0
    for m in range(40, 80):
        before = media.shift48
        pcm = media.audio_for_frame(m, 100.3 + m * 0.02)
        if media.shift48 != before:
            steps += 1
            assert media.shift48 - before == AUDIO_FRAME and not pcm.any()
    assert media.shift48 == media.target_shift48 and steps == grow // AUDIO_FRAME
    assert media.latency == pytest.approx(0.3 + media.shift48 / AUDIO_RATE)
    # the picture moves with the sound: a video tick shows the frame of the tick's time less the shift
    shift_frames = media.shift48 / AUDIO_RATE * FPS
    media.session.pending.extend(_frames(0, 60))
    _, index, fresh = media.frame_for_tick(50)
    assert fresh and index == int(np.floor(50 - shift_frames + 1e-9))


def test_early_chunks_shrink_the_latency_back_to_its_floor(session_factory):
    media = _media(session_factory(), latency=0.3, floor=0.24)
    quiet16, quiet48 = _tone(4.0, 0.0)
    media._append(quiet16, quiet48, 104.0, None)
    # every chunk ready 150 ms before it is due, for 4 s: one step down per settled window
    for i in range(100):
        now = 100.0 + 0.3 + i * 2 / FPS - 0.15
        media.on_frames(_frames(2 * i), now=now)
    assert media.target_shift48 < 0
    assert 0.3 + media.target_shift48 / AUDIO_RATE >= 0.24 - 1e-9  # never below the floor
    for m in range(20):
        media.audio_for_frame(m, 100.3 + m * 0.02)
    assert media.shift48 == media.target_shift48
    assert media.latency < 0.3


def test_a_fixed_latency_never_moves(session_factory):
    media = LiveMedia(session_factory(), np.zeros((8, 8, 3), np.uint8), 0.3, adaptive=False)
    media.anchor(100.0)
    media.on_frames(_frames(10), now=101.5)  # very late
    assert media.target_shift48 == 0 and media.latency == 0.3


def test_longer_steps_raise_the_latency_by_their_audio_wait(session_factory):
    """When another session joins and steps grow (`LiveServer._grow_steps`), the latency rises at once by the extra
    audio each step waits for, in whole 20 ms frames, never past the ceiling; a fixed latency stays."""
    from livehead.server.webrtc.tracks import MAX_LATENCY_S

    media = _media(session_factory())
    media.raise_latency(0.08)
    assert media.target_shift48 == 4 * AUDIO_FRAME
    media.raise_latency(0.01)  # rounded up to a whole frame
    assert media.target_shift48 == 5 * AUDIO_FRAME
    media.raise_latency(10.0)
    assert media.base_latency + media.target_shift48 / AUDIO_RATE == pytest.approx(MAX_LATENCY_S, abs=1e-9)
    fixed = LiveMedia(session_factory(), np.zeros((8, 8, 3), np.uint8), 0.3, adaptive=False)
    fixed.raise_latency(0.08)
    assert fixed.target_shift48 == 0


def test_an_overloaded_session_grows_only_to_what_a_step_needs(session_factory):
    """A session making far fewer frames than real time (the machine is overloaded) does not chase its late chunks
    with ever more latency, but below one step's audio wait + 1.5 × the compute measured now it grows: there every
    frame it made came late and none was shown."""
    session = session_factory()
    media = LiveMedia(session, np.zeros((8, 8, 3), np.uint8), 0.3, min_latency=0.2, compute_estimate=lambda: 0.6)
    media.anchor(100.0)
    clip = session.cfg.stream.clip_frames
    room = session.audio_needed(0) / 16000 + 1.5 * 0.6
    media.on_frames(_frames(0, clip), now=100.0 + media.base_latency - 0.1)  # the first clip on time
    for k in range(1, 8):  # then a clip every 1.2 s (a third of real time), each ready 0.5 s after it is due
        first = k * 3 * clip
        media.on_frames(_frames(first, clip), now=100.0 + media.base_latency + first / FPS + 0.5)
    latency = media.base_latency + media.target_shift48 / AUDIO_RATE
    assert 0.3 + 0.2 < latency <= room + 1e-9, (latency, room)
    # with what a step needs covered, the overloaded session holds, however late its chunks stay
    for k in range(8, 16):
        first = k * 3 * clip
        media.on_frames(_frames(first, clip), now=100.0 + media.base_latency + first / FPS + 1.5)
        assert media.base_latency + media.target_shift48 / AUDIO_RATE <= room + 1e-9


def test_an_early_start_ticks_from_the_floor_with_the_rest_of_the_latency_as_a_shift(session_factory):
    """A caller joining a busy server starts well above the latency floor: with early_start its tracks tick from the
    floor (the idle picture and silence go out at once) and the content follows at the latency asked for."""
    media = LiveMedia(session_factory(), np.zeros((8, 8, 3), np.uint8), 0.6, min_latency=0.2, early_start=True)
    media.anchor(100.0)
    assert media.base_latency == pytest.approx(0.2) and media.latency == pytest.approx(0.6)
    assert media.shift48 == media.target_shift48 == 20 * AUDIO_FRAME  # 0.4 s
    loud16, loud48 = _tone(1.0, 0.3)
    media._append(loud16, loud48, 100.0, None)
    # audio frame m leaves at 100.2 + m·20 ms: silence for the first 0.4 s, then the timeline from its start
    assert all(np.abs(media.audio_for_frame(m, 100.2 + 0.02 * m)).max() == 0 for m in range(20))
    assert np.sqrt(np.mean(media.audio_for_frame(20, 100.6) ** 2)) > 0.1
    # video tick k shows the frame of timeline k/fps − 0.4 s: idle until tick 10 (frame 0 is not made yet: idle)
    _, index, fresh = media.frame_for_tick(5)
    assert index == -1 and not fresh
    fixed = LiveMedia(session_factory(), np.zeros((8, 8, 3), np.uint8), 0.6, min_latency=0.2, adaptive=False,
                      early_start=True)
    assert fixed.base_latency == 0.6 and fixed.shift48 == 0  # a fixed latency keeps its own clock


def test_video_frames_leave_as_i420_like_the_encoders_own_conversion():
    """`to_i420` hands the VP8 encoder yuv420p (OpenCV's conversion instead of the encoder's slower libswscale one):
    the same luma within 1 level, colours back within a few levels; an odd-sized image stays rgb24."""
    import av

    from livehead.server.webrtc.tracks import to_i420

    image = np.ascontiguousarray(bundled_demo(ModelConfig.from_name("motion"))[0].image[:256, :200])
    frame = to_i420(image)
    assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (200, 256)
    theirs = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
    mine, ref = frame.to_ndarray().astype(int), theirs.to_ndarray().astype(int)
    assert np.abs(mine[:256] - ref[:256]).max() <= 1  # luma
    back = frame.to_ndarray(format="rgb24").astype(int)
    assert np.abs(back - image).mean() < 3.0
    odd = to_i420(np.ascontiguousarray(image[:255, :199]))
    assert odd.format.name == "rgb24" and (odd.width, odd.height) == (199, 255)
