"""WaNet: a smooth, nearly invisible warp of the image as the trigger.

Reference: T. A. Nguyen, A. T. Tran. "WaNet - Imperceptible Warping-based Backdoor
Attack". ICLR 2021. A random ``k`` x ``k`` field of 2-D offsets in [-1, 1] (normalised by
its mean absolute value) is upsampled bicubically to the image size and added, scaled by
``s / H``, to the identity sampling grid; images are resampled on that grid
(``grid_sample``, bilinear, ``align_corners=True``). The noise mode also warps
``cross_ratio`` times as many other training images with the grid plus uniform noise in
[-1, 1] / H on each coordinate (up to half a pixel), their labels kept, so the model
learns the exact warp rather than any warp. Defaults are the paper's and BackdoorBench's
(k 4, s 0.5, grid rescale 1, cross ratio 2, target 0, 10% poisoned). On 28 x 28 images the
warp moves a pixel by 0.26 pixel on average (0.6 at most), less than the noise mode's noise.

``poison`` returns a fixed poisoned set (the data-poisoning threat model of the other
attacks here). The paper's attacker runs the training instead and poisons every batch
afresh (``poison_batch``): over the epochs each image is seen clean, warped and noisy,
which teaches the warp faster (docs/benchmarks.md, "Attacks on MNIST").
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ..._params import Bool, Choice, Float, Int
from ...core.dataset import Dataset
from ...core.rng import seeded_generator
from .base import (POISONING_ATTACKS, BackdoorAttack, PoisonedData, check_poisoning_data,
                   choose)


@POISONING_ATTACKS.register("wanet")
class WaNet(BackdoorAttack):
    """Parameters (keyword-only)
    -------------------------
    target : int >= 0, default 0
    rate : float in (0, 1), default 0.1 - share warped and relabelled
    k : int >= 2, default 4 - the control grid's size
    s : float > 0, default 0.5 - the warp's strength
    grid_rescale : float > 0, default 1.0
    noise_mode : bool, default True - also warp ``cross_ratio * rate`` of the images with
        a noisy grid, labels kept
    cross_ratio : float >= 0, default 2.0
    field_seed : int >= 0, default 1 - draws the warping field (the attacker's key)
    mode : {"all_to_one", "all_to_all"}, default "all_to_one"
    seed : int >= 0, default 0 - which samples are poisoned, and the noise
    """

    name = "wanet"
    constraints = {
        "target": Int(low=0), "rate": Float(low=0.0, high=1.0, low_open=True, high_open=True),
        "k": Int(low=2), "s": Float(low=0.0, low_open=True),
        "grid_rescale": Float(low=0.0, low_open=True), "noise_mode": Bool(),
        "cross_ratio": Float(low=0.0), "field_seed": Int(low=0),
        "mode": Choice(("all_to_one", "all_to_all")), "seed": Int(low=0),
    }

    def __init__(self, *, target: int = 0, rate: float = 0.1, k: int = 4, s: float = 0.5,
                 grid_rescale: float = 1.0, noise_mode: bool = True, cross_ratio: float = 2.0,
                 field_seed: int = 1, mode: str = "all_to_one", seed: int = 0) -> None:
        self.target = self._validated("target", target)
        self.rate = self._validated("rate", rate)
        self.k = self._validated("k", k)
        self.s = self._validated("s", s)
        self.grid_rescale = self._validated("grid_rescale", grid_rescale)
        self.noise_mode = self._validated("noise_mode", noise_mode)
        self.cross_ratio = self._validated("cross_ratio", cross_ratio)
        self.field_seed = self._validated("field_seed", field_seed)
        self.mode = self._validated("mode", mode)
        self.seed = self._validated("seed", seed)

    def grid(self, height: int, width: int) -> Tensor:
        """The warped sampling grid [1, H, W, 2] (x, y in [-1, 1]), on the CPU."""
        field = torch.rand(1, 2, self.k, self.k, generator=seeded_generator(self.field_seed))
        field = field * 2 - 1
        field = field / field.abs().mean()
        offsets = F.interpolate(field, size=(height, width), mode="bicubic",
                                align_corners=True).permute(0, 2, 3, 1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width),
                                indexing="ij")
        identity = torch.stack((xs, ys), dim=-1).unsqueeze(0)
        return ((identity + self.s * offsets / height) * self.grid_rescale).clamp(-1, 1)

    def noisy_grid(self, n: int, height: int, width: int,
                   generator: torch.Generator | None) -> Tensor:
        """``n`` grids [n, H, W, 2] of the noise mode: the warp plus uniform noise in
        [-1, 1] / H on each coordinate (up to half a pixel), clamped to [-1, 1]; CPU."""
        noise = torch.rand(n, height, width, 2, generator=generator) * 2 - 1
        return (self.grid(height, width) + noise / height).clamp(-1, 1)

    def poison_batch(self, x: Tensor, y: Tensor, num_classes: int,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One training batch poisoned the paper's way, afresh on each call (Algorithm 1
        and the reference ``train.py``): ``int(rate * B)`` samples at random positions are
        warped and relabelled, and (noise mode) ``int(cross_ratio * that)`` others are
        warped with a noisy grid, labels kept. As in the paper, a sample of the target
        class may be drawn (its label stays the target). This is the attacker who runs the
        training (call it in ``fit``'s ``loss_fn``), not a fixed poisoned set; ``x``
        [B, C, H, W] and ``y`` [B] (labels in ``0 .. num_classes - 1``) are not changed in
        place; ``generator`` (CPU) draws the positions and the noise. Returns ``(x, y)``."""
        count = int(self.rate * len(x))
        cross = int(self.cross_ratio * count) if self.noise_mode else 0
        cross = min(cross, len(x) - count)
        order = torch.randperm(len(x), generator=generator).to(x.device)
        bad, noisy = order[:count], order[count:count + cross]
        x, y = x.clone(), y.clone()
        if count:
            x[bad] = self._warp(x[bad], self.grid(*x.shape[-2:]))
            y[bad] = self.relabel(y[bad], num_classes)
        if cross:
            height, width = x.shape[-2:]
            x[noisy] = self._warp(x[noisy], self.noisy_grid(cross, height, width, generator))
        return x, y

    def _warp(self, x: Tensor, grid: Tensor) -> Tensor:
        grid = grid.to(device=x.device, dtype=x.dtype).expand(len(x), -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                             align_corners=True).clamp(0.0, 1.0)

    def _stamp(self, x: Tensor, data: Dataset | None) -> Tensor:
        return self._warp(x, self.grid(*x.shape[-2:]))

    def poison(self, data: Dataset) -> PoisonedData:
        poisoned = super().poison(data)
        if not self.noise_mode or self.cross_ratio == 0:
            return poisoned
        check_poisoning_data(self, data, needs_images=True)
        rest = torch.ones(len(data), dtype=torch.bool)
        rest[poisoned.poisoned] = False
        cross_rate = min(self.cross_ratio * self.rate, float(rest.sum()) / len(data))
        cross = choose(torch.arange(len(data))[rest], cross_rate, len(data), self.seed + 1,
                       type(self).__name__)
        x = poisoned.data.x.clone()
        index = cross.to(x.device)
        height, width = x.shape[-2:]
        x[index] = self._warp(x[index], self.noisy_grid(len(cross), height, width,
                                                         seeded_generator(self.seed)))
        noisy_data = Dataset(x, poisoned.data.y, poisoned.data.name, poisoned.data.split,
                             data.classes, source=data.source, attributes=data.attributes,
                             attribute_values=data.attribute_values, schema=data.schema)
        return PoisonedData(noisy_data, poisoned.poisoned, poisoned.original_labels,
                            poisoned.target, self.name, self.settings(), augmented=cross)
