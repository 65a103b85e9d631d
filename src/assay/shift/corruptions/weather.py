"""Weather corruptions: snow, frost, fog and spatter.

Reference: D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019; constants of CIFAR-10-C
(``make_cifar_c.py``). Lengths in pixels are those of 32 x 32 images times
``max(1, min(H, W) / 32)`` (see :func:`._common.pixel_scale`). Everything random is
drawn per image from the generator, textures included: frost uses a procedural ice
texture instead of the reference's photographs, fog a batched diamond-square
plasma fractal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import LUMA, colour, corruption, luma, pixel_scale, rand, randn, to_8bit
from ._kernels import conv2d_same, gaussian_blur, motion_blur, separable, zoom_matrix

# (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
SNOW = ((0.1, 0.2, 1.0, 0.6, 8, 3, 0.95), (0.1, 0.2, 1.0, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))
FROST = ((1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # image, frost
FOG = ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))  # strength, decay
# (mean, std, sigma, threshold, intensity or mud sigma, mud?)
SPATTER = ((0.62, 0.1, 0.7, 0.7, 0.5, False), (0.65, 0.1, 0.8, 0.7, 0.5, False),
           (0.65, 0.3, 1.0, 0.69, 0.5, False), (0.65, 0.1, 0.7, 0.69, 0.6, True),
           (0.65, 0.1, 0.5, 0.68, 0.6, True))
WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise, channel order as the reference
MUD = (63 / 255, 42 / 255, 20 / 255)


# ------------------------------------------------------------------------------ snow
@corruption
def snow(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    """Snow: a thresholded noise layer of flakes, motion-blurred, over a whitened image.

    Hendrycks & Dietterich, ICLR 2019. Per image: a flake layer N(mean, std) per pixel,
    zoomed about the centre, values below a threshold set to 0, clipped, truncated to 8
    bits, motion-blurred (see :func:`.blur.motion_blur`) at an angle uniform in [-135, -45)
    degrees and rounded to 8 bits (the reference's uint8 image through ImageMagick); the image
    becomes ``w x + (1 - w) max(x, 1.5 grey(x) + 0.5)`` and the layer and its 180-degree
    rotation are added. (mean, std, zoom, threshold, radius, sigma, w) per severity 1..5:
    (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8); radius and sigma times ``max(1, min(H, W) / 32)``.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for flakes and angles (default None: torch's default).
        seed: int >= 0, a fresh generator on ``x``'s device (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> snow(torch.rand(2, 3, 32, 32), 3, seed=0).shape
        torch.Size([2, 3, 32, 32])
    """
    mean, std, zoom, threshold, radius, sigma, weight = SNOW[severity - 1]
    n, _, h, w = x.shape
    s = pixel_scale(x)
    flakes = randn((n, 1, h, w), generator, x, mean, std)
    if zoom != 1:
        flakes = separable(flakes, zoom_matrix(h, zoom, x), zoom_matrix(w, zoom, x))
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes).clamp(0, 1)
    flakes = to_8bit(flakes, "floor")  # the reference's 8-bit grey image for ImageMagick
    angles = rand((n,), generator, x, -135.0, -45.0)
    flakes = to_8bit(motion_blur(flakes, radius * s, sigma * s, angles), "nearest")  # its PNG
    whitened = weight * x + (1 - weight) * torch.maximum(x, luma(x) * 1.5 + 0.5)
    return whitened + flakes + flakes.flip(-2, -1)


# ----------------------------------------------------------------------------- frost
def _value_noise(n: int, h: int, w: int, cell: float, generator: torch.Generator | None,
                 like: torch.Tensor) -> torch.Tensor:
    """Smooth noise [N, 1, H, W] in [0, 1]: uniform values every ``cell`` pixels, bilinear."""
    gh, gw = math.ceil(h / cell) + 1, math.ceil(w / cell) + 1
    grid = rand((n, 1, gh, gw), generator, like)
    size = (round((gh - 1) * cell) + 1, round((gw - 1) * cell) + 1)
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=True)[..., :h, :w]


def frost_texture(n: int, channels: int, h: int, w: int, generator: torch.Generator | None,
                  like: torch.Tensor) -> torch.Tensor:
    """Procedural ice on glass [N, C, H, W] in [0, 1], seeded per image.

    Grey level: a brightness uniform in [0.45, 0.8] per image (the range of the
    reference photographs' means), two octaves of smooth value noise (clouds), per-pixel
    grain, crystal edges (ridged noise: thin bright lines where a noise field crosses
    its middle value) and needles (sparse seeds drawn out in two directions 60 degrees
    apart, random per image). Colour: a blue tint of random strength per image (mostly
    grey-blue, sometimes teal) with the grey level as luma. Feature sizes are CIFAR
    pixels times ``max(1, min(H, W) / 32)``, like the reference's photographs resized
    to a fixed scale and cropped. On 32 x 32 crops the statistics are close to the
    photographs' (per-image mean 0.45-0.8, standard deviation about 0.1, strong
    pixel-level grain), and so is the mean change frost makes to CIFAR-10 images.
    """
    s = pixel_scale(like)
    level = rand((n, 1, 1, 1), generator, like, 0.45, 0.8)
    cloud = (0.6 * _value_noise(n, h, w, 10 * s, generator, like)
             + 0.4 * _value_noise(n, h, w, 4 * s, generator, like)) - 0.5
    grain = randn((n, 1, h, w), generator, like)
    ridges = (1 - (2 * _value_noise(n, h, w, 4 * s, generator, like) - 1).abs()) ** 8
    seeds = (rand((n, 1, h, w), generator, like) < 0.03).to(like.dtype)
    angle = rand((n,), generator, like, 0.0, 360.0)
    needles = (motion_blur(seeds, 3 * s, 2 * s, angle, border="zeros")
               + motion_blur(seeds, 3 * s, 2 * s, angle + 60.0, border="zeros"))
    grey = level + 0.25 * cloud + 0.05 * grain + 0.2 * (ridges - 0.12) + 0.5 * (needles - 0.03)
    if channels == 1:
        return grey.clamp(0, 1)
    strength = rand((n, 1, 1, 1), generator, like) ** 2
    tint = torch.cat([1 - 0.5 * strength, 1 - 0.1 * strength, torch.ones_like(strength)], 1)
    tint = tint / (LUMA[0] * tint[:, 0:1] + LUMA[1] * tint[:, 1:2] + LUMA[2] * tint[:, 2:3])
    return (grey * tint).clamp(0, 1)


@corruption
def frost(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    """Frost: ``a x + b F`` with F a procedural ice texture per image.

    Hendrycks & Dietterich, ICLR 2019. (a, b) per severity 1..5: (1, 0.2), (1, 0.3),
    (0.9, 0.4), (0.85, 0.4), (0.75, 0.45). The reference crops one of five frost
    photographs; shipping no image files, F is synthesised by :func:`frost_texture`.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the texture (default None: torch's default one).
        seed: int >= 0, a fresh generator on ``x``'s device (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> frost(torch.rand(2, 3, 32, 32), 5, seed=0).shape
        torch.Size([2, 3, 32, 32])
    """
    a, b = FROST[severity - 1]
    n, c, h, w = x.shape
    return a * x + b * frost_texture(n, c, h, w, generator, x)


# ------------------------------------------------------------------------------- fog
def plasma_fractal(n: int, size: int, decay: float, generator: torch.Generator | None,
                   like: torch.Tensor) -> torch.Tensor:
    """Diamond-square height maps [N, size, size] in [0, 1] (``size`` a power of two).

    The map wraps around (a torus). Each pass halves the step: square centres get the
    mean of their four corners, edge midpoints the mean of their four neighbours, each
    plus uniform noise of amplitude ``wibble ** 2``; ``wibble`` starts at 100 and is
    divided by ``decay`` after each pass (the reference's parameters). Each map is then
    rescaled to [0, 1].
    """
    maps = torch.zeros(n, size, size, dtype=like.dtype, device=like.device)
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        maps[:, half::step, half::step] = (
            squares / 4 + rand(squares.shape, generator, like, -1.0, 1.0) * wibble ** 2)
        centres = maps[:, half::step, half::step]
        top = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        maps[:, ::step, half::step] = (
            top / 4 + rand(top.shape, generator, like, -1.0, 1.0) * wibble ** 2)
        left = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        maps[:, half::step, ::step] = (
            left / 4 + rand(left.shape, generator, like, -1.0, 1.0) * wibble ** 2)
        step //= 2
        wibble /= decay
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low).clamp(min=1e-12)


@corruption
def fog(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    """Fog: add a plasma fractal, then rescale: ``(x + t P) * m / (m + t)``, m = max of x.

    Hendrycks & Dietterich, ICLR 2019. (strength t, fractal decay) per severity 1..5:
    (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75). The fractal P (one per image,
    shared by the channels) is :func:`plasma_fractal` on the smallest power of two that
    covers the image, cropped, as the reference does with 32 for CIFAR-10; its features
    thus follow the image size.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the fractal (default None: torch's default one).
        seed: int >= 0, a fresh generator on ``x``'s device (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> fog(torch.rand(2, 1, 28, 28), 4, seed=0).shape
        torch.Size([2, 1, 28, 28])
    """
    strength, decay = FOG[severity - 1]
    n, _, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()
    fractal = plasma_fractal(n, size, decay, generator, x)[:, None, :h, :w]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * fractal) * peak / (peak + strength)


# --------------------------------------------------------------------------- spatter
def _dilate(mask: torch.Tensor, square: bool) -> torch.Tensor:
    """Binary dilation of a {0, 1} float mask by the 3 x 3 square or the 3 x 3 cross."""
    p = F.pad(mask, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[..., :-2, 1:-1], p[..., 1:-1, 1:-1]), p[..., 2:, 1:-1])
    if square:
        p = F.pad(rows, (1, 1))
        return torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return torch.maximum(torch.maximum(rows, p[..., 1:-1, :-2]), p[..., 1:-1, 2:])


def _distance_to(edges: torch.Tensor, limit: int) -> torch.Tensor:
    """Euclidean distance [N, 1, H, W] from each pixel to the nearest ``edges`` pixel,
    capped at ``limit`` (also where an image has no edge). Exact: the distance along
    each row comes from running max / min of edge positions, then each column takes
    the minimum of ``row_distance(y') ** 2 + (y - y') ** 2`` over |y - y'| <= limit."""
    w = edges.shape[-1]
    mask = edges[:, 0]  # [N, H, W]
    cols = torch.arange(w, device=edges.device, dtype=torch.float32).expand_as(mask)
    big = float(2 * w + limit)
    left = torch.where(mask, cols, -big).cummax(-1).values  # last edge at or left of x
    right = torch.where(mask, cols, big).flip(-1).cummin(-1).values.flip(-1)
    across = torch.minimum(cols - left, right - cols).clamp_(max=limit) ** 2
    best = across.clone()
    for dy in range(1, min(limit, mask.shape[1] - 1) + 1):
        torch.minimum(best[:, dy:], across[:, :-dy] + dy * dy, out=best[:, dy:])
        torch.minimum(best[:, :-dy], across[:, dy:] + dy * dy, out=best[:, :-dy])
    return best.clamp_(max=limit * limit).sqrt_().unsqueeze(1)


def _equalise(levels: torch.Tensor, count: int) -> torch.Tensor:
    """Histogram equalisation of integer levels in [0, count) to [0, 255], per image
    (OpenCV's ``equalizeHist``)."""
    n = levels.shape[0]
    flat = levels.reshape(n, -1).long()
    hist = torch.zeros(n, count, dtype=torch.float32, device=levels.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    cdf = hist.cumsum(1)
    first = cdf.gather(1, flat.amin(1, keepdim=True))
    lut = ((cdf - first) * 255 / (cdf[:, -1:] - first).clamp(min=1)).round().clamp(0, 255)
    return lut.gather(1, flat).reshape(levels.shape).to(levels.dtype)


def _water(liquid: torch.Tensor, intensity: float, s: float) -> torch.Tensor:
    """Shading [N, 1, H, W] of water drops: the reference's relief of the distance to the
    drops' outlines (Euclidean, capped at 20 px, 3 x 3 blur, equalised, embossed, 3 x 3
    blur) times the liquid layer, scaled to max ``intensity`` per image. Outlines are the
    drops' inner boundary pixels instead of Canny edges."""
    box = torch.full((3, 3), 1 / 9, dtype=liquid.dtype, device=liquid.device)
    emboss = torch.tensor([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=liquid.dtype,
                          device=liquid.device)
    wet = (liquid > 0).to(liquid.dtype)
    outline = wet * _dilate(1 - wet, square=True)  # wet pixels next to a dry one
    limit = round(20 * s)
    dist = _distance_to(outline > 0, limit).to(liquid.dtype)
    dist = conv2d_same(dist, box, "reflect").floor()
    dist = _equalise(dist, limit + 1)
    dist = conv2d_same(dist, emboss, "reflect").round().clamp(0, 255)
    dist = conv2d_same(dist, box, "reflect")
    shade = liquid * dist
    return shade / shade.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12) * intensity


@corruption
def spatter(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    """Spatter: water drops (severities 1-3) or mud (4-5) on the lens.

    Hendrycks & Dietterich, ICLR 2019; one of the four held-out corruptions. A liquid
    layer N(mean, std) per pixel is Gaussian-blurred (sigma) and cut below a threshold.
    Water adds pale turquoise shaded by the relief of :func:`_water`; mud paints brown
    where the Gaussian-blurred (mud sigma) drop mask exceeds 0.8. (mean, std, sigma,
    threshold, intensity or mud sigma) per severity 1..5: (0.62, 0.1, 0.7, 0.7, 0.5),
    (0.65, 0.1, 0.8, 0.7, 0.5), (0.65, 0.3, 1, 0.69, 0.5), (0.65, 0.1, 0.7, 0.69, 0.6),
    (0.65, 0.1, 0.5, 0.68, 0.6); sigmas and the 20-pixel distance cap times
    ``max(1, min(H, W) / 32)``. Colours become their luma for grey images.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the drops (default None: torch's default one).
        seed: int >= 0, a fresh generator on ``x``'s device (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> spatter(torch.rand(2, 3, 32, 32), 4, seed=0).shape
        torch.Size([2, 3, 32, 32])
    """
    mean, std, sigma, threshold, strength, mud = SPATTER[severity - 1]
    n, c, h, w = x.shape
    s = pixel_scale(x)
    liquid = gaussian_blur(randn((n, 1, h, w), generator, x, mean, std), sigma * s)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if not mud:
        return x + _water(liquid, strength, s) * colour(WATER, c, x)
    mask = gaussian_blur((liquid > threshold).to(x.dtype), strength * s)
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask)
    return x * (1 - mask) + colour(MUD, c, x) * mask
