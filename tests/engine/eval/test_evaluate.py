"""Evaluation metrics: a GRID clip scores high against itself and lower against a time-shifted copy;
synthetic clips against their generator's parameters; bad inputs give one clear error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from livehead.engine.common.errors import InputError
from livehead.engine.eval.evaluate import (
    CRITERIA,
    MOUTH_CLOSED,
    audio_envelope,
    audio_response,
    best_lag,
    energy_silence,
    evaluate_pair,
    find_clips,
    pearson,
    prepare_clip,
    read_video,
    shift_frames,
    shrink,
    vae_roundtrip_frames,
)
from livehead.engine.media.audio_video import Mp4Writer, load_image
from livehead.engine.media.face import blank_mouth, prepare_portrait
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.synth.speech_alignment import Phone
from livehead.engine.synth.talker import SyntheticTalker, TalkerStyle, write_clip
from livehead.engine.weights.loading import SEEDED, load_model, trained_sampling
from livehead.server.cli.main import main as cli_main
from tests import ASSETS, GRID
from tests.helpers import buzz_speech

GRID_CLIP = "id2_vcd_swwp2s"  # the sample clip with a word alignment


@pytest.fixture(scope="module")
def grid_clip():
    if not (GRID / f"{GRID_CLIP}.mpg").exists():
        pytest.skip(f"GRID sample clips not found at {GRID}")
    clips = [c for c in find_clips(GRID) if c.name == GRID_CLIP]
    assert clips and clips[0].kind == "grid"
    return prepare_clip(clips[0], 128)


def test_grid_clip_against_itself_and_shifted(grid_clip):
    c = grid_clip
    same = evaluate_pair(c.gt_frames, c.reference, c.pcm, 16000, gt_frames=c.gt_frames, silent=c.silent,
                         identity_stride=15)
    assert same["frames"] == 75 and same["face_detected"] == 1.0
    assert same["mouth_corr_gt"] == pytest.approx(1.0) and same["mouth_lag_frames"] == 0
    assert same["identity_same"] == 1.0 and same["identity_distance_median"] < 0.4
    assert same["landmark_jitter"] == same["gt_landmark_jitter"]
    assert same["silent_frames"] > 10 and same["silent_closed"] == same["gt_silent_closed"]

    late = evaluate_pair(shift_frames(c.gt_frames, 4), c.reference, c.pcm, 16000, gt_frames=c.gt_frames,
                         silent=c.silent, identity=False)
    assert late["mouth_corr_gt"] < same["mouth_corr_gt"] - 0.3
    assert late["mouth_lag_frames"] == 4  # the lag search finds the delay
    assert late["mouth_corr_gt_best_lag"] > 0.9
    assert late["mouth_corr_audio"] < same["mouth_corr_audio"]
    assert "identity_same" not in late


def test_long_session_segments_score_each_stretch_against_its_own_truth(grid_clip):
    from benchmarks.long_session import score_segments, segment_bounds

    assert segment_bounds(250, 250) == [(0, 250)]
    assert segment_bounds(260, 250) == [(0, 260)]  # a 10-frame tail joins the segment before it
    assert segment_bounds(400, 250) == [(0, 250), (250, 400)]
    with pytest.raises(InputError):
        segment_bounds(10, 0)
    c = grid_clip
    segments = score_segments(c.gt_frames, c, 16000, 25, identity_stride=25)
    assert [(s["start_s"], s["end_s"]) for s in segments] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    spoken = [s for s in segments if s["mouth_corr_gt"] is not None]
    assert spoken and all(s["mouth_corr_gt"] == pytest.approx(1.0) for s in spoken)
    assert all(s["identity_same"] == 1.0 for s in segments)
    late = score_segments(shift_frames(c.gt_frames, 4), c, 16000, 25, identity_stride=25)
    assert min(s["mouth_corr_gt"] for s in late if s["mouth_corr_gt"] is not None) < 0.9


def test_synthetic_clip_against_its_parameters(tmp_path):
    phones = [Phone("sil", 0.0, 0.4), Phone("b", 0.4, 0.5), Phone("a", 0.5, 0.9), Phone("m", 0.9, 1.0),
              Phone("a", 1.0, 1.3), Phone("sil", 1.3, 2.0)]
    talker = SyntheticTalker(load_image(ASSETS / "portrait.png"), size=128, style=TalkerStyle(blink_interval=0))
    clip = talker.render(buzz_speech(phones), seed=0)
    m = evaluate_pair(list(clip.frames), clip.frames[0], clip.pcm, clip.sample_rate,
                      gt_open=clip.params["mouth_open"], silent=clip.silent, identity_stride=10)
    assert m["mouth_corr_gt"] > 0.85 and m["mouth_lag_frames"] == 0
    assert m["mouth_corr_audio"] > 0.5  # the buzz is loud exactly when the mouth is open
    assert m["silent_closed"] >= 0.9 and m["identity_same"] == 1.0

    # The same clip on disk, through `livehead eval --ground-truth`.
    data = tmp_path / "data"
    data.mkdir()
    write_clip(clip, data / "synth")
    out = tmp_path / "result.json"
    assert cli_main(["eval", "--data", str(data), "--ground-truth", "--identity-stride", "10", "--quiet",
                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["clips"]
    assert row["kind"] == "synthetic" and row["mouth_corr_gt"] > 0.85
    assert set(result["summary"]["pass"]) == set(CRITERIA)
    assert result["thresholds"]["mouth_closed"] == MOUTH_CLOSED


def test_model_path_end_to_end(tmp_path):
    """`livehead eval` on a short clip with the tiny preset: runs the model and reports every metric."""
    talker = SyntheticTalker(load_image(ASSETS / "portrait.png"), size=128, style=TalkerStyle(blink_interval=0))
    clip = talker.render(buzz_speech([Phone("sil", 0.0, 0.1), Phone("a", 0.1, 0.3), Phone("sil", 0.3, 0.4)]))
    write_clip(clip, tmp_path / "short")
    out = tmp_path / "r.json"
    assert cli_main(["eval", "--preset", "tiny", "--data", str(tmp_path), "--steps", "1", "--identity-stride", "5",
                     "--quiet",
                     "--out", str(out)]) == 0  # 10 frames: one streaming clip, one denoiser pass
    result = json.loads(out.read_text())
    assert result["model"] == "tiny" and result["clips"][0]["frames"] == len(clip.frames)
    assert result["reference_mix"] == trained_sampling(ModelConfig.from_name("tiny"), None).sampler.reference_mix
    for key in ("mouth_corr_gt", "silent_closed", "identity_same", "landmark_jitter", "face_detected"):
        assert key in result["clips"][0]
    assert result["clips"][0]["audio_effect_mouth"] >= 0 and result["summary"]["audio_effect_elsewhere"] >= 0


def test_vae_roundtrip_scores_the_clip_through_the_vae(tmp_path, capsys):
    """`--vae-roundtrip`: every frame of the clip's own video goes through the weights' VAE (in batches,
    the last one partial), and those frames are scored; no silence run, and it excludes --ground-truth."""
    import torch

    talker = SyntheticTalker(load_image(ASSETS / "portrait.png"), size=128, style=TalkerStyle(blink_interval=0))
    clip = talker.render(buzz_speech([Phone("sil", 0.0, 0.1), Phone("a", 0.1, 0.3), Phone("sil", 0.3, 0.4)]))
    cfg = ModelConfig.from_name("tiny")
    model = load_model(cfg, SEEDED)
    frames = list(clip.frames)
    mask = np.zeros((128, 128), np.float32)
    mask[24:112, 28:100] = 1.0
    out = vae_roundtrip_frames(TorchRunners(model), frames, frames[0], mask, batch=4)
    assert len(out) == len(frames) and out[0].shape == frames[0].shape and out[0].dtype == np.uint8
    with torch.no_grad():
        x = torch.from_numpy(np.stack(frames[-2:])).permute(0, 3, 1, 2).float() / 127.5 - 1
        ref = torch.from_numpy(blank_mouth(frames[0], mask)[None]).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = model.vae.decode_to_unit(model.vae.encode_mean(x), ref)
    expect = (y * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(out[-1].astype(int) - expect[-1]).max() <= 1 and not np.array_equal(out[-1], frames[-1])
    # the tiny decoder draws from the (mouth-blanked) photo it is given, as a session's does
    other = vae_roundtrip_frames(TorchRunners(model), frames[-1:], np.full_like(frames[0], 90), mask)
    assert np.abs(other[0].astype(int) - out[-1].astype(int)).max() > 5

    write_clip(clip, tmp_path / "short")
    result_path = tmp_path / "r.json"
    assert cli_main(["eval", "--preset", "tiny", "--data", str(tmp_path), "--vae-roundtrip", "--weights", "seeded",
                     "--quiet",
                     "--identity-stride", "5", "--out", str(result_path)]) == 0
    result = json.loads(result_path.read_text())
    assert result["model"] == "tiny VAE round trip" and result["clips"][0]["frames"] == len(frames)
    assert "audio_effect_mouth" not in result["clips"][0]
    capsys.readouterr()
    assert cli_main(["eval", "--data", str(tmp_path), "--vae-roundtrip", "--ground-truth"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_audio_response_sees_the_mouth_move():
    """A synthetic clip against a still of its closed-mouth first frame: the difference sits in the mouth
    box and grows with the generator's mouth opening; the clip against itself shows nothing."""
    phones = [Phone("sil", 0.0, 0.4), Phone("b", 0.4, 0.5), Phone("a", 0.5, 0.9), Phone("m", 0.9, 1.0),
              Phone("a", 1.0, 1.3), Phone("sil", 1.3, 2.0)]
    talker = SyntheticTalker(load_image(ASSETS / "portrait.png"), size=128, style=TalkerStyle(blink_interval=0))
    clip = talker.render(buzz_speech(phones), seed=0)
    frames = list(clip.frames)
    mask = prepare_portrait(frames[0], 128, crop=False).mask
    r = audio_response(frames, [frames[0]] * len(frames), mask, clip.params["mouth_open"])
    assert r["audio_effect_mouth"] > 2 * r["audio_effect_elsewhere"]  # the head moves a little too
    assert r["mouth_change_corr_gt"] > 0.5
    same = audio_response(frames, frames, mask, clip.params["mouth_open"])
    assert same["audio_effect_mouth"] == same["audio_effect_elsewhere"] == 0
    assert same["mouth_change_corr_gt"] is None  # no variation: no correlation
    assert audio_response(frames, frames, np.zeros_like(mask)) == {}  # no face box: nothing to measure


def test_metric_helpers():
    sr, fps = 16000, 25
    pcm = np.zeros(sr, np.float32)
    pcm[sr // 4: sr // 2] = 0.5 * np.sin(np.arange(sr // 4) * 0.3)
    env = audio_envelope(pcm, sr, 25, fps)
    assert env.shape == (25,) and env.max() == 0.0 and env[:5].max() == -60.0
    silent = energy_silence(env)
    assert silent[:6].all() and not silent[7:12].any() and silent[-6:].all()
    assert shrink(np.array([0, 1, 1, 1, 1, 1, 0], bool), 1).tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert pearson(np.ones(20), np.arange(20)) is None  # no variance
    assert pearson(np.arange(5), np.arange(5)) is None  # too few frames
    x = np.sin(np.arange(60) * 0.3)
    assert best_lag(np.roll(x, 3), x)[0] == 3
    nan_frames = np.where(np.arange(60) % 7 == 0, np.nan, x)
    assert pearson(nan_frames, x) == pytest.approx(1.0)


def test_bad_inputs(tmp_path, capsys):
    with pytest.raises(InputError, match="not found"):
        find_clips(tmp_path / "missing")
    with pytest.raises(InputError, match="no clips"):
        find_clips(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="directory of clips"):
        find_clips(tmp_path / "notes.txt")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="cannot decode"):
        read_video(tmp_path / "broken.mp4")
    assert cli_main(["eval", "--data", str(tmp_path / "missing"), "--ground-truth"]) == 2
    assert "livehead: error: data directory not found" in capsys.readouterr().err
    assert cli_main(["eval", "--data", str(tmp_path), "--shift", "3"]) == 2
    blank = np.full((128, 128, 3), 127, np.uint8)
    with pytest.raises(InputError, match="no face found in the reference"):
        evaluate_pair([blank] * 12, blank, np.zeros(8000, np.float32), 16000)
    with pytest.raises(InputError, match="identity stride must be a whole number"):
        evaluate_pair([blank] * 12, blank, np.zeros(8000, np.float32), 16000, identity_stride=0)
    # the benchmarks refuse their counts before loading anything
    from benchmarks.distill_vs_teacher import main as cmp_main
    from benchmarks.long_session import main as long_main

    for argv in (["--runs", "0"], ["--identity-stride", "-2"]):
        assert cmp_main(["--teacher", "seeded", "--teacher-steps", "1", "--student", "seeded", "--data",
                         str(tmp_path), "--out", str(tmp_path / "x.json"), *argv]) == 2
        assert "must be at least 1" in capsys.readouterr().err
    for argv in (["--segment-seconds", "0"], ["--segment-seconds", "nan"], ["--identity-stride", "0"]):
        assert long_main(["--data", str(tmp_path), "--out", str(tmp_path / "x.json"), *argv]) == 2
        assert "long_session: error: --segment-seconds must be in" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_clip_without_a_face(tmp_path):
    src = GRID / f"{GRID_CLIP}.mpg"
    if not src.exists():
        pytest.skip(f"GRID sample clips not found at {GRID}")
    clips = find_clips(GRID)
    assert {c.kind for c in clips} >= {"grid", "video"}
    # A video whose first frame shows no face: a clear error naming the file.

    with Mp4Writer(tmp_path / "blank.mp4", fps=25, width=64, height=64, audio=np.zeros(8000, np.float32)) as w:
        for _ in range(12):
            w.write(np.full((64, 64, 3), 90, np.uint8))
    (blank,) = find_clips(tmp_path)
    with pytest.raises(InputError, match="no face found in the first frame of .*blank.mp4"):
        prepare_clip(blank, 128)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_distill_vs_teacher_compares_both_models_on_the_same_clips(tmp_path):
    """The distillation benchmark on one short clip: both models scored, gaps computed from their own
    summaries, both timed."""
    from benchmarks.distill_vs_teacher import gap
    from benchmarks.distill_vs_teacher import main as bench_main

    assert gap(0.45, 0.5) == {"teacher": 0.5, "student": 0.45, "abs": -0.05, "rel": -0.1, "within_10pct": True,
                              "better": False, "kept": True}
    assert gap(0.4, 0.5)["kept"] is False and gap(None, 0.5)["abs"] is None
    assert gap(0.6, 0.5)["within_10pct"] is False and gap(0.6, 0.5)["kept"] is True  # better counts as kept
    assert gap(0.6, 0.5, higher_is_better=False)["kept"] is False  # a distance that grew
    talker = SyntheticTalker(load_image(ASSETS / "portrait.png"), size=128, style=TalkerStyle(blink_interval=0))
    clip = talker.render(buzz_speech([Phone("sil", 0.0, 0.1), Phone("a", 0.1, 0.3), Phone("sil", 0.3, 0.4)]))
    write_clip(clip, tmp_path / "short")
    out = tmp_path / "cmp.json"
    assert bench_main(["--teacher", "seeded", "--teacher-steps", "2", "--student", str(ASSETS / "tiny"),
                       "--data", str(tmp_path), "--identity-stride", "5", "--runs", "1", "--quiet",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["models"]["teacher"] == {"weights": "seeded", "steps": 2, "reference_mix": 0.0}
    rows = result["comparison"][str(tmp_path)]
    summaries = {n: e["summary"] for n, e in result["evals"][str(tmp_path)].items()}
    for key in CRITERIA:
        assert rows[key]["teacher"] == summaries["teacher"][key] and rows[key]["student"] == summaries["student"][key]
    # the shipped weights draw a face where the seeded model does not
    assert summaries["student"]["face_detected"] > summaries["teacher"]["face_detected"]
    assert result["speed"]["teacher"]["fps"] > 0 and result["speed"]["student"]["frames"] == 100


def test_compare_weights_measures_each_model_on_the_same_clips(tmp_path, capsys):
    from benchmarks.compare_weights import main as compare_main
    from benchmarks.compare_weights import parse_model

    assert parse_model("a=some/dir") == ("a", "some/dir", 1)
    assert parse_model("t=C:/runs/t:4") == ("t", "C:/runs/t", 4)
    for bad in ("nodir", "=x", "a=", "a=dir:0"):
        with pytest.raises(InputError):
            parse_model(bad)
    talker = SyntheticTalker(load_image(ASSETS / "portrait.png"), size=128, style=TalkerStyle(blink_interval=0))
    clip = talker.render(buzz_speech([Phone("sil", 0.0, 0.1), Phone("a", 0.1, 0.3), Phone("sil", 0.3, 0.4)]))
    write_clip(clip, tmp_path / "short")
    out = tmp_path / "cmp.json"
    assert compare_main(["--model", f"shipped={ASSETS / 'tiny'}", "--model", "twice=seeded:2", "--data",
                         str(tmp_path), "--identity-stride", "5", "--runs", "1", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["models"]["twice"] == {"weights": "seeded", "steps": 2, "reference_mix": 0.0}
    for name in ("shipped", "twice"):
        summary = result["evals"][str(tmp_path)][name]["summary"]
        assert f"| {name} | {summary['mouth_corr_gt']} | " in printed
        assert result["speed"][name]["frames"] == 100 and result["speed"][name]["fps"] > 0
    assert compare_main(["--model", "a=seeded", "--model", "a=seeded", "--data", str(tmp_path)]) == 2
    assert "given twice" in capsys.readouterr().err
