"""`livehead reenact`: a driving clip moves the bundled portrait into an mp4 with the clip's audio; bad input ends
with one `livehead: error:` line and exit status 2, as for `animate`."""

from __future__ import annotations

import numpy as np
import pytest

from livehead.engine.media.audio_video import Mp4Writer, load_image
from livehead.engine.motion.photo import prepare_photo
from livehead.engine.motion.renderer import PhotoRenderer
from livehead.engine.motion.space import default_motion_space
from livehead.server.cli.main import main
from tests import ASSETS
from tests.engine.motion.test_round_trip import synthetic_motion
from tests.helpers import probe_mp4

PORTRAIT = ASSETS / "portrait.png"


@pytest.fixture(scope="module")
def driving(tmp_path_factory):
    space = default_motion_space()
    renderer = PhotoRenderer(prepare_photo(load_image(PORTRAIT)))
    frames = [renderer.render(m) for m in space.decode(synthetic_motion(space, 20), renderer.neutral)]
    path = tmp_path_factory.mktemp("drive") / "drive.mp4"
    pcm = (0.2 * np.sin(np.arange(16000 * 20 // 25) * 0.05)).astype(np.float32)
    with Mp4Writer(path, fps=25, width=256, height=256, audio=pcm, sample_rate=16000) as w:
        for f in frames:
            w.write(f)
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["reenact", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _bad(code: int, err: str, *words: str) -> None:
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("livehead: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


def test_reenact_writes_video_with_the_driving_audio(capsys, tmp_path, driving):
    out = tmp_path / "out.mp4"
    code, stdout, err = _run(capsys, "--image", PORTRAIT, "--image", PORTRAIT, "--video", driving, "--out", out,
                             "--smoothing", "0.4", "--quiet")
    assert code == 0, err
    info = probe_mp4(out)
    assert info["frames"] == 20 and info["audio_codec"] == "aac" and (info["width"], info["height"]) == (256, 256)
    assert "2 photos" in stdout and "with audio" in stdout


@pytest.mark.parametrize("args, words", [
    (("--out", "x.avi"), ("--out", ".mp4")),
    (("--out", "no/such/dir/x.mp4"), ("output directory",)),
    (("--smoothing", "2"), ("--smoothing",)),
    (("--neutral-frame", "-1"), ("--neutral-frame",)),
    (("--neutral-frame", "99"), ("past",)),
])
def test_bad_options(capsys, tmp_path, driving, args, words, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, "--image", PORTRAIT, "--video", driving, "--quiet", *args)
    _bad(code, err, *words)


def test_missing_inputs(capsys, tmp_path, driving):
    _bad(*_run(capsys, "--image", tmp_path / "no.png", "--video", driving, "--out", tmp_path / "o.mp4",
               "--quiet")[::2], "not found")
    _bad(*_run(capsys, "--image", PORTRAIT, "--video", tmp_path / "no.mp4", "--out", tmp_path / "o.mp4",
               "--quiet")[::2], "driving video not found")


def test_a_photo_without_a_face_names_which_photo(capsys, tmp_path, driving):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 200, np.uint8)).save(blank)
    code, _, err = _run(capsys, "--image", PORTRAIT, "--image", blank, "--video", driving, "--out",
                        tmp_path / "o.mp4", "--quiet")
    _bad(code, err, "photo 2", "no face")
