"""How close a reconstruction is to the data it was reconstructed from.

* :func:`psnr`: the peak signal-to-noise ratio of image pairs, ``10 log10(range^2 / MSE)``
  in dB, with the range of the model's input bounds (inf for identical images);
* :func:`match_reconstructions`: the pairing of a batch's reconstructions with its true
  samples that maximises the total PSNR (a gradient does not tell the order of the batch,
  so each true sample is compared with the reconstruction that fits it best, one each,
  as breaching does with ``linear_sum_assignment``);
* :func:`label_recovery`: the share of a batch's labels recovered, order-free.
"""

from __future__ import annotations

import math

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..errors import AssayValueError

__all__ = ["label_recovery", "match_reconstructions", "psnr"]


def _pair(a: Tensor, b: Tensor, owner: str) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape \
            or a.ndim < 2:
        raise AssayValueError(f"{owner}: the reconstructions and the true samples must be "
                              f"tensors of one shape [N, ...]. Got {getattr(a, 'shape', a)!r} "
                              f"and {getattr(b, 'shape', b)!r} instead.")


def psnr(reconstruction: Tensor, truth: Tensor, *, data_range: float = 1.0) -> Tensor:
    """PSNR in dB of each pair of samples [N, ...] -> [N]: ``10 log10(data_range^2 / MSE)``
    with the mean squared error over each sample's values; ``inf`` where they are equal.
    ``data_range`` is the width of the input bounds (default 1.0, images in [0, 1]).

    >>> x = torch.zeros(1, 1, 2, 2)
    >>> float(psnr(x + 0.1, x))  # MSE 0.01: 20 dB
    20.0
    """
    _pair(reconstruction, truth, "psnr")
    if not (math.isfinite(data_range) and data_range > 0):
        raise AssayValueError(f"The 'data_range' parameter of psnr must be a finite number "
                              f"> 0. Got {data_range!r} instead.")
    mse = (reconstruction.double() - truth.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range ** 2 / mse)).float()  # 1/0 = inf: a perfect copy


def match_reconstructions(reconstruction: Tensor, truth: Tensor, *,
                          data_range: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(order, psnr)``: ``reconstruction[order[i]]`` is the reconstruction assigned to
    ``truth[i]`` (a permutation maximising the summed PSNR, each reconstruction used once)
    and ``psnr[i]`` its PSNR in dB, both [N]."""
    _pair(reconstruction, truth, "match_reconstructions")
    n = len(truth)
    pairs = psnr(reconstruction.repeat_interleave(n, 0), truth.repeat(n, *[1] * (truth.ndim - 1)),
                 data_range=data_range).view(n, n)  # [reconstruction, truth]
    # a finite stand-in for inf, so that the assignment's sums stay ordered
    score = torch.nan_to_num(pairs.double(), posinf=1e6).cpu().numpy()
    rows, cols = linear_sum_assignment(score, maximize=True)
    order = torch.empty(n, dtype=torch.long)
    order[torch.as_tensor(cols)] = torch.as_tensor(rows)
    order = order.to(truth.device)
    return order, pairs[order, torch.arange(n, device=truth.device)]


def label_recovery(recovered: Tensor, truth: Tensor) -> float:
    """The share of ``truth`` [N] matched by ``recovered`` [N] as multisets (a batch's
    labels carry no order); a label of -1 ("not recovered") matches nothing.

    >>> label_recovery(torch.tensor([3, 3, -1]), torch.tensor([3, 1, 3]))
    0.6666666666666666
    """
    if recovered.shape != truth.shape or truth.ndim != 1 or len(truth) == 0:
        raise AssayValueError(f"label_recovery: the recovered and true labels must be 1-D "
                              f"tensors of one length >= 1. Got {tuple(recovered.shape)} and "
                              f"{tuple(truth.shape)} instead.")
    size = int(max(int(recovered.max()), int(truth.max()))) + 1
    found = torch.bincount(recovered[recovered >= 0], minlength=size)
    wanted = torch.bincount(truth, minlength=size)
    return float(torch.minimum(found, wanted).sum()) / len(truth)
