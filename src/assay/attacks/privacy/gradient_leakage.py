"""Gradient leakage: reconstruct a federated client's training batch from the one gradient
it sends.

The attacker is the server of federated training: it knows the model (white-box: its
parameters and its loss, the mean cross-entropy of the batch) and receives the gradient of
that loss on a client's batch of real samples (:func:`victim_gradient`). It then searches
for inputs (and labels) whose gradient matches.

* :class:`DLG` (Zhu, Liu & Han, "Deep Leakage from Gradients", NeurIPS 2019): L-BFGS on
  the squared L2 distance between the gradients, the dummy labels (soft, through a
  softmax) optimised jointly with the dummy inputs;
* :class:`IDLG` (Zhao, Mopuri & Bilen, "iDLG: Improved Deep Leakage from Gradients",
  arXiv 2001.02610, 2020): the labels read first from the last layer's gradient
  (:func:`labels_from_gradient`), then DLG's matching with those labels fixed;
* :class:`InvertingGradients` (Geiping, Bauermeister, Droege & Moeller, "Inverting
  Gradients - How easy is it to break privacy in federated learning?", NeurIPS 2020): one
  minus the cosine similarity of the gradients plus total variation, Adam on the signed
  gradient of the inputs, kept in the input bounds, with restarts.

Each attack is called as ``attack(model, x, y)`` (the victim gradient is computed from
``x``, ``y``) or ``attack.reconstruct(model, gradient, batch_size)`` with a gradient
obtained elsewhere. The result (:class:`GradientLeakage`) holds the reconstruction, the
recovered labels, the PSNR of each true sample against the reconstruction assigned to it
(:func:`assay.metrics.reconstruction.match_reconstructions`: a gradient does not tell the
batch's order) and the label-recovery rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Configured, Float, Int, Seed
from ...core.inference import eval_mode
from ...core.rng import seeded_generator
from ...errors import AssayValueError
from ...metrics.reconstruction import label_recovery, match_reconstructions
from ..evasion.base import check_attack_inputs, model_bounds

__all__ = ["DLG", "IDLG", "GradientInversion", "GradientLeakage", "InvertingGradients",
           "labels_from_gradient", "total_variation", "victim_gradient"]


def _trainable(model: nn.Module, owner: str) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AssayValueError(f"{owner}: the model has no parameters that require grad, so it "
                              "has no training gradient to leak. Fix: pass the model as it is "
                              "trained (parameters with requires_grad=True).")
    return params


def _gradient(model: nn.Module, params: list[nn.Parameter], x: Tensor, target: Tensor, *,
              create_graph: bool) -> list[Tensor]:
    """The gradient of the batch's mean cross-entropy; ``target`` holds class indices [N]
    or class probabilities [N, K] (DLG's soft dummy labels)."""
    logits = model(x)
    if target.ndim == 1:
        loss = F.cross_entropy(logits, target)
    else:
        loss = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    return list(torch.autograd.grad(loss, params, create_graph=create_graph))


def victim_gradient(model: nn.Module, x: Tensor, y: Tensor) -> list[Tensor]:
    """What a federated client sends for its batch ``x`` [N, ...], ``y`` [N]: the gradient
    of the mean cross-entropy with respect to every parameter that requires grad (in
    ``model.parameters()`` order), computed in eval mode, the model's modes restored."""
    check_attack_inputs(model, x, y, "victim_gradient")
    with eval_mode(model):
        grads = _gradient(model, _trainable(model, "victim_gradient"), x, y, create_graph=False)
    return [g.detach() for g in grads]


def _num_classes(model: nn.Module, x: Tensor) -> int:
    classes = getattr(model, "num_classes", None)
    if classes is None:
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
    return int(classes)


def labels_from_gradient(model: nn.Module, gradient: list[Tensor], batch_size: int,
                         num_classes: int) -> Tensor:
    """The batch's labels [batch_size] read from the last layer's gradient; -1 where the
    gradient holds no evidence of a label.

    For cross-entropy the gradient of the last layer's bias is ``mean_n(p_n - onehot(y_n))``
    and of its weight row k that times the (non-negative, after ReLU or sigmoid) features:
    a class's entry can be negative only if a sample of that class is in the batch. One
    sample: the negative entry is its label (iDLG; the bias when the layer has one, which
    needs no sign assumption, else the weight's row sums). A batch: the ``batch_size`` most
    negative classes when at least that many are negative (Yin et al., "See through
    Gradients", CVPR 2021, whose rule assumes distinct labels); with fewer, each negative
    class gets slots in proportion to its entry (a class of c samples contributes about
    -c/N), at least one each. The last layer is the last parameter of ``num_classes``
    rows."""
    head = None
    params = [p for p in model.parameters() if p.requires_grad]
    for param, grad in reversed(list(zip(params, gradient, strict=True))):
        if param.ndim in (1, 2) and param.shape[0] == num_classes:
            head = grad if grad.ndim == 1 else grad.sum(1)
            break
    if head is None:
        raise AssayValueError(f"labels_from_gradient: no parameter of the model has "
                              f"{num_classes} rows (the classifier's last layer), so the labels "
                              "cannot be read from the gradient. Fix: use DLG, which optimises "
                              "the labels with the inputs.")
    evidence = (-head).clamp_min(0)
    evident = evidence.nonzero().squeeze(1)
    evident = evident[evidence[evident].argsort(descending=True)]  # most negative first
    if len(evident) == 0:
        return torch.full((batch_size,), -1, dtype=torch.long, device=head.device)
    if batch_size <= len(evident):
        return evident[:batch_size]
    # more samples than classes in evidence: share the slots by the size of each entry
    share = evidence[evident] / evidence[evident].sum() * batch_size
    counts = share.floor().clamp_min(1).long()
    while int(counts.sum()) > batch_size:  # the floor of 1 gave a slot too many
        counts[int(torch.where(counts > 1, share, math.inf).argmin())] -= 1
    while int(counts.sum()) < batch_size:  # largest remainder first
        counts[int((share - counts).argmax())] += 1
    return evident.repeat_interleave(counts)


@dataclass(frozen=True)
class GradientLeakage:
    """A reconstructed batch, ordered like the true batch it was compared with.

    reconstruction : Tensor [N, ...] in the model's bounds; row i is the one assigned to
        true sample i
    labels : Tensor [N] int64, the labels recovered for those rows (-1: none)
    psnr : Tensor [N], dB of each true sample against its reconstruction (inf: exact)
    label_recovery : float, the share of the true labels recovered (order-free)
    gradient_match : float, the attack's final objective (0: the gradients match)
    informative : bool, False when the victim gradient was zero (nothing to reconstruct)
    """

    reconstruction: Tensor
    labels: Tensor
    psnr: Tensor
    label_recovery: float
    gradient_match: float
    informative: bool


class GradientInversion(Configured):
    """Shared by the three attacks: the victim gradient, the evaluation, the optimisation
    loop's bookkeeping. Subclasses implement :meth:`_optimise`."""

    seed: int | None

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> GradientLeakage:
        """Reconstruct the batch ``x`` [N, ...], ``y`` [N] from its victim gradient and
        compare it with the truth."""
        gradient = victim_gradient(model, x, y)
        reconstruction, labels, match = self.reconstruct(model, gradient, len(x),
                                                         input_shape=tuple(x.shape[1:]))
        lo, hi = model_bounds(model)
        order, psnr = match_reconstructions(reconstruction, x, data_range=hi - lo)
        informative = any(bool(g.any()) for g in gradient)
        return GradientLeakage(reconstruction[order], labels[order], psnr,
                               label_recovery(labels, y), match, informative)

    def reconstruct(self, model: nn.Module, gradient: list[Tensor], batch_size: int, *,
                    input_shape: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor, float]:
        """``(inputs [batch_size, *input_shape], labels [batch_size], objective)`` whose
        gradient matches ``gradient`` (one tensor per parameter that requires grad, in
        ``model.parameters()`` order). ``input_shape`` defaults to the model wrapper's.
        A zero gradient carries nothing: the start is returned with labels -1."""
        owner = type(self).__name__
        Int(low=1).check("batch_size", batch_size, owner)
        shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
        if shape is None:
            raise AssayValueError(f"{owner}: pass input_shape (one sample's shape); the model "
                                  "does not declare one.")
        params = _trainable(model, owner)
        if len(gradient) != len(params) or any(
                not isinstance(g, Tensor) or g.shape != p.shape
                for g, p in zip(gradient, params, strict=True)):
            raise AssayValueError(f"{owner}: the gradient must hold one tensor per parameter "
                                  f"that requires grad ({len(params)}, shaped like them), as "
                                  "victim_gradient returns.")
        device = params[0].device
        lo, hi = model_bounds(model)
        generator = seeded_generator(self.seed, device)
        start = torch.randn((batch_size, *shape), device=device, generator=generator,
                            dtype=params[0].dtype)
        gradient = [g.detach().to(device) for g in gradient]
        with eval_mode(model):
            num_classes = _num_classes(model, start)
            if not any(bool(g.any()) for g in gradient):
                return (start.clamp(lo, hi),
                        torch.full((batch_size,), -1, dtype=torch.long, device=device), 0.0)
            x, labels, match = self._optimise(model, params, gradient, start, num_classes,
                                              (lo, hi), generator)
        return x.detach().clamp(lo, hi), labels, match

    def _optimise(self, model: nn.Module, params: list[nn.Parameter], gradient: list[Tensor],
                  start: Tensor, num_classes: int, bounds: tuple[float, float],
                  generator: torch.Generator | None) -> tuple[Tensor, Tensor, float]:
        raise NotImplementedError


def _l2_distance(dummy: list[Tensor], gradient: list[Tensor]) -> Tensor:
    return torch.stack([((d - g) ** 2).sum() for d, g in zip(dummy, gradient, strict=True)]).sum()


def _squared_norm(tensors: list[Tensor]) -> Tensor:
    return torch.stack([(t * t).sum() for t in tensors]).sum()


def _lbfgs_match(model: nn.Module, params: list[nn.Parameter], gradient: list[Tensor],
                 variables: list[Tensor], target_of: Callable[[list[Tensor]], Tensor],
                 steps: int) -> tuple[list[Tensor], float]:
    """DLG's loop: L-BFGS (lr 1, strong Wolfe line search) on the L2 gradient distance over
    ``variables`` (the inputs first; DLG adds the label logits), the dummy loss taking
    ``target_of(variables)`` as its labels. Keeps the best point seen, so a step that
    diverges to NaN loses nothing."""
    variables = [v.clone().requires_grad_(True) for v in variables]
    optimiser = torch.optim.LBFGS(variables, lr=1.0, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        distance = _l2_distance(_gradient(model, params, variables[0], target_of(variables),
                                          create_graph=True), gradient)
        grads = torch.autograd.grad(distance, variables)
        for variable, grad in zip(variables, grads, strict=True):
            variable.grad = grad
        return distance.detach()

    best, best_value = [v.detach().clone() for v in variables], math.inf
    for _ in range(steps):
        saved = [v.detach().clone() for v in variables]
        value = float(optimiser.step(closure))  # the distance at `saved`
        if not math.isfinite(value):  # L-BFGS diverged: keep the best point
            break
        if value < best_value:
            best, best_value = saved, value
        if value == 0.0:
            break
    final = float(closure())  # the last step's point, not yet scored
    if final < best_value:
        best, best_value = [v.detach().clone() for v in variables], final
    return best, best_value


class DLG(GradientInversion):
    """Deep Leakage from Gradients (Zhu, Liu & Han, NeurIPS 2019).

    Dummy inputs and dummy label logits start from N(0, 1) (the paper's ``randn``); L-BFGS
    (learning rate 1 and up to 20 evaluations a step, as the paper's code) minimises
    ``sum_layers ||grad(dummy) - grad(victim)||^2``, the dummy's loss being the
    cross-entropy against ``softmax(label logits)``. Unlike the paper's code, L-BFGS
    searches each step's length (strong Wolfe): with fixed steps it jumped out of the
    basin and stalled in 3 of 6 runs (3 digits, 2 seeds) on the tests' sigmoid CNN, with
    the search all 6 rebuilt their digit above 100 dB. The labels are the argmax of the
    label logits. The reconstruction is clipped to the model's bounds at the end (the
    paper optimises without bounds; clipping only brings it closer to data in them).

    Parameters (keyword-only)
    -------------------------
    steps : int >= 1, default 300 - L-BFGS steps (the paper's code runs 300)
    seed : int or None, default 0 - seeds the dummy start

    Example
    -------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x, y = torch.rand(1, 1, 2, 2), torch.tensor([2])
    >>> DLG(steps=20)(net, x, y).reconstruction.shape
    torch.Size([1, 1, 2, 2])
    """

    constraints = {"steps": Int(low=1), "seed": Seed()}

    def __init__(self, *, steps: int = 300, seed: int | None = 0) -> None:
        self.steps = self._validated("steps", steps)
        self.seed = self._validated("seed", seed)

    def _optimise(self, model: nn.Module, params: list[nn.Parameter], gradient: list[Tensor],
                  start: Tensor, num_classes: int, bounds: tuple[float, float],
                  generator: torch.Generator | None) -> tuple[Tensor, Tensor, float]:
        logits = torch.randn((len(start), num_classes), device=start.device, dtype=start.dtype,
                             generator=generator)
        (x, label_logits), match = _lbfgs_match(
            model, params, gradient, [start, logits], lambda v: F.softmax(v[1], dim=1),
            self.steps)
        return x, label_logits.argmax(1), match


class IDLG(DLG):  # DLG's settings; its own labels
    """Improved DLG (Zhao, Mopuri & Bilen, 2020): the labels first, from the sign of the
    last layer's gradient (:func:`labels_from_gradient`), then DLG's L-BFGS matching of
    the inputs alone with those labels. For one sample the label is exact for any
    cross-entropy model with a bias in its last layer.

    Parameters (keyword-only)
    -------------------------
    steps : int >= 1, default 300 - L-BFGS steps (as DLG)
    seed : int or None, default 0 - seeds the dummy start

    Example
    -------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x, y = torch.rand(1, 1, 2, 2), torch.tensor([2])
    >>> IDLG(steps=20)(net, x, y).labels.tolist()
    [2]
    """

    def _optimise(self, model: nn.Module, params: list[nn.Parameter], gradient: list[Tensor],
                  start: Tensor, num_classes: int, bounds: tuple[float, float],
                  generator: torch.Generator | None) -> tuple[Tensor, Tensor, float]:
        labels = labels_from_gradient(model, gradient, len(start), num_classes)
        if bool((labels < 0).all()):  # no evidence: nothing to fix the labels to
            return start, labels, math.inf
        (x,), match = _lbfgs_match(model, params, gradient, [start], lambda _: labels,
                                   self.steps)
        return x, labels, match


def total_variation(x: Tensor) -> Tensor:
    """The mean absolute difference of neighbouring pixels, across rows plus across
    columns, per image [N, C, H, W] -> [N] (inversefed's TV)."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


class InvertingGradients(GradientInversion):
    """Inverting Gradients (Geiping et al., NeurIPS 2020).

    Minimises ``1 - cos(grad(dummy), grad(victim)) + tv * mean TV(dummy)``, the cosine over
    all parameters at once, with the labels from :func:`labels_from_gradient`. Adam (step
    ``lr``) follows the sign of the inputs' gradient; after each step the inputs are
    clipped to the model's bounds ("boxed"); the step size drops by 10x at 3/8, 5/8 and
    7/8 of the steps. Each of ``restarts`` trials starts from N(0, 1); the one with the
    lowest objective is kept. Defaults are the paper's configuration as breaching ships
    it (``invertinggradients.yaml``): 24,000 steps, lr 0.1, TV weight 0.2 on the mean
    of the two directions (0.1 of the original code's sum), one trial.

    Parameters (keyword-only)
    -------------------------
    steps : int >= 1, default 24000
    lr : float > 0, default 0.1
    tv : float >= 0, default 0.2 - weight of the total variation
    restarts : int >= 1, default 1
    seed : int or None, default 0 - seeds the starts

    Example
    -------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x, y = torch.rand(1, 1, 2, 2), torch.tensor([2])
    >>> result = InvertingGradients(steps=50)(net, x, y)
    >>> bool(((result.reconstruction >= 0) & (result.reconstruction <= 1)).all())
    True
    """

    constraints = {"steps": Int(low=1), "lr": Float(low=0.0, low_open=True),
                   "tv": Float(low=0.0), "restarts": Int(low=1), "seed": Seed()}

    def __init__(self, *, steps: int = 24_000, lr: float = 0.1, tv: float = 0.2,
                 restarts: int = 1, seed: int | None = 0) -> None:
        self.steps = self._validated("steps", steps)
        self.lr = self._validated("lr", lr)
        self.tv = self._validated("tv", tv)
        self.restarts = self._validated("restarts", restarts)
        self.seed = self._validated("seed", seed)

    def _objective(self, model: nn.Module, params: list[nn.Parameter],
                   gradient: list[Tensor], x: Tensor, labels: Tensor,
                   target_norm: Tensor) -> Tensor:
        dummy = _gradient(model, params, x, labels, create_graph=True)
        dot = torch.stack([(d * g).sum() for d, g in zip(dummy, gradient, strict=True)]).sum()
        norm = _squared_norm(dummy).sqrt().clamp_min(1e-30)
        cost = 1 - dot / (norm * target_norm)
        return cost + self.tv * total_variation(x).mean() if x.ndim == 4 else cost

    def _optimise(self, model: nn.Module, params: list[nn.Parameter], gradient: list[Tensor],
                  start: Tensor, num_classes: int, bounds: tuple[float, float],
                  generator: torch.Generator | None) -> tuple[Tensor, Tensor, float]:
        labels = labels_from_gradient(model, gradient, len(start), num_classes)
        if bool((labels < 0).all()):
            return start, labels, math.inf
        lo, hi = bounds
        target_norm = _squared_norm(gradient).sqrt()
        milestones = [int(self.steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        best, best_value = start, math.inf
        for trial in range(self.restarts):
            x = (start if trial == 0 else torch.randn(start.shape, device=start.device,
                                                      dtype=start.dtype, generator=generator))
            x = x.clone().requires_grad_(True)
            optimiser = torch.optim.Adam([x], lr=self.lr)
            schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones, gamma=0.1)
            for _ in range(self.steps):
                cost = self._objective(model, params, gradient, x, labels, target_norm)
                x.grad, = torch.autograd.grad(cost, [x])
                x.grad.sign_()
                optimiser.step()
                schedule.step()
                with torch.no_grad():
                    x.clamp_(lo, hi)
            value = float(self._objective(model, params, gradient, x, labels,
                                          target_norm).detach())
            if value < best_value:
                best, best_value = x.detach(), value
        return best, labels, best_value
