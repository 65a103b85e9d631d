"""Per-example scores of a model on labelled samples, the raw material of membership
inference, and the augmented queries that LiRA and RMIA average over.

Every score is higher for a sample the model fits better (a member, more likely):

* ``loss``: minus the cross-entropy (Yeom, Giacomelli, Fredrikson & Jha, "Privacy Risk
  in Machine Learning: Analyzing the Connection to Overfitting", CSF 2018);
* ``confidence``: the probability of the true class, and ``entropy``: minus the entropy
  of the predicted distribution (Salem et al., "ML-Leaks", NDSS 2019);
* :func:`logit_confidence`: phi = log(p / (1 - p)) of the true class's probability p
  (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022),
  computed from the logits as z_y - logsumexp_{j != y} z_j, which stays finite where p
  rounds to 1.

``loss`` and ``confidence`` are both scored as log p_y = -softplus(-phi) in float64 (the
same order as the loss and as p_y): in float32 every sample with p_y above 1 - 6e-8
scores exactly 0, so a fitted model's most confident members all tie, and the TPR at a
low FPR (where only those samples count) came out 0 where phi's order gave 0.3-0.4%.
``entropy`` is computed in float64 for the same reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...core.inference import batched_logits, eval_mode, model_device

__all__ = ["THRESHOLD_ATTACKS", "Query", "image_queries", "logit_confidence", "query_scores",
           "threshold_scores"]

THRESHOLD_ATTACKS = ("loss", "confidence", "entropy")

Query = Callable[[Tensor], Tensor]


def threshold_scores(logits: Tensor, y: Tensor,
                     attack: Literal["loss", "confidence", "entropy"]) -> Tensor:
    """The score [N] (float64) of a threshold attack on logits [N, K] and labels [N]:
    log p_y for "loss" and "confidence" (their common order, free of float32 ties), minus
    the entropy for "entropy"."""
    logits = logits.double()
    if attack in ("loss", "confidence"):
        return -F.softplus(-logit_confidence(logits, y))
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * log_p).sum(1)  # minus the entropy


def logit_confidence(logits: Tensor, y: Tensor) -> Tensor:
    """phi = log(p_y / (1 - p_y)) [N] for logits [N, K] and labels [N] (float32, or
    float64 for float64 logits)."""
    if logits.dtype != torch.float64:
        logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


def _identity(x: Tensor) -> Tensor:
    return x


def _flip(x: Tensor) -> Tensor:
    return x.flip(-1)


def _shift(dy: int, dx: int) -> Query:
    """Move the image by (dy, dx) pixels, the uncovered border reflected (the random
    crops of training with a reflected pad of 1)."""
    def shift(x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return padded[..., 1 - dy:1 - dy + height, 1 - dx:1 - dx + width]
    return shift


def image_queries(input_shape: tuple[int, ...], augment: bool) -> list[Query]:
    """The queries of one sample: itself, and with ``augment`` for images (C, H, W) of at
    least 3x3, its horizontal flip and the four one-pixel shifts of both (10 queries, the
    augmentations of Carlini et al.'s training). Tabular rows have no augmentation."""
    if not augment or len(input_shape) != 3 or min(input_shape[1:]) < 3:
        return [_identity]
    moves = [_identity] + [_shift(dy, dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    return moves + [_after_flip(move) for move in moves]


def _after_flip(move: Query) -> Query:
    def flipped(x: Tensor) -> Tensor:
        return move(_flip(x))
    return flipped


@torch.no_grad()
def query_scores(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor,
                 queries: list[Query], *, batch_size: int = 256,
                 device: torch.device | None = None) -> Tensor:
    """phi of ``model`` on each query of each sample: [len(queries), N], float32 on the
    device of ``x``."""
    if device is None:
        device = model_device(model, x.device) if isinstance(model, nn.Module) else x.device
    out = []
    modes = eval_mode(model) if isinstance(model, nn.Module) else contextlib.nullcontext()
    with modes:
        for query in queries:
            logits = batched_logits(_queried(model, query), x, batch_size=batch_size,
                                    device=device, output_device=x.device)
            out.append(logit_confidence(logits, y.to(x.device)))
    return torch.stack(out)


def _queried(model: Callable[[Tensor], Tensor], query: Query) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        return model(query(x))
    return forward
