"""Pure guidance maths: views, spherical distance, eps change."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipguide.guidance.loss import make_views, spherical_distance
from clipguide.guidance.update import eps_change
from clipguide.scoring.metrics import cosine


def test_single_view_is_centre_square_resize():
    img = torch.rand(2, 3, 20, 32)
    out = make_views(img, 1, 8)
    ref = F.interpolate(img[:, :, :, 6:26], size=(8, 8), mode="bilinear", antialias=True)
    torch.testing.assert_close(out, ref)


def test_views_shape_determinism_and_gradient():
    img = torch.rand(2, 3, 16, 16, requires_grad=True)
    a = make_views(img, 4, 8, generator=torch.Generator().manual_seed(1))
    b = make_views(img, 4, 8, generator=torch.Generator().manual_seed(1))
    c = make_views(img, 4, 8, generator=torch.Generator().manual_seed(2))
    assert a.shape == (8, 3, 8, 8)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    (grad,) = torch.autograd.grad(a.sum(), img)
    assert grad.abs().sum() > 0


def test_views_rejects_zero_count():
    with pytest.raises(ValueError, match="count"):
        make_views(torch.rand(1, 3, 8, 8), 0, 8)


def test_spherical_distance_is_half_squared_angle():
    x, y = torch.randn(2, 5, 16, dtype=torch.float16)
    theta = torch.acos(cosine(x, y).clamp(-1, 1))
    d = spherical_distance(x, y)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, theta.pow(2) / 2, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(spherical_distance(x, x), torch.zeros(5), atol=1e-3, rtol=0)
    torch.testing.assert_close(
        spherical_distance(torch.tensor([[1.0, 0]]), torch.tensor([[-1.0, 0]])),
        torch.tensor([math.pi**2 / 2]),
    )


def test_eps_change_plain_and_nonfinite():
    grad = torch.randn(3, 4, 2, 2)
    grad[1, 0, 0, 0] = float("nan")
    delta, finite = eps_change(grad, 2.0, 0.5)
    assert finite.tolist() == [True, False, True]
    torch.testing.assert_close(delta[0], grad[0] * 1.0)
    assert torch.all(delta[1] == 0)


def test_eps_change_normalised_to_reference_and_capped():
    grad = torch.randn(2, 4, 3, 3)
    ref = torch.randn(2, 4, 3, 3) * torch.tensor([0.1, 3.0]).view(2, 1, 1, 1)
    delta, _ = eps_change(grad, 7.0, 0.5, reference=ref)
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), 0.5 * ref.flatten(1).norm(dim=1))
    # direction is the gradient's
    torch.testing.assert_close(
        F.cosine_similarity(delta.flatten(1), grad.flatten(1)), torch.ones(2)
    )
    capped, _ = eps_change(grad, 7.0, 0.5, reference=ref, max_rms=0.2)
    rms = capped.flatten(1).pow(2).mean(1).sqrt()
    assert rms[1] == pytest.approx(0.2, rel=1e-4)
    torch.testing.assert_close(capped[0], delta[0])  # under the cap: unchanged
