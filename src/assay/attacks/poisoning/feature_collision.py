"""Feature-collision poisoning ("Poison Frogs"): clean-label images of a base class that
sit, in the model's feature space, where one chosen target image sits, so that a model
(re)trained on them classifies that target as the base class.

Reference: A. Shafahi, W. R. Huang, M. Najibi, O. Suciu, C. Studer, T. Dumitras, T.
Goldstein. "Poison Frogs! Targeted Clean-Label Poisoning Attacks on Neural Networks".
NeurIPS 2018. Each poison starts from a base image ``b`` (optionally with the target
blended in at ``opacity``, their "watermarking") and minimises
``||f(p) - f(t)||^2 + beta * ||p - b||^2`` by forward-backward splitting: a gradient step
of size ``lr`` on the feature distance, then the proximal step of the second term,
``p = (p + lr * beta * b) / (1 + lr * beta)``, then clipping to [0, 1]. ``f`` is the
penultimate layer (the input of the last ``nn.Linear``), as in the paper. Defaults:
``beta`` 0.25 scaled by ``(D_features / D_input)^2`` (the paper's 0.25 x 2048^2 / (299 x
299 x 3)^2 on Inception), ``lr`` 0.01 for inputs in [0, 1], 1000 steps, no watermark; the
paper's end-to-end attacks needed ``opacity`` 0.3 and tens of poisons.

The attack's success is per target: the target image is classified as the base class by
the model trained on the poisoned set (:meth:`FeatureCollision.success`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..._params import Float, Int, Optional
from ...core.dataset import Dataset
from ...core.inference import batched_predict, eval_mode
from ...errors import AssayValueError
from .base import (POISONING_ATTACKS, PoisonedData, PoisoningAttack, check_poisoning_data,
                   choose, copy_with_images)


@POISONING_ATTACKS.register("feature_collision")
class FeatureCollision(PoisoningAttack):
    """Parameters (keyword-only)
    -------------------------
    base_class : int >= 0, default 0 - the class the poisons (and, after training, the
        target image) belong to
    rate : float in (0, 1), default 0.01 - share of the training set made poisons, drawn
        from the base class
    beta : float > 0 or None, default None - weight of the closeness to the base image;
        None: 0.25 x (D_features / D_input)^2
    lr : float > 0, default 0.01 - the forward step's size
    steps : int >= 1, default 1000
    opacity : float in [0, 1), default 0.0 - the target blended into each base image first
    seed : int >= 0, default 0 - which base images

    ``poison(data, target_x=..., model=...)`` needs the target image [C, H, W] and the model
    whose features the poisons collide in (the victim's feature extractor, or a surrogate).
    """

    name = "feature_collision"
    constraints = {
        "base_class": Int(low=0),
        "rate": Float(low=0.0, high=1.0, low_open=True, high_open=True),
        "beta": Optional(Float(low=0.0, low_open=True)), "lr": Float(low=0.0, low_open=True),
        "steps": Int(low=1), "opacity": Float(low=0.0, high=1.0, high_open=True),
        "seed": Int(low=0),
    }

    def __init__(self, *, base_class: int = 0, rate: float = 0.01, beta: float | None = None,
                 lr: float = 0.01, steps: int = 1000, opacity: float = 0.0,
                 seed: int = 0) -> None:
        self.base_class = self._validated("base_class", base_class)
        self.target = self.base_class  # where the target image should end up
        self.rate = self._validated("rate", rate)
        self.beta = self._validated("beta", beta)
        self.lr = self._validated("lr", lr)
        self.steps = self._validated("steps", steps)
        self.opacity = self._validated("opacity", opacity)
        self.seed = self._validated("seed", seed)

    def poison(self, data: Dataset, *, target_x: Tensor | None = None,
               model: nn.Module | None = None) -> PoisonedData:
        """``rate`` of ``data``'s base-class images turned into poisons that collide with
        ``target_x`` in ``model``'s penultimate features; labels kept."""
        owner = type(self).__name__
        if model is None or not isinstance(target_x, Tensor):
            raise AssayValueError(f"{owner}.poison needs target_x (the image [C, H, W] to be "
                                  "misclassified) and model (whose features the poisons "
                                  "collide in).")
        check_poisoning_data(self, data, needs_images=True)
        if tuple(target_x.shape) != tuple(data.input_shape):
            raise AssayValueError(f"{owner}: target_x has shape {tuple(target_x.shape)}; the "
                                  f"data's images are {tuple(data.input_shape)}.")
        eligible = torch.nonzero(data.y.cpu() == self.base_class).flatten()
        chosen = choose(eligible, self.rate, len(data), self.seed, owner)
        x = data.x.clone()
        index = chosen.to(x.device)
        x[index] = self.craft(model, x[index], target_x.to(x.device))
        return copy_with_images(data, x, chosen, self, self.base_class)

    def craft(self, model: nn.Module, base: Tensor, target_x: Tensor) -> Tensor:
        """The poisons of the base images ``base`` [P, C, H, W] for ``target_x``."""
        with eval_mode(model), torch.no_grad():
            goal = penultimate(model, target_x[None])
        beta = self.beta if self.beta is not None else 0.25 * (
            goal.shape[1] / base[0].numel()) ** 2
        anchor = (base + self.opacity * (target_x[None] - base)).detach()
        poison = anchor.clone()
        with eval_mode(model):
            for _ in range(self.steps):
                poison.requires_grad_(True)
                distance = (penultimate(model, poison) - goal).pow(2).sum()
                (grad,) = torch.autograd.grad(distance, poison)
                with torch.no_grad():
                    forward = poison - self.lr * grad
                    poison = ((forward + self.lr * beta * anchor) / (1 + self.lr * beta)
                              ).clamp(0.0, 1.0)
        return poison.detach()

    def success(self, model: nn.Module, target_x: Tensor) -> bool:
        """Whether ``model`` classifies the target image as the base class."""
        return int(batched_predict(model, target_x[None]).item()) == self.base_class


def penultimate(model: nn.Module, x: Tensor) -> Tensor:
    """The input of the model's last ``nn.Linear`` on ``x`` [N, D], with its gradient."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise AssayValueError("Feature collision needs a model whose head is an nn.Linear.")
    seen: list[Tensor] = []
    hook = heads[-1].register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    try:
        model(x)
    finally:
        hook.remove()
    return seen[-1].flatten(1)
