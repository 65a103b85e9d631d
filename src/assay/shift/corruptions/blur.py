"""Blur corruptions: defocus, glass, motion, zoom and Gaussian blur.

Reference: D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019; constants of CIFAR-10-C
(``make_cifar_c.py``). Lengths in pixels (radii, sigmas, jitter distance) are those of
32 x 32 images, multiplied by ``max(1, min(H, W) / 32)`` for larger images and kept as
they are for smaller ones (see :func:`._common.pixel_scale`). Zoom factors are relative
and need no scaling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import corruption, pixel_scale, rand, randint, to_8bit
from ._kernels import (apply_pixel_operator, conv2d_same, gaussian_blur as _blur,
                       motion_blur as _motion, zoom_blur_operator)

DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))  # radius, alias sigma
GLASS = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma, delta, it.
MOTION = ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5))  # radius, sigma
ZOOM_STOPS = (1.06, 1.11, 1.16, 1.21, 1.26)  # factors np.arange(1, stop, 0.01)
GAUSSIAN_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)


def _disk_kernel(radius: float, alias_sigma: float, like: torch.Tensor) -> torch.Tensor:
    """Aliased disk of ``radius`` normalised to sum 1, then smoothed by a small Gaussian
    (3 x 3, or 5 x 5 for radii above 8) as in the reference ``disk``."""
    ksize = 3 if radius <= 8 else 5
    half = math.floor(radius) + ksize // 2
    t = torch.arange(-half, half + 1, dtype=torch.float64, device=like.device)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius ** 2).to(torch.float64)
    disk /= disk.sum()
    r = ksize // 2
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64, device=like.device)
                          / alias_sigma) ** 2)
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    smooth = F.conv2d(disk[None, None], g[None, None], padding=r)[0, 0]  # zeros around
    return smooth.to(like.dtype)


@corruption
def defocus_blur(x: torch.Tensor, severity: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Defocus blur: correlation with an anti-aliased disk (OpenCV's reflect-101 border).

    Hendrycks & Dietterich, ICLR 2019. (disk radius, smoothing sigma) in pixels per
    severity 1..5: (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1), times
    ``max(1, min(H, W) / 32)``. Deterministic (``generator`` and ``seed`` are accepted and
    unused).

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: unused (default None). seed: unused (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> defocus_blur(torch.rand(2, 3, 32, 32), 5).shape
        torch.Size([2, 3, 32, 32])
    """
    radius, alias = DEFOCUS[severity - 1]
    s = pixel_scale(x)
    return conv2d_same(x, _disk_kernel(radius * s, alias * s, x), "reflect")


def _jitter(x: torch.Tensor, delta: int, generator: torch.Generator | None) -> torch.Tensor:
    """Replace each pixel (all channels) by the one at a random offset (dy, dx), each
    uniform in {-delta, ..., delta - 1}, read from ``x``; rows and columns with an index
    outside [delta + 1, size - delta] keep their pixel, as in the reference's loops."""
    n, c, h, w = x.shape
    offsets = randint(2 * delta, (2, n, h, w), generator, x) - delta
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys > delta) & (ys <= h - delta) & (xs > delta) & (xs <= w - delta)
    offsets = offsets * inside
    source = (ys + offsets[0]) * w + (xs + offsets[1])  # [N, H, W], always in range
    index = source.reshape(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)


@corruption
def glass_blur(x: torch.Tensor, severity: int,
               generator: torch.Generator | None) -> torch.Tensor:
    """Glass blur: Gaussian blur, truncation to 8 bits, local pixel jitter, Gaussian blur.

    Hendrycks & Dietterich, ICLR 2019. (sigma, max shift delta, iterations) per severity
    1..5: (0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2); sigma and
    delta times ``max(1, min(H, W) / 32)`` (delta rounded). The first blur is computed in
    float64 and truncated to the 1/255 grid as the reference's ``np.uint8(blur * 255)``
    (which darkens by half a level on average); the last one is not quantised.

    The reference sweeps the pixels and "swaps" each with a random neighbour through
    ``a[p], a[q] = a[q], a[p]`` on NumPy views, which copies rather than swaps: every
    pixel takes the value of the pixel at a random offset in {-delta, ..., delta - 1}
    on each axis. With delta = 1 the neighbours read were not yet visited, so one
    iteration is exactly one batched gather from the previous iteration's image, which
    is what runs here (for any delta; the sweep's order no longer matters).

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the offsets (default None: torch's default one).
        seed: int >= 0, a fresh generator on ``x``'s device (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> glass_blur(torch.rand(2, 3, 32, 32), 4, seed=0).shape
        torch.Size([2, 3, 32, 32])
    """
    sigma, delta, iterations = GLASS[severity - 1]
    s = pixel_scale(x)
    delta = max(1, round(delta * s))
    out = to_8bit(_blur(x.double(), sigma * s), "floor").to(x.dtype)  # np.uint8(blur * 255)
    for _ in range(iterations):
        out = _jitter(out, delta, generator)
    return _blur(out, sigma * s)


@corruption
def motion_blur(x: torch.Tensor, severity: int,
                generator: torch.Generator | None) -> torch.Tensor:
    """Motion blur: a one-sided Gaussian line kernel at a random angle per image.

    Hendrycks & Dietterich, ICLR 2019 (ImageMagick's ``MotionBlurImage``). (radius,
    sigma) in pixels per severity 1..5: (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5), times
    ``max(1, min(H, W) / 32)``; angle uniform in [-45, 45) degrees per image. See
    :func:`._kernels.motion_blur` for the kernel.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the angles (default None: torch's default one).
        seed: int >= 0, a fresh generator on ``x``'s device (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> motion_blur(torch.rand(2, 1, 28, 28), 3, seed=0).shape
        torch.Size([2, 1, 28, 28])
    """
    radius, sigma = MOTION[severity - 1]
    s = pixel_scale(x)
    angles = rand((x.shape[0],), generator, x, -45.0, 45.0)
    return _motion(x, radius * s, sigma * s, angles)


def _zoom_factors(severity: int) -> tuple[float, ...]:
    """The reference's ``np.arange(1, stop, 0.01)`` in float64, value for value.

    NumPy fills a float range as ``start + i * ((start + step) - start)``, not
    ``start + i * step``: factor 25 is 1.2500000000000002, not 1.25, and ``clipped_zoom``
    sizes its grid from it (on 32 pixels, round(26 * factor) is 33, not 32)."""
    start, step, stop = 1.0, 0.01, ZOOM_STOPS[severity - 1]
    delta = (start + step) - start
    count = math.ceil((stop - start) / step)
    return (start, start + step) + tuple(start + i * delta for i in range(2, count))


@corruption
def zoom_blur(x: torch.Tensor, severity: int,
              generator: torch.Generator | None) -> torch.Tensor:
    """Zoom blur: the mean of the image and its zooms about the centre by 1, 1.01, ...

    Hendrycks & Dietterich, ICLR 2019. Zoom factors per severity 1..5: the reference's
    ``np.arange(1, stop, 0.01)`` for stop 1.06, 1.11, 1.16, 1.21, 1.26, value for value
    (7, 12, 16, 21, 26 factors, the largest 1.06, 1.11, 1.15, 1.20, 1.25; see
    :func:`_zoom_factors`). Each zoom is the reference's ``clipped_zoom``
    (crop ceil(size / factor) pixels, first at (size - crop) // 2, linear resize, keep
    the centre), so it is slightly off-centre as there. Factors are relative, so no size
    scaling. The whole mean is one cached [H*W, H*W] linear operator (dense up to 64 x 64
    pixels, sparse beyond) applied in a single product. Deterministic (``generator`` and
    ``seed`` are accepted and unused).

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: unused (default None). seed: unused (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> zoom_blur(torch.rand(2, 3, 32, 32), 2).shape
        torch.Size([2, 3, 32, 32])
    """
    op = zoom_blur_operator(x.shape[2], x.shape[3], _zoom_factors(severity), x.device, x.dtype)
    return apply_pixel_operator(x, op)


@corruption
def gaussian_blur(x: torch.Tensor, severity: int,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian blur (scikit-image's ``gaussian``: edge border, truncated at 4 sigma).

    Hendrycks & Dietterich, ICLR 2019; one of the four held-out corruptions. Sigma in
    pixels per severity 1..5: 0.4, 0.6, 0.7, 0.8, 1.0, times ``max(1, min(H, W) / 32)``.
    Deterministic (``generator`` and ``seed`` are accepted and unused).

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: unused (default None). seed: unused (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> gaussian_blur(torch.rand(2, 3, 32, 32), 5).shape
        torch.Size([2, 3, 32, 32])
    """
    return _blur(x, GAUSSIAN_SIGMA[severity - 1] * pixel_scale(x))
