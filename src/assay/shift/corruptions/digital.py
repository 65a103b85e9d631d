"""Digital corruptions: brightness, contrast, saturation, pixelation, elastic transform.

Reference: D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019; constants of CIFAR-10-C
(``make_cifar_c.py``). JPEG compression lives in :mod:`.jpeg`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import LUMA, corruption, rand
from ._kernels import box_resize_matrix, fold_symmetric, gaussian_blur, separable

BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to the HSV value
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # factor on the deviation from the channel mean
SATURATE = ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2))  # S * a + b
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)  # size ratio of the intermediate image
# (alpha, sigma, affine jitter) as fractions of the image size
ELASTIC = ((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
           (0.1, 0.03, 0.03))


@corruption
def brightness(x: torch.Tensor, severity: int,
               generator: torch.Generator | None) -> torch.Tensor:
    """Brightness: add b to the value channel in HSV (clipped to 1), hue and saturation kept.

    Hendrycks & Dietterich, ICLR 2019. b per severity 1..5: 0.05, 0.1, 0.15, 0.2, 0.3.
    Computed in closed form without an HSV round trip: with V = max over channels,
    the result is ``x * V' / V`` where V' = min(V + b, 1) (grey V' where V = 0); a grey
    image is its own V. Deterministic (``generator`` and ``seed`` are unused).

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: unused (default None). seed: unused (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> brightness(torch.rand(2, 3, 32, 32), 3).shape
        torch.Size([2, 3, 32, 32])
    """
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + BRIGHTNESS[severity - 1]).clamp(max=1)
    return torch.where(value > 0, x * (new_value / value.clamp(min=1e-12)), new_value)


@corruption
def contrast(x: torch.Tensor, severity: int,
             generator: torch.Generator | None) -> torch.Tensor:
    """Contrast: ``(x - m) * c + m`` with m the per-image, per-channel mean.

    Hendrycks & Dietterich, ICLR 2019. c per severity 1..5: 0.75, 0.5, 0.4, 0.3, 0.15.
    Deterministic (``generator`` and ``seed`` are unused).

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: unused (default None). seed: unused (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> contrast(torch.rand(2, 1, 28, 28), 5).shape
        torch.Size([2, 1, 28, 28])
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * CONTRAST[severity - 1] + mean


@corruption
def saturate(x: torch.Tensor, severity: int,
             generator: torch.Generator | None) -> torch.Tensor:
    """Saturation: HSV saturation S becomes ``clip(S * a + b)``, hue and value kept.

    Hendrycks & Dietterich, ICLR 2019; one of the four held-out corruptions. (a, b) per
    severity 1..5: (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2). Closed form: each
    channel becomes ``V - (V - x) * S' / S``; grey pixels (S = 0) have hue 0 as in
    scikit-image, so a positive b tints them red as in the reference. Grey images are
    processed as grey RGB and turned back into luma, so severities 1-3 leave them
    unchanged. Deterministic (``generator`` and ``seed`` are unused).

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: unused (default None). seed: unused (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> saturate(torch.rand(2, 3, 32, 32), 4).shape
        torch.Size([2, 3, 32, 32])
    """
    a, b = SATURATE[severity - 1]
    if x.shape[1] == 1:  # S = 0 everywhere: (V, V (1 - b), V (1 - b)), back to luma
        return x * (LUMA[0] + (LUMA[1] + LUMA[2]) * (1 - b))
    value = x.amax(dim=1, keepdim=True)
    spread = value - x.amin(dim=1, keepdim=True)
    sat = spread / value.clamp(min=1e-12)
    new_sat = (sat * a + b).clamp(0, 1)
    coloured = value - (value - x) * (new_sat / sat.clamp(min=1e-12))
    grey_tint = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    grey = value * (1 - new_sat * grey_tint)
    return torch.where(spread > 0, coloured, grey)


@corruption
def pixelate(x: torch.Tensor, severity: int,
             generator: torch.Generator | None) -> torch.Tensor:
    """Pixelation: box-downsample to ``int(r * size)`` pixels, box-upsample back.

    Hendrycks & Dietterich, ICLR 2019 (PIL's ``BOX`` resampling). Ratio r per severity
    1..5: 0.95, 0.9, 0.85, 0.75, 0.65, applied to height and width; relative, so no size
    scaling. Resampling has PIL's box-filter weights; both steps fold into one [H, H]
    and one [W, W] matrix. Deterministic (``generator`` and ``seed`` are unused).

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: unused (default None). seed: unused (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> pixelate(torch.rand(2, 3, 32, 32), 5).shape
        torch.Size([2, 3, 32, 32])
    """
    ratio = PIXELATE[severity - 1]
    h, w = x.shape[-2:]
    small_h, small_w = max(1, int(h * ratio)), max(1, int(w * ratio))
    mh = box_resize_matrix(small_h, h, x) @ box_resize_matrix(h, small_h, x)
    mw = box_resize_matrix(small_w, w, x) @ box_resize_matrix(w, small_w, x)
    return separable(x, mh, mw)


def _random_affine_inverse(n: int, h: int, w: int, jitter: float,
                           generator: torch.Generator | None,
                           like: torch.Tensor) -> torch.Tensor:
    """[N, 3, 2] maps from output (x, y, 1) to source (x, y): the inverse of the affine
    map that moves three points around the centre by uniform(-jitter, jitter)."""
    cx, cy, half = w // 2, h // 2, min(h, w) // 3
    src = torch.tensor([[cx + half, cy + half], [cx + half, cy - half],
                        [cx - half, cy - half]], dtype=like.dtype, device=like.device)
    dst = src + rand((n, 3, 2), generator, like, -jitter, jitter)
    dst_h = torch.cat([dst, torch.ones(n, 3, 1, dtype=like.dtype, device=like.device)], 2)
    return torch.linalg.solve(dst_h, src.expand(n, 3, 2))


@corruption
def elastic_transform(x: torch.Tensor, severity: int,
                      generator: torch.Generator | None) -> torch.Tensor:
    """Elastic transform: a random affine warp plus a smooth random displacement field.

    Hendrycks & Dietterich, ICLR 2019 (after Simard et al., ICDAR 2003). With S =
    min(H, W), (alpha, sigma, jitter) per severity 1..5 are S times (0, 0, 0.08),
    (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03): three
    points around the centre move by uniform(-jitter, jitter) and define the affine map;
    the displacement is uniform(-1, 1) noise per pixel and axis, Gaussian-smoothed
    (sigma, half-sample symmetric border, truncated at 3 sigma) and scaled by alpha.
    Already relative to the size, so these follow any H, W. The reference resamples twice:
    the affine warp (OpenCV, border reflect-101: ``d c b | a b c d | c b a``), then the
    displacement (SciPy ``map_coordinates``, mode "reflect": half-sample symmetric, ``c b
    a | a b c d | d c b``, since SciPy 1.6). Here both compose into one bilinear
    ``grid_sample``, which blurs less; each border is kept: displaced points are mirrored
    into the grid half-sample symmetrically, then the affine map reads the image with
    reflect-101.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the warp (default None: torch's default one).
        seed: int >= 0, a fresh generator on ``x``'s device (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> elastic_transform(torch.rand(2, 3, 32, 32), 3, seed=0).shape
        torch.Size([2, 3, 32, 32])
    """
    n, _, h, w = x.shape
    size = min(h, w)
    alpha, sigma, jitter = (v * size for v in ELASTIC[severity - 1])
    inverse = _random_affine_inverse(n, h, w, jitter, generator, x)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype, device=x.device),
                            torch.arange(w, dtype=x.dtype, device=x.device), indexing="ij")
    points = torch.stack([xs, ys], -1).expand(n, h, w, 2)
    if alpha > 0:
        noise = rand((n, 2, h, w), generator, x, -1.0, 1.0)
        shift = gaussian_blur(noise, sigma, mode="symmetric", truncate=3.0) * alpha
        points = points + shift.permute(0, 2, 3, 1)
        # the reference reads its affine-warped image there with SciPy's "reflect"
        points = torch.stack([fold_symmetric(points[..., 0], w),
                              fold_symmetric(points[..., 1], h)], -1)
    ones = torch.ones(n, h, w, 1, dtype=x.dtype, device=x.device)
    source = torch.cat([points, ones], -1).reshape(n, h * w, 3) @ inverse  # [N, HW, 2]
    last_xy = torch.tensor([w - 1, h - 1], dtype=x.dtype, device=x.device)
    grid = (2 * source / last_xy - 1).reshape(n, h, w, 2)
    # reflection about the edge pixels' centres (align_corners) is reflect-101
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=True)
