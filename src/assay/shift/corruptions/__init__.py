"""Common corruptions of Hendrycks & Dietterich as batched, seeded torch transforms.

Reference: D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019 (ImageNet-C, CIFAR-10-C). The 15
benchmark corruptions and the 4 held-out ones, with the CIFAR-10-C constants per
severity (``make_cifar_c.py`` of the authors' repository), written natively in torch.

Every corruption has the signature ``name(x, severity, *, generator=None, seed=None)``:

- ``x``: float tensor [N, C, H, W], C = 1 (grey) or 3 (RGB), values in [0, 1], H and W
  at least 8; any device and floating dtype (half precision is computed in float32).
- ``severity``: int in 0..5; 0 returns a copy of ``x``.
- ``generator`` / ``seed``: the only source of randomness; the same seed gives the same
  output on the same device (CPU and CUDA generators give different streams). With
  neither, torch's default generator is used (and never seeded by assay).
- Returns a tensor shaped, typed and placed like ``x``, clipped to [0, 1]. Only
  ``jpeg_compression`` quantises to 8 bits; the reference saves every result as uint8.

Image size: CIFAR-10-C's lengths in pixels (blur radii and sigmas, motion length,
jitter distance, snow streaks, texture features) are multiplied by
``max(1, min(H, W) / 32)``: larger images get proportionally wider kernels, smaller
ones (MNIST's 28, digits' 8) keep the CIFAR pixel values, since shrinking them would
make the blurs sub-pixel no-ops. Relative parameters (zoom factors, pixelation ratio,
the elastic transform's fractions of the size, the fog fractal's extent) follow the
size exactly. Grey images are processed as grey RGB where colour matters (saturate,
frost, spatter, snow).

Departures from the reference, each documented in its function: frost uses a procedural
ice texture instead of five photographs; the elastic transform warps once instead of
twice (each warp's border kept: reflect-101 for the affine one, half-sample symmetric for
the displacement); spatter's water drops take the drops' outlines instead of Canny edges;
outputs are not quantised to 8 bits (the 8-bit steps between two operations, in glass
blur and snow, are kept). The others reproduce the reference's arithmetic, its quirks
included (glass blur's "swap" that copies, ``clipped_zoom``'s off-centre crop, the zoom
factors of NumPy's ``arange`` such as 1.2500000000000002, PIL's box filter); the tests
check several against SciPy, PIL and colorsys.

Example:
    >>> import torch
    >>> from assay.shift.corruptions import corrupt, list_corruptions
    >>> x = torch.rand(8, 3, 32, 32)
    >>> y = corrupt(x, "fog", 3, seed=0)
    >>> [name for name in list_corruptions()][:3]
    ['gaussian_noise', 'shot_noise', 'impulse_noise']
"""

from __future__ import annotations

import torch

from ..._params import check_bool, check_choice
from ...registry import Registry
from ._common import MAX_SEVERITY, Corruption
from .blur import defocus_blur, gaussian_blur, glass_blur, motion_blur, zoom_blur
from .digital import brightness, contrast, elastic_transform, pixelate, saturate
from .jpeg import jpeg_compression
from .noise import gaussian_noise, impulse_noise, shot_noise, speckle_noise
from .weather import fog, frost, snow, spatter

__all__ = [
    "BENCHMARK_CORRUPTIONS", "CORRUPTIONS", "EXTRA_CORRUPTIONS", "MAX_SEVERITY", "brightness",
    "contrast", "corrupt", "defocus_blur", "elastic_transform", "fog", "frost",
    "gaussian_blur", "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression",
    "list_corruptions", "motion_blur", "pixelate", "saturate", "shot_noise", "snow",
    "spatter", "speckle_noise", "zoom_blur",
]

# The paper's order: noise, blur, weather, digital.
BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

# Every corruption by name; other packages add theirs through the "assay.corruptions"
# entry-point group (a function like these: (x, severity, *, generator, seed) -> x).
CORRUPTIONS: Registry[Corruption] = Registry("corruption", group="assay.corruptions")
for _corruption in (gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur,
                    motion_blur, zoom_blur, snow, frost, fog, brightness, contrast,
                    elastic_transform, pixelate, jpeg_compression, speckle_noise, gaussian_blur,
                    spatter, saturate):
    CORRUPTIONS.add(_corruption.__name__, _corruption)


def list_corruptions(include_extra: bool = False) -> list[str]:
    """Names of the 15 benchmark corruptions in the paper's order, then (with
    ``include_extra=True``, default False) the 4 held-out ones."""
    check_bool("include_extra", include_extra, "list_corruptions")
    return list(BENCHMARK_CORRUPTIONS + (EXTRA_CORRUPTIONS if include_extra else ()))


def corrupt(x: torch.Tensor, name: str, severity: int, *,
            generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
    """Apply the corruption ``name`` at ``severity`` to a batch of images.

    Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
    and Perturbations", ICLR 2019.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1], H, W >= 8.
        name: one of :data:`CORRUPTIONS` (see :func:`list_corruptions`).
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the random choices (default None: torch's
            default generator).
        seed: int >= 0, a fresh generator on ``x``'s device (default None); give
            ``generator`` or ``seed``, not both.

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Raises:
        AssayValueError: unknown name, severity outside 0..5, x not [N, 1 or 3, H, W]
            floats in [0, 1], or both generator and seed.

    Example:
        >>> x = torch.rand(4, 1, 28, 28)
        >>> corrupt(x, "motion_blur", 5, seed=0).shape
        torch.Size([4, 1, 28, 28])
    """
    check_choice("name", name, CORRUPTIONS, "corrupt")
    return CORRUPTIONS[name](x, severity, generator=generator, seed=seed)
