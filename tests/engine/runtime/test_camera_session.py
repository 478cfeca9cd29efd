"""Live camera driving in the streaming Session (motion tier): a `CameraTimeline` of motions moves the frames.

The rule under test (engine/motion/driver.py): without a voice the camera's motion is shown whole; with one
the camera gives head pose and eyelids and the voice keeps the expression (mouth)."""

from __future__ import annotations

import numpy as np
import pytest

from livehead.engine.common.errors import InputError
from livehead.engine.media import landmarks as L
from livehead.engine.model.config import ModelConfig
from livehead.engine.motion.driver import CameraTimeline, combine_camera
from livehead.engine.motion.space import N_EYES, N_POSE, default_motion_space
from livehead.engine.motion.synthetic import open_jaw
from livehead.engine.runtime.portrait import bundled_demo
from livehead.engine.runtime.runners import torch_runners
from livehead.engine.runtime.session import Session, prepare_avatar
from livehead.engine.weights.loading import load_model

CFG = ModelConfig.from_name("motion")
RATE = CFG.audio.sample_rate
FPS = CFG.stream.fps


@pytest.fixture(scope="module")
def runners():
    return torch_runners(load_model(CFG))


@pytest.fixture(scope="module")
def demo(runners):
    picture, pcm = bundled_demo(CFG, seconds=2)
    return prepare_avatar(runners, picture.image, picture.mask), pcm


def _run(runners, avatar, pcm, camera=None) -> list:
    session = Session(runners, avatar, seed=0)
    session.drive_with(camera)
    for start in range(0, len(pcm), RATE // 50):
        session.push_audio(pcm[start:start + RATE // 50], RATE)
    session.flush()
    return list(session.frames())


def _motion(runners, frames) -> np.ndarray:
    """The motion each frame was rendered from [N, M]."""
    latents = np.stack([f.latent[:, 0, 0].numpy() for f in frames])
    import torch

    return runners.denormalise(torch.as_tensor(latents)).numpy()


def _mouth_open_motion(space, neutral: np.ndarray, amount: float) -> np.ndarray:
    """A motion [M] with the lower lip, chin and jaw moved down by `amount` IOD (`open_jaw`)."""
    lm = np.asarray(neutral, np.float64)[:, :2]
    return space.encode(open_jaw(lm, amount)[None], neutral=lm)[0]


def test_timeline_interpolates_and_holds_its_ends():
    cam = CameraTimeline()
    assert cam.at(np.array([0.0])) is None
    cam.add(0.0, np.zeros(3))
    cam.add(1.0, np.ones(3) * 2)
    got = cam.at(np.array([-1.0, 0.0, 0.25, 1.0, 5.0]))
    np.testing.assert_allclose(got[:, 0], [0.0, 0.0, 0.5, 2.0, 2.0])
    cam.add(0.5, np.ones(3) * 10)  # a stamp before the newest (timeline cut back) rewrites from there
    assert len(cam) == 2
    np.testing.assert_allclose(cam.at(np.array([0.5]))[:, 0], [10.0])


def test_combine_rule_keeps_the_voice_mouth_and_the_camera_head():
    k, m = 5, 5 + N_EYES + N_POSE
    gen, cam = np.zeros((2, m)), np.ones((2, m))
    np.testing.assert_array_equal(combine_camera(gen, cam, k, voice=False), cam)
    both = combine_camera(gen, cam, k, voice=True)
    assert (both[:, :k] == 0).all() and (both[:, k:] == 1).all()


def test_camera_alone_moves_the_head_and_the_mouth(runners, demo):
    avatar, pcm = demo
    silence = np.zeros_like(pcm)
    space = runners.space
    turn = space.neutral_motion(1)[0]
    turn[space.k + N_EYES + 2] = 0.3  # head moved right by 0.3 IOD
    opened = _mouth_open_motion(space, avatar.decoder_reference.neutral, 0.3)
    cam = CameraTimeline(voice=False)
    cam.add(0.0, space.neutral_motion(1)[0])
    cam.add(0.79, space.neutral_motion(1)[0])
    cam.add(0.8, turn)  # from 0.8 s on the head is moved
    cam.add(1.2, turn + opened - space.neutral_motion(1)[0])  # ... and from 1.2 s the mouth is open too
    frames = _run(runners, avatar, silence, cam)
    motion = _motion(runners, frames)
    pose_x = motion[:, space.k + N_EYES + 2]
    assert np.abs(pose_x[:15]).max() < 0.02 and np.abs(pose_x[25:] - 0.3).max() < 0.02, pose_x
    tracked = L.video_landmarks([f.image for f in frames])
    assert all(t is not None for t in tracked)
    lm = np.stack(tracked)
    nose_x = lm[:, L.NOSE_TIP, 0]
    iod = float(np.median(L.eye_corner_distance(lm)))
    assert (nose_x[25:].mean() - nose_x[:15].mean()) / iod > 0.2  # the rendered head moved right
    opening = L.series(lm, L.mouth_opening)
    assert opening[35:].mean() > opening[:15].mean() + 0.1, opening


def test_camera_with_voice_keeps_the_generated_mouth(runners, demo):
    avatar, pcm = demo
    space = runners.space
    plain = _motion(runners, _run(runners, avatar, pcm))
    cam = CameraTimeline(voice=True)
    closed = space.neutral_motion(1)[0]
    closed[space.k:space.k + N_EYES] = 0.0  # eyes shut
    cam.add(0.0, closed)
    driven = _motion(runners, _run(runners, avatar, pcm, cam))
    np.testing.assert_allclose(driven[:, :space.k], plain[:, :space.k], atol=1e-5)  # the voice's mouth
    np.testing.assert_allclose(driven[:, space.k:space.k + N_EYES], 0.0, atol=1e-5)  # the camera's eyes


def test_pixel_presets_refuse_camera_driving():
    from livehead.engine.runtime.runners import torch_runners as tr

    tiny = tr(load_model(ModelConfig.from_name("tiny")))
    picture, _ = bundled_demo(tiny.cfg, seconds=1)
    session = Session(tiny, prepare_avatar(tiny, picture.image, picture.mask))
    with pytest.raises(InputError, match="motion"):
        session.drive_with(CameraTimeline())


def test_default_space_layout_matches():
    space = default_motion_space()
    assert space.dim == space.k + N_EYES + N_POSE
