"""The README's Python example runs as written (on the bundled portrait and speech) and gives every frame."""

from __future__ import annotations

import math
import re

from livehead import load_audio
from tests import ASSETS, ROOT


def test_the_readme_python_example_runs():
    readme = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    code = code.replace('"me.jpg"', repr(str(ASSETS / "portrait.png"))).replace('"hello.wav"',
                                                                                repr(str(ASSETS / "speech.wav")))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    seconds = len(load_audio(ASSETS / "speech.wav", 16000)) / 16000
    frames = scope["frames"]
    assert len(frames) == math.ceil(seconds * 25)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[0].image.shape == scope["photo"].image.shape  # the photo at its own size
