"""STRIP: a run-time trojan detector. A triggered input stays in the target class however
much of another image is laid over it, so its predictions under superimposition have low
entropy; a clean input's predictions scatter.

Reference: Y. Gao, C. Xu, D. Wang, S. Chen, D. C. Ranasinghe, S. Nepal. "STRIP: A Defence
Against Trojan Attacks on Deep Neural Networks". ACSAC 2019. Each input is superimposed
(pixel-wise sum, clipped to [0, 1], as the paper's ``addWeighted(x, 1, overlay, 1)``) with
``n_overlays`` images drawn from held-out clean data (the paper's N = 100), and its score is
the mean Shannon entropy (nats) of the model's predictions on them. The threshold is the
``frr`` quantile of the clean held-out inputs' scores (the paper fixes the false rejection
rate, 1%, and reads the threshold off the clean distribution); an input scoring below it
is flagged as trojaned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..._params import Configured, Float, Int
from ...core.dataset import Dataset
from ...core.inference import batched_logits
from ...core.rng import seeded_generator
from ...errors import AssayValueError


@dataclass(frozen=True)
class STRIPDetector:
    """A fitted STRIP: the model, the overlay images, and the entropy threshold."""

    model: nn.Module
    overlays: Tensor
    n_overlays: int
    threshold: float
    frr: float
    seed: int
    batch_size: int

    def entropy(self, x: Tensor) -> Tensor:
        """The mean prediction entropy [N] of each input under ``n_overlays`` of the
        overlay images."""
        return _mean_entropy(self.model, x, self.overlays, self.n_overlays, self.seed,
                             self.batch_size)

    def detect(self, x: Tensor) -> Tensor:
        """True where an input looks trojaned (its entropy below the threshold)."""
        return self.entropy(x) < self.threshold

    def rates(self, clean: Tensor, triggered: Tensor) -> dict[str, float]:
        """The false rejection rate on clean inputs and the false acceptance rate (a
        trojaned input let through) on triggered ones."""
        return {"frr": float(self.detect(clean).double().mean()),
                "far": float((~self.detect(triggered)).double().mean())}


class STRIP(Configured):
    """Parameters (keyword-only)
    -------------------------
    n_overlays : int >= 1, default 100 - clean images laid over each input (the paper's N)
    frr : float in (0, 1), default 0.01 - the false rejection rate the threshold is set at
    seed : int >= 0, default 0 - which overlays each input gets
    batch_size : int >= 1, default 1024 - superimposed images per forward pass

    ``STRIP().fit(model, clean) -> STRIPDetector``: ``clean`` is held-out clean data (half
    its images become the overlays, the other half set the threshold).
    """

    constraints = {"n_overlays": Int(low=1),
                   "frr": Float(low=0.0, high=1.0, low_open=True, high_open=True),
                   "seed": Int(low=0), "batch_size": Int(low=1)}

    def __init__(self, *, n_overlays: int = 100, frr: float = 0.01, seed: int = 0,
                 batch_size: int = 1024) -> None:
        self.n_overlays = self._validated("n_overlays", n_overlays)
        self.frr = self._validated("frr", frr)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)

    def fit(self, model: nn.Module, clean: Dataset) -> STRIPDetector:
        if clean.x.ndim != 4:
            raise AssayValueError(f"STRIP superimposes images [N, C, H, W]; {clean.label} has "
                                  f"inputs of shape {tuple(clean.input_shape)}.")
        if len(clean) < 2 * max(self.n_overlays, 10):
            raise AssayValueError(f"STRIP: {clean.label} has {len(clean)} images; it needs "
                                  f"at least {2 * max(self.n_overlays, 10)} (half as overlays, "
                                  "half to set the threshold). Fix: more held-out clean data "
                                  "or fewer n_overlays.")
        overlays_part, threshold_part = clean.split_off(0.5, seed=self.seed)
        overlays = overlays_part.x
        scores = _mean_entropy(model, threshold_part.x, overlays, self.n_overlays, self.seed,
                               self.batch_size)
        threshold = float(torch.quantile(scores.double(), self.frr))
        return STRIPDetector(model, overlays, self.n_overlays, threshold, self.frr, self.seed,
                             self.batch_size)


def _mean_entropy(model: nn.Module, x: Tensor, overlays: Tensor, count: int, seed: int,
                  batch_size: int) -> Tensor:
    """Mean prediction entropy of each input over ``count`` seeded draws of ``overlays``."""
    generator = seeded_generator(seed)
    picks = torch.randint(0, len(overlays), (len(x), count), generator=generator)
    per_input = max(1, batch_size // count)
    out = []
    for start in range(0, len(x), per_input):
        chunk = x[start:start + per_input]
        blended = (chunk.unsqueeze(1) + overlays[picks[start:start + per_input]].to(x.device)
                   ).clamp(0.0, 1.0).flatten(0, 1)
        logits = batched_logits(model, blended, batch_size=batch_size)
        logp = torch.log_softmax(logits.double(), dim=1)
        entropy = -(logp.exp() * logp).sum(1).view(len(chunk), count)
        out.append(entropy.mean(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
