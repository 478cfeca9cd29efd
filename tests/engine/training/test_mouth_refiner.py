"""The mouth refiner: identity at initialisation, changes confined to a feathered window inside the mouth box
and to mouths that moved (none at zero motion), crops and masks where the lips are, export-friendly, a short
training run that lowers the loss (GRID), and the shipped weights
(engine/assets/motion/mouth_refiner.safetensors) loading strictly with their record."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from livehead.engine.model.mouth_refiner import (
    DEFAULT_PATH,
    INNER_LIP_POLYGON,
    MIN_REFINE_SIDE,
    OUTER_LIPS,
    MouthRefiner,
    MouthRefinerConfig,
    inner_lip_mask,
    load_mouth_refiner,
    mouth_crop_box,
    neutral_mouth_crop,
    refine_frame,
    refine_frames,
    refine_strength,
    sized_crop,
)
from livehead.engine.motion import mesh
from livehead.engine.motion.space import GRID_HELD_OUT, GRID_TRAIN
from tests import GRID

S = MouthRefinerConfig.size


def _face(width: float = 40.0, centre=(100.0, 120.0), gap: float = 6.0) -> np.ndarray:
    """Landmarks [478, 2] with only the lips and the outer eye corners (60 px apart) placed: a mouth `width` px
    wide whose inner lips are `gap` apart."""
    lm = np.zeros((mesh.N_LANDMARKS, 2))
    cx, cy = centre
    lm[list(mesh.EYE_OUTER)] = [[cx - 30.0, cy - 60.0], [cx + 30.0, cy - 60.0]]
    for contour, dy in ((mesh.LIP_OUTER_UPPER, -8.0), (mesh.LIP_OUTER_LOWER, 8.0),
                        (mesh.LIP_INNER_UPPER, -gap / 2), (mesh.LIP_INNER_LOWER, gap / 2)):
        u = np.linspace(-1.0, 1.0, len(contour))
        inner = contour in (mesh.LIP_INNER_UPPER, mesh.LIP_INNER_LOWER)
        half = width / 2 * (0.85 if inner else 1.0)
        lm[list(contour)] = np.stack([cx + half * u, cy + dy * (1 - u**2)], -1)
    return lm


def _perturbed(seed: int = 0) -> MouthRefiner:
    """A refiner whose output layer is not zero, so it changes its input."""
    torch.manual_seed(seed)
    refiner = MouthRefiner()
    torch.nn.init.normal_(refiner.conv_out.weight, std=0.05)
    torch.nn.init.normal_(refiner.conv_out.bias, std=0.05)
    return refiner.eval()


def test_the_lip_contours_are_the_motion_rooms():
    assert OUTER_LIPS.tolist() == list(mesh.LIP_OUTER_UPPER + mesh.LIP_OUTER_LOWER)
    assert INNER_LIP_POLYGON.tolist() == list(mesh.LIP_INNER_UPPER + mesh.LIP_INNER_LOWER[::-1])


def test_an_untrained_refiner_returns_the_render():
    refiner = MouthRefiner().eval()
    assert 0.25e6 < sum(p.numel() for p in refiner.parameters()) < 0.5e6
    torch.manual_seed(1)
    render, neutral, mask = torch.rand(2, 3, S, S), torch.rand(2, 3, S, S), torch.rand(2, 1, S, S)
    with torch.no_grad():
        out = refiner(render, neutral, mask)
    window = refiner.window.expand_as(render)
    assert torch.equal(out[window == 0], render[window == 0])  # outside the window: exactly
    torch.testing.assert_close(out, render, atol=1e-6, rtol=0)  # inside: the residual is zero


def test_a_trained_refiner_changes_only_inside_its_window():
    refiner = _perturbed()
    torch.manual_seed(2)
    render, neutral, mask = torch.rand(1, 3, S, S), torch.rand(1, 3, S, S), torch.rand(1, 1, S, S)
    with torch.no_grad():
        out = refiner(render, neutral, mask)
    outside = (refiner.window == 0).expand_as(render)
    assert torch.equal(out[outside], render[outside]) and not torch.equal(out, render)
    border = torch.ones(S, S, dtype=torch.bool)
    border[4:-4, 4:-4] = False
    assert bool(outside[0, 0][border].all())  # no box edge: the crop's border band never changes
    assert out.min() >= 0 and out.max() <= 1


def test_the_crop_box_is_a_square_around_the_lips_inside_the_image():
    lm = _face(width=40.0, centre=(100.0, 120.0))
    x0, y0, x1, y1 = mouth_crop_box(lm, (240, 320, 3))
    assert x1 - x0 == y1 - y0 == 72  # 1.8 × the 40 px mouth
    assert abs((x0 + x1) / 2 - 100) <= 1 and abs((y0 + y1) / 2 - 120) <= 1
    x0, y0, x1, y1 = mouth_crop_box(_face(centre=(10.0, 235.0)), (240, 320, 3))  # at the corner: shifted in
    assert (x0, y1, x1 - x0) == (0, 240, 72)
    x0, y0, x1, y1 = mouth_crop_box(_face(width=400.0), (100, 160, 3))  # never larger than the image
    assert x1 - x0 == y1 - y0 == 100 and x0 >= 0 and y0 == 0 and x1 <= 160


def test_the_inner_lip_mask_covers_the_gap_between_the_lips():
    lm = _face(gap=10.0)
    box = mouth_crop_box(lm, (240, 320, 3))
    mask = inner_lip_mask(lm, box)
    assert mask.shape == (S, S) and mask.dtype == np.float32
    c = S // 2
    assert mask[c, c] > 0.95 and mask[c - 20, c] == 0 and mask[c, 5] == 0
    assert inner_lip_mask(_face(gap=0.0), box).max() < 0.5  # closed lips: no hole


def test_refine_frame_changes_only_pixels_inside_the_mouth_box():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    lm = _face(gap=8.0)
    neutral = neutral_mouth_crop(frame, lm)
    assert neutral.shape == (S, S, 3)
    untrained = refine_frame(MouthRefiner().eval(), frame, lm, neutral)
    assert np.array_equal(untrained, frame) and untrained is not frame
    out = refine_frame(_perturbed(), frame, lm, neutral)
    x0, y0, x1, y1 = mouth_crop_box(lm, frame.shape)
    changed = np.any(out != frame, axis=-1)
    assert changed[y0:y1, x0:x1].any()
    changed[y0:y1, x0:x1] = False
    assert not changed.any()  # outside the box: untouched
    edge = np.any(out[y0:y1, x0:x1] != frame[y0:y1, x0:x1], axis=-1)
    assert not (edge[:2].any() or edge[-2:].any() or edge[:, :2].any() or edge[:, -2:].any())  # feathered in
    assert refine_frame(None, frame, lm, neutral) is frame
    with pytest.raises(ValueError, match="neutral mouth crop"):
        refine_frame(_perturbed(), frame, lm, neutral[:-1])


def test_refining_several_frames_at_once_matches_one_by_one():
    """refine_frames (the live renderer's batched pass) gives what refine_frame gives frame by frame, frames it
    leaves alone included (no strength, a mouth too small)."""
    rng = np.random.default_rng(1)
    refiner = _perturbed()
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    neutral_lm = _face(gap=2.0)
    neutral = neutral_mouth_crop(frame, neutral_lm)
    moved = [_face(gap=8.0), neutral_lm, _face(gap=12.0, centre=(110.0, 118.0)), _face(width=16.0, gap=4.0)]
    frames = [rng.integers(0, 256, frame.shape, dtype=np.uint8) for _ in moved]
    single = [refine_frame(refiner, f, m, neutral, neutral_lm) for f, m in zip(frames, moved)]
    batched = refine_frames(refiner, frames, moved, neutral, neutral_lm)
    assert sum(not np.array_equal(s, f) for s, f in zip(single, frames)) == 2  # two are left as rendered
    for s, b in zip(single, batched):
        assert np.abs(s.astype(int) - b).max() <= 1 and np.mean(s != b) < 1e-3
    assert refine_frames(None, frames, moved, neutral)[0] is frames[0]


def test_a_refiner_trained_at_several_sides_refines_a_small_mouth_near_its_own_resolution():
    """min_size > 0: a box smaller than S runs at its own side to the nearest multiple of 8 (fewer pixels through
    the network than enlarging it to S), within [min_size, S]; min_size 0 (the old refiners) keeps S."""
    cfg = MouthRefinerConfig(widths=(8, 16, 32), min_size=56)
    assert cfg.sizes == (56, 64, 72, 80, 88, 96)
    assert [cfg.crop_side(b) for b in (40, 59, 61, 74, 150)] == [56, 56, 64, 72, 96]
    assert MouthRefinerConfig().crop_side(74) == S
    with pytest.raises(ValueError, match="min_size"):
        MouthRefinerConfig(min_size=60)
    torch.manual_seed(0)
    refiner = MouthRefiner(cfg)
    torch.nn.init.normal_(refiner.conv_out.weight, std=0.05)
    refiner.eval()
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    neutral_lm, moved = _face(gap=2.0), _face(width=40.0, gap=10.0)  # box 72 px
    x0, y0, x1, y1 = mouth_crop_box(moved, frame.shape)
    assert cfg.crop_side(x1 - x0) == 72
    neutral = neutral_mouth_crop(frame, neutral_lm)
    seen = []
    hook = refiner.enc1[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1] * 2))
    out = refine_frame(refiner, frame, moved, neutral, neutral_lm)
    batched = refine_frames(refiner, [frame, frame], [moved, _face(width=80.0, gap=16.0)], neutral, neutral_lm)
    hook.remove()
    assert seen == [72, 72, 96]  # one pass per crop side
    changed = np.any(out != frame, axis=-1)
    assert changed.any() and not changed[:y0].any() and not changed[y1:].any()
    assert np.array_equal(batched[0], out) or np.abs(batched[0].astype(int) - out).max() <= 1
    assert sized_crop(neutral, 72).shape == (72, 72, 3) and sized_crop(neutral, S) is neutral
    window = refiner.window_for(72)
    assert window.shape == (1, 1, 72, 72) and float(window[0, 0, 0, 0]) == 0.0 and float(window.max()) == 1.0


def test_a_mouth_too_small_to_refine_is_left_as_rendered():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    small = _face(width=16.0, centre=(64.0, 60.0), gap=4.0)  # a 128 px output: the crop is under MIN_REFINE_SIDE
    x0, _, x1, _ = mouth_crop_box(small, frame.shape)
    assert x1 - x0 < MIN_REFINE_SIDE
    assert refine_frame(_perturbed(), frame, small, neutral_mouth_crop(frame, small)) is frame


def test_at_the_photos_own_mouth_opening_nothing_changes():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    neutral_lm = _face(gap=2.0)
    neutral = neutral_mouth_crop(frame, neutral_lm)
    refiner = _perturbed()
    assert refine_strength(neutral_lm, neutral_lm) == 0.0
    assert refine_frame(refiner, frame, neutral_lm, neutral, neutral_lm) is frame  # zero motion: the photo
    assert 0.0 < refine_strength(_face(gap=2.9), neutral_lm) < 1.0  # fades in over GATE_RAMP
    opened = _face(gap=12.0)
    assert refine_strength(opened, neutral_lm) == 1.0
    assert np.array_equal(refine_frame(refiner, frame, opened, neutral, neutral_lm),
                          refine_frame(refiner, frame, opened, neutral))


def test_the_refiner_exports_to_onnx(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    refiner = _perturbed()
    args = (torch.rand(1, 3, S, S), torch.rand(1, 3, S, S), torch.rand(1, 1, S, S))
    path = tmp_path / "mouth_refiner.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(refiner, args, str(path), input_names=["render", "neutral", "mask"],
                          output_names=["refined"], opset_version=17, dynamo=False)
        expected = refiner(*args).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: a.numpy() for n, a in zip(["render", "neutral", "mask"], args)})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_a_short_training_run_lowers_the_loss():
    from livehead.engine.training import mouth

    path = GRID / f"{GRID_TRAIN[0]}.mpg"
    if not path.exists():
        pytest.skip(f"GRID sample clips not found at {GRID}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pairs = mouth.build_pairs([mouth.load_clip(path)], sources=1, frames=slice(0, 75, 3), identity_share=0.0)
        fixed = mouth.sample_batch(pairs, np.arange(len(pairs)))

        def loss_of(refiner):
            render, neutral, mask, target, gate = fixed
            with torch.no_grad():
                refined = render + gate * (refiner(render, neutral, mask) - render)
                return float(mouth.refiner_loss(refined, target, mouth.loss_weight(refiner, mask)))

        before = loss_of(MouthRefiner().eval())
        refiner, summary = mouth.train_refiner(pairs, steps=40, batch=8, lr=3e-3, log=lambda _: None,
                                               ema_decay=0.0)
    finally:
        torch.set_num_threads(threads)  # later tests compare renders whose rounding depends on the thread count
    assert summary["steps"] == 40
    assert loss_of(refiner) < 0.97 * before


def test_the_shipped_weights_load_strictly_with_their_record():
    if not DEFAULT_PATH.exists():
        pytest.skip("no mouth refiner shipped (its selection rule did not pass)")
    refiner = load_mouth_refiner()
    assert isinstance(refiner, MouthRefiner) and not refiner.training
    from safetensors.torch import load_file

    assert set(load_file(str(DEFAULT_PATH))) == set(MouthRefiner(refiner.cfg).state_dict())
    record = json.loads(DEFAULT_PATH.with_suffix(".json").read_text())
    assert record["data"] == list(GRID_TRAIN) and record["held_out"] == list(GRID_HELD_OUT)
    assert not set(record["data"]) & set(record["held_out"])
    assert record["shipped"] and record["selection_rule"]
    psnr = record["heldout_mouth_psnr"]
    assert psnr["refined"] > psnr["render"]
