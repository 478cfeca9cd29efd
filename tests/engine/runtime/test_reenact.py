"""Offline reenactment (`engine.runtime.reenact`): a clip of the bundled portrait driven by itself reproduces
itself, and the driving-video rules of the module hold: another frame rate keeps the duration, a face lost
mid-clip holds the last motion, no audio gives a silent mp4, no face at all or a faceless neutral frame is
refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest

from livehead.engine.common.errors import InputError
from livehead.engine.eval.evaluate import read_video
from livehead.engine.eval.image_metrics import face_box, mouth_box, psnr
from livehead.engine.media.audio_video import Mp4Writer, load_image
from livehead.engine.motion.photo import prepare_photo
from livehead.engine.motion.renderer import PhotoRenderer
from livehead.engine.motion.space import default_motion_space
from livehead.engine.runtime.reenact import ReenactOptions, output_frame_sources, reenact_file
from tests import ASSETS
from tests.engine.motion.test_round_trip import synthetic_motion
from tests.helpers import probe_mp4

FRAMES = 40
# dB, the clip driven by itself against itself, through two H.264 encodes (measured with mediapipe 0.10.21: face
# 25.2, mouth 26.2, the photo held still 20.2 in the face box; the rest is tracking error under head motion)
MIN_FACE_PSNR = 24.0
MIN_MOUTH_PSNR = 24.0
MIN_GAIN_OVER_HELD = 3.0


@pytest.fixture(scope="module")
def portrait_photo():
    return prepare_photo(load_image(ASSETS / "portrait.png"))


@pytest.fixture(scope="module")
def space():
    return default_motion_space()


@pytest.fixture(scope="module")
def talking(portrait_photo, space):
    """The portrait moved by a known motion: frames uint8 [FRAMES, H, W, 3]."""
    renderer = PhotoRenderer(portrait_photo)
    moved = space.decode(synthetic_motion(space, FRAMES), renderer.neutral)
    return np.stack([renderer.render(m) for m in moved])


def _write(path, frames, fps=25, audio=True):
    pcm = (0.2 * np.sin(np.arange(int(len(frames) / fps * 16000)) * 0.1)).astype(np.float32) if audio else None
    with Mp4Writer(path, fps=fps, width=frames[0].shape[1], height=frames[0].shape[0], audio=pcm,
                   sample_rate=16000) as w:
        for f in frames:
            w.write(f)
    return path


@pytest.fixture(scope="module")
def self_driven(tmp_path_factory, talking):
    root = tmp_path_factory.mktemp("self")
    video = _write(root / "drive.mp4", talking)
    out = root / "out.mp4"
    report = reenact_file([ASSETS / "portrait.png"], video, out, ReenactOptions(smoothing=0.0), progress=False)
    return report, out


def test_a_clip_driven_by_itself_reproduces_itself(self_driven, talking, portrait_photo, space):
    report, out = self_driven
    frames, _ = read_video(out)
    assert report.frames == len(frames) == FRAMES and report.audio and report.frames_without_face == 0
    moved = space.decode(synthetic_motion(space, FRAMES), portrait_photo.landmarks)
    face, mouth, held = [], [], []
    for k in range(1, FRAMES):
        for scores, box_of, image in ((face, face_box, frames[k]), (mouth, mouth_box, frames[k]),
                                      (held, face_box, talking[0])):
            x0, y0, x1, y1 = box_of(moved[k], talking[k].shape)
            scores.append(psnr(image[y0:y1, x0:x1], talking[k][y0:y1, x0:x1]))
    assert np.mean(face) >= MIN_FACE_PSNR and np.mean(mouth) >= MIN_MOUTH_PSNR, (np.mean(face), np.mean(mouth))
    assert np.mean(face) >= np.mean(held) + MIN_GAIN_OVER_HELD, (np.mean(face), np.mean(held))


def test_driving_audio_goes_into_the_output(self_driven):
    info = probe_mp4(self_driven[1])
    assert info["audio_codec"] == "aac" and abs(info["audio_seconds"] - FRAMES / 25) < 0.1


def test_another_frame_rate_keeps_the_duration(tmp_path, talking):
    video = _write(tmp_path / "drive50.mp4", np.repeat(talking[:20], 2, axis=0), fps=50)  # 0.8 s at 50 fps
    report = reenact_file([ASSETS / "portrait.png"], video, tmp_path / "out.mp4", progress=False)
    info = probe_mp4(tmp_path / "out.mp4")
    assert report.source_fps == 50 and report.source_frames == 40
    assert info["frames"] == report.frames == 20 and info["fps"] == 25


def test_output_frame_sources_pick_the_frame_at_each_centre_time():
    assert output_frame_sources(10, 50).tolist() == [1, 3, 5, 7, 9]
    assert output_frame_sources(3, 12.5).tolist() == [0, 0, 1, 1, 2, 2]


def test_a_face_lost_mid_clip_holds_the_last_motion(tmp_path, talking):
    frames = talking.copy()
    frames[15:20] = 128  # five frames without a face
    out = tmp_path / "out.mp4"
    report = reenact_file([ASSETS / "portrait.png"], _write(tmp_path / "lost.mp4", frames), out,
                          ReenactOptions(smoothing=0.0, neutral_frame=0), progress=False)
    assert report.frames_without_face == 5 and any("no face" in n for n in report.notes)
    rendered, _ = read_video(out)
    assert len(rendered) == FRAMES
    for k in range(15, 20):  # held: the same as the last frame with a face (up to the encoder)
        assert psnr(rendered[k], rendered[14]) > 40


def test_no_audio_gives_a_silent_video(tmp_path, talking):
    out = tmp_path / "out.mp4"
    report = reenact_file([ASSETS / "portrait.png"], _write(tmp_path / "mute.mp4", talking[:10], audio=False), out,
                          progress=False)
    assert not report.audio and any("no audio" in n for n in report.notes)
    assert probe_mp4(out)["audio_codec"] is None and probe_mp4(out)["frames"] == 10


def test_no_face_anywhere_is_refused(tmp_path, talking):
    video = _write(tmp_path / "empty.mp4", np.full_like(talking[:8], 90))
    with pytest.raises(InputError, match="no face found in any frame"):
        reenact_file([ASSETS / "portrait.png"], video, tmp_path / "out.mp4", progress=False)
    assert not (tmp_path / "out.mp4").exists()


def test_bad_neutral_frames_are_refused(tmp_path, talking):
    frames = talking[:10].copy()
    frames[3] = 90
    video = _write(tmp_path / "d.mp4", frames)
    with pytest.raises(InputError, match="frame 3"):
        reenact_file([ASSETS / "portrait.png"], video, tmp_path / "o.mp4", ReenactOptions(neutral_frame=3),
                     progress=False)
    with pytest.raises(InputError, match="past the driving video's last frame"):
        reenact_file([ASSETS / "portrait.png"], video, tmp_path / "o.mp4", ReenactOptions(neutral_frame=10),
                     progress=False)


def test_missing_or_unreadable_driving_video_is_refused(tmp_path):
    with pytest.raises(InputError, match="not found"):
        reenact_file([ASSETS / "portrait.png"], tmp_path / "none.mp4", tmp_path / "o.mp4", progress=False)
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(InputError, match="cannot read"):
        reenact_file([ASSETS / "portrait.png"], tmp_path / "text.mp4", tmp_path / "o.mp4", progress=False)
