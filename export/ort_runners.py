"""ONNX Runtime backend: the `engine.model.Runners` calls over the exported graphs.

    runners = OrtRunners.from_dir(cfg, "exported/tiny")          # CPU EP, or CUDA EP when present
    session = Session(runners, prepare_avatar(runners, image, mask))

CPU: intra-op threads = the cores torch sees, sequential execution, full graph optimisation. CUDA:
the CUDA execution provider with IO binding (inputs copied once, outputs allocated on the device and
fetched once). The same `Session` runs on top, so streaming, batching and the CLI are unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.motion_runners import MotionRunners
from livehead.export.graphs import KV_NAMES, decoder_feeds
from livehead.export.onnx_export import exported_sampling, read_manifest

COMPONENTS = ("audio_encoder", "vae_encoder", "face_locator", "reference", "denoiser", "denoiser_uncond",
              "vae_decoder")
MOTION_COMPONENTS = ("audio_encoder", "motion_generator")


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise InputError("onnxruntime has no CUDA execution provider here: install onnxruntime-gpu or use "
                             "--device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtRunners:
    """Runners over ONNX Runtime sessions; tensors in and out are torch (CPU)."""

    def __init__(self, cfg: ModelConfig, sessions: dict, device: str = "cpu", input_component: str = "denoiser"):
        self.cfg = cfg
        self.sessions = sessions
        self.device = torch.device("cpu")  # what the session code sees: inputs and outputs on the host
        self.dtype = torch.float32
        self.ort_device = "cuda" if device.startswith("cuda") else "cpu"
        inputs = sessions[input_component].get_inputs()
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32

    @classmethod
    def from_dir(cls, cfg: ModelConfig, directory: str | Path, device: str = "cpu",
                 threads: int | None = None, **controls) -> OrtRunners | OrtMotionRunners:
        """The runners of an export folder; `controls` (expression, head_motion) for the motion tier."""
        import onnxruntime as ort

        manifest = read_manifest(Path(directory))
        if manifest["preset"] != cfg.name:
            raise InputError(f"{directory} was exported for preset {manifest['preset']}, not {cfg.name}")
        components = MOTION_COMPONENTS if cfg.motion is not None else COMPONENTS
        missing = [c for c in components if c not in manifest["components"]]
        if missing:
            raise InputError(f"{directory} lacks exported components: {', '.join(missing)}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads() or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # No busy-waiting between runs: the session's own torch work (mel, sampler maths) shares the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = _providers(device)
        sessions = {c: ort.InferenceSession(str(Path(directory) / manifest["components"][c]["file"]), options,
                                            providers=providers) for c in components}
        if cfg.motion is not None:
            graphs = cls(cfg, sessions, device, input_component="motion_generator")
            mean, std = torch.tensor(manifest["motion_mean"]), torch.tensor(manifest["motion_std"])
            return OrtMotionRunners(graphs, mean, std, **controls)
        return cls(exported_sampling(cfg, manifest), sessions, device)

    def run_graph(self, component: str, feeds: dict[str, torch.Tensor]) -> list[np.ndarray]:
        session = self.sessions[component]
        arrays = {k: (v.detach().cpu().numpy().astype(self.input_dtype) if v.is_floating_point()
                      else v.detach().cpu().numpy()) for k, v in feeds.items()}
        if self.ort_device == "cpu":
            return session.run(None, arrays)
        binding = session.io_binding()
        for name, array in arrays.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for out in session.get_outputs():
            binding.bind_output(out.name, "cuda")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    @staticmethod
    def _t(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).float()

    def audio_stack(self, mel: torch.Tensor) -> torch.Tensor:
        return self._t(self.run_graph("audio_encoder", {"mel": mel})[0])

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._t(self.run_graph("vae_encoder", {"pixels": pixels})[0])

    def face_features(self, mask: torch.Tensor) -> torch.Tensor:
        return self._t(self.run_graph("face_locator", {"mask": mask})[0])

    def reference_kv(self, ref_latents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self._t(a) for a in self.run_graph("reference", {"ref_latents": ref_latents}))

    def denoise(self, sample, timestep, audio, face, kv) -> torch.Tensor:
        feeds = {"sample": sample, "timestep": timestep.long().reshape(-1).expand(sample.shape[0]),
                 "audio_tokens": audio, "face_features": face}
        if not kv:  # classifier-free guidance's unconditional branch: plain self-attention
            return self._t(self.run_graph("denoiser_uncond", feeds)[0])
        return self._t(self.run_graph("denoiser", {**feeds, **dict(zip(KV_NAMES, kv))})[0])

    def decode(self, latents: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        return self._t(self.run_graph("vae_decoder", decoder_feeds(self.cfg, latents, reference))[0])


class OrtMotionRunners(MotionRunners):
    """The motion tier over ONNX Runtime: Whisper-tiny and the generator exported, the renderer as ever."""

    def __init__(self, graphs: OrtRunners, motion_mean: torch.Tensor, motion_std: torch.Tensor, **controls):
        super().__init__(graphs.cfg, motion_mean, motion_std, **controls)
        self.graphs = graphs
        self.device, self.dtype = graphs.device, graphs.dtype

    def audio_stack(self, mel: torch.Tensor) -> torch.Tensor:
        return self.graphs.audio_stack(mel)

    def generator_v(self, sample, timestep, audio, face) -> torch.Tensor:
        feeds = {"sample": sample, "timestep": timestep.long().reshape(-1).expand(sample.shape[0]),
                 "audio_tokens": audio, "shape": face}
        return self.graphs._t(self.graphs.run_graph("motion_generator", feeds)[0])
