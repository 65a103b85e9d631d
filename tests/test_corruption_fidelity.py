"""Fidelity of the common corruptions to the authors' CIFAR-10-C code (``make_cifar_c.py``)
where it is easy to get subtly wrong: NumPy's float ranges, border modes, 8-bit steps.
Oracles are NumPy and SciPy (the reference's own libraries, or what they compute)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from assay.shift.corruptions import blur, digital, elastic_transform, glass_blur, snow, weather
from assay.shift.corruptions._common import rand
from assay.shift.corruptions._kernels import fold_symmetric


def _images(n: int, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images on the 8-bit grid, in float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, c, 8, 8, generator=g, dtype=torch.float64),
                                        size=(size, size), mode="bilinear")
    return (x * 255).round() / 255


def _on_8bit_grid(v: torch.Tensor) -> bool:
    return bool(((v * 255 - (v * 255).round()).abs() < 1e-6).all())


# ------------------------------------------------------------------------------ zoom blur
@pytest.mark.parametrize("severity, stop", list(enumerate((1.06, 1.11, 1.16, 1.21, 1.26), 1)))
def test_zoom_factors_are_numpys_arange_value_for_value(severity, stop):
    assert blur._zoom_factors(severity) == tuple(np.arange(1, stop, 0.01).tolist())


# ---------------------------------------------------------------------- elastic transform
def _fixed_affine(monkeypatch, inverse: torch.Tensor) -> None:
    """Make the elastic transform use ``inverse`` ([N, 3, 2]) instead of a random affine."""
    monkeypatch.setattr(digital, "_random_affine_inverse",
                        lambda n, h, w, jitter, generator, like: inverse.to(like))


def test_elastic_affine_border_is_reflect_101(monkeypatch):
    # translations by whole pixels, no displacement (severity 1): every output pixel is
    # one input pixel, read across the border as numpy.pad's "reflect" (reflect-101)
    x = torch.arange(2 * 8 * 10, dtype=torch.float64).view(2, 1, 8, 10) / 159
    eye = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    inverse = torch.stack([torch.cat([eye, torch.tensor([[-3.0, -2.0]])]),   # source p - (3, 2)
                           torch.cat([eye, torch.tensor([[3.0, 2.0]])])])    # source p + (3, 2)
    _fixed_affine(monkeypatch, inverse)
    y = elastic_transform(x, 1).numpy()
    a, b = x[0, 0].numpy(), x[1, 0].numpy()
    np.testing.assert_allclose(y[0, 0], np.pad(a, ((2, 0), (3, 0)), mode="reflect")[:8, :10],
                               atol=1e-12)
    np.testing.assert_allclose(y[1, 0], np.pad(b, ((0, 2), (0, 3)), mode="reflect")[2:, 3:],
                               atol=1e-12)


def test_elastic_affine_warp_matches_scipy_mirror(monkeypatch):
    # a rotation, scaling and shift that reads well outside the image: bilinear with
    # OpenCV's BORDER_REFLECT_101, which is SciPy's "mirror"
    x = _images(2, 3)
    angle = torch.tensor(0.3, dtype=torch.float64)
    rot = 1.15 * torch.stack([torch.stack([angle.cos(), angle.sin()]),
                              torch.stack([-angle.sin(), angle.cos()])])
    inverse = torch.cat([rot, torch.tensor([[-4.5, 2.25]], dtype=torch.float64)])
    _fixed_affine(monkeypatch, inverse.expand(2, 3, 2))
    y = elastic_transform(x, 1)
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float64)
    src = np.stack([xs.ravel(), ys.ravel(), np.ones(32 * 32)], 1) @ inverse.numpy()
    for img, out in zip(x.numpy(), y.numpy()):
        for ch, got in zip(img, out):
            expected = ndimage.map_coordinates(ch, [src[:, 1], src[:, 0]], order=1,
                                               mode="mirror").reshape(32, 32)
            np.testing.assert_allclose(got, expected.clip(0, 1), atol=1e-9)


def test_elastic_displacement_border_matches_map_coordinates_reflect(monkeypatch):
    # identity affine: the result is the reference's second step alone, SciPy's
    # map_coordinates(order=1, mode="reflect") at p + smoothed noise (skimage's gaussian,
    # mode "reflect", truncate 3), with the same noise drawn from the same generator
    x = _images(2, 3)
    eye = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    _fixed_affine(monkeypatch, eye.expand(2, 3, 2))
    alpha, sigma = 0.1 * 32, 0.03 * 32  # severity 5
    y = elastic_transform(x, 5, seed=0).numpy()
    noise = rand((2, 2, 32, 32), torch.Generator().manual_seed(0), x, -1.0, 1.0).numpy()
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float64)
    for img, out, (nx, ny) in zip(x.numpy(), y, noise):
        dx = ndimage.gaussian_filter(nx, sigma, mode="reflect", truncate=3) * alpha
        dy = ndimage.gaussian_filter(ny, sigma, mode="reflect", truncate=3) * alpha
        assert (xs + dx).min() < -0.5 and (ys + dy).max() > 31.5  # the border is exercised
        for ch, got in zip(img, out):
            expected = ndimage.map_coordinates(ch, [ys + dy, xs + dx], order=1, mode="reflect")
            np.testing.assert_allclose(got, expected.clip(0, 1), atol=1e-9)


def test_fold_symmetric_is_linear_interpolation_of_scipys_reflect():
    signal = np.random.default_rng(0).random(7)
    c = torch.linspace(-15.3, 21.7, 401, dtype=torch.float64)
    folded = fold_symmetric(c, 7).numpy()
    assert folded.min() >= 0 and folded.max() <= 6
    np.testing.assert_allclose(np.interp(folded, np.arange(7), signal),
                               ndimage.map_coordinates(signal, [c.numpy()], order=1,
                                                       mode="reflect"), atol=1e-12)


# ----------------------------------------------------------------- glass blur and snow
def _record_first_argument(monkeypatch, module, name: str) -> list[torch.Tensor]:
    """Wrap ``module.name`` so that each call's first argument is kept."""
    seen, original = [], getattr(module, name)

    def wrapper(v, *args, **kwargs):
        seen.append(v.clone())
        return original(v, *args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return seen


@pytest.mark.parametrize("severity", [2, 3, 5])
def test_glass_blur_truncates_its_first_blur_to_8_bits(monkeypatch, severity):
    # the reference jitters np.uint8(gaussian(x) * 255): floor, not round, of the blur
    x = _images(2, 3)
    seen = _record_first_argument(monkeypatch, blur, "_jitter")
    glass_blur(x, severity, seed=0)
    sigma = blur.GLASS[severity - 1][0]
    blurred = ndimage.gaussian_filter(x.numpy(), (0, 0, sigma, sigma), mode="nearest",
                                      truncate=4.0)
    expected = np.uint8(blurred * 255) / 255
    got = seen[0].numpy()
    assert _on_8bit_grid(seen[0])
    # equal, but where float rounding puts the blur within 1e-9 of a level (flat regions)
    off = np.abs(got - expected) > 1e-9
    assert off.mean() < 0.01
    assert (np.abs(blurred[off] * 255 - np.round(blurred[off] * 255)) < 1e-9).all()


def test_glass_blur_keeps_flat_8_bit_images():
    # float32 rounding of a blurred flat region must not drop its level by one
    x = (torch.arange(256.0) / 255).view(-1, 1, 1, 1).expand(-1, 3, 16, 16).contiguous()
    for severity in range(1, 6):
        torch.testing.assert_close(glass_blur(x, severity, seed=0), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_snow_layer_is_8_bit_before_and_after_the_motion_blur(monkeypatch, severity):
    # the reference truncates the flake layer to a uint8 PNG for ImageMagick and reads
    # back its 8-bit result
    x = torch.zeros(3, 3, 32, 32, dtype=torch.float64)
    seen = _record_first_argument(monkeypatch, weather, "motion_blur")
    y = snow(x, severity, seed=severity)
    assert _on_8bit_grid(seen[0]) and seen[0].max() > 0
    weight = weather.SNOW[severity - 1][-1]
    flakes = y - (1 - weight) * 0.5  # a black image whitens to (1 - w) / 2 everywhere
    assert _on_8bit_grid(flakes[y < 1])
