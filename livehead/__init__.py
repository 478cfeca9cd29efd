"""livehead: one portrait photo plus live speech → a talking-head video, in real time.

    from livehead import ModelConfig, Session, load_model, portrait_for, prepare_avatar, torch_runners

The installed package holds the repository's rooms as subpackages: `livehead.engine` (models, weights,
runtime, media, synthetic data, training, evaluation), `livehead.export` (ONNX, ONNX Runtime, TensorRT),
`livehead.kernels` (Triton) and `livehead.server` (the `livehead` command, WebRTC server, desktop app,
client). The names below are the public Python API, imported on first use (importing `livehead` alone
loads neither torch nor MediaPipe).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "InputError": "livehead.engine.common.errors",
    "ModelConfig": "livehead.engine.model.config",
    "load_model": "livehead.engine.weights.loading",
    "Runners": "livehead.engine.runtime.runners",
    "TorchRunners": "livehead.engine.runtime.runners",
    "torch_runners": "livehead.engine.runtime.runners",
    "portrait_for": "livehead.engine.runtime.portrait",
    "bundled_demo": "livehead.engine.runtime.portrait",
    "Avatar": "livehead.engine.runtime.session",
    "Session": "livehead.engine.runtime.session",
    "VideoFrame": "livehead.engine.runtime.session",
    "prepare_avatar": "livehead.engine.runtime.session",
    "render_file": "livehead.engine.runtime.render",
    "prepare_portrait": "livehead.engine.media.face",
    "load_image": "livehead.engine.media.audio_video",
    "load_audio": "livehead.engine.media.audio_video",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'livehead' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
