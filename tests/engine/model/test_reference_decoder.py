"""The tiny preset's reference decoder: the VAE decoder also takes the avatar's photo (mouth blanked).

What it must keep: the SD layout has no reference layers; a new reference path starts as the plain
decoder; the photo reaches every frame of a session, the offline render, the VAE round trip and the
exported graph; training pairs each frame with its clip's photo, mouth blanked, flipped with it.
"""

from __future__ import annotations

import numpy as np
import torch

from livehead.engine.media.face import blank_mouth, mouth_box
from livehead.engine.model.config import ModelConfig, VAEConfig
from livehead.engine.model.vae import AutoencoderKL
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.runtime.session import Session, decoder_reference, prepare_avatar, to_pixels
from livehead.engine.training.vae import soften_latents
from livehead.engine.weights.loading import SEEDED, bundled_weights_dir, load_model

TINY = ModelConfig.from_name("tiny")
SIZE = TINY.stream.image_size


def face_mask(size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    mask[size // 5: 4 * size // 5, size // 4: 3 * size // 4] = 1.0
    return mask


def photo(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_only_the_tiny_decoder_has_reference_layers():
    assert not any("reference" in k for k in AutoencoderKL(VAEConfig(block_out_channels=(8, 8), norm_num_groups=4,
                                                                      layers_per_block=1)).state_dict())
    keys = AutoencoderKL(TINY.vae).state_dict()
    assert "decoder.reference_encoder.conv_in.weight" in keys and "decoder.reference_out.conv.weight" in keys
    assert len([k for k in keys if k.startswith("decoder.reference_in.")]) == 4 * len(TINY.vae.block_out_channels)


def test_a_new_reference_path_leaves_the_decoder_as_it_was_then_uses_the_photo():
    torch.manual_seed(0)
    vae = AutoencoderKL(TINY.vae).eval()
    z = torch.randn(3, 4, TINY.latent_size, TINY.latent_size)
    ref = to_pixels(photo(1)[None])
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(z, ref), vae.decode(z), rtol=0, atol=0)  # zero-initialised
        for p in vae.decoder.reference_out.conv.parameters():
            p.normal_(0, 0.1)
        used = vae.decode(z, ref)
        assert (used - vae.decode(z)).abs().max() > 1e-3
        # one photo serves a batch of frames
        torch.testing.assert_close(used, vae.decode(z, ref.expand(3, -1, -1, -1)), rtol=1e-5, atol=1e-5)
        assert (vae.decode(z, to_pixels(photo(2)[None])) - used).abs().max() > 1e-3


def test_blank_mouth_greys_only_the_mouth_box():
    image, mask = photo(3), face_mask()
    out = blank_mouth(image, mask)
    x0, y0, x1, y1 = mouth_box(mask)
    assert (out[y0:y1, x0:x1] == 128).all() and x1 - x0 > 10 and y1 - y0 > 5
    keep = np.ones(mask.shape, bool)
    keep[y0:y1, x0:x1] = False
    assert np.array_equal(out[keep], image[keep]) and not np.array_equal(out, image)
    assert np.array_equal(blank_mouth(image, np.zeros_like(mask)), image)  # no face found: the photo as it is


def test_sessions_decode_with_their_avatars_photo():
    runners = TorchRunners(load_model(TINY, SEEDED))
    image, mask = photo(4), face_mask()
    avatar = prepare_avatar(runners, image, mask)
    torch.testing.assert_close(avatar.decoder_reference, to_pixels(blank_mouth(image, mask)[None]))
    assert decoder_reference(ModelConfig.from_name("echomimic-v1"), image, mask) is None
    pcm = np.sin(np.linspace(0, 400, 16000)).astype(np.float32) * 0.3

    def frames(av):
        session = Session(runners, av, seed=0)
        session.push_audio(pcm, 16000)
        session.flush()
        return np.stack([f.image for f in session.frames()])

    a = frames(avatar)
    other = prepare_avatar(runners, image, mask)
    other.decoder_reference = to_pixels(blank_mouth(photo(5), mask)[None])
    b = frames(other)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() > 5


def test_softened_latents_keep_the_rest_of_the_batch():
    z = torch.randn(4, 4, 16, 16)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(soften_latents(z, 0.0, gen), z)
    out = soften_latents(z, 0.5, gen)
    assert torch.equal(out[2:], z[2:]) and not torch.equal(out[:2], z[:2])
    # a blur: neighbouring cells move closer together (the noise added stays below that)
    rough = (z[:2, :, :, 1:] - z[:2, :, :, :-1]).abs().mean()
    assert (out[:2, :, :, 1:] - out[:2, :, :, :-1]).abs().mean() < 0.8 * rough


def test_tiny_weights_saved_before_the_reference_decoder_still_load_and_decode_as_before(tmp_path):
    """A tiny weights folder whose VAE file has no reference layers loads for inference; with the
    layers zeroed the frames are exactly those its plain decoder draws."""
    import shutil
    from dataclasses import replace

    from safetensors.torch import load_file, save_file

    old = tmp_path / "old"
    shutil.copytree(bundled_weights_dir(TINY), old)
    vae_file = old / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors"
    save_file({k: v for k, v in load_file(str(vae_file)).items() if ".reference_" not in k}, str(vae_file))
    plain_cfg = replace(TINY, vae=replace(TINY.vae, reference_decoder=False))
    z = torch.randn(3, 4, TINY.latent_size, TINY.latent_size, generator=torch.Generator().manual_seed(0))
    ref = to_pixels(blank_mouth(photo(8), face_mask())[None])
    upgraded = TorchRunners(load_model(TINY, old))
    expected = TorchRunners(load_model(plain_cfg, old)).decode(z)
    torch.testing.assert_close(upgraded.decode(z, ref), expected, rtol=0, atol=0)
    assert (TorchRunners(load_model(TINY)).decode(z, ref) - expected).abs().max() > 1e-3  # the shipped one differs
