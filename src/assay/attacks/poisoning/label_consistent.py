"""The label-consistent backdoor: poison only images of the target class, which keep their
correct label, so that a human who inspects the labels sees nothing wrong.

Reference: A. Turner, D. Tsipras, A. Madry. "Label-Consistent Backdoor Attacks". arXiv
1912.02771, 2019. A clean-label image of the target class is easy to classify from its
content, so the model need not learn the trigger from it. The attack first makes each
chosen image hard: an adversarial perturbation (PGD, L-inf ``eps``) of a surrogate model
pushes it away from its own class. Then the trigger is stamped on it: a 3x3 checkerboard
in each of the four corners (so it survives flips), at a reduced ``amplitude`` if wanted.
The model must now lean on the trigger to fit these images, and at test time the trigger
(at full amplitude) sends inputs of other classes to the target.

Defaults: ``eps`` 16/255, the paper's largest L-inf budget on CIFAR-10 that still looked
natural; PGD with 20 steps and no early stop (the most loss, not the smallest
perturbation); the four-corner trigger at full amplitude, the paper's baseline
(``amplitude`` 16/255 to 64/255 are its less visible variants). The paper's surrogate is
adversarially trained; without one given, assay trains the zoo's ``small_cnn`` on the
clean data for ``surrogate_epochs`` (default 5), a normally trained one, whose
perturbations transfer less well.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..._params import Float, Int
from ...core import zoo
from ...core.dataset import Dataset
from ...core.training import TrainConfig, fit
from ..evasion.pgd import PGD
from .base import (POISONING_ATTACKS, BackdoorAttack, PoisonedData, check_patch_fits,
                   check_poisoning_data, choose, copy_with_images)


@POISONING_ATTACKS.register("label_consistent")
class LabelConsistent(BackdoorAttack):
    """Parameters (keyword-only)
    -------------------------
    target : int >= 0, default 0 - the class whose images are poisoned, and where
        triggered inputs go
    rate : float in (0, 1), default 0.1 - share of the training set poisoned (all of it
        images of the target class)
    eps : float in [0, 1], default 16/255 - L-inf radius of the adversarial perturbation
    steps : int >= 0, default 20 - PGD steps (0: the trigger alone)
    amplitude : float in (0, 1], default 1.0 - how far the poisoned images' trigger
        pixels move towards the pattern (1: set to it); test inputs get amplitude 1
    patch_size : int >= 1, default 3 - side of each corner's checkerboard
    surrogate_epochs : int >= 1, default 5 - training of the surrogate when none is given
    seed : int >= 0, default 0 - which images, the PGD start, the surrogate's training

    Example
    -------
    >>> from assay.core.loaders import load_digits
    >>> train = load_digits("train")
    >>> poisoned = LabelConsistent(target=3, rate=0.05, surrogate_epochs=1).poison(train)
    >>> bool((poisoned.data.y == train.y).all()), bool((train.y[poisoned.poisoned] == 3).all())
    (True, True)
    """

    name = "label_consistent"
    constraints = {
        "target": Int(low=0), "rate": Float(low=0.0, high=1.0, low_open=True, high_open=True),
        "eps": Float(low=0.0, high=1.0), "steps": Int(low=0),
        "amplitude": Float(low=0.0, high=1.0, low_open=True), "patch_size": Int(low=1),
        "surrogate_epochs": Int(low=1), "seed": Int(low=0),
    }

    def __init__(self, *, target: int = 0, rate: float = 0.1, eps: float = 16 / 255,
                 steps: int = 20, amplitude: float = 1.0, patch_size: int = 3,
                 surrogate_epochs: int = 5, seed: int = 0) -> None:
        self.target = self._validated("target", target)
        self.rate = self._validated("rate", rate)
        self.eps = self._validated("eps", eps)
        self.steps = self._validated("steps", steps)
        self.amplitude = self._validated("amplitude", amplitude)
        self.patch_size = self._validated("patch_size", patch_size)
        self.surrogate_epochs = self._validated("surrogate_epochs", surrogate_epochs)
        self.seed = self._validated("seed", seed)
        self.mode = "all_to_one"

    def poison(self, data: Dataset, surrogate: nn.Module | None = None) -> PoisonedData:
        """Perturb and stamp ``rate`` of ``data`` drawn from the target class, labels kept;
        the perturbation is ``surrogate``'s (a model of ``data``'s classes on inputs in
        [0, 1]), else that of a ``small_cnn`` trained here on ``data``."""
        check_poisoning_data(self, data, needs_images=True)
        eligible = torch.nonzero(data.y.cpu() == self.target).flatten()
        chosen = choose(eligible, self.rate, len(data), self.seed, type(self).__name__)
        x = data.x.clone()
        index = chosen.to(x.device)
        hard = x[index]
        if self.steps > 0 and self.eps > 0:
            model = surrogate if surrogate is not None else self._surrogate(data)
            attack = PGD(eps=self.eps, steps=self.steps, early_stop=False, seed=self.seed)
            hard = attack.run(model, hard, data.y[index].to(hard.device)).x_adv.detach()
        x[index] = self._corners(hard, self.amplitude)
        return copy_with_images(data, x, chosen, self, self.target)

    def _surrogate(self, data: Dataset) -> nn.Module:
        net = zoo.build("small_cnn", input_shape=data.input_shape,
                        num_classes=data.num_classes, seed=self.seed).to(data.x.device)
        fit(net, data, TrainConfig(epochs=self.surrogate_epochs, seed=self.seed),
            show_progress=False)
        return net.eval()

    def _stamp(self, x: Tensor, data: Dataset | None) -> Tensor:
        return self._corners(x, 1.0)

    def _corners(self, x: Tensor, amplitude: float) -> Tensor:
        """``x`` with each corner's ``patch_size`` checkerboard (top-left pixel 1) mixed in
        at ``amplitude``."""
        height, width = x.shape[-2:]
        size = self.patch_size
        check_patch_fits(type(self).__name__, 2 * size, height, width)
        rows = torch.arange(size, device=x.device)
        patch = ((rows[:, None] + rows[None, :]) % 2 == 0).to(x.dtype)
        x = x.clone()
        for top in (0, height - size):
            for left in (0, width - size):
                cell = x[..., top:top + size, left:left + size]
                x[..., top:top + size, left:left + size] = cell + amplitude * (patch - cell)
        return x
