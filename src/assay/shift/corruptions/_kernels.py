"""Filters and resampling shared by the corruptions, batched over [N, C, H, W].

Separable linear filters (Gaussian, box resizing, centre zoom) are applied as two small
matrices, ``Mh @ x @ Mw^T``, with the border mode folded into the matrices: one matmul
pair per call, any border mode and any kernel size, on any device. Dense 2-D kernels go
through one grouped convolution; per-image line kernels through one gather per tap.

Border modes: ``"edge"`` repeats the last pixel (SciPy/scikit-image "nearest"),
``"symmetric"`` mirrors with the edge pixel repeated (SciPy "reflect"), ``"reflect"``
mirrors about the edge pixel (OpenCV's default BORDER_REFLECT_101), ``"zeros"`` reads 0
(padding only).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

_TORCH_PAD = {"edge": "replicate", "reflect": "reflect"}


def source_index(n: int, positions: torch.Tensor, mode: str) -> torch.Tensor:
    """In-range indices for integer positions that may fall outside [0, n)."""
    if mode == "edge":
        return positions.clamp(0, n - 1)
    if mode == "symmetric":
        i = positions.remainder(2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "reflect":
        if n == 1:
            return torch.zeros_like(positions)
        i = positions.remainder(2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown border mode {mode!r}")  # internal misuse, not user input


def fold_symmetric(c: torch.Tensor, n: int) -> torch.Tensor:
    """Float coordinates (pixel centres at 0 .. n - 1) moved into [0, n - 1] so that
    linear interpolation there reads the ``"symmetric"`` extension (SciPy's "reflect"):
    mirrored about -0.5 and n - 0.5, then clamped, as that extension is flat over the
    outer half pixel."""
    m = (c + 0.5).remainder(2 * n)
    return (torch.where(m >= n, 2 * n - m, m) - 0.5).clamp(0, n - 1)


def pad2d(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    """Pad the last two dimensions by ``ph`` rows and ``pw`` columns on each side."""
    h, w = x.shape[-2:]
    if mode == "zeros":
        return F.pad(x, (pw, pw, ph, ph))
    if mode in _TORCH_PAD and (mode == "edge" or (ph < h and pw < w)):
        return F.pad(x, (pw, pw, ph, ph), mode=_TORCH_PAD[mode])
    rows = source_index(h, torch.arange(-ph, h + ph, device=x.device), mode)
    cols = source_index(w, torch.arange(-pw, w + pw, device=x.device), mode)
    return x.index_select(-2, rows).index_select(-1, cols)


def filter_matrix(n: int, taps: torch.Tensor, mode: str) -> torch.Tensor:
    """[n, n] matrix of a centred 1-D correlation with ``taps`` (odd length) and a border."""
    r = (taps.numel() - 1) // 2
    offsets = torch.arange(-r, r + 1, device=taps.device)
    cols = source_index(n, torch.arange(n, device=taps.device)[:, None] + offsets, mode)
    m = torch.zeros(n, n, dtype=taps.dtype, device=taps.device)
    return m.scatter_add_(1, cols, taps.expand(n, -1).contiguous())


def separable(x: torch.Tensor, mh: torch.Tensor, mw: torch.Tensor) -> torch.Tensor:
    """``mh @ x @ mw^T`` over the last two dimensions (mh: [H', H], mw: [W', W])."""
    return torch.matmul(torch.matmul(mh, x), mw.transpose(0, 1))


def gaussian_taps(sigma: float, truncate: float, like: torch.Tensor) -> torch.Tensor:
    """Normalised Gaussian taps, radius ``int(truncate * sigma + 0.5)`` as in SciPy."""
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=like.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(like.dtype)


def gaussian_blur(x: torch.Tensor, sigma: float, mode: str = "edge",
                  truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of the last two dimensions (scikit-image's defaults)."""
    if sigma <= 0:
        return x
    taps = gaussian_taps(sigma, truncate, x)
    return separable(x, filter_matrix(x.shape[-2], taps, mode),
                     filter_matrix(x.shape[-1], taps, mode))


def conv2d_same(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of every image with one odd-sized 2-D ``kernel``."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    xp = pad2d(x, kh // 2, kw // 2, mode)
    weight = kernel.to(x.dtype).expand(n * c, 1, kh, kw)
    out = F.conv2d(xp.reshape(1, n * c, *xp.shape[-2:]), weight, groups=n * c)
    return out.reshape(n, c, h, w)


def box_resize_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """[n_out, n_in] box resampling as PIL's ``Image.BOX``: output pixel i, centred at
    (i + 0.5) * n_in / n_out in input coordinates, averages the input pixels whose
    centres lie in its box, which is max(n_in / n_out, 1) input pixels wide."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    centre = (torch.arange(n_out, dtype=torch.float64, device=like.device) + 0.5) * scale
    j = torch.arange(n_in, dtype=torch.float64, device=like.device) + 0.5
    t = (j[None, :] - centre[:, None]) / max(scale, 1.0)
    inside = ((t > -0.5) & (t <= 0.5)).to(torch.float64)
    lo = (centre - support + 0.5).floor().clamp(min=0)[:, None]  # PIL's window bounds
    hi = (centre + support + 0.5).floor().clamp(max=n_in)[:, None]
    inside = inside * ((j[None, :] - 0.5 >= lo) & (j[None, :] - 0.5 < hi))
    return (inside / inside.sum(1, keepdim=True)).to(like.dtype)


def _zoom_taps(n: int, factor: float, device: torch.device):
    """Bilinear taps of the reference's ``clipped_zoom`` by ``factor`` >= 1 on one axis:
    crop the ch = ceil(n / factor) central pixels (first at (n - ch) // 2), resize them to
    round(ch * factor) with corner-aligned linear interpolation (SciPy's ``zoom``, order
    1), keep the n central ones. Returns (i0, i1, w1), each [n]."""
    ch = math.ceil(n / factor)
    top = (n - ch) // 2
    size = round(ch * factor)
    trim = (size - n) // 2
    step = (ch - 1) / (size - 1) if size > 1 else 0.0
    pos = top + (torch.arange(n, dtype=torch.float64, device=device) + trim) * step
    i0 = pos.floor().clamp(0, n - 1)
    w1 = pos - i0
    i0 = i0.long()
    return i0, (i0 + 1).clamp(max=n - 1), w1


def zoom_matrix(n: int, factor: float, like: torch.Tensor) -> torch.Tensor:
    """[n, n] matrix of the reference's ``clipped_zoom`` by ``factor`` (see _zoom_taps)."""
    i0, i1, w1 = _zoom_taps(n, factor, like.device)
    m = torch.zeros(n, n, dtype=torch.float64, device=like.device)
    rows = torch.arange(n, device=like.device)
    m.index_put_((rows, i0), 1 - w1, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m.to(like.dtype)


@functools.lru_cache(maxsize=16)
def zoom_blur_operator(h: int, w: int, factors: tuple[float, ...], device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
    """[H*W, H*W] operator of the mean of the image and its zooms by ``factors``: dense
    up to 64 x 64 pixels (one GEMM is fastest there), sparse (COO) beyond."""
    identity = torch.arange(h * w, device=device)
    rows, cols = [identity], [identity]
    vals = [torch.ones(h * w, dtype=torch.float64, device=device)]
    out_index = identity.view(h, w)
    for factor in factors:
        hy = _zoom_taps(h, factor, device)
        wx = _zoom_taps(w, factor, device)
        for iy, wy in ((hy[0], 1 - hy[2]), (hy[1], hy[2])):
            for ix, wxx in ((wx[0], 1 - wx[2]), (wx[1], wx[2])):
                rows.append(out_index.reshape(-1))
                cols.append((iy[:, None] * w + ix[None, :]).reshape(-1))
                vals.append((wy[:, None] * wxx[None, :]).reshape(-1))
    op = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]),
                                 torch.cat(vals) / (len(factors) + 1), (h * w, h * w),
                                 check_invariants=True)
    op = op.coalesce().to(dtype)
    return op.to_dense() if h * w <= 64 * 64 else op


def apply_pixel_operator(x: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """Apply an [H*W, H*W] linear operator (dense or sparse) to every channel of every image."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w)
    if op.layout == torch.strided:
        return (flat @ op.transpose(0, 1)).reshape(n, c, h, w)
    return torch.sparse.mm(op, flat.transpose(0, 1)).transpose(0, 1).reshape(n, c, h, w)


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor,
                border: str = "edge") -> torch.Tensor:
    """Blur each image along a line at its own angle (degrees, in image coordinates: x to
    the right, y down).

    The kernel is ImageMagick's motion blur: a one-sided Gaussian of ``sigma`` over
    ``2 * ceil(radius) + 1`` taps, tap i reading the pixel i steps along the line
    (rounded half down to the grid; outside the image, ``border``: "edge" repeats the
    edge as ImageMagick does, "zeros" reads 0). Taps below 1e-4 of the total are dropped
    (no 8-bit value changes). One batched gather per tap; ``angles`` is [N].
    """
    width = 2 * math.ceil(radius) + 1
    weights = [math.exp(-i * i / (2 * sigma * sigma)) for i in range(width)]
    total = sum(weights)
    weights = [wt / total for wt in weights if wt / total >= 1e-4]
    total = sum(weights)
    weights = [wt / total for wt in weights]
    n, c, h, w = x.shape
    steps = torch.arange(len(weights), dtype=x.dtype, device=x.device)
    theta = torch.deg2rad(angles.to(x.dtype))[:, None]
    dx = torch.ceil(steps * torch.cos(theta) - 0.5).long()
    dy = torch.ceil(steps * torch.sin(theta) - 0.5).long()
    p = len(weights) - 1
    xp = pad2d(x, p, p, border)
    wp = w + 2 * p
    flat = xp.reshape(n, c, -1)
    base = ((torch.arange(h, device=x.device) + p)[:, None] * wp
            + torch.arange(w, device=x.device) + p).reshape(1, -1)
    shift = dy * wp + dx  # [N, taps]
    out = torch.zeros(n, c, h * w, dtype=x.dtype, device=x.device)
    for t, wt in enumerate(weights):
        index = (base + shift[:, t:t + 1]).unsqueeze(1).expand(n, c, -1)
        out.add_(flat.gather(2, index), alpha=wt)
    return out.reshape(n, c, h, w)
