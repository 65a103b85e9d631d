"""The shadow-model attack (Shokri, Stronati, Song & Shmatikov, "Membership Inference
Attacks Against Machine Learning Models", IEEE S&P 2017).

Shadow models are trained like the target on data whose membership is known (here the
reference models on their halves of the pool). Their outputs on samples they trained on
(label 1) and on samples they did not (label 0) train one attack model per class, a
binary classifier of the output vector; the target model's outputs are then scored by
the attack model of their true class. The attack models here are MLPs with one hidden
layer of ``hidden`` units (default 64), trained full-batch with Adam (``steps`` = 300,
lr 1e-2), on log-probabilities rather than the paper's probabilities: an overfit model's
probabilities round to one-hot vectors, its log-probabilities keep the margin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import check_int
from ...errors import AssayValueError

__all__ = ["ShadowModelAttack"]

_LOG_FLOOR = -30.0  # log-probabilities below this carry only rounding


@dataclass(frozen=True)
class ShadowModelAttack:
    """Shokri et al.'s attack.

    hidden : int, default 64 - hidden units of each class's attack model
    steps : int, default 300 - full-batch Adam steps per attack model
    seed : int, default 0 - the attack models' initialisation

    Call with ``target`` [N, K] (the target model's log-probabilities on the targets),
    ``y`` [N] (their labels), ``shadow`` [M, P, K] (each shadow model's log-probabilities
    on the pool), ``pool_y`` [P] and ``keep`` [M, P] (True where shadow m trained on pool
    sample p); returns scores [N], higher for members. A class no shadow sample has
    scores 0 (no evidence either way).
    """

    hidden: int = 64
    steps: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("hidden", self.hidden, "ShadowModelAttack", low=1)
        check_int("steps", self.steps, "ShadowModelAttack", low=1)
        check_int("seed", self.seed, "ShadowModelAttack", low=0)

    def __call__(self, target: Tensor, y: Tensor, shadow: Tensor, pool_y: Tensor,
                 keep: Tensor) -> Tensor:
        if (shadow.ndim != 3 or keep.shape != shadow.shape[:2]
                or target.ndim != 2 or target.shape[1] != shadow.shape[2]):
            raise AssayValueError(f"ShadowModelAttack needs target [N, K], shadow [M, P, K] and "
                                  f"keep [M, P]; got {list(target.shape)}, "
                                  f"{list(shadow.shape)} and {list(keep.shape)}.")
        features = shadow.clamp(min=_LOG_FLOOR).flatten(0, 1).float()
        labels = keep.flatten().float()
        classes = pool_y.repeat(shadow.shape[0])
        target = target.clamp(min=_LOG_FLOOR).float()
        scores = torch.zeros(len(target), dtype=torch.float32, device=target.device)
        for c in torch.unique(y).tolist():
            rows = classes == c
            if not bool(rows.any()):
                continue
            attack = self._train(features[rows], labels[rows], seed=self.seed * 1000 + c)
            with torch.no_grad():
                scores[y == c] = attack(target[y == c]).squeeze(1)
        return scores

    def _train(self, x: Tensor, label: Tensor, *, seed: int) -> Callable[[Tensor], Tensor]:
        """One class's attack model, fitted to tell in (1) from out (0), standardising
        its input by the training rows' mean and spread."""
        # built from a forked CPU generator, as zoo.build does: the global state is kept
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.default_generator.manual_seed(seed)
            model = nn.Sequential(nn.Linear(x.shape[1], self.hidden), nn.ReLU(),
                                  nn.Linear(self.hidden, 1)).to(x.device)
        mean = x.mean(0)
        std = x.std(0).clamp(min=1e-3) if len(x) > 1 else torch.ones_like(mean)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(self.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(model((x - mean) / std).squeeze(1), label)
            loss.backward()
            optimizer.step()
        model.eval()
        return lambda t: model((t - mean) / std)
