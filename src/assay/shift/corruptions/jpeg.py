"""JPEG compression as a batched torch codec: colour transform, chroma subsampling,
8 x 8 DCT, quantisation with the standard tables scaled by quality, and decoding.

Reference: D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019 (CIFAR-10-C saves with PIL at quality
80, 65, 58, 50, 40). The codec follows baseline JPEG (ITU-T T.81) as libjpeg, which PIL
uses, runs it: JFIF YCbCr, 4:2:0 chroma subsampling for colour images, the Annex K
example tables scaled by the IJG quality formula, edge replication to whole blocks and
triangular ("fancy") chroma upsampling on decoding. Entropy coding is lossless and
skipped. Samples are rounded to 8 bits where libjpeg rounds them, so the output lies on
the 1/255 grid; it differs from libjpeg's integer DCT by rounding only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import corruption

QUALITY = (80, 65, 58, 50, 40)

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), natural order.
LUMINANCE_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)
CHROMINANCE_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32


def quantisation_table(base: tuple[int, ...], quality: int,
                       like: torch.Tensor) -> torch.Tensor:
    """The IJG scaling of a base table to ``quality`` (1..100), baseline-clamped to 1..255."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    table = [min(max((q * scale + 50) // 100, 1), 255) for q in base]
    return torch.tensor(table, dtype=like.dtype, device=like.device)


def _dct_basis(like: torch.Tensor) -> torch.Tensor:
    """[64, 64] orthonormal 2-D DCT-II of a row-major 8 x 8 block (kron of the 1-D one)."""
    k = torch.arange(8, dtype=torch.float64, device=like.device)
    d = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return torch.kron(d, d).to(like.dtype)


def _code_plane(plane: torch.Tensor, table: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Encode and decode planes [M, h, w] of 8-bit samples; returns decoded samples."""
    m, h, w = plane.shape
    padded = F.pad(plane.unsqueeze(1), (0, -w % 8, 0, -h % 8), mode="replicate").squeeze(1)
    hp, wp = padded.shape[-2:]
    blocks = ((padded - 128).reshape(m, hp // 8, 8, wp // 8, 8).permute(0, 1, 3, 2, 4)
              .reshape(-1, 64))
    coefficients = torch.round((blocks @ basis.T) / table) * table
    decoded = ((coefficients @ basis).reshape(m, hp // 8, wp // 8, 8, 8)
               .permute(0, 1, 3, 2, 4).reshape(m, hp, wp)[:, :h, :w])
    return (decoded + 128).round().clamp(0, 255)


@corruption
def jpeg_compression(x: torch.Tensor, severity: int,
                     generator: torch.Generator | None) -> torch.Tensor:
    """JPEG compression artefacts: encode and decode with a lossy DCT codec.

    Hendrycks & Dietterich, ICLR 2019. Quality per severity 1..5: 80, 65, 58, 50, 40
    (IJG scale of the standard tables). Colour images go through YCbCr with 4:2:0 chroma;
    grey images are coded as grey JPEG (luminance only). Any H, W (blocks are padded by
    edge replication). Deterministic (``generator`` and ``seed`` are unused).

    Args:
        x: images [N, C, H, W], C in {1, 3}, float, values in [0, 1].
        severity: int in 0..5; 0 returns a copy of ``x``.
        generator: unused (default None). seed: unused (default None).

    Returns:
        Tensor shaped, typed and placed like ``x``, on the 1/255 grid of 8-bit values.

    Example:
        >>> jpeg_compression(torch.rand(2, 3, 32, 32), 5).shape
        torch.Size([2, 3, 32, 32])
    """
    quality = QUALITY[severity - 1]
    basis = _dct_basis(x)
    luminance = quantisation_table(LUMINANCE_TABLE, quality, x)
    samples = (x * 255).round()
    n, c, h, w = samples.shape
    if c == 1:
        return _code_plane(samples[:, 0], luminance, basis).unsqueeze(1) / 255
    r, g, b = samples.unbind(1)
    y = (0.299 * r + 0.587 * g + 0.114 * b).round()
    chroma = torch.stack([-0.168736 * r - 0.331264 * g + 0.5 * b,
                          0.5 * r - 0.418688 * g - 0.081312 * b], 1) + 128
    chroma = F.pad(chroma.round(), (0, w % 2, 0, h % 2), mode="replicate")
    small = F.avg_pool2d(chroma, 2).round()  # 4:2:0
    hs, ws = small.shape[-2:]
    chrominance = quantisation_table(CHROMINANCE_TABLE, quality, x)
    small = _code_plane(small.reshape(n * 2, hs, ws), chrominance, basis).reshape(n, 2, hs, ws)
    cb, cr = (F.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False)
              [..., :h, :w] - 128).unbind(1)
    y = _code_plane(y, luminance, basis)
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return rgb.round().clamp(0, 255) / 255
