"""Noise corruptions: Gaussian, shot (Poisson), impulse (salt and pepper) and speckle.

Reference: D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019. Constants per severity 1..5 are those
of CIFAR-10-C (``make_cifar_c.py`` of the authors' repository). Noise is drawn
independently per image, channel and pixel; none of these depends on the image size.
"""

from __future__ import annotations

import torch

from ._common import corruption, poisson, rand, randn

GAUSSIAN_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_RATE = (500.0, 250.0, 100.0, 75.0, 50.0)
IMPULSE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)
SPECKLE_STD = (0.06, 0.10, 0.12, 0.16, 0.20)


@corruption
def gaussian_noise(x: torch.Tensor, severity: int,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Additive Gaussian noise: ``clip(x + s * z)``, z ~ N(0, 1) per value.

    Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
    and Perturbations", ICLR 2019. Standard deviation s per severity 1..5:
    0.04, 0.06, 0.08, 0.09, 0.10.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the noise (default None: torch's default one).
        seed: int >= 0, a fresh generator on ``x``'s device (default None); not with
            ``generator``.

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> x = torch.rand(4, 3, 32, 32)
        >>> gaussian_noise(x, 3, seed=0).shape
        torch.Size([4, 3, 32, 32])
    """
    return randn(x.shape, generator, x, std=GAUSSIAN_STD[severity - 1]).add_(x)


@corruption
def shot_noise(x: torch.Tensor, severity: int,
               generator: torch.Generator | None) -> torch.Tensor:
    """Shot (Poisson) noise: ``clip(Poisson(r * x) / r)`` per value, exact Poisson draws.

    Hendrycks & Dietterich, ICLR 2019 (see :mod:`assay.shift.corruptions`). Photon rate
    r per severity 1..5: 500, 250, 100, 75, 50.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the noise (default None: torch's default one).
        seed: int >= 0, a fresh generator on ``x``'s device (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> shot_noise(torch.rand(2, 1, 28, 28), 5, seed=1).shape
        torch.Size([2, 1, 28, 28])
    """
    rate = SHOT_RATE[severity - 1]
    return poisson(x * rate, generator).div_(rate)


@corruption
def impulse_noise(x: torch.Tensor, severity: int,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Impulse (salt and pepper) noise: a fraction a of values set to 0 or 1, half each.

    Hendrycks & Dietterich, ICLR 2019 (scikit-image's ``random_noise(mode='s&p')``, each
    channel value drawn on its own). Fraction a per severity 1..5: 0.01, 0.02, 0.03,
    0.05, 0.07.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the noise (default None: torch's default one).
        seed: int >= 0, a fresh generator on ``x``'s device (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``.

    Example:
        >>> impulse_noise(torch.rand(2, 3, 32, 32), 2, seed=0).shape
        torch.Size([2, 3, 32, 32])
    """
    amount = IMPULSE_AMOUNT[severity - 1]
    u = rand(x.shape, generator, x)
    return torch.where(u < amount, (u >= amount / 2).to(x.dtype), x)  # pepper, then salt


@corruption
def speckle_noise(x: torch.Tensor, severity: int,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Speckle (multiplicative) noise: ``clip(x + x * s * z)``, z ~ N(0, 1) per value.

    Hendrycks & Dietterich, ICLR 2019; one of the four held-out corruptions. Standard
    deviation s per severity 1..5: 0.06, 0.10, 0.12, 0.16, 0.20.

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: torch.Generator for the noise (default None: torch's default one).
        seed: int >= 0, a fresh generator on ``x``'s device (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, clipped to [0, 1].

    Example:
        >>> speckle_noise(torch.rand(2, 3, 32, 32), 4, seed=0).shape
        torch.Size([2, 3, 32, 32])
    """
    return randn(x.shape, generator, x, std=SPECKLE_STD[severity - 1]).add_(1).mul_(x)
