"""What every corruption shares: input checks, the public signature, seeded draws, sizes.

A corruption is written as ``impl(x, severity, generator) -> Tensor`` for an already
validated float tensor ``x`` of shape ``[N, C, H, W]`` (C = 1 or 3, values in [0, 1]),
a severity in 1..5 and a ``torch.Generator`` or ``None``. The :func:`corruption`
decorator turns it into the public function ``name(x, severity, *, generator=None,
seed=None)``: it checks the arguments, returns a clone for severity 0, computes in
float32 for half-precision inputs and clips the result to [0, 1] in the input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from ..._params import check_int, check_optional_seed
from ...core.rng import seeded_generator
from ...errors import AssayValueError

MAX_SEVERITY = 5
MIN_SIZE = 8
REFERENCE_SIZE = 32  # the CIFAR-10-C constants are in pixels of 32 x 32 images
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as OpenCV's RGB2GRAY and JPEG's Y

Impl = Callable[[torch.Tensor, int, "torch.Generator | None"], torch.Tensor]
Corruption = Callable[..., torch.Tensor]


def check_images(x: object, owner: str) -> None:
    """Raise AssayValueError unless ``x`` is a float [N, C, H, W] batch in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise AssayValueError(
            f"The 'x' parameter of {owner} must be a torch.Tensor of shape [N, C, H, W]. "
            f"Got {type(x).__name__} instead.")
    if x.ndim != 4:
        raise AssayValueError(
            f"The 'x' parameter of {owner} must have 4 dimensions [N, C, H, W]; add a batch "
            f"dimension with x.unsqueeze(0) for one image. Got shape {tuple(x.shape)} instead.")
    if not x.is_floating_point():
        raise AssayValueError(
            f"The 'x' parameter of {owner} must be a floating-point tensor with values in "
            f"[0, 1] (divide uint8 images by 255). Got dtype {x.dtype} instead.")
    if x.shape[1] not in (1, 3):
        raise AssayValueError(
            f"The 'x' parameter of {owner} must have 1 (grey) or 3 (RGB) channels in "
            f"dimension 1. Got {x.shape[1]} channels (shape {tuple(x.shape)}) instead.")
    if min(x.shape[2], x.shape[3]) < MIN_SIZE:
        raise AssayValueError(
            f"The 'x' parameter of {owner} must have height and width of at least {MIN_SIZE} "
            f"pixels. Got shape {tuple(x.shape)} instead.")
    if x.numel():
        low, high = torch.aminmax(x)
        if not (bool(low >= 0) and bool(high <= 1)):
            raise AssayValueError(
                f"The 'x' parameter of {owner} must hold values in [0, 1]. Got values in "
                f"[{float(low):.4g}, {float(high):.4g}] instead.")


def resolve_generator(generator: object, seed: object, device: torch.device,
                      owner: str) -> torch.Generator | None:
    """The generator to draw from: ``generator``, a new one seeded with ``seed``, or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise AssayValueError(
            f"The 'generator' parameter of {owner} must be a torch.Generator or None. "
            f"Got {type(generator).__name__} instead.")
    seed = check_optional_seed("seed", seed, owner)
    if generator is not None and seed is not None:
        raise AssayValueError(
            f"{owner} takes either 'generator' or 'seed', not both. Got both; drop one.")
    return generator if seed is None else seeded_generator(seed, device)


def corruption(impl: Impl) -> Corruption:
    """Give ``impl`` the public signature, argument checks and output contract."""
    name = impl.__name__

    def public(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None,
               seed: int | None = None) -> torch.Tensor:
        check_images(x, name)
        check_int("severity", severity, name, low=0, high=MAX_SEVERITY)
        gen = resolve_generator(generator, seed, x.device, name)
        if severity == 0 or x.shape[0] == 0:
            return x.clone()
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        out = impl(work, severity, gen)
        out = out.clone() if out is x else out  # implementations return new tensors
        return out.clamp_(0, 1).to(x.dtype)

    public.__name__ = name
    public.__qualname__ = impl.__qualname__
    public.__module__ = impl.__module__
    public.__doc__ = impl.__doc__
    return public


# ---------------------------------------------------------------- seeded draws
def _draw_device(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


def rand(shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor,
         low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Uniform draws in [low, high) with ``like``'s dtype, on ``like``'s device."""
    u = torch.rand(tuple(shape), generator=generator, device=_draw_device(generator, like),
                   dtype=like.dtype).to(like.device)
    return u if (low, high) == (0.0, 1.0) else u.mul_(high - low).add_(low)


def randn(shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor,
          mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Normal draws with ``like``'s dtype, on ``like``'s device."""
    z = torch.randn(tuple(shape), generator=generator, device=_draw_device(generator, like),
                    dtype=like.dtype).to(like.device)
    return z if (mean, std) == (0.0, 1.0) else z.mul_(std).add_(mean)


def randint(high: int, shape: Sequence[int], generator: torch.Generator | None,
            like: torch.Tensor) -> torch.Tensor:
    """Integer draws in [0, high) (int64), on ``like``'s device."""
    return torch.randint(high, tuple(shape), generator=generator,
                         device=_draw_device(generator, like)).to(like.device)


def poisson(rates: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Exact Poisson counts for a tensor of rates (float, same device as ``rates``)."""
    device = _draw_device(generator, rates)
    return torch.poisson(rates.to(device), generator=generator).to(rates.device)


# ---------------------------------------------------------------- sizes and colour
def pixel_scale(x: torch.Tensor) -> float:
    """Factor for the CIFAR-10-C constants given in pixels: max(1, min(H, W) / 32).

    Images larger than CIFAR's get proportionally wider kernels (roughly what ImageNet-C
    does with its own constants); smaller ones keep the CIFAR pixel values, because
    shrinking them would turn the blurs into sub-pixel no-ops.
    """
    return max(1.0, min(x.shape[-2], x.shape[-1]) / REFERENCE_SIZE)


def luma(x: torch.Tensor) -> torch.Tensor:
    """Grey level [N, 1, H, W] of an RGB or grey batch (BT.601 weights)."""
    if x.shape[1] == 1:
        return x
    r, g, b = LUMA
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def to_8bit(x: torch.Tensor, rounding: Literal["floor", "nearest"]) -> torch.Tensor:
    """``x`` on the 1/255 grid, as the reference's conversions to uint8 between two steps
    leave it: ``"floor"`` truncates as ``np.uint8(x * 255)``, ``"nearest"`` rounds as an
    8-bit PNG written by ImageMagick. The floor has 1e-12 levels of slack, a few float64
    ulps at 255, so that rounding in a blur does not drop an exact 8-bit level (a flat
    region) by one; give it float64 values where arithmetic decides the floor (float32
    cannot resolve the 1e-7-level tails of a blur that the reference's float64 sees)."""
    shift = {"floor": 1e-12, "nearest": 0.5}[rounding]
    return (x * 255 + shift).floor_().clamp_(0, 255).div_(255)


def colour(rgb: Sequence[float], channels: int, like: torch.Tensor) -> torch.Tensor:
    """A colour as a [1, C, 1, 1] tensor; its luma for grey images."""
    if channels == 1:
        rgb = (sum(w * v for w, v in zip(LUMA, rgb)),)
    return torch.tensor(rgb, dtype=like.dtype, device=like.device).view(1, channels, 1, 1)
