"""The warp's displacement kernel (kernels/warp_scan.py): bit for bit the numpy scan conversion, on meshes with
overlapping, degenerate and out-of-frame triangles, and the renderer draws through it."""

from __future__ import annotations

import numpy as np
import pytest

from livehead.kernels.warp_scan import displacement, displacement_reference, random_mesh


@pytest.mark.parametrize("size, step, seed", [(256, 2.0, 0), (96, 1.5, 1), (300, 3.7, 2), (64, 2.0, 3)])
def test_the_kernel_equals_the_numpy_scan_conversion_bit_for_bit(size, step, seed):
    rng = np.random.default_rng(seed)
    src, dst, triangles = random_mesh(rng, size)
    nx, ny = max(2, round(size / step)), max(2, round(size * 0.8 / step))  # not square: rows and columns differ
    sx, sy = size / nx, size * 0.8 / ny
    kernel = displacement(src, dst, triangles, nx, ny, sx, sy)
    reference = displacement_reference(src, dst, triangles, nx, ny, sx, sy)
    assert kernel.shape == reference.shape == (ny, nx, 2) and kernel.dtype == np.float32
    assert (np.abs(reference) > 0).mean() > 0.5, "the mesh covers most nodes: the test exercises the fill"
    np.testing.assert_array_equal(kernel, reference)


def test_nodes_outside_every_triangle_stay_zero_and_an_identity_mesh_moves_nothing():
    rng = np.random.default_rng(4)
    src, dst, triangles = random_mesh(rng, 128)
    far = dst + 1000.0  # every triangle out of frame
    assert not displacement(src, far, triangles, 64, 64, 2.0, 2.0).any()
    assert np.abs(displacement(dst, dst, triangles, 64, 64, 2.0, 2.0)).max() < 1e-9  # rounding only
    shifted = displacement(dst + [3.0, -2.0], dst, triangles, 64, 64, 2.0, 2.0)  # photo 3 px right, 2 px up
    inside = np.abs(shifted).sum(-1) > 0
    assert inside.mean() > 0.9
    np.testing.assert_allclose(shifted[inside], np.broadcast_to([3.0, -2.0], shifted[inside].shape), atol=1e-4)


def test_the_renderer_draws_with_the_kernel():
    from livehead.engine.motion import renderer as photo_renderer

    rng = np.random.default_rng(5)
    src, dst, triangles = random_mesh(rng, 200)
    grid = photo_renderer._NodeGrid(200, 160, None)
    np.testing.assert_array_equal(photo_renderer.node_displacement(grid, src, dst, triangles),
                                  displacement_reference(src, dst, triangles, grid.nx, grid.ny, grid.sx, grid.sy))
