"""Round trips through the real codecs and the real face detector (no mocks)."""

from __future__ import annotations

import struct
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import (
    AudioResampleStream,
    Mp4Writer,
    load_audio,
    load_image,
    load_video,
    resample,
    to_rgb,
)
from livehead.engine.media.face import FaceCrop, detect_face, detect_faces, prepare_portrait
from livehead.engine.media.landmarks import eye_corner_distance, face_landmarks, mouth_opening
from tests import ASSETS
from tests.helpers import probe_mp4

PORTRAIT = ASSETS / "portrait.png"
SPEECH = ASSETS / "speech.wav"


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def _encode_audio(path: Path, fmt: str, codec: str, rate: int, layout: str, planar: np.ndarray) -> None:
    """Encode float32 [channels, T] with PyAV into `path`."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        pos = 0
        while pos < planar.shape[1]:
            chunk = np.ascontiguousarray(planar[:, pos : pos + 1024])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.time_base = Fraction(1, rate)
            frame.pts = pos
            for packet in stream.encode(frame):
                container.mux(packet)
            pos += chunk.shape[1]
        for packet in stream.encode(None):
            container.mux(packet)


def _float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    """A WAVE_FORMAT_IEEE_FLOAT (format tag 3) mono file, header written by hand."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)


# ------------------------------------------------------------------------------------------ audio


def test_load_bundled_speech():
    pcm = load_audio(SPEECH)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    with wave.open(str(SPEECH)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        expected = w.getnframes()
    assert pcm.size == expected
    assert 3.0 <= pcm.size / 16000 <= 4.5
    assert np.isfinite(pcm).all() and 0.05 < np.abs(pcm).max() <= 1.0


@pytest.mark.parametrize(
    "name, fmt, codec",
    [("speech.m4a", "mp4", "aac"), ("speech.mp3", "mp3", "libmp3lame"), ("speech.ogg", "ogg", "libopus")],
)
def test_load_audio_transcodes_stereo_44k(tmp_path, name, fmt, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} encoder not in this FFmpeg build")
    rate = 48000 if codec == "libopus" else 44100  # opus only runs at 48k
    seconds = 2.5
    t = np.arange(int(rate * seconds)) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    path = tmp_path / name
    _encode_audio(path, fmt, codec, rate, "stereo", stereo)
    pcm = load_audio(path)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert abs(pcm.size / 16000 - seconds) <= 0.01 * seconds
    mid = pcm[4000:-4000]
    assert 0.1 < np.abs(mid).max() < 0.7  # channels averaged, not summed


def test_load_audio_other_rate(tmp_path):
    pcm = load_audio(SPEECH, sample_rate=24000)
    assert abs(pcm.size - 4.0 * 24000) <= 0.01 * 4.0 * 24000


def test_resample_and_stream_agree():
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(44100)).astype(np.float32)
    once = resample(x, 44100, 16000)
    assert once.dtype == np.float32 and abs(once.size - 16000) <= 2

    stream = AudioResampleStream(44100)
    parts = [stream.push(x[i : i + 441]) for i in range(0, x.size, 441)] + [stream.flush()]
    streamed = np.concatenate(parts)
    assert abs(streamed.size - once.size) <= 2
    n = min(streamed.size, once.size)
    np.testing.assert_allclose(streamed[:n], once[:n], atol=1e-4)


def test_stream_downmixes_planar_stereo():
    stream = AudioResampleStream(48000, channels=2)
    chunk = np.stack([np.full(480, 0.5, np.float32), np.full(480, 0.1, np.float32)])
    out = np.concatenate([stream.push(chunk) for _ in range(50)] + [stream.flush()])
    assert abs(out.size - 8000) <= 2
    np.testing.assert_allclose(out[200:-200], 0.3, atol=1e-3)


def test_load_audio_missing(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(InputError) as err:
        load_audio(path)
    msg = _one_line(err)
    assert str(path) in msg and "not found" in msg


def test_load_audio_text_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(InputError) as err:
        load_audio(path)
    msg = _one_line(err)
    assert str(path) in msg and "wav" in msg


def test_load_audio_no_audio_stream():
    with pytest.raises(InputError) as err:
        load_audio(PORTRAIT)
    assert "no audio stream" in _one_line(err)


def test_load_audio_empty_wav(tmp_path):
    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    with pytest.raises(InputError) as err:
        load_audio(path)
    msg = _one_line(err)
    assert str(path) in msg and "empty" in msg


def test_load_audio_shorter_than_a_frame(tmp_path):
    path = tmp_path / "blip.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(100, np.int16).tobytes())
    with pytest.raises(InputError) as err:
        load_audio(path)
    assert "too short" in _one_line(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_audio_nonfinite_float_wav(tmp_path, bad):
    samples = 0.1 * np.sin(np.arange(16000) / 10.0)
    path = tmp_path / "ok.wav"
    _float_wav(path, samples)
    assert load_audio(path).size == 16000  # the hand-written header itself is valid
    samples[5000] = bad
    path = tmp_path / "bad.wav"
    _float_wav(path, samples)
    with pytest.raises(InputError) as err:
        load_audio(path)
    msg = _one_line(err)
    assert str(path) in msg and "NaN" in msg


# ------------------------------------------------------------------------------------------ image


def test_load_image_bundled():
    img = load_image(PORTRAIT)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert max(img.shape[:2]) <= 256
    assert PORTRAIT.stat().st_size < 150_000 and SPEECH.stat().st_size < 150_000


def test_load_image_applies_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    Image.new("RGB", (120, 80), (200, 10, 10)).save(path, exif=exif)
    assert load_image(path).shape == (120, 80, 3)


def test_load_image_alpha_over_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (80, 80), (0, 0, 0, 0)).save(path)
    img = load_image(path)
    assert img.shape == (80, 80, 3) and (img == 255).all()


def test_load_image_errors(tmp_path):
    with pytest.raises(InputError) as err:
        load_image(tmp_path / "nope.png")
    assert "not found" in _one_line(err)

    text = tmp_path / "face.png"
    text.write_text("not an image")
    with pytest.raises(InputError) as err:
        load_image(text)
    assert str(text) in _one_line(err)

    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (100, 40)).save(tiny)
    with pytest.raises(InputError) as err:
        load_image(tiny)
    assert "too small" in _one_line(err)

    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 6000)).save(huge)  # 48 MP, compresses to a few KB
    with pytest.raises(InputError) as err:
        load_image(huge)
    assert "megapixels" in _one_line(err)


def test_to_rgb_matches_load_image(tmp_path):
    rgba = np.zeros((80, 96, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.linspace(0, 255, 96).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(to_rgb(rgba), load_image(tmp_path / "rgba.png"))
    grey = np.arange(80 * 96, dtype=np.uint32).reshape(80, 96).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    for shape in ((80, 96), (80, 96, 1)):
        np.testing.assert_array_equal(to_rgb(grey.reshape(shape)), load_image(tmp_path / "grey.png"))
    rgb = rgba[..., :3]
    assert to_rgb(rgb).shape == (80, 96, 3) and np.array_equal(to_rgb(rgb), rgb)
    with pytest.raises(InputError, match="8-bit"):
        to_rgb(rgb.astype(np.float32))
    with pytest.raises(InputError, match="grey, RGB or RGBA"):
        to_rgb(np.zeros((4, 4, 5), np.uint8))


# ------------------------------------------------------------------------------------------ video


def test_load_video_round_trip(tmp_path):
    path = tmp_path / "clip.mp4"
    with Mp4Writer(path, fps=25, width=64, height=48) as writer:
        for i in range(5):
            writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    frames, fps = load_video(path)
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8 and fps == 25.0
    assert np.abs(frames.mean(axis=(1, 2, 3)) - 40 * np.arange(5)).max() < 3


def test_load_video_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_video(tmp_path / "nope.mp4")
    text = tmp_path / "clip.mp4"
    text.write_text("not a video")
    with pytest.raises(InputError, match="cannot read video file"):
        load_video(text)
    with pytest.raises(InputError, match="no video stream"):
        load_video(SPEECH)


def test_mp4_round_trip(tmp_path):
    path = tmp_path / "out.mp4"
    rate = 16000
    t = np.arange(int(1.2 * rate)) / rate
    audio = (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    rng = np.random.default_rng(1)
    with Mp4Writer(path, fps=25, width=96, height=64, audio=audio, sample_rate=rate) as writer:
        for k in range(30):
            frame = np.full((64, 96, 3), 8 * k, np.uint8)
            frame[:8, :8] = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            writer.write(frame)
    info = probe_mp4(path)
    assert info["frames"] == 30
    assert info["fps"] == 25.0
    assert (info["width"], info["height"]) == (96, 64)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["audio_sample_rate"] == rate and info["audio_channels"] == 1
    assert abs(info["audio_seconds"] - 1.2) < 0.03
    assert abs(info["audio_decoded_seconds"] - 1.2) < 0.07  # + AAC tail padding
    np.testing.assert_allclose(info["frame_times"], np.arange(30) / 25, atol=1e-6)


def test_mp4_odd_size_and_no_audio(tmp_path):
    path = tmp_path / "odd.mp4"
    with Mp4Writer(path, fps=25, width=65, height=63) as writer:
        for _ in range(5):
            writer.write(np.zeros((63, 65, 3), np.uint8))
    info = probe_mp4(path)
    assert info["frames"] == 5 and (info["width"], info["height"]) == (66, 64)
    assert info["audio_codec"] is None


def test_mp4_missing_directory(tmp_path):
    with pytest.raises(InputError) as err:
        Mp4Writer(tmp_path / "no" / "such" / "out.mp4", width=64, height=64)
    assert "does not exist" in _one_line(err)


def test_mp4_rejects_wrong_frame(tmp_path):
    with Mp4Writer(tmp_path / "x.mp4", width=64, height=64) as writer:
        with pytest.raises(ValueError):
            writer.write(np.zeros((32, 64, 3), np.uint8))
        writer.write(np.zeros((64, 64, 3), np.uint8))


# ------------------------------------------------------------------------------------------- face


def test_detect_face_on_portrait():
    img = load_image(PORTRAIT)
    found = detect_face(img)
    assert found is not None
    x0, y0, x1, y1, score = found
    h, w = img.shape[:2]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert score >= 0.5
    assert (x1 - x0) > w // 5 and (y1 - y0) > h // 5
    # The face is in the upper middle of the bundled portrait.
    assert w * 0.25 < (x0 + x1) / 2 < w * 0.75 and (y0 + y1) / 2 < h * 0.7


def test_detect_faces_finds_each_face_largest_first():
    img = load_image(PORTRAIT)
    small = np.asarray(Image.fromarray(img).resize((160, 160), Image.Resampling.BILINEAR))
    pair = np.full((256, 448, 3), 230, np.uint8)
    pair[:, :256], pair[48:208, 272:432] = img, small
    found = detect_faces(pair)
    assert len(found) == 2
    assert (found[0][2] - found[0][0]) > (found[1][2] - found[1][0])  # largest first
    assert found[0][2] <= 256 < found[1][0]  # the large face on the left, the small one on the right
    assert detect_face(pair) == found[0]
    assert detect_faces(np.full((128, 128, 3), 128, np.uint8)) == []


def test_landmark_measures_take_one_face_or_a_batch():
    lm = face_landmarks(load_image(PORTRAIT))
    assert isinstance(mouth_opening(lm), float) and isinstance(eye_corner_distance(lm), float)
    batch = np.stack([lm, lm * 2])
    np.testing.assert_allclose(mouth_opening(batch), [mouth_opening(lm)] * 2, rtol=1e-6)
    np.testing.assert_allclose(eye_corner_distance(batch), np.array([1, 2]) * eye_corner_distance(lm), rtol=1e-6)


def test_prepare_portrait_crop_and_mask():
    img = load_image(PORTRAIT)
    size = 128
    face = prepare_portrait(img, size)
    assert isinstance(face, FaceCrop) and face.detected
    assert face.image.shape == (size, size, 3) and face.image.dtype == np.uint8
    assert face.mask.shape == (size, size) and face.mask.dtype == np.float32
    assert face.mask.min() >= 0.0 and face.mask.max() <= 1.0

    cx0, cy0, cx1, cy1 = face.crop_box
    assert cx1 - cx0 == cy1 - cy0 > 0  # square
    x0, y0, x1, y1 = face.box
    assert cx0 <= x0 and cy0 <= y0 and x1 <= cx1 and y1 <= cy1  # face inside the crop

    # Map the face box into crop coordinates: mask is 1 inside it and 0 well outside its 10 % margin.
    scale = size / (cx1 - cx0)
    fx0, fy0 = (x0 - cx0) * scale, (y0 - cy0) * scale
    fx1, fy1 = (x1 - cx0) * scale, (y1 - cy0) * scale
    inner = face.mask[int(fy0) + 2 : int(fy1) - 2, int(fx0) + 2 : int(fx1) - 2]
    assert inner.size and (inner == 1.0).all()
    pad_x, pad_y = 0.1 * (fx1 - fx0), 0.1 * (fy1 - fy0)
    outside = np.ones((size, size), bool)
    outside[
        max(0, int(fy0 - pad_y) - 2) : int(fy1 + pad_y) + 3, max(0, int(fx0 - pad_x) - 2) : int(fx1 + pad_x) + 3
    ] = False
    assert outside.any() and (face.mask[outside] == 0.0).all()
    # Bilinear resize leaves intermediate values on the mask's edges.
    assert ((face.mask > 0) & (face.mask < 1)).any()
    # About 10/7 of the box per side (box + 2x10 %) over the crop side (box + 2x50 %).
    assert 0.15 < face.mask.mean() < 0.6


def test_prepare_portrait_image_matches_source():
    img = load_image(PORTRAIT)
    face = prepare_portrait(img, 64)
    cx0, cy0, cx1, cy1 = face.crop_box
    ref = np.asarray(Image.fromarray(img[cy0:cy1, cx0:cx1]).resize((64, 64), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(face.image, ref)


def test_prepare_portrait_without_face():
    grey = np.full((200, 300, 3), 128, np.uint8)
    assert detect_face(grey) is None
    with pytest.raises(InputError) as err:
        prepare_portrait(grey, 64)
    assert "--no-crop" in _one_line(err)

    face = prepare_portrait(grey, 64, crop=False)
    assert not face.detected
    assert face.image.shape == (64, 64, 3) and (face.image == 128).all()
    assert face.mask.shape == (64, 64) and (face.mask == 1.0).all()
    assert face.crop_box == (50, 0, 250, 200)


def test_prepare_portrait_no_crop_keeps_face_mask():
    img = load_image(PORTRAIT)
    wide = np.zeros((img.shape[0], img.shape[1] + 144, 3), np.uint8)
    wide[:, 72 : 72 + img.shape[1]] = img
    face = prepare_portrait(wide, 96, crop=False)
    assert face.detected
    assert face.crop_box == (72, 0, 72 + img.shape[1], img.shape[0])  # centre square of the whole image
    assert 0.0 < face.mask.mean() < 1.0 and face.mask.max() == 1.0
