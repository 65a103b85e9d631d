"""Expectation over transformation (EOT) for models with stochastic forward passes.

Reference: A. Athalye, L. Engstrom, A. Ilyas, K. Kwok. "Synthesizing Robust Adversarial
Examples". ICML 2018; and A. Athalye, N. Carlini, D. Wagner. "Obfuscated Gradients Give a
False Sense of Security". ICML 2018 (sec. 4.3).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..._params import check_int


class ExpectationOverTransformation(nn.Module):
    """A model whose output is the mean of ``samples`` logits of a stochastic model.

    Every attack run on it follows the gradient of the expected logits, which equals the
    mean of the per-pass gradients (EOT); its predictions are those of the expected logits.
    The wrapped model's bounds, class count and findings are passed through, so the
    attacks clip to the same box. A forward pass costs ``samples`` passes of the model.

    Parameters
    ----------
    model : nn.Module - the stochastic model (e.g. a :class:`assay.core.model.ModelWrapper`)
    samples : int >= 1, default 20 - passes averaged (AutoAttack's "rand" version uses 20)
    """

    def __init__(self, model: nn.Module, samples: int = 20) -> None:
        super().__init__()
        self.model = model
        self.samples = check_int("samples", samples, "ExpectationOverTransformation", low=1)
        for name in ("bounds", "num_classes", "findings", "input_shape"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def train(self, mode: bool = True) -> "ExpectationOverTransformation":
        # Keep the wrapped model's own training flag untouched: its randomness is the point.
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        total = self.model(x)
        for _ in range(self.samples - 1):
            total = total + self.model(x)
        return total / self.samples
