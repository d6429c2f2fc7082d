"""Geometry on matrices with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfish_lib import geometry


def test_scale_and_normalization():
    w = np.array([[3.0, 4.0], [0.0, 0.0]])  # row norms 5 and 0: rms = sqrt(12.5)
    assert geometry.scale(w) == pytest.approx(np.sqrt(12.5))
    assert geometry.scale(geometry.normalized(torch.tensor(w))) == pytest.approx(1.0)


def test_pca_recovers_a_planar_set_up_to_rotation_and_is_stable():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(40, 2)) * [3.0, 1.0]
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0][:, :2]
    w = plane @ basis.T  # 40 points on a plane inside 6 dimensions
    coords = geometry.pca_2d(w)
    # distances are preserved (up to the normalization), so the plane is recovered exactly
    d_in = np.linalg.norm(w[:, None] - w[None], axis=-1) / geometry.scale(w)
    d_out = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    assert np.allclose(d_in, d_out, atol=1e-9)
    assert np.array_equal(coords, geometry.pca_2d(w))
    # the components are sign-fixed, so a mirrored set gives the mirrored picture
    assert np.allclose(geometry.pca_2d(-w), -coords)
